// `airlockctl pki init | issue | revoke | crl`: a development PKI in one directory (CA, server and
// client certificates, CRL) for quick starts, labs and tests. Production sites use their own CA.
#include <sys/stat.h>

#include <cstdio>
#include <filesystem>
#include <memory>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/time/clock.h"
#include "auth/dev_pki.h"
#include "inference/base/status.h"
#include "tools/airlockctl/commands.h"

namespace airlock::ctl {
namespace {

namespace fs = std::filesystem;

struct PkiFlags {
  std::string dir;
  // init
  std::string ca_name = "Airlock Dev CA";
  std::vector<std::string> server_dns;
  std::vector<std::string> server_ip;
  // issue
  std::string name;
  std::string cn;
  std::vector<std::string> emails;
  std::vector<std::string> dns;
  std::vector<std::string> ips;
  std::vector<std::string> uris;
  int days = 365;
  // revoke
  std::string cert;
  // revoke, crl
  int crl_days = 30;
};

std::string Path(const std::string& dir, const std::string& file) { return (fs::path(dir) / file).string(); }

// "wrote <path> (mode 0600)" for each file that exists, so the user sees what was created and
// that the keys are private.
void PrintWritten(const std::string& dir, const std::vector<std::string>& files) {
  for (const std::string& f : files) {
    const std::string path = Path(dir, f);
    struct stat st;
    if (::stat(path.c_str(), &st) != 0) continue;
    std::printf("wrote %s (mode %04o)\n", path.c_str(), static_cast<unsigned>(st.st_mode & 07777));
  }
}

absl::Status RequireCa(const std::string& dir) {
  std::error_code ec;
  if (!fs::is_directory(dir, ec)) {
    return absl::NotFoundError(
        absl::StrCat("directory ", dir, " does not exist; create a PKI with: airlockctl pki init --dir ", dir));
  }
  if (!fs::exists(Path(dir, "ca.key"), ec) || !fs::exists(Path(dir, "ca.crt"), ec)) {
    return absl::NotFoundError(
        absl::StrCat(dir, " holds no CA (ca.crt, ca.key); create one with: airlockctl pki init --dir ", dir));
  }
  return absl::OkStatus();
}

// A file stem names <dir>/<stem>.crt/.key: keep it a plain name so it cannot escape the directory.
absl::Status CheckStem(const std::string& stem) {
  if (stem.empty() || stem[0] == '.' || stem[0] == '-') {
    return absl::InvalidArgumentError(absl::StrCat("--name '", stem, "': must not be empty or start with '.' or '-'"));
  }
  for (char c : stem) {
    const bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '.' ||
                    c == '_' || c == '-' || c == '@';
    if (!ok) {
      return absl::InvalidArgumentError(
          absl::StrCat("--name '", stem, "': use only letters, digits, '.', '_', '-', '@' (it names the files)"));
    }
  }
  if (stem == "ca" || stem == "server" || stem == "crl") {
    return absl::InvalidArgumentError(absl::StrCat("--name '", stem, "' is reserved for the PKI's own files"));
  }
  return absl::OkStatus();
}

absl::Status Init(const PkiFlags& f) {
  std::error_code ec;
  if (fs::exists(Path(f.dir, "ca.key"), ec)) {
    return absl::AlreadyExistsError(absl::StrCat(f.dir, " already holds a CA (ca.key); refusing to replace it. "
                                                 "Use another --dir, or remove the directory first"));
  }
  if (!fs::exists(f.dir, ec)) {
    // The directory holds private keys: create it private.
    if (!fs::create_directories(f.dir, ec)) {
      return absl::InternalError(absl::StrCat("cannot create ", f.dir, ": ", ec.message()));
    }
    fs::permissions(f.dir, fs::perms::owner_all, ec);
    std::printf("created %s (mode 0700)\n", f.dir.c_str());
  } else if (!fs::is_directory(f.dir, ec)) {
    return absl::InvalidArgumentError(absl::StrCat(f.dir, " exists and is not a directory"));
  }
  auth::PkiInitOptions options;
  options.ca_common_name = f.ca_name;
  if (!f.server_dns.empty()) options.server_dns_names = f.server_dns;
  if (!f.server_ip.empty()) options.server_ip_addresses = f.server_ip;
  AIRLOCK_RETURN_IF_ERROR(auth::InitPki(f.dir, options));
  PrintWritten(f.dir, {"ca.crt", "ca.key", "server.crt", "server.key", "crl.pem", "revoked.txt", "crl_number"});
  std::printf("CA \"%s\"; server certificate for %s\n", options.ca_common_name.c_str(),
              absl::StrJoin(options.server_dns_names, ", ").c_str());
  if (!options.server_ip_addresses.empty()) {
    std::printf("  and IP %s\n", absl::StrJoin(options.server_ip_addresses, ", ").c_str());
  }
  std::printf("next: airlockctl pki issue --dir %s --name <client>\n", f.dir.c_str());
  return absl::OkStatus();
}

absl::Status Issue(const PkiFlags& f) {
  AIRLOCK_RETURN_IF_ERROR(CheckStem(f.name));
  AIRLOCK_RETURN_IF_ERROR(RequireCa(f.dir));
  if (f.days <= 0) return absl::InvalidArgumentError("--days must be positive");
  std::error_code ec;
  for (const char* ext : {".crt", ".key"}) {
    const std::string path = Path(f.dir, f.name + ext);
    if (fs::exists(path, ec)) {
      return absl::AlreadyExistsError(absl::StrCat(path, " already exists; refusing to overwrite it "
                                                   "(revoke it and pick another --name)"));
    }
  }
  auth::CertificateSpec spec;
  spec.common_name = f.cn.empty() ? f.name : f.cn;
  spec.emails = f.emails;
  spec.dns_names = f.dns;
  spec.ip_addresses = f.ips;
  spec.uris = f.uris;
  spec.validity = absl::Hours(24) * f.days;
  spec.server = false;
  AIRLOCK_RETURN_IF_ERROR(auth::IssueClient(f.dir, f.name, spec));
  PrintWritten(f.dir, {f.name + ".crt", f.name + ".key"});
  std::string serial = "?";
  if (absl::StatusOr<std::string> pem = auth::ReadTextFile(Path(f.dir, f.name + ".crt")); pem.ok()) {
    if (absl::StatusOr<std::string> s = auth::CertificateSerialHex(*pem); s.ok()) serial = *s;
  }
  std::printf("client certificate CN=%s, serial %s, valid %d days\n", spec.common_name.c_str(), serial.c_str(),
              f.days);
  std::vector<std::string> sans;
  for (const auto& e : spec.emails) sans.push_back("email:" + e);
  for (const auto& d : spec.dns_names) sans.push_back("DNS:" + d);
  for (const auto& i : spec.ip_addresses) sans.push_back("IP:" + i);
  for (const auto& u : spec.uris) sans.push_back("URI:" + u);
  if (!sans.empty()) std::printf("  subjectAltName %s\n", absl::StrJoin(sans, ", ").c_str());
  return absl::OkStatus();
}

absl::Status RevokeCert(const PkiFlags& f) {
  AIRLOCK_RETURN_IF_ERROR(RequireCa(f.dir));
  if (f.cert.empty() == f.name.empty()) {
    return absl::InvalidArgumentError("give exactly one of --cert FILE and --name STEM");
  }
  const std::string path = f.cert.empty() ? Path(f.dir, f.name + ".crt") : f.cert;
  std::error_code ec;
  if (!fs::exists(path, ec)) return absl::NotFoundError(absl::StrCat("certificate ", path, ": no such file"));
  AIRLOCK_ASSIGN_OR_RETURN(std::string pem, auth::ReadTextFile(path));
  AIRLOCK_ASSIGN_OR_RETURN(std::string serial, auth::CertificateSerialHex(pem));
  AIRLOCK_RETURN_IF_ERROR(auth::Revoke(f.dir, pem, absl::Hours(24) * f.crl_days));
  std::printf("revoked %s (serial %s)\n", path.c_str(), serial.c_str());
  PrintWritten(f.dir, {"revoked.txt", "crl.pem"});
  std::printf("airlockd picks up the new CRL when it re-reads its TLS files\n");
  return absl::OkStatus();
}

absl::Status Crl(const PkiFlags& f) {
  AIRLOCK_RETURN_IF_ERROR(RequireCa(f.dir));
  AIRLOCK_RETURN_IF_ERROR(auth::RefreshCrl(f.dir, absl::Hours(24) * f.crl_days));
  PrintWritten(f.dir, {"crl.pem"});
  std::printf("CRL valid until %s\n",
              absl::FormatTime("%Y-%m-%d %H:%M:%S UTC", absl::Now() + absl::Hours(24) * f.crl_days,
                               absl::UTCTimeZone())
                  .c_str());
  return absl::OkStatus();
}

// Runs one pki subcommand, printing its error; local errors exit 1.
void Finish(const char* sub, const absl::Status& status) {
  if (status.ok()) {
    SetExitCode(0);
    return;
  }
  std::fprintf(stderr, "airlockctl pki %s: %s\n", sub, std::string(status.message()).c_str());
  SetExitCode(1);
}

}  // namespace

void AddPkiCommand(CLI::App& app) {
  auto f = std::make_shared<PkiFlags>();
  CLI::App* pki = app.add_subcommand("pki", "Development PKI: CA, server and client certificates, CRL");
  pki->require_subcommand(1);

  CLI::App* init = pki->add_subcommand("init", "Create a CA, a server certificate and an empty CRL in --dir");
  init->add_option("--dir", f->dir, "PKI directory (created, mode 0700, if missing)")->required();
  init->add_option("--ca-name", f->ca_name, "CA common name")->capture_default_str();
  init->add_option("--server-dns", f->server_dns, "Server certificate DNS name (repeatable; default: localhost)");
  init->add_option("--server-ip", f->server_ip, "Server certificate IP address (repeatable; default: 127.0.0.1, ::1)");
  init->callback([f] { Finish("init", Init(*f)); });

  CLI::App* issue = pki->add_subcommand("issue", "Issue a client certificate <dir>/<name>.crt/.key");
  issue->add_option("--dir", f->dir, "PKI directory")->required();
  issue->add_option("--name", f->name, "File stem of the certificate and key")->required();
  issue->add_option("--cn", f->cn, "Subject common name (default: --name)");
  issue->add_option("--email", f->emails, "SAN e-mail address (repeatable)");
  issue->add_option("--dns", f->dns, "SAN DNS name (repeatable)");
  issue->add_option("--ip", f->ips, "SAN IP address (repeatable)");
  issue->add_option("--uri", f->uris, "SAN URI, e.g. spiffe://site/user/alice (repeatable)");
  issue->add_option("--days", f->days, "Validity in days")->capture_default_str()->check(CLI::PositiveNumber);
  issue->callback([f] { Finish("issue", Issue(*f)); });

  CLI::App* revoke = pki->add_subcommand("revoke", "Revoke a certificate: add it to the CRL and re-sign it");
  revoke->add_option("--dir", f->dir, "PKI directory")->required();
  revoke->add_option("--cert", f->cert, "Certificate file to revoke");
  revoke->add_option("--name", f->name, "Or: the stem of <dir>/<name>.crt");
  revoke->add_option("--crl-days", f->crl_days, "Validity of the new CRL in days")
      ->capture_default_str()
      ->check(CLI::PositiveNumber);
  revoke->callback([f] { Finish("revoke", RevokeCert(*f)); });

  CLI::App* crl = pki->add_subcommand("crl", "Re-sign the CRL (refresh its next-update time)");
  crl->add_option("--dir", f->dir, "PKI directory")->required();
  crl->add_option("--crl-days", f->crl_days, "Validity of the new CRL in days")
      ->capture_default_str()
      ->check(CLI::PositiveNumber);
  crl->callback([f] { Finish("crl", Crl(*f)); });
}

}  // namespace airlock::ctl
