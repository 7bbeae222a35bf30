// The audit witness file and the checkpoint lines it shares with exports.
#include "audit/witness.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <fstream>
#include <sstream>

#include <nlohmann/json.hpp>

#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/time/time.h"
#include "audit/audit_record.h"
#include "inference/base/status.h"

namespace airlock::audit {
namespace {

absl::Status Errno(std::string_view what, const std::string& path) {
  return absl::UnavailableError(absl::StrCat("audit witness: ", ToAbsl(what), " ", path, ": ", std::strerror(errno)));
}

// write(2) all of `data`, retrying on EINTR and short writes.
bool WriteAll(int fd, std::string_view data) {
  while (!data.empty()) {
    const ssize_t n = ::write(fd, data.data(), data.size());
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return false;
    data.remove_prefix(static_cast<size_t>(n));
  }
  return true;
}

}  // namespace

std::string CheckpointJsonLine(const Checkpoint& c, std::string_view type) {
  const nlohmann::json j = {
      {"type", std::string(type)},
      {"sequence", c.sequence},
      {"chain_hash", HexLower(c.chain_hash)},
      {"time", absl::FormatTime("%Y-%m-%d%ET%H:%M:%E6SZ", absl::FromUnixMicros(c.time_unix_micros),
                                absl::UTCTimeZone())},
      {"key_id", c.key_id},
      {"encoded", absl::Base64Escape(EncodeCheckpoint(c))}};
  return j.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
}

absl::StatusOr<std::vector<Checkpoint>> ParseCheckpointLines(std::string_view text, std::string_view source) {
  std::vector<Checkpoint> out;
  int number = 0;
  for (absl::string_view line : absl::StrSplit(ToAbsl(text), '\n')) {
    ++number;
    if (line.find_first_not_of(" \t\r") == std::string_view::npos) continue;
    const auto where = [&] { return absl::StrCat(ToAbsl(source), ":", number, ": "); };
    const nlohmann::json j = nlohmann::json::parse(line.begin(), line.end(), nullptr, /*allow_exceptions=*/false);
    if (!j.is_object()) return absl::InvalidArgumentError(absl::StrCat(where(), "not a JSON object"));
    if (!j.contains("encoded")) continue;  // a record line of an export
    if (!j["encoded"].is_string()) return absl::InvalidArgumentError(absl::StrCat(where(), "\"encoded\" is not a string"));
    std::string bytes;
    if (!absl::Base64Unescape(j["encoded"].get<std::string>(), &bytes)) {
      return absl::InvalidArgumentError(absl::StrCat(where(), "\"encoded\" is not base64"));
    }
    absl::StatusOr<Checkpoint> checkpoint = DecodeCheckpoint(bytes);
    if (!checkpoint.ok()) return absl::InvalidArgumentError(absl::StrCat(where(), checkpoint.status().message()));
    out.push_back(*std::move(checkpoint));
  }
  return out;
}

absl::Status WriteWitness(const std::string& path, const Checkpoint& checkpoint) {
  const std::string temporary = path + ".tmp";
  const std::string line = CheckpointJsonLine(checkpoint) + "\n";
  const int fd = ::open(temporary.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW, 0600);
  if (fd < 0) return Errno("cannot create", temporary);
  const bool written = WriteAll(fd, line) && ::fsync(fd) == 0;
  const int saved = errno;
  ::close(fd);
  if (!written) {
    errno = saved;
    absl::Status status = Errno("cannot write", temporary);
    ::unlink(temporary.c_str());
    return status;
  }
  if (::rename(temporary.c_str(), path.c_str()) != 0) return Errno("cannot rename onto", path);
  // The rename is durable only once the directory is synced.
  const size_t slash = path.find_last_of('/');
  const std::string dir = slash == std::string::npos ? "." : (slash == 0 ? "/" : path.substr(0, slash));
  const int dir_fd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (dir_fd < 0) return Errno("cannot open the directory of", path);
  const bool synced = ::fsync(dir_fd) == 0;
  ::close(dir_fd);
  if (!synced) return Errno("cannot sync the directory of", path);
  return absl::OkStatus();
}

absl::StatusOr<std::optional<Checkpoint>> ReadWitness(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    if (errno == ENOENT) return std::optional<Checkpoint>();
    return Errno("cannot read", path);
  }
  std::ostringstream text;
  text << in.rdbuf();
  if (text.str().size() > 4096) {
    return absl::DataLossError(absl::StrCat("audit witness ", path, ": ", text.str().size(),
                                            " bytes is not a witness (one checkpoint line)"));
  }
  absl::StatusOr<std::vector<Checkpoint>> checkpoints = ParseCheckpointLines(text.str(), path);
  if (!checkpoints.ok()) return absl::DataLossError(absl::StrCat("audit witness ", checkpoints.status().message()));
  if (checkpoints->size() != 1) {
    return absl::DataLossError(
        absl::StrCat("audit witness ", path, ": holds ", checkpoints->size(), " checkpoints; expected exactly one"));
  }
  return std::optional<Checkpoint>(std::move(checkpoints->front()));
}

}  // namespace airlock::audit
