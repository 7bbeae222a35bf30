// `airlockctl pki` and the client commands' local checks, end to end through the real binary:
// files and modes the PKI writes, certificate names and CRL contents (read back with OpenSSL),
// and the errors a client gives before or without a daemon (files, key modes, profiles, an
// unreachable server).
#include <arpa/inet.h>
#include <netinet/in.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <fstream>
#include <string>
#include <utility>
#include <vector>

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "tests/support/run_command.h"
#include "tests/support/test_data.h"

namespace airlock {
namespace {

using ::testing::HasSubstr;
using ::testing::Not;

using testing::CommandResult;

// Runs airlockctl with `args` in a controlled environment: no $AIRLOCK_PROFILE, and
// $AIRLOCK_CONFIG_DIR set to `config_dir` (an empty scratch directory unless given) so that the
// developer's own profiles never leak into a test. `profile_env`, when given, sets $AIRLOCK_PROFILE.
CommandResult Ctl(const std::vector<std::string>& args, const std::string& config_dir = "",
                  const std::string& profile_env = "") {
  static const std::string* const empty_config_dir = new std::string(testing::MakeTempDir());
  std::vector<std::string> argv = {"env", "-u", "AIRLOCK_PROFILE",
                                   "AIRLOCK_CONFIG_DIR=" + (config_dir.empty() ? *empty_config_dir : config_dir)};
  if (!profile_env.empty()) argv.push_back("AIRLOCK_PROFILE=" + profile_env);
  argv.push_back(AIRLOCKCTL_PATH);
  argv.insert(argv.end(), args.begin(), args.end());
  return testing::RunCommand(argv);
}

unsigned Mode(const std::string& path) {
  struct stat st {};
  if (::stat(path.c_str(), &st) != 0) return 0xFFFF;
  return st.st_mode & 07777;
}

void WriteFile(const std::string& path, const std::string& contents) {
  std::ofstream(path, std::ios::binary) << contents;
}

// OpenSSL objects read from PEM files, freed on scope exit.
struct CertDeleter {
  void operator()(X509* x) const { X509_free(x); }
};
struct CrlDeleter {
  void operator()(X509_CRL* x) const { X509_CRL_free(x); }
};
using CertPtr = std::unique_ptr<X509, CertDeleter>;
using CrlPtr = std::unique_ptr<X509_CRL, CrlDeleter>;

CertPtr ReadCert(const std::string& path) {
  FILE* f = std::fopen(path.c_str(), "r");
  if (f == nullptr) return nullptr;
  CertPtr cert(PEM_read_X509(f, nullptr, nullptr, nullptr));
  std::fclose(f);
  return cert;
}

CrlPtr ReadCrl(const std::string& path) {
  FILE* f = std::fopen(path.c_str(), "r");
  if (f == nullptr) return nullptr;
  CrlPtr crl(PEM_read_X509_CRL(f, nullptr, nullptr, nullptr));
  std::fclose(f);
  return crl;
}

std::string CommonName(X509* cert) {
  char buf[256] = {};
  X509_NAME_get_text_by_NID(X509_get_subject_name(cert), NID_commonName, buf, sizeof buf);
  return buf;
}

// subjectAltName entries as "email:x", "DNS:x", "URI:x", "IP:n".
std::vector<std::string> SubjectAltNames(X509* cert) {
  std::vector<std::string> out;
  auto* names = static_cast<GENERAL_NAMES*>(X509_get_ext_d2i(cert, NID_subject_alt_name, nullptr, nullptr));
  if (names == nullptr) return out;
  for (int i = 0; i < sk_GENERAL_NAME_num(names); ++i) {
    const GENERAL_NAME* n = sk_GENERAL_NAME_value(names, i);
    auto text = [](const ASN1_STRING* s) {
      return std::string(reinterpret_cast<const char*>(ASN1_STRING_get0_data(s)), ASN1_STRING_length(s));
    };
    switch (n->type) {
      case GEN_EMAIL: out.push_back("email:" + text(n->d.rfc822Name)); break;
      case GEN_DNS: out.push_back("DNS:" + text(n->d.dNSName)); break;
      case GEN_URI: out.push_back("URI:" + text(n->d.uniformResourceIdentifier)); break;
      case GEN_IPADD: {
        const std::string raw = text(n->d.iPAddress);
        char buf[INET6_ADDRSTRLEN] = {};
        inet_ntop(raw.size() == 4 ? AF_INET : AF_INET6, raw.data(), buf, sizeof buf);
        out.push_back(std::string("IP:") + buf);
        break;
      }
      default: out.push_back("other"); break;
    }
  }
  GENERAL_NAMES_free(names);
  return out;
}

// An empty CRL has no revokedCertificates list at all (null, which sk_num reports as -1).
int RevokedCount(X509_CRL* crl) {
  STACK_OF(X509_REVOKED)* revoked = X509_CRL_get_REVOKED(crl);
  return revoked == nullptr ? 0 : sk_X509_REVOKED_num(revoked);
}

// tools_tests links gtest but not gmock's matcher library, so set comparisons sort first.
std::vector<std::string> Sorted(std::vector<std::string> v) {
  std::sort(v.begin(), v.end());
  return v;
}

bool HasClientAuth(X509* cert) {
  return (X509_get_extension_flags(cert) & EXFLAG_XKUSAGE) != 0 &&
         (X509_get_extended_key_usage(cert) & XKU_SSL_CLIENT) != 0;
}

// A TCP port on 127.0.0.1 that nothing listens on (bound, read and released: a small race at most).
int UnusedPort() {
  const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  addr.sin_port = 0;
  ::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr);
  socklen_t len = sizeof addr;
  ::getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len);
  ::close(fd);
  return ntohs(addr.sin_port);
}

