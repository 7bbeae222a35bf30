// Who may change the files that decide whom the daemon trusts (CA bundles, CRLs, certificates).
//
// A CA bundle or CRL that another local user can write lets that user add a CA of their own (and
// then any identity) or un-revoke a certificate, so such files are refused, with the mode or owner
// that made them unsafe.
//
// Thread-safety: free functions, safe from any thread.
#pragma once

#include <string>
#include "absl/strings/string_view.h"

#include "absl/status/status.h"

namespace airlock::auth {

// OK when `path` is a regular file that only root or the daemon's own user can change:
//  - the file is owned by root or the effective uid, and is not writable by group or others;
//  - every directory from its parent up to "/", along the path as given (made absolute) and along
//    its resolved path (symlinks followed), is owned by root or the effective uid and is not
//    writable by group or others, unless it has the sticky bit (as /tmp: others may add entries
//    there but cannot rename or delete a file they do not own).
// PERMISSION_DENIED otherwise, naming `what`, the file or directory, and its mode or owner;
// NOT_FOUND (or the errno's code) when it cannot be examined.
absl::Status CheckTrustedFile(absl::string_view what, const std::string& path);

}  // namespace airlock::auth
