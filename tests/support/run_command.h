// Running a command to completion in tests: argv without a shell, a deadline, stdout and stderr
// captured separately. Environment changes go through the argv: {"env", "-u", "X", "Y=1", cmd, ...}.
#pragma once

#include <string>
#include <vector>

#include "absl/time/time.h"

namespace airlock::testing {

struct CommandResult {
  int exit_code = -1;  // 128+signal when killed; -1 when it could not start
  std::string out;
  std::string err;  // the spawn error when it could not start
};

// Runs argv (argv[0] looked up in $PATH, environment inherited) with `stdin_text` as its standard
// input, and SIGKILLs it once `within` has passed. Blocks the calling thread until the command has
// exited; may be called from any thread.
CommandResult RunCommand(const std::vector<std::string>& argv, absl::Duration within = absl::Seconds(120),
                         const std::string& stdin_text = "");

#ifdef AIRLOCKCTL_PATH
// Runs the airlockctl built with this tree (AIRLOCKCTL_PATH, which the test target defines) with
// `args`.
inline CommandResult RunAirlockctl(std::vector<std::string> args) {
  args.insert(args.begin(), AIRLOCKCTL_PATH);
  return RunCommand(args);
}
#endif

}  // namespace airlock::testing
