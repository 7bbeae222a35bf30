// Model bundle manifests: JSON both ways, signing, and verification of signatures and files.
#include "auth/model_bundle.h"

#include <sys/stat.h>

#include <cctype>
#include <memory>
#include <set>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "auth/dev_pki.h"
#include "auth/digest.h"
#include "inference/base/mapped_file.h"
#include "inference/base/status.h"
#include "nlohmann/json.hpp"

namespace airlock::auth {
namespace {

constexpr std::string_view kSignDomain{"airlock-model-manifest-v1\0", 26};
constexpr size_t kMaxTextField = 256;

std::string SignedData(std::string_view manifest_json) { return absl::StrCat(ToAbsl(kSignDomain), ToAbsl(manifest_json)); }

absl::Status Invalid(std::string_view where, std::string_view problem) {
  return absl::InvalidArgumentError(absl::StrCat(ToAbsl(where), ": ", ToAbsl(problem)));
}

// A required, non-empty string member of `object` at most kMaxTextField bytes (`path` names it).
absl::StatusOr<std::string> TextField(const nlohmann::json& object, const std::string& key, const std::string& path) {
  const auto it = object.find(key);
  if (it == object.end()) return Invalid(path, "missing");
  if (!it->is_string()) return Invalid(path, "must be a string");
  std::string value = it->get<std::string>();
  if (value.empty()) return Invalid(path, "must not be empty");
  if (value.size() > kMaxTextField) return Invalid(path, absl::StrCat("longer than ", kMaxTextField, " bytes"));
  return value;
}

absl::Status OnlyKeys(const nlohmann::json& object, const std::set<std::string>& allowed, const std::string& where) {
  for (const auto& [key, value] : object.items()) {
    if (!allowed.contains(key)) return Invalid(where, absl::StrCat("unknown key \"", key, "\""));
  }
  return absl::OkStatus();
}

// A name that is safe as one path component: [A-Za-z0-9._+-]{1,128}, not starting with '.'.
bool IsSafeName(std::string_view s) {
  if (s.empty() || s.size() > 128 || s.front() == '.') return false;
  for (const char c : s) {
    if (!std::isalnum(static_cast<unsigned char>(c)) && c != '.' && c != '_' && c != '+' && c != '-') return false;
  }
  return true;
}

bool IsLowerHex(std::string_view s) { return s.find_first_not_of("0123456789abcdef") == std::string_view::npos; }

absl::StatusOr<std::string> ReadBundleFile(const std::string& dir, const char* name) {
  const std::string path = absl::StrCat(dir, "/", name);
  // Both are small; a huge one is not a manifest (and is not read into memory).
  if (struct stat st {}; ::stat(path.c_str(), &st) == 0 && st.st_size > (1 << 20)) {
    return absl::InvalidArgumentError(absl::StrCat(name, ": ", st.st_size, " bytes, more than a manifest's 1 MiB"));
  }
  absl::StatusOr<std::string> text = ReadTextFile(path);
  if (!text.ok()) {
    if (text.status().code() == absl::StatusCode::kNotFound) {
      return absl::NotFoundError(absl::StrCat(name, " is missing (not a signed model bundle?)"));
    }
    return absl::Status(text.status().code(), absl::StrCat(name, ": ", text.status().message()));
  }
  return text;
}

absl::Status WithBundle(const std::string& dir, const absl::Status& status) {
  if (status.ok()) return status;
  return absl::Status(status.code(), absl::StrCat("model bundle ", dir, ": ", status.message()));
}

absl::StatusOr<VerifiedManifest> VerifyManifestIn(const std::string& dir, const TrustedPublishers& trusted) {
  AIRLOCK_ASSIGN_OR_RETURN(const std::string manifest_text, ReadBundleFile(dir, kManifestFileName));
  AIRLOCK_ASSIGN_OR_RETURN(const std::string signature_text, ReadBundleFile(dir, kSignatureFileName));
  const nlohmann::json sig = nlohmann::json::parse(signature_text, nullptr, /*allow_exceptions=*/false);
  if (!sig.is_object()) return Invalid(kSignatureFileName, "not a JSON object");
  AIRLOCK_RETURN_IF_ERROR(OnlyKeys(sig, {"format", "algorithm", "key_id", "signature"}, kSignatureFileName));
  AIRLOCK_ASSIGN_OR_RETURN(const std::string format, TextField(sig, "format", "manifest.sig: format"));
  if (format != kSignatureFormat) {
    return Invalid(kSignatureFileName, absl::StrCat("format \"", format, "\" is not ", kSignatureFormat));
  }
  AIRLOCK_ASSIGN_OR_RETURN(const std::string algorithm, TextField(sig, "algorithm", "manifest.sig: algorithm"));
  if (algorithm != "ed25519") return Invalid(kSignatureFileName, absl::StrCat("algorithm \"", algorithm, "\" is not ed25519"));
  AIRLOCK_ASSIGN_OR_RETURN(const std::string key_id, TextField(sig, "key_id", "manifest.sig: key_id"));
  AIRLOCK_ASSIGN_OR_RETURN(const std::string signature_hex, TextField(sig, "signature", "manifest.sig: signature"));
  const std::optional<std::string> signature = HexDecode(signature_hex);
  if (!signature || signature->size() != kEd25519SignatureSize) {
    return Invalid("manifest.sig: signature", absl::StrCat("must be ", 2 * kEd25519SignatureSize, " hex digits"));
  }
  const Ed25519PublicKey* key = trusted.Find(key_id);
  if (key == nullptr) {
    return absl::PermissionDeniedError(absl::StrCat("signed by key ", key_id,
                                                    ", which is not a trusted publisher (trusted: ", trusted.KeyIds(), ")"));
  }
  if (!key->Verify(SignedData(manifest_text), *signature)) {
    return absl::PermissionDeniedError(absl::StrCat("the signature by key ", key_id,
                                                    " does not verify (the manifest or its signature was altered)"));
  }
  // Parsed only once its bytes are known to be the publisher's.
  AIRLOCK_ASSIGN_OR_RETURN(ModelManifest manifest, ParseManifest(manifest_text));
  return VerifiedManifest{std::move(manifest), key_id};
}

}  // namespace

const BundleFile* ModelManifest::Find(std::string_view file_name) const {
  for (const BundleFile& f : files) {
    if (f.name == file_name) return &f;
  }
  return nullptr;
}

std::string ManifestJson(const ModelManifest& m) {
  nlohmann::ordered_json j;
  j["format"] = kManifestFormat;
  j["name"] = m.name;
  j["version"] = m.version;
  j["architecture"] = m.architecture;
  j["quantisation"] = m.quantisation;
  j["licence"] = m.licence;
  j["created"] = m.created;
  nlohmann::ordered_json files = nlohmann::ordered_json::array();
  for (const BundleFile& f : m.files) {
    nlohmann::ordered_json file;
    file["name"] = f.name;
    file["size"] = f.size;
    file["sha256"] = f.sha256;
    files.push_back(std::move(file));
  }
  j["files"] = std::move(files);
  return j.dump(2) + "\n";
}

absl::StatusOr<ModelManifest> ParseManifest(std::string_view json) {
  const nlohmann::json j = nlohmann::json::parse(json, nullptr, /*allow_exceptions=*/false);
  if (!j.is_object()) return Invalid("manifest.json", "not a JSON object");
  AIRLOCK_RETURN_IF_ERROR(OnlyKeys(
      j, {"format", "name", "version", "architecture", "quantisation", "licence", "created", "files"}, "manifest.json"));
  AIRLOCK_ASSIGN_OR_RETURN(const std::string format, TextField(j, "format", "manifest.json: format"));
  if (format != kManifestFormat) {
    return Invalid("manifest.json", absl::StrCat("format \"", format, "\" is not ", kManifestFormat));
  }
  ModelManifest m;
  AIRLOCK_ASSIGN_OR_RETURN(m.name, TextField(j, "name", "manifest.json: name"));
  AIRLOCK_ASSIGN_OR_RETURN(m.version, TextField(j, "version", "manifest.json: version"));
  // Both name the directory a bundle is imported into.
  for (const auto& [field, value] : {std::pair<const char*, const std::string&>{"name", m.name}, {"version", m.version}}) {
    if (!IsSafeName(value)) {
      return Invalid(absl::StrCat("manifest.json: ", field),
                     absl::StrCat("\"", value, "\" must be 1 to 128 of A-Z a-z 0-9 . _ + - and not start with '.'"));
    }
  }
  AIRLOCK_ASSIGN_OR_RETURN(m.architecture, TextField(j, "architecture", "manifest.json: architecture"));
  AIRLOCK_ASSIGN_OR_RETURN(m.quantisation, TextField(j, "quantisation", "manifest.json: quantisation"));
  AIRLOCK_ASSIGN_OR_RETURN(m.licence, TextField(j, "licence", "manifest.json: licence"));
  AIRLOCK_ASSIGN_OR_RETURN(m.created, TextField(j, "created", "manifest.json: created"));
  const auto files = j.find("files");
  if (files == j.end() || !files->is_array() || files->empty()) {
    return Invalid("manifest.json: files", "must be a non-empty array");
  }
  std::set<std::string> names;
  for (size_t i = 0; i < files->size(); ++i) {
    const nlohmann::json& f = (*files)[i];
    const std::string where = absl::StrCat("manifest.json: files[", i, "]");
    if (!f.is_object()) return Invalid(where, "must be an object");
    AIRLOCK_RETURN_IF_ERROR(OnlyKeys(f, {"name", "size", "sha256"}, where));
    BundleFile file;
    AIRLOCK_ASSIGN_OR_RETURN(file.name, TextField(f, "name", where + ".name"));
    if (file.name.find('/') != std::string::npos || file.name.front() == '.' ||
        file.name.find('\0') != std::string::npos) {
      return Invalid(where + ".name", absl::StrCat("\"", file.name, "\" is not a plain file name of the bundle"));
    }
    if (file.name == kManifestFileName || file.name == kSignatureFileName || !names.insert(file.name).second) {
      return Invalid(where + ".name", absl::StrCat("\"", file.name, "\" is reserved or repeated"));
    }
    const auto size = f.find("size");
    if (size == f.end() || !size->is_number_unsigned()) return Invalid(where + ".size", "must be a byte count");
    file.size = size->get<uint64_t>();
    AIRLOCK_ASSIGN_OR_RETURN(file.sha256, TextField(f, "sha256", where + ".sha256"));
    if (file.sha256.size() != 64 || !IsLowerHex(file.sha256)) {
      return Invalid(where + ".sha256", "must be 64 lowercase hex digits");
    }
    m.files.push_back(std::move(file));
  }
  return m;
}

absl::StatusOr<TrustedPublishers> TrustedPublishers::FromPems(const std::vector<std::string>& public_key_pems) {
  if (public_key_pems.empty()) return absl::InvalidArgumentError("no trusted publisher key");
  TrustedPublishers trusted;
  for (size_t i = 0; i < public_key_pems.size(); ++i) {
    AIRLOCK_ASSIGN_OR_RETURN(Ed25519PublicKey key,
                             Ed25519PublicKey::FromPem(public_key_pems[i], absl::StrCat("publisher key ", i + 1)));
    trusted.keys_.push_back(std::move(key));
  }
  return trusted;
}

absl::StatusOr<TrustedPublishers> TrustedPublishers::Load(const std::vector<std::string>& public_key_files) {
  if (public_key_files.empty()) return absl::InvalidArgumentError("no trusted publisher key");
  TrustedPublishers trusted;
  for (const std::string& path : public_key_files) {
    absl::StatusOr<std::string> pem = ReadTextFile(path);
    if (!pem.ok()) {
      return absl::InvalidArgumentError(absl::StrCat("publisher key ", path, ": ", pem.status().message()));
    }
    AIRLOCK_ASSIGN_OR_RETURN(Ed25519PublicKey key, Ed25519PublicKey::FromPem(*pem, absl::StrCat("publisher key ", path)));
    trusted.keys_.push_back(std::move(key));
  }
  return trusted;
}

const Ed25519PublicKey* TrustedPublishers::Find(std::string_view key_id) const {
  for (const Ed25519PublicKey& key : keys_) {
    if (key.key_id() == key_id) return &key;
  }
  return nullptr;
}

std::string TrustedPublishers::KeyIds() const {
  std::vector<std::string> ids;
  for (const Ed25519PublicKey& key : keys_) ids.push_back(key.key_id());
  return absl::StrJoin(ids, ", ");
}

absl::Status WriteSignedManifest(const std::string& dir, const ModelManifest& manifest, const Ed25519PrivateKey& key) {
  const std::string text = ManifestJson(manifest);
  // What is written must read back as what was meant: a field the parser refuses fails here.
  AIRLOCK_RETURN_IF_ERROR(ParseManifest(text).status());
  nlohmann::ordered_json sig;
  sig["format"] = kSignatureFormat;
  sig["algorithm"] = "ed25519";
  sig["key_id"] = key.key_id();
  sig["signature"] = HexLower(key.Sign(SignedData(text)));
  AIRLOCK_RETURN_IF_ERROR(WritePublicFile(absl::StrCat(dir, "/", kManifestFileName), text));
  return WritePublicFile(absl::StrCat(dir, "/", kSignatureFileName), sig.dump(2) + "\n");
}

absl::StatusOr<VerifiedManifest> VerifyManifest(const std::string& dir, const TrustedPublishers& trusted) {
  absl::StatusOr<VerifiedManifest> verified = VerifyManifestIn(dir, trusted);
  if (!verified.ok()) return WithBundle(dir, verified.status());
  return verified;
}

absl::Status CheckFileBytes(const BundleFile& entry, std::span<const uint8_t> bytes) {
  if (bytes.size() != entry.size) {
    return absl::DataLossError(absl::StrCat(entry.name, ": ", bytes.size(), " bytes, the manifest says ", entry.size,
                                            " (the file was altered or cut short)"));
  }
  const std::string digest = HexLower(Sha256(bytes));
  if (digest != entry.sha256) {
    return absl::DataLossError(absl::StrCat(entry.name, ": SHA-256 ", digest, " differs from the manifest's ",
                                            entry.sha256, " (the file was altered)"));
  }
  return absl::OkStatus();
}

absl::Status CheckBundleFile(const std::string& dir, const BundleFile& entry) {
  const std::string path = absl::StrCat(dir, "/", entry.name);
  struct stat st {};
  if (::stat(path.c_str(), &st) != 0) {
    return WithBundle(dir, absl::NotFoundError(absl::StrCat(entry.name, " is listed in the manifest but missing")));
  }
  if (!S_ISREG(st.st_mode)) {
    return WithBundle(dir, absl::InvalidArgumentError(absl::StrCat(entry.name, " is not a regular file")));
  }
  absl::StatusOr<std::unique_ptr<MappedFile>> file = MappedFile::Open(path);
  if (!file.ok()) return WithBundle(dir, file.status());
  return WithBundle(dir, CheckFileBytes(entry, std::span<const uint8_t>((*file)->data(), (*file)->size())));
}

absl::StatusOr<VerifiedManifest> VerifyBundle(const std::string& dir, const TrustedPublishers& trusted) {
  AIRLOCK_ASSIGN_OR_RETURN(VerifiedManifest verified, VerifyManifest(dir, trusted));
  for (const BundleFile& entry : verified.manifest.files) AIRLOCK_RETURN_IF_ERROR(CheckBundleFile(dir, entry));
  return verified;
}

}  // namespace airlock::auth