// A PKI directory with a CA and a client "alice", shared by the tests below.
class PkiTest : public ::testing::Test {
 protected:
  void SetUp() override {
    root_ = testing::MakeTempDir();
    dir_ = root_ + "/pki";
    CommandResult o = Ctl({"pki", "init", "--dir", dir_});
    ASSERT_EQ(o.exit_code, 0) << o.err;
    o = Ctl({"pki", "issue", "--dir", dir_, "--name", "alice"});
    ASSERT_EQ(o.exit_code, 0) << o.err;
  }
  std::string P(const std::string& file) const { return dir_ + "/" + file; }

  std::string root_;
  std::string dir_;
};

TEST(PkiCommandTest, InitCreatesFilesWithModes) {
  const std::string dir = testing::MakeTempDir() + "/pki";
  CommandResult o = Ctl({"pki", "init", "--dir", dir, "--ca-name", "Test Lab CA", "--server-dns", "airlock.lab",
                         "--server-dns", "localhost", "--server-ip", "10.0.0.7"});
  ASSERT_EQ(o.exit_code, 0) << o.err;
  EXPECT_EQ(Mode(dir), 0700u);
  EXPECT_EQ(Mode(dir + "/ca.key"), 0600u);
  EXPECT_EQ(Mode(dir + "/server.key"), 0600u);
  EXPECT_EQ(Mode(dir + "/ca.crt"), 0644u);
  EXPECT_EQ(Mode(dir + "/server.crt"), 0644u);
  EXPECT_EQ(Mode(dir + "/crl.pem"), 0644u);
  for (const char* f : {"ca.crt", "ca.key", "server.crt", "server.key", "crl.pem"}) {
    EXPECT_THAT(o.out, HasSubstr("wrote " + dir + "/" + f)) << f;
  }
  CertPtr ca = ReadCert(dir + "/ca.crt");
  ASSERT_NE(ca, nullptr);
  EXPECT_EQ(CommonName(ca.get()), "Test Lab CA");
  EXPECT_EQ(X509_check_ca(ca.get()), 1);
  CertPtr server = ReadCert(dir + "/server.crt");
  ASSERT_NE(server, nullptr);
  EXPECT_EQ(Sorted(SubjectAltNames(server.get())), Sorted({"DNS:airlock.lab", "DNS:localhost", "IP:10.0.0.7"}));
  EXPECT_EQ(X509_verify(server.get(), X509_get0_pubkey(ca.get())), 1);
  // A fresh CRL, signed by the CA, lists nothing.
  CrlPtr crl = ReadCrl(dir + "/crl.pem");
  ASSERT_NE(crl, nullptr);
  EXPECT_EQ(X509_CRL_verify(crl.get(), X509_get0_pubkey(ca.get())), 1);
  EXPECT_EQ(RevokedCount(crl.get()), 0);
}

