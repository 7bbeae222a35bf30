// airlockctl: Airlock's command-line client and offline tools. Each subcommand lives in its own
// file; main() only builds the command tree and dispatches.
#include <cstdio>

#include <CLI/CLI.hpp>

#include "tools/airlockctl/commands.h"

int main(int argc, char** argv) {
  CLI::App app{"airlockctl: run, inspect and build models for Airlock"};
  app.require_subcommand(1);
  // Offline engine commands: no daemon involved.
  airlock::ctl::AddRunCommand(app);
  airlock::ctl::AddModelCommands(app);
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e);
  }
  return airlock::ctl::ExitCode();
}
