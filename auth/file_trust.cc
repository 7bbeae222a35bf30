// Trust-anchor file checks: the file and every directory above it changeable only by root or us.
#include "auth/file_trust.h"

#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <climits>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "inference/base/status.h"

namespace airlock::auth {
namespace {

std::string Mode(mode_t mode) { return absl::StrFormat("%04o", mode & 07777); }

absl::Status StatError(absl::string_view what, const std::string& path, int error) {
  const std::string message = absl::StrCat(what, " ", path, ": ", std::strerror(error));
  return error == ENOENT ? absl::NotFoundError(message) : absl::PermissionDeniedError(message);
}

bool TrustedOwner(uid_t uid) { return uid == 0 || uid == ::geteuid(); }

// The directories above `path` (absolute), nearest first, "/" last.
std::vector<std::string> Ancestors(const std::string& path) {
  std::vector<std::string> dirs;
  std::string current = path;
  while (true) {
    const size_t slash = current.find_last_of('/');
    if (slash == std::string::npos) break;
    current = slash == 0 ? "/" : current.substr(0, slash);
    dirs.push_back(current);
    if (current == "/") break;
  }
  return dirs;
}

absl::Status CheckDirectories(absl::string_view what, const std::string& file, const std::string& absolute) {
  for (const std::string& dir : Ancestors(absolute)) {
    struct stat st {};
    if (::stat(dir.c_str(), &st) != 0) return StatError(absl::StrCat("directory of ", what), dir, errno);
    if (!TrustedOwner(st.st_uid)) {
      return absl::PermissionDeniedError(absl::StrCat(
          "directory ", dir, " above ", what, " ", file, " is owned by uid ", st.st_uid,
          ": it must be owned by root or by uid ", ::geteuid(), " that airlockd runs as, or that user could replace ",
          what));
    }
    if ((st.st_mode & (S_IWGRP | S_IWOTH)) != 0 && (st.st_mode & S_ISVTX) == 0) {
      return absl::PermissionDeniedError(absl::StrCat(
          "directory ", dir, " above ", what, " ", file, " has mode ", Mode(st.st_mode),
          ": it must not be writable by group or others, or they could replace ", what, " (chmod go-w ", dir, ")"));
    }
  }
  return absl::OkStatus();
}

}  // namespace

absl::Status CheckTrustedFile(absl::string_view what, const std::string& path) {
  struct stat st {};
  if (::stat(path.c_str(), &st) != 0) return StatError(what, path, errno);
  if (!S_ISREG(st.st_mode)) return absl::FailedPreconditionError(absl::StrCat(what, " ", path, " is not a regular file"));
  if (!TrustedOwner(st.st_uid)) {
    return absl::PermissionDeniedError(absl::StrCat(what, " ", path, " is owned by uid ", st.st_uid,
                                                    ": it must be owned by root or by uid ", ::geteuid(),
                                                    " that airlockd runs as"));
  }
  if ((st.st_mode & (S_IWGRP | S_IWOTH)) != 0) {
    return absl::PermissionDeniedError(absl::StrCat(what, " ", path, " has mode ", Mode(st.st_mode),
                                                    ": it must not be writable by group or others (chmod go-w ",
                                                    path, ")"));
  }
  std::string absolute = path;
  if (absolute.empty() || absolute.front() != '/') {
    char cwd[PATH_MAX];
    if (::getcwd(cwd, sizeof(cwd)) == nullptr) return StatError(what, path, errno);
    absolute = absl::StrCat(cwd, "/", path);
  }
  // Along the path as written: a directory holding a symlink on the way can swap the symlink.
  AIRLOCK_RETURN_IF_ERROR(CheckDirectories(what, path, absolute));
  // Along where it really is.
  char* resolved = ::realpath(path.c_str(), nullptr);
  if (resolved == nullptr) return StatError(what, path, errno);
  const std::string real(resolved);
  std::free(resolved);
  if (real == absolute) return absl::OkStatus();
  return CheckDirectories(what, path, real);
}

}  // namespace airlock::auth
