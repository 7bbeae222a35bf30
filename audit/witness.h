// The audit witness: the newest signed checkpoint, also kept outside the state store (a file on a
// path of the site's choosing and a log line a SIEM collects), so that a store rolled back,
// truncated or rewritten below it by someone with write access to the state directory — but not
// the signing key — is caught at start and by `airlockctl audit verify --anchor`.
//
// The file holds one JSON line, the same as a checkpoint line of an export (docs/audit.md):
// {"type":"checkpoint","sequence":…,"chain_hash":…,"time":…,"key_id":…,"encoded":…}; only
// "encoded" (the canonical checkpoint encoding, base64) is trusted, and it is signed.
//
// Thread-safety: free functions without shared state; one writer per file (the log's writer thread).
#pragma once

#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "audit/checkpoint.h"

namespace airlock::audit {

// One export/witness line for `checkpoint`; `type` is "checkpoint" or "anchor".
std::string CheckpointJsonLine(const Checkpoint& checkpoint, std::string_view type = "checkpoint");

// Every checkpoint in `text`: lines that are JSON objects with an "encoded" checkpoint (export
// checkpoint and anchor lines, a witness file); record lines and blank lines are skipped.
// INVALID_ARGUMENT naming `source` and the line for a line that is not JSON or whose "encoded" is
// not base64 or does not decode. Signatures are not checked here.
absl::StatusOr<std::vector<Checkpoint>> ParseCheckpointLines(std::string_view text, std::string_view source);

// Replaces `path` atomically (temporary file, fsync, rename, fsync of the directory), mode 0600.
// UNAVAILABLE naming the path and the error.
absl::Status WriteWitness(const std::string& path, const Checkpoint& checkpoint);

// The checkpoint in the witness file; nullopt when the file does not exist. DATA_LOSS when it
// exists but does not hold exactly one checkpoint line; UNAVAILABLE when it cannot be read.
absl::StatusOr<std::optional<Checkpoint>> ReadWitness(const std::string& path);

}  // namespace airlock::audit
