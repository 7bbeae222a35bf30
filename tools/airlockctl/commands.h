// Subcommand registration for airlockctl. Each Add*Command attaches a subcommand whose callback
// runs the command and records its exit code.
#pragma once

#include <CLI/CLI.hpp>

namespace airlock::ctl {

void AddRunCommand(CLI::App& app);     // airlockctl run, airlockctl devices
void AddModelCommands(CLI::App& app);  // airlockctl model inspect | synth, and the bundle commands:
void AddModelBundleCommands(CLI::App& model);  // airlockctl model keygen | pack | verify | import
// Daemon clients over mutual TLS: airlockctl generate | chat | models | tokenize | health
void AddClientCommands(CLI::App& app);
void AddPkiCommand(CLI::App& app);     // airlockctl pki init | issue | revoke | crl
// airlockctl audit tail | query | verify | export: online through the Admin API, and verify /
// export offline from a stopped daemon's state directory or an export file.
void AddAuditCommands(CLI::App& app);
// airlockctl quota show | list | set | reset: through the Admin API.
void AddQuotaCommands(CLI::App& app);
// airlockctl apikey create | list | revoke: through the Admin API.
void AddApiKeyCommands(CLI::App& app);

// Exit status of the command that ran (0 = success).
int ExitCode();
void SetExitCode(int code);

}  // namespace airlock::ctl
