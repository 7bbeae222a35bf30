// Shared test data lookup and readers for llama.cpp's reference formats.
#include "tests/support/test_data.h"

#include <sys/stat.h>
#include <unistd.h>

#include <cstdlib>
#include <fstream>
#include <sstream>
#include <stdexcept>

#include "absl/strings/numbers.h"
#include "absl/strings/str_split.h"

namespace airlock::testing {

std::string SharedDir() {
  if (const char* env = std::getenv("AIRLOCK_TEST_DATA"); env != nullptr && *env != '\0') return env;
  return std::string(AIRLOCK_SOURCE_DIR) + "/../shared";
}

std::string SharedPath(const std::string& relative) { return SharedDir() + "/" + relative; }

std::string SourcePath(const std::string& relative) { return std::string(AIRLOCK_SOURCE_DIR) + "/" + relative; }

bool RunningInCi() {
  const char* ci = std::getenv("CI");
  return ci != nullptr && std::string(ci) == "true";
}

std::string ReadFileOrDie(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw std::runtime_error("cannot read " + path);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

std::vector<nlohmann::json> ReadJsonLines(const std::string& path) {
  std::vector<nlohmann::json> out;
  std::ifstream in(path);
  if (!in) throw std::runtime_error("cannot read " + path);
  std::string line;
  while (std::getline(in, line)) {
    if (line.empty()) continue;
    out.push_back(nlohmann::json::parse(line));
  }
  return out;
}

std::vector<TokenizerCase> ReadTokenizerVectors(const std::string& inp_path,
                                                const std::string& out_path) {
  const std::string inp = ReadFileOrDie(inp_path);
  const std::string outp = ReadFileOrDie(out_path);
  const std::string sep = "\n__ggml_vocab_test__\n";
  std::vector<std::string> texts;
  size_t pos = 0;
  while (pos < inp.size()) {
    size_t next = inp.find(sep, pos);
    if (next == std::string::npos) break;
    texts.push_back(inp.substr(pos, next - pos));
    pos = next + sep.size();
  }
  std::vector<std::string> lines = absl::StrSplit(outp, '\n');
  std::vector<TokenizerCase> cases;
  for (size_t i = 0; i < texts.size(); ++i) {
    TokenizerCase c;
    c.text = texts[i];
    if (i < lines.size()) {
      for (absl::string_view piece : absl::StrSplit(lines[i], ' ', absl::SkipEmpty())) {
        int32_t id = 0;
        if (!absl::SimpleAtoi(piece, &id)) throw std::runtime_error("bad token id in " + out_path);
        c.expected.push_back(id);
      }
    }
    cases.push_back(std::move(c));
  }
  return cases;
}

std::string MakeTempDir() {
  std::string templ = "/tmp/airlock-test-XXXXXX";
  if (const char* tmp = std::getenv("TMPDIR"); tmp != nullptr && *tmp != '\0') {
    templ = std::string(tmp) + "/airlock-test-XXXXXX";
  }
  char* made = mkdtemp(templ.data());
  if (made == nullptr) throw std::runtime_error("mkdtemp failed");
  return templ;
}

namespace internal {
bool FileExists(const std::string& path) {
  struct stat st {};
  return ::stat(path.c_str(), &st) == 0;
}
}  // namespace internal

}  // namespace airlock::testing
