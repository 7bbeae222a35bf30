// airlockctl: Airlock's command-line client and offline tools. Each subcommand lives in its own
// file; main() only builds the command tree and dispatches.
#include <cstdio>

#include <CLI/CLI.hpp>

#include "tools/airlockctl/commands.h"

int main(int argc, char** argv) {
  CLI::App app{"airlockctl: Airlock's client (generate, chat, ...), development PKI and offline model tools"};
  app.require_subcommand(1);
  // Offline engine commands: no daemon involved.
  airlock::ctl::AddRunCommand(app);
  airlock::ctl::AddModelCommands(app);
  // Clients of airlockd (mutual TLS).
  airlock::ctl::AddClientCommands(app);
  // Offline administration.
  airlock::ctl::AddPkiCommand(app);
  airlock::ctl::AddAuditCommands(app);
  airlock::ctl::AddQuotaCommands(app);
  airlock::ctl::AddApiKeyCommands(app);
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    // Usage errors exit 1 (docs/airlockctl.md); --help and --version still exit 0.
    return app.exit(e) == 0 ? 0 : 1;
  }
  return airlock::ctl::ExitCode();
}