TEST_F(PkiTest, SecondInitRefusesAndKeepsTheCa) {
  const std::string before = testing::ReadFileOrDie(P("ca.key"));
  CommandResult o = Ctl({"pki", "init", "--dir", dir_});
  EXPECT_EQ(o.exit_code, 1);
  EXPECT_THAT(o.err, HasSubstr("already holds a CA"));
  EXPECT_EQ(testing::ReadFileOrDie(P("ca.key")), before);
}

TEST_F(PkiTest, IssueSetsNamesAndUsage) {
  CommandResult o = Ctl({"pki", "issue", "--dir", dir_, "--name", "bob", "--cn", "Bob Builder", "--email",
                         "bob@example.org", "--dns", "bob.lab", "--uri", "spiffe://lab/user/bob", "--days", "7"});
  ASSERT_EQ(o.exit_code, 0) << o.err;
  EXPECT_THAT(o.out, HasSubstr("wrote " + P("bob.crt")));
  EXPECT_THAT(o.out, HasSubstr("wrote " + P("bob.key") + " (mode 0600)"));
  EXPECT_EQ(Mode(P("bob.key")), 0600u);
  CertPtr cert = ReadCert(P("bob.crt"));
  ASSERT_NE(cert, nullptr);
  EXPECT_EQ(CommonName(cert.get()), "Bob Builder");
  EXPECT_EQ(Sorted(SubjectAltNames(cert.get())),
            Sorted({"email:bob@example.org", "DNS:bob.lab", "URI:spiffe://lab/user/bob"}));
  EXPECT_TRUE(HasClientAuth(cert.get()));
  CertPtr ca = ReadCert(P("ca.crt"));
  ASSERT_NE(ca, nullptr);
  EXPECT_EQ(X509_verify(cert.get(), X509_get0_pubkey(ca.get())), 1);
  // --days 7: expires in 6 to 8 days from now.
  int days = 0, seconds = 0;
  ASSERT_EQ(ASN1_TIME_diff(&days, &seconds, nullptr, X509_get0_notAfter(cert.get())), 1);
  EXPECT_GE(days, 6);
  EXPECT_LE(days, 7);

  // The default CN is the file stem.
  CertPtr alice = ReadCert(P("alice.crt"));
  ASSERT_NE(alice, nullptr);
  EXPECT_EQ(CommonName(alice.get()), "alice");
}

TEST_F(PkiTest, IssueErrors) {
  CommandResult o = Ctl({"pki", "issue", "--dir", dir_, "--name", "alice"});
  EXPECT_EQ(o.exit_code, 1);
  EXPECT_THAT(o.err, HasSubstr("already exists"));
  o = Ctl({"pki", "issue", "--dir", dir_, "--name", "../escape"});
  EXPECT_EQ(o.exit_code, 1);
  EXPECT_THAT(o.err, HasSubstr("--name"));
  o = Ctl({"pki", "issue", "--dir", root_ + "/missing", "--name", "x"});
  EXPECT_EQ(o.exit_code, 1);
  EXPECT_THAT(o.err, HasSubstr(root_ + "/missing does not exist"));
  o = Ctl({"pki", "issue", "--dir", root_, "--name", "x"});  // exists, but holds no CA
  EXPECT_EQ(o.exit_code, 1);
  EXPECT_THAT(o.err, HasSubstr("holds no CA"));
}

TEST_F(PkiTest, RevokePutsSerialInCrl) {
  CertPtr alice = ReadCert(P("alice.crt"));
  ASSERT_NE(alice, nullptr);
  CommandResult o = Ctl({"pki", "revoke", "--dir", dir_, "--name", "alice"});
  ASSERT_EQ(o.exit_code, 0) << o.err;
  EXPECT_THAT(o.out, HasSubstr("wrote " + P("crl.pem")));
  CrlPtr crl = ReadCrl(P("crl.pem"));
  ASSERT_NE(crl, nullptr);
  CertPtr ca = ReadCert(P("ca.crt"));
  ASSERT_NE(ca, nullptr);
  EXPECT_EQ(X509_CRL_verify(crl.get(), X509_get0_pubkey(ca.get())), 1);
  X509_REVOKED* entry = nullptr;
  EXPECT_EQ(X509_CRL_get0_by_cert(crl.get(), &entry, alice.get()), 1);

  // Revoking by file works as well, and `pki crl` re-signs without losing entries.
  ASSERT_EQ(Ctl({"pki", "issue", "--dir", dir_, "--name", "carol"}).exit_code, 0);
  o = Ctl({"pki", "revoke", "--dir", dir_, "--cert", P("carol.crt")});
  ASSERT_EQ(o.exit_code, 0) << o.err;
  o = Ctl({"pki", "crl", "--dir", dir_});
  ASSERT_EQ(o.exit_code, 0) << o.err;
  EXPECT_THAT(o.out, HasSubstr("wrote " + P("crl.pem")));
  crl = ReadCrl(P("crl.pem"));
  ASSERT_NE(crl, nullptr);
  EXPECT_EQ(X509_CRL_verify(crl.get(), X509_get0_pubkey(ca.get())), 1);
  CertPtr carol = ReadCert(P("carol.crt"));
  ASSERT_NE(carol, nullptr);
  EXPECT_EQ(X509_CRL_get0_by_cert(crl.get(), &entry, alice.get()), 1);
  EXPECT_EQ(X509_CRL_get0_by_cert(crl.get(), &entry, carol.get()), 1);
  EXPECT_EQ(RevokedCount(crl.get()), 2);
}

