// `airlockctl model keygen | pack | verify | import`: signed model bundles (auth/model_bundle.h,
// docs/deploy.md). A publisher makes a key pair once and packs GGUF files into a bundle signed
// with it; a site verifies a bundle against the publisher keys it trusts and imports it into its
// model directory.
#include <unistd.h>

#include <cstdio>
#include <filesystem>
#include <memory>
#include <set>
#include <string>
#include <system_error>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "auth/dev_pki.h"
#include "auth/digest.h"
#include "auth/ed25519.h"
#include "auth/model_bundle.h"
#include "inference/base/mapped_file.h"
#include "inference/base/status.h"
#include "inference/gguf/gguf_file.h"
#include "tools/airlockctl/commands.h"

namespace airlock::ctl {
namespace {

namespace fs = std::filesystem;

int Fail(const char* command, const absl::Status& status) {
  std::fprintf(stderr, "airlockctl model %s: %s\n", command, std::string(status.message()).c_str());
  return 1;
}

// <stem>.key (0600) and <stem>.pub (0644) next to each other; `out` is the private key's path.
absl::Status Keygen(const std::string& out) {
  const fs::path key_path(out);
  fs::path pub_path = key_path;
  pub_path.replace_extension(".pub");
  for (const fs::path& p : {key_path, pub_path}) {
    if (fs::exists(p)) return absl::AlreadyExistsError(absl::StrCat(p.string(), " exists; not overwritten"));
  }
  AIRLOCK_ASSIGN_OR_RETURN(const std::string pem, auth::GenerateEd25519KeyPem());
  AIRLOCK_ASSIGN_OR_RETURN(const auth::Ed25519PrivateKey key, auth::Ed25519PrivateKey::FromPem(pem, "the new key"));
  AIRLOCK_RETURN_IF_ERROR(auth::WritePrivateFile(key_path.string(), pem));
  AIRLOCK_RETURN_IF_ERROR(auth::WritePublicFile(pub_path.string(), key.public_key_pem()));
  std::printf("private key: %s (keep it offline; it signs bundles)\npublic key:  %s (give it to sites)\nkey id:      %s\n",
              key_path.c_str(), pub_path.c_str(), key.key_id().c_str());
  return absl::OkStatus();
}

struct PackRequest {
  std::string key_file;
  std::string name;
  std::string version;
  std::string licence;
  std::string out;
  std::vector<std::string> files;
};

absl::Status Pack(const PackRequest& r) {
  AIRLOCK_ASSIGN_OR_RETURN(const std::string key_pem, auth::ReadTextFile(r.key_file));
  AIRLOCK_ASSIGN_OR_RETURN(const auth::Ed25519PrivateKey key,
                           auth::Ed25519PrivateKey::FromPem(key_pem, absl::StrCat("the publisher key ", r.key_file)));
  const fs::path out(r.out);
  std::error_code ec;
  if (fs::exists(out) && !fs::is_empty(out, ec)) {
    return absl::AlreadyExistsError(absl::StrCat(r.out, " exists and is not empty; choose a new directory"));
  }
  auth::ModelManifest manifest;
  manifest.name = r.name;
  manifest.version = r.version;
  manifest.licence = r.licence;
  manifest.created = absl::FormatTime("%Y-%m-%dT%H:%M:%SZ", absl::Now(), absl::UTCTimeZone());
  std::set<std::string> names;
  // Every file is read as GGUF first: a bundle never carries something the daemon cannot load.
  for (const std::string& file : r.files) {
    absl::StatusOr<std::unique_ptr<inference::GgufFile>> gguf = inference::GgufFile::Open(file);
    if (!gguf.ok()) return absl::InvalidArgumentError(absl::StrCat(file, ": ", gguf.status().message()));
    const std::string name = fs::path(file).filename().string();
    if (!names.insert(name).second) return absl::InvalidArgumentError(absl::StrCat("two files are named ", name));
    if (manifest.architecture.empty()) {
      manifest.architecture = (*gguf)->GetStringOr("general.architecture", "unknown").value_or("unknown");
      manifest.quantisation = inference::DominantWeightType(**gguf);
      if (manifest.licence.empty()) manifest.licence = (*gguf)->GetStringOr("general.license", "").value_or("");
    }
    manifest.files.push_back(auth::BundleFile{name, (*gguf)->file_size(), ""});
  }
  if (manifest.licence.empty()) {
    return absl::InvalidArgumentError("--licence is required: the GGUF file has no general.license");
  }
  {
    // Every field must pass the manifest's rules before anything is written.
    auth::ModelManifest probe = manifest;
    for (auth::BundleFile& f : probe.files) f.sha256 = std::string(64, '0');
    AIRLOCK_RETURN_IF_ERROR(auth::ParseManifest(auth::ManifestJson(probe)).status());
  }
  fs::create_directories(out, ec);
  if (ec) return absl::PermissionDeniedError(absl::StrCat("cannot create ", r.out, ": ", ec.message()));
  const absl::Status written = [&]() -> absl::Status {
    for (size_t i = 0; i < r.files.size(); ++i) {
      const fs::path copy = out / manifest.files[i].name;
      if (!fs::copy_file(r.files[i], copy, ec)) {
        return absl::PermissionDeniedError(
            absl::StrCat("cannot copy ", r.files[i], " to ", copy.string(), ": ", ec.message()));
      }
      // The digest of the copy, as a site will compute it.
      AIRLOCK_ASSIGN_OR_RETURN(std::unique_ptr<MappedFile> mapped, MappedFile::Open(copy.string()));
      manifest.files[i].size = mapped->size();
      manifest.files[i].sha256 =
          auth::HexLower(auth::Sha256(std::span<const uint8_t>(mapped->data(), mapped->size())));
    }
    return auth::WriteSignedManifest(r.out, manifest, key);
  }();
  if (!written.ok()) {
    fs::remove_all(out, ec);  // no half-made bundle
    return written;
  }
  std::printf("packed %s %s (%s, %s, licence %s) into %s, signed by key %s\n", manifest.name.c_str(),
              manifest.version.c_str(), manifest.architecture.c_str(), manifest.quantisation.c_str(),
              manifest.licence.c_str(), r.out.c_str(), key.key_id().c_str());
  for (const auth::BundleFile& f : manifest.files) {
    std::printf("  %s  %llu bytes  sha256 %s\n", f.name.c_str(), static_cast<unsigned long long>(f.size),
                f.sha256.c_str());
  }
  return absl::OkStatus();
}

void PrintVerified(const std::string& dir, const auth::VerifiedManifest& v) {
  std::printf("verified %s: %s %s (%s, %s, licence %s), signed by trusted key %s, %zu file(s) intact\n", dir.c_str(),
              v.manifest.name.c_str(), v.manifest.version.c_str(), v.manifest.architecture.c_str(),
              v.manifest.quantisation.c_str(), v.manifest.licence.c_str(), v.key_id.c_str(), v.manifest.files.size());
}

absl::Status Verify(const std::string& dir, const std::vector<std::string>& trusted_keys) {
  AIRLOCK_ASSIGN_OR_RETURN(const auth::TrustedPublishers trusted, auth::TrustedPublishers::Load(trusted_keys));
  AIRLOCK_ASSIGN_OR_RETURN(const auth::VerifiedManifest verified, auth::VerifyBundle(dir, trusted));
  PrintVerified(dir, verified);
  return absl::OkStatus();
}

// Verifies the bundle, copies what the manifest lists into a temporary directory under `into`,
// verifies the copy, then renames it to <into>/<name>-<version>: the model directory never holds
// a partial or unverified bundle.
absl::Status Import(const std::string& dir, const std::vector<std::string>& trusted_keys, const std::string& into) {
  AIRLOCK_ASSIGN_OR_RETURN(const auth::TrustedPublishers trusted, auth::TrustedPublishers::Load(trusted_keys));
  AIRLOCK_ASSIGN_OR_RETURN(const auth::VerifiedManifest verified, auth::VerifyBundle(dir, trusted));
  const fs::path target = fs::path(into) / absl::StrCat(verified.manifest.name, "-", verified.manifest.version);
  if (fs::exists(target)) return absl::AlreadyExistsError(absl::StrCat(target.string(), " exists; not replaced"));
  std::error_code ec;
  fs::create_directories(into, ec);
  if (ec) return absl::PermissionDeniedError(absl::StrCat("cannot create ", into, ": ", ec.message()));
  const fs::path staging = fs::path(into) / absl::StrCat(".import-", verified.manifest.name, "-", ::getpid());
  fs::remove_all(staging, ec);
  const auto fail = [&staging](absl::Status status) {
    std::error_code ignored;
    fs::remove_all(staging, ignored);
    return status;
  };
  if (!fs::create_directory(staging, ec)) {
    return absl::PermissionDeniedError(absl::StrCat("cannot create ", staging.string(), ": ", ec.message()));
  }
  std::vector<std::string> names = {auth::kManifestFileName, auth::kSignatureFileName};
  for (const auth::BundleFile& f : verified.manifest.files) names.push_back(f.name);
  for (const std::string& name : names) {
    if (!fs::copy_file(fs::path(dir) / name, staging / name, ec)) {
      return fail(absl::PermissionDeniedError(absl::StrCat("cannot copy ", name, " to ", into, ": ", ec.message())));
    }
  }
  absl::StatusOr<auth::VerifiedManifest> copy = auth::VerifyBundle(staging.string(), trusted);
  if (!copy.ok()) return fail(copy.status());
  fs::rename(staging, target, ec);
  if (ec) return fail(absl::PermissionDeniedError(absl::StrCat("cannot rename into ", target.string(), ": ", ec.message())));
  PrintVerified(dir, verified);
  std::printf("imported into %s; in airlockd.yaml:\n  models:\n", target.c_str());
  // One entry per GGUF file; model names must be unique, so a bundle of several files (say, two
  // quantisations) names each after the bundle and the file.
  const bool one_file = verified.manifest.files.size() == 1;
  for (const auth::BundleFile& f : verified.manifest.files) {
    const std::string name =
        one_file ? verified.manifest.name : absl::StrCat(verified.manifest.name, "-", fs::path(f.name).stem().string());
    std::printf("    - name: %s\n      path: %s\n", name.c_str(), (target / f.name).c_str());
  }
  return absl::OkStatus();
}

}  // namespace

void AddModelBundleCommands(CLI::App& model) {
  auto key_out = std::make_shared<std::string>();
  CLI::App* keygen = model.add_subcommand("keygen", "Make a publisher's Ed25519 key pair for signing bundles");
  keygen->add_option("--out,-o", *key_out, "Private key path (the public key is written beside it as .pub)")
      ->required();
  keygen->callback([key_out] {
    if (absl::Status s = Keygen(*key_out); !s.ok()) SetExitCode(Fail("keygen", s));
  });

  auto pack_request = std::make_shared<PackRequest>();
  CLI::App* pack = model.add_subcommand("pack", "Copy GGUF files into a new bundle directory with a signed manifest");
  pack->add_option("--key", pack_request->key_file, "Publisher private key (airlockctl model keygen)")
      ->required()
      ->check(CLI::ExistingFile);
  pack->add_option("--name", pack_request->name, "Model name in the manifest")->required();
  pack->add_option("--version", pack_request->version, "Bundle version in the manifest")->required();
  pack->add_option("--licence", pack_request->licence, "Licence (default: the GGUF's general.license)");
  pack->add_option("--out,-o", pack_request->out, "New bundle directory")->required();
  pack->add_option("files", pack_request->files, "GGUF files")->required()->check(CLI::ExistingFile);
  pack->callback([pack_request] {
    if (absl::Status s = Pack(*pack_request); !s.ok()) SetExitCode(Fail("pack", s));
  });

  auto verify_dir = std::make_shared<std::string>();
  auto verify_keys = std::make_shared<std::vector<std::string>>();
  CLI::App* verify = model.add_subcommand("verify", "Check a bundle's signature and every file's digest");
  verify->add_option("bundle", *verify_dir, "Bundle directory")->required();
  verify->add_option("--trusted-key", *verify_keys, "A trusted publisher's public key (repeatable)")->required();
  verify->callback([verify_dir, verify_keys] {
    if (absl::Status s = Verify(*verify_dir, *verify_keys); !s.ok()) SetExitCode(Fail("verify", s));
  });

  auto import_dir = std::make_shared<std::string>();
  auto import_keys = std::make_shared<std::vector<std::string>>();
  auto import_into = std::make_shared<std::string>();
  CLI::App* import = model.add_subcommand("import", "Verify a bundle and copy it into the model directory");
  import->add_option("bundle", *import_dir, "Bundle directory (e.g. on removable media)")->required();
  import->add_option("--trusted-key", *import_keys, "A trusted publisher's public key (repeatable)")->required();
  import->add_option("--into", *import_into, "Model directory (e.g. /var/lib/airlock/models)")->required();
  import->callback([import_dir, import_keys, import_into] {
    if (absl::Status s = Import(*import_dir, *import_keys, *import_into); !s.ok()) SetExitCode(Fail("import", s));
  });
}

}  // namespace airlock::ctl
