// Signed model bundles (docs/deploy.md, "Signed model bundles"): a directory holding GGUF files,
// manifest.json (name, version, architecture, quantisation, licence, and each file's size and
// SHA-256) and manifest.sig (an Ed25519 signature of the manifest's exact bytes by a publisher).
// A site trusts a few publisher public keys; a bundle is accepted when its manifest is signed by
// one of them and every file has the size and digest the manifest says.
//
// The signed bytes are "airlock-model-manifest-v1" 0x00 followed by manifest.json as stored, so
// no canonical form is needed and a signature made for anything else (an audit checkpoint) can
// never pass for a manifest's.
//
// Thread-safety: free functions without shared state; TrustedPublishers is immutable.
#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "auth/ed25519.h"

namespace airlock::auth {

inline constexpr char kManifestFileName[] = "manifest.json";
inline constexpr char kSignatureFileName[] = "manifest.sig";
inline constexpr char kManifestFormat[] = "airlock-model-bundle/1";
inline constexpr char kSignatureFormat[] = "airlock-model-signature/1";

struct BundleFile {
  std::string name;    // a plain file name inside the bundle directory (no '/', not hidden)
  uint64_t size = 0;   // bytes
  std::string sha256;  // 64 lowercase hex digits

  bool operator==(const BundleFile&) const = default;
};

struct ModelManifest {
  std::string name;          // what the publisher calls the model ("llama-3.2-3b-instruct")
  std::string version;       // the publisher's version of this bundle ("2026.11.1")
  std::string architecture;  // GGUF general.architecture of the files ("llama")
  std::string quantisation;  // the weight type holding most bytes ("Q4_K", "F16")
  std::string licence;       // the model's licence ("apache-2.0", "llama3.2")
  std::string created;       // when it was packed, RFC 3339 UTC
  std::vector<BundleFile> files;

  bool operator==(const ModelManifest&) const = default;
  // nullptr when no file has that name.
  const BundleFile* Find(std::string_view file_name) const;
};

// manifest.json's text: {"format": kManifestFormat, ...}, keys in a fixed order, two-space indent.
std::string ManifestJson(const ModelManifest& manifest);
// Its strict inverse. INVALID_ARGUMENT naming the field for anything else: not JSON, another
// format, an unknown key, a missing or empty field, a name or version that is not 1 to 128 of
// [A-Za-z0-9._+-] (not starting with '.'), a file name with '/' or starting with '.',
// a reserved or repeated name, a digest that is not 64 hex digits, no file at all.
absl::StatusOr<ModelManifest> ParseManifest(std::string_view json);

// The publisher keys a site trusts.
class TrustedPublishers {
 public:
  // Each file holds one Ed25519 PUBLIC KEY PEM. INVALID_ARGUMENT naming the file when one cannot
  // be read or parsed, or when the list is empty.
  static absl::StatusOr<TrustedPublishers> Load(const std::vector<std::string>& public_key_files);
  static absl::StatusOr<TrustedPublishers> FromPems(const std::vector<std::string>& public_key_pems);

  // The key with that id, or nullptr.
  const Ed25519PublicKey* Find(std::string_view key_id) const;
  // Their key ids, comma-separated, for messages.
  std::string KeyIds() const;

 private:
  std::vector<Ed25519PublicKey> keys_;
};

// Writes <dir>/manifest.json and <dir>/manifest.sig (mode 0644) for `manifest`, signed by `key`.
// The files the manifest lists must already be in `dir`; they are not read here.
absl::Status WriteSignedManifest(const std::string& dir, const ModelManifest& manifest, const Ed25519PrivateKey& key);

// A manifest whose signature verified, and the id of the key that signed it.
struct VerifiedManifest {
  ModelManifest manifest;
  std::string key_id;
};

// Reads <dir>/manifest.json and <dir>/manifest.sig and checks the signature against `trusted`.
// NOT_FOUND when either file is missing; INVALID_ARGUMENT for a malformed signature file or
// manifest; PERMISSION_DENIED "signed by key <id>, which is not a trusted publisher (trusted:
// ...)" or "the signature does not verify (the manifest or its signature was altered)".
// Every message starts with "model bundle <dir>: ". Does not read the model files.
absl::StatusOr<VerifiedManifest> VerifyManifest(const std::string& dir, const TrustedPublishers& trusted);

// `bytes` against the manifest's entry: DATA_LOSS "<name>: ... bytes, the manifest says ..." or
// "<name>: SHA-256 <hex> differs from the manifest's <hex> (the file was altered)".
absl::Status CheckFileBytes(const BundleFile& entry, std::span<const uint8_t> bytes);
// Maps <dir>/<entry.name> and checks it: NOT_FOUND "<name> is listed in the manifest but
// missing", then CheckFileBytes. Messages start with "model bundle <dir>: ".
absl::Status CheckBundleFile(const std::string& dir, const BundleFile& entry);

// VerifyManifest, then CheckBundleFile for every file: the whole bundle.
absl::StatusOr<VerifiedManifest> VerifyBundle(const std::string& dir, const TrustedPublishers& trusted);

}  // namespace airlock::auth