TEST_F(PkiTest, RevokeErrors) {
  CommandResult o = Ctl({"pki", "revoke", "--dir", dir_});
  EXPECT_EQ(o.exit_code, 1);
  EXPECT_THAT(o.err, HasSubstr("--cert"));
  o = Ctl({"pki", "revoke", "--dir", dir_, "--name", "nobody"});
  EXPECT_EQ(o.exit_code, 1);
  EXPECT_THAT(o.err, HasSubstr(P("nobody.crt")));
  o = Ctl({"pki", "crl", "--dir", root_ + "/missing"});
  EXPECT_EQ(o.exit_code, 1);
  EXPECT_THAT(o.err, HasSubstr("does not exist"));
}

// ---- client-side checks, no daemon ----

std::vector<std::string> Args(std::vector<std::string> head, const std::vector<std::string>& tail) {
  head.insert(head.end(), tail.begin(), tail.end());
  return head;
}

TEST_F(PkiTest, ClientNamesAMissingFile) {
  const std::string server = "127.0.0.1:" + std::to_string(UnusedPort());
  CommandResult o =
      Ctl({"models", "--server", server, "--ca", P("ca.crt"), "--cert", P("nope.crt"), "--key", P("alice.key")});
  EXPECT_EQ(o.exit_code, 1);
  EXPECT_THAT(o.err, HasSubstr(P("nope.crt")));
  o = Ctl({"health", "--server", server, "--ca", P("no-ca.crt"), "--cert", P("alice.crt"), "--key", P("alice.key")});
  EXPECT_EQ(o.exit_code, 1);
  EXPECT_THAT(o.err, HasSubstr(P("no-ca.crt")));
  // A key that is not the certificate's is caught before any connection.
  ASSERT_EQ(Ctl({"pki", "issue", "--dir", dir_, "--name", "bob"}).exit_code, 0);
  o = Ctl({"models", "--server", server, "--ca", P("ca.crt"), "--cert", P("alice.crt"), "--key", P("bob.key")});
  EXPECT_EQ(o.exit_code, 1);
  EXPECT_THAT(o.err, HasSubstr("does not belong to the certificate"));
  // And settings missing altogether are named.
  o = Ctl({"models", "--server", server});
  EXPECT_EQ(o.exit_code, 1);
  EXPECT_THAT(o.err, HasSubstr("missing --ca, --cert, --key"));
}

TEST_F(PkiTest, ClientRefusesAGroupReadableKey) {
  ASSERT_EQ(::chmod(P("alice.key").c_str(), 0640), 0);
  CommandResult o = Ctl({"models", "--server", "127.0.0.1:" + std::to_string(UnusedPort()), "--ca", P("ca.crt"),
                         "--cert", P("alice.crt"), "--key", P("alice.key")});
  EXPECT_EQ(o.exit_code, 1);
  EXPECT_THAT(o.err, HasSubstr(P("alice.key")));
  EXPECT_THAT(o.err, HasSubstr("group or others"));
  EXPECT_THAT(o.err, HasSubstr("chmod 600"));
}

TEST_F(PkiTest, UnreachableServerExits4) {
  const std::string server = "127.0.0.1:" + std::to_string(UnusedPort());
  const std::vector<std::string> conn = {"--server", server,       "--ca",      P("ca.crt"), "--cert",
                                         P("alice.crt"), "--key", P("alice.key"), "--timeout", "3"};
  CommandResult o = Ctl(Args({"models"}, conn));
  EXPECT_EQ(o.exit_code, 4) << o.err;
  EXPECT_THAT(o.err, HasSubstr("airlockctl: ListModels: UNAVAILABLE: "));
  EXPECT_THAT(o.err, HasSubstr(server));
  o = Ctl(Args({"health"}, conn));
  EXPECT_EQ(o.exit_code, 4) << o.err;
  EXPECT_THAT(o.err, HasSubstr("airlockctl: Check: UNAVAILABLE: "));
  o = Ctl(Args({"generate", "--model", "m", "--prompt", "hi"}, conn));
  EXPECT_EQ(o.exit_code, 4) << o.err;
  EXPECT_THAT(o.err, HasSubstr("airlockctl: GenerateStream: UNAVAILABLE: "));
}

TEST_F(PkiTest, ProfileResolution) {
  // profiles.yaml sits in its own directory and names the PKI files relative to it.
  const std::string config = root_ + "/config";
  ASSERT_EQ(::mkdir(config.c_str(), 0700), 0);
  const std::string server = "127.0.0.1:" + std::to_string(UnusedPort());
  WriteFile(config + "/profiles.yaml",
            "default: lab\n"
            "profiles:\n"
            "  lab:\n"
            "    server: " + server + "\n"
            "    ca: ../pki/ca.crt\n"
            "    cert: ../pki/alice.crt\n"
            "    key: ../pki/missing.key\n"
            "  other:\n"
            "    server: " + server + "\n"
            "    ca: ../pki/other-ca.crt\n"
            "    cert: ../pki/alice.crt\n"
            "    key: ../pki/alice.key\n");
  // The default profile; its relative key path is resolved against the profile file's directory.
  CommandResult o = Ctl({"models"}, config);
  EXPECT_EQ(o.exit_code, 1);
  EXPECT_THAT(o.err, HasSubstr(P("missing.key")));
  // A flag overrides the profile's value: the call now gets as far as the (absent) server, which
  // also shows that the relative ca and cert paths were found.
  o = Ctl({"models", "--key", P("alice.key"), "--timeout", "3"}, config);
  EXPECT_EQ(o.exit_code, 4) << o.err;
  EXPECT_THAT(o.err, HasSubstr(server));
  // --profile and $AIRLOCK_PROFILE pick a profile; the flag wins over the environment.
  o = Ctl({"models", "--profile", "other"}, config);
  EXPECT_EQ(o.exit_code, 1);
  EXPECT_THAT(o.err, HasSubstr(P("other-ca.crt")));
  o = Ctl({"models"}, config, "other");
  EXPECT_EQ(o.exit_code, 1);
  EXPECT_THAT(o.err, HasSubstr(P("other-ca.crt")));
  o = Ctl({"models", "--profile", "lab"}, config, "other");
  EXPECT_THAT(o.err, HasSubstr(P("missing.key")));
  // Unknown profile: named, with the ones that exist.
  o = Ctl({"models", "--profile", "nope"}, config);
  EXPECT_EQ(o.exit_code, 1);
  EXPECT_THAT(o.err, HasSubstr("no profile 'nope'"));
  EXPECT_THAT(o.err, HasSubstr("lab, other"));
  // A profile named when there is no profile file at all.
  o = Ctl({"models", "--profile", "lab"});
  EXPECT_EQ(o.exit_code, 1);
  EXPECT_THAT(o.err, HasSubstr("does not exist"));
  // A misspelt key is refused rather than silently ignored.
  WriteFile(config + "/profiles.yaml", "profiles:\n  lab:\n    sever: x\n");
  o = Ctl({"models", "--profile", "lab"}, config);
  EXPECT_EQ(o.exit_code, 1);
  EXPECT_THAT(o.err, HasSubstr("unknown key 'sever'"));
}

TEST(ClientCommandTest, UsageErrorsExit1) {
  CommandResult o = Ctl({"generate", "--prompt", "x"});
  EXPECT_EQ(o.exit_code, 1);
  EXPECT_THAT(o.err, HasSubstr("--model"));
  o = Ctl({"pki"});
  EXPECT_EQ(o.exit_code, 1);
  o = Ctl({"models", "--timeout", "-1"});
  EXPECT_EQ(o.exit_code, 1);
  EXPECT_THAT(o.err, Not(HasSubstr("UNAVAILABLE")));
}

}  // namespace
}  // namespace airlock
