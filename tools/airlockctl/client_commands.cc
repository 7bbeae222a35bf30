// The daemon client commands: `airlockctl generate`, `chat`, `models`, `tokenize` and `health`,
// over mutual TLS (client_connection.h). Text streams to stdout as it arrives; diagnostics and
// usage go to stderr so that stdout stays the model's output.
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <cstdio>
#include <fstream>
#include <iostream>
#include <memory>
#include <sstream>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "absl/strings/str_format.h"
#include "airlock/v1/inference.grpc.pb.h"
#include "auth/dev_pki.h"
#include "grpc/health/v1/health.grpc.pb.h"
#include "tools/airlockctl/client_connection.h"
#include "tools/airlockctl/commands.h"
#include "tools/airlockctl/sampling_flags.h"

namespace airlock::ctl {
namespace {

using Json = nlohmann::json;

// Model output is valid UTF-8 by the API's contract; replace rather than throw if it ever is not.
std::string Dump(const Json& j) { return j.dump(-1, ' ', false, Json::error_handler_t::replace); }

// Reads all of stdin; one trailing newline is dropped because `echo` and terminals add one.
std::string ReadStdin(const char* what) {
  if (isatty(STDIN_FILENO)) {
    std::fprintf(stderr, "airlockctl: reading the %s from stdin; end it with Ctrl-D\n", what);
  }
  std::ostringstream ss;
  ss << std::cin.rdbuf();
  std::string s = ss.str();
  if (!s.empty() && s.back() == '\n') s.pop_back();
  if (!s.empty() && s.back() == '\r') s.pop_back();
  return s;
}

// "STOP_REASON_MAX_TOKENS" -> "max_tokens".
std::string StopReasonText(v1::StopReason reason) {
  std::string name = v1::StopReason_Name(reason);
  const std::string prefix = "STOP_REASON_";
  if (name.rfind(prefix, 0) == 0) name = name.substr(prefix.size());
  std::transform(name.begin(), name.end(), name.begin(), [](unsigned char c) { return std::tolower(c); });
  return name;
}

double TokensPerSecond(const v1::GenerateResponse& r) {
  const double s = r.timings().generation_seconds();
  return s > 0 ? r.usage().completion_tokens() / s : 0.0;
}

Json ResponseJson(const v1::GenerateResponse& r) {
  Json j;
  j["request_id"] = r.request_id();
  j["model"] = r.model();
  j["text"] = r.text();
  j["token_ids"] = std::vector<int32_t>(r.token_ids().begin(), r.token_ids().end());
  j["usage"] = {{"prompt_tokens", r.usage().prompt_tokens()},
                {"completion_tokens", r.usage().completion_tokens()},
                {"total_tokens", r.usage().total_tokens()}};
  j["stop_reason"] = StopReasonText(r.stop_reason());
  j["timings"] = {{"queue_seconds", r.timings().queue_seconds()},
                  {"prompt_seconds", r.timings().prompt_seconds()},
                  {"generation_seconds", r.timings().generation_seconds()},
                  {"time_to_first_token_seconds", r.timings().time_to_first_token_seconds()}};
  j["tokens_per_second"] = TokensPerSecond(r);
  return j;
}

void PrintUsage(const v1::GenerateResponse& r) {
  std::fprintf(stderr, "[prompt %u tokens, completion %u tokens, stop: %s, %.1f tokens/s, request %s]\n",
               r.usage().prompt_tokens(), r.usage().completion_tokens(), StopReasonText(r.stop_reason()).c_str(),
               TokensPerSecond(r), r.request_id().c_str());
}

// Flags shared by generate and chat.
struct GenerationFlags {
  ConnectionFlags conn;
  std::string model;
  int32_t max_tokens = 0;
  CLI::Option* max_tokens_option = nullptr;
  inference::SamplingParams sampling;
  SamplingOptions sampling_options;
  std::vector<std::string> stop;
  bool no_stream = false;
  bool json = false;
  std::string json_schema_file;  // structured output: response_format TYPE_JSON_SCHEMA
  bool json_object = false;      // structured output: response_format TYPE_JSON_OBJECT
};

void AddGenerationFlags(CLI::App& cmd, GenerationFlags& f) {
  cmd.add_option("--model,-m", f.model, "Model name, as configured in airlockd")->required();
  f.max_tokens_option =
      // The daemon checks the range against its own limit and names the field in its error.
      cmd.add_option("--max-tokens,-n", f.max_tokens, "Maximum tokens to generate (default: the daemon's)");
  f.sampling_options = AddSamplingFlags(cmd, f.sampling, SamplingDefaults::kDaemon);
  cmd.add_option("--stop", f.stop, "Stop string (repeatable, at most 8)");
  cmd.add_flag("--no-stream", f.no_stream, "Wait for the whole reply instead of streaming it");
  cmd.add_flag("--json", f.json, "Print one JSON object (text, token ids, usage, timings) instead of text");
  CLI::Option* schema =
      cmd.add_option("--json-schema", f.json_schema_file, "Structured output: an instance of the JSON schema in this file")
          ->check(CLI::ExistingFile);
  cmd.add_flag("--json-object", f.json_object, "Structured output: a JSON object")->excludes(schema);
  AddConnectionFlags(cmd, f.conn);
}

template <typename Request>
void FillGenerationFields(const GenerationFlags& f, Request* req) {
  req->set_model(f.model);
  if (f.max_tokens_option->count() > 0) req->set_max_tokens(f.max_tokens);
  SamplingToProto(f.sampling_options, f.sampling, req->mutable_sampling());
  for (const std::string& s : f.stop) req->add_stop(s);
  if (f.json_object) req->mutable_response_format()->set_type(v1::ResponseFormat::TYPE_JSON_OBJECT);
  if (!f.json_schema_file.empty()) {
    // An unreadable file leaves the schema empty, which the daemon refuses by name.
    req->mutable_response_format()->set_type(v1::ResponseFormat::TYPE_JSON_SCHEMA);
    req->mutable_response_format()->set_json_schema(auth::ReadTextFile(f.json_schema_file).value_or(""));
  }
}

// One generation call, streamed or not. Prints text (or the JSON object) and usage; the whole
// response lands in `out` for chat's history.
class Generation {
 public:
  Generation(const GenerationFlags& flags, std::shared_ptr<grpc::Channel> channel, std::string server)
      : flags_(flags), stub_(v1::Inference::NewStub(channel)), server_(std::move(server)) {}

  template <typename Request>
  int Run(const Request& req, const char* unary_method, const char* stream_method, v1::GenerateResponse* out) {
    grpc::ClientContext ctx;
    ctx.set_deadline(CallDeadline(flags_.conn, kGenerationTimeoutSeconds));
    ScopedCancelOnInterrupt cancel_on_interrupt(&ctx);
    out->Clear();
    if (flags_.no_stream) {
      grpc::Status status = Unary(&ctx, req, out);
      if (!status.ok()) return ReportRpcError(unary_method, status, server_);
      if (!flags_.json) {
        std::fwrite(out->text().data(), 1, out->text().size(), stdout);
        EndText(out->text());
      }
    } else {
      std::unique_ptr<grpc::ClientReader<v1::GenerateStreamResponse>> reader = Stream(&ctx, req);
      v1::GenerateStreamResponse event;
      bool done = false;
      while (reader->Read(&event)) {
        if (event.has_piece()) {
          const v1::TextPiece& piece = event.piece();
          out->mutable_text()->append(piece.text());
          for (int32_t id : piece.token_ids()) out->add_token_ids(id);
          if (!flags_.json && !piece.text().empty()) {
            std::fwrite(piece.text().data(), 1, piece.text().size(), stdout);
            std::fflush(stdout);
          }
        } else if (event.has_done()) {
          const v1::Completion& c = event.done();
          out->set_request_id(c.request_id());
          out->set_model(c.model());
          *out->mutable_usage() = c.usage();
          out->set_stop_reason(c.stop_reason());
          *out->mutable_timings() = c.timings();
          done = true;
        }
      }
      grpc::Status status = reader->Finish();
      if (!flags_.json) EndText(out->text());
      if (!status.ok()) return ReportRpcError(stream_method, status, server_);
      if (!done) {
        std::fprintf(stderr, "airlockctl: %s: the stream ended without its completion message\n", stream_method);
        return kExitOtherRpcError;
      }
    }
    if (flags_.json) {
      std::cout << Dump(ResponseJson(*out)) << std::endl;
    } else {
      PrintUsage(*out);
    }
    return kExitOk;
  }

 private:
  // Ends the streamed text with a newline unless it has one, so the usage line and the shell
  // prompt start on their own line.
  static void EndText(const std::string& text) {
    if (!text.empty() && text.back() != '\n') std::fputc('\n', stdout);
    std::fflush(stdout);
  }

  grpc::Status Unary(grpc::ClientContext* ctx, const v1::GenerateRequest& req, v1::GenerateResponse* out) {
    return stub_->Generate(ctx, req, out);
  }
  grpc::Status Unary(grpc::ClientContext* ctx, const v1::ChatRequest& req, v1::GenerateResponse* out) {
    return stub_->Chat(ctx, req, out);
  }
  std::unique_ptr<grpc::ClientReader<v1::GenerateStreamResponse>> Stream(grpc::ClientContext* ctx,
                                                                         const v1::GenerateRequest& req) {
    return stub_->GenerateStream(ctx, req);
  }
  std::unique_ptr<grpc::ClientReader<v1::GenerateStreamResponse>> Stream(grpc::ClientContext* ctx,
                                                                         const v1::ChatRequest& req) {
    return stub_->ChatStream(ctx, req);
  }

  const GenerationFlags& flags_;
  std::unique_ptr<v1::Inference::Stub> stub_;
  std::string server_;
};

// ---- generate ----

struct GenerateFlags {
  GenerationFlags gen;
  std::string prompt;
};

int RunGenerate(const GenerateFlags& f) {
  std::string server;
  std::shared_ptr<grpc::Channel> channel = ConnectOrReport(f.gen.conn, &server);
  if (channel == nullptr) return kExitLocalError;
  v1::GenerateRequest req;
  FillGenerationFields(f.gen, &req);
  req.set_prompt(f.prompt.empty() || f.prompt == "-" ? ReadStdin("prompt") : f.prompt);
  if (req.prompt().empty()) {
    std::fprintf(stderr, "airlockctl generate: the prompt is empty\n");
    return kExitLocalError;
  }
  Generation generation(f.gen, channel, server);
  v1::GenerateResponse response;
  return generation.Run(req, "Generate", "GenerateStream", &response);
}

// ---- chat ----

struct ChatFlags {
  GenerationFlags gen;
  std::string system;
  std::string message;
  std::string messages_file;
  bool interactive = false;
};

absl::Status LoadMessages(const std::string& path, std::vector<v1::ChatMessage>* out) {
  std::ifstream in(path);
  if (!in) return absl::NotFoundError(absl::StrFormat("--messages %s: cannot open it", path));
  Json j;
  try {
    j = Json::parse(in);
  } catch (const Json::exception& e) {
    return absl::InvalidArgumentError(absl::StrFormat("--messages %s: not JSON: %s", path, e.what()));
  }
  if (!j.is_array()) {
    return absl::InvalidArgumentError(
        absl::StrFormat("--messages %s: expected a JSON array of {\"role\", \"content\"} objects", path));
  }
  for (size_t i = 0; i < j.size(); ++i) {
    const Json& m = j[i];
    if (!m.is_object() || !m.contains("role") || !m["role"].is_string() || !m.contains("content") ||
        !m["content"].is_string()) {
      return absl::InvalidArgumentError(absl::StrFormat(
          "--messages %s: element %d must be an object with string \"role\" and \"content\"", path, i));
    }
    v1::ChatMessage msg;
    msg.set_role(m["role"].get<std::string>());
    msg.set_content(m["content"].get<std::string>());
    out->push_back(std::move(msg));
  }
  return absl::OkStatus();
}

v1::ChatMessage Message(const std::string& role, const std::string& content) {
  v1::ChatMessage m;
  m.set_role(role);
  m.set_content(content);
  return m;
}

int RunChat(const ChatFlags& f) {
  std::vector<v1::ChatMessage> history;
  if (!f.messages_file.empty()) {
    absl::Status s = LoadMessages(f.messages_file, &history);
    if (!s.ok()) {
      std::fprintf(stderr, "airlockctl chat: %s\n", std::string(s.message()).c_str());
      return kExitLocalError;
    }
  }
  if (!f.system.empty()) {
    if (!history.empty() && history.front().role() == "system") {
      std::fprintf(stderr, "airlockctl chat: --system given but %s already starts with a system message\n",
                   f.messages_file.c_str());
      return kExitLocalError;
    }
    history.insert(history.begin(), Message("system", f.system));
  }
  std::string server;
  std::shared_ptr<grpc::Channel> channel = ConnectOrReport(f.gen.conn, &server);
  if (channel == nullptr) return kExitLocalError;
  if (!f.message.empty() && f.message != "-") {
    history.push_back(Message("user", f.message));
  } else if (!f.interactive && (f.message == "-" || f.messages_file.empty())) {
    // One turn with no --message: the user's message is stdin (unless --messages holds the turn).
    const std::string text = ReadStdin("message");
    if (text.empty()) {
      std::fprintf(stderr, "airlockctl chat: the message is empty\n");
      return kExitLocalError;
    }
    history.push_back(Message("user", text));
  }
  Generation generation(f.gen, channel, server);

  // Runs one turn on `history`; on success the reply joins the history.
  auto turn = [&]() {
    v1::ChatRequest req;
    FillGenerationFields(f.gen, &req);
    for (const v1::ChatMessage& m : history) *req.add_messages() = m;
    v1::GenerateResponse response;
    const int code = generation.Run(req, "Chat", "ChatStream", &response);
    if (code == kExitOk) history.push_back(Message("assistant", response.text()));
    return code;
  };

  if (!f.interactive) {
    if (history.empty() || history.back().role() != "user") {
      std::fprintf(stderr, "airlockctl chat: nothing to answer: the conversation must end with a user message\n");
      return kExitLocalError;
    }
    return turn();
  }

  // REPL: each stdin line is a user turn; the history grows until EOF. A failed turn is reported
  // and dropped, so one rejected message does not end the session.
  int code = kExitOk;
  if (!history.empty() && history.back().role() == "user") {
    code = turn();
    if (code == kExitInterrupted) return code;
    if (code != kExitOk) history.pop_back();
  }
  const bool tty = isatty(STDIN_FILENO);
  std::string line;
  for (;;) {
    if (tty) std::fputs("> ", stderr);
    if (!std::getline(std::cin, line)) break;
    if (!line.empty() && line.back() == '\r') line.pop_back();
    if (line.empty()) continue;
    history.push_back(Message("user", line));
    code = turn();
    if (code == kExitInterrupted) return code;
    if (code != kExitOk) history.pop_back();
  }
  if (tty) std::fputc('\n', stderr);
  return code;
}

// ---- models ----

struct ModelsFlags {
  ConnectionFlags conn;
  bool json = false;
};

std::string HumanCount(uint64_t n) {
  if (n >= 1000000000ull) return absl::StrFormat("%.1fB", n / 1e9);
  if (n >= 1000000ull) return absl::StrFormat("%.1fM", n / 1e6);
  if (n >= 1000ull) return absl::StrFormat("%.1fK", n / 1e3);
  return std::to_string(n);
}

int RunModels(const ModelsFlags& f) {
  std::string server;
  std::shared_ptr<grpc::Channel> channel = ConnectOrReport(f.conn, &server);
  if (channel == nullptr) return kExitLocalError;
  auto stub = v1::Inference::NewStub(channel);
  grpc::ClientContext ctx;
  ctx.set_deadline(CallDeadline(f.conn, kShortTimeoutSeconds));
  ScopedCancelOnInterrupt cancel_on_interrupt(&ctx);
  v1::ListModelsResponse resp;
  grpc::Status status = stub->ListModels(&ctx, v1::ListModelsRequest(), &resp);
  if (!status.ok()) return ReportRpcError("ListModels", status, server);
  if (f.json) {
    Json models = Json::array();
    for (const v1::ModelInfo& m : resp.models()) {
      models.push_back({{"name", m.name()},
                        {"architecture", m.architecture()},
                        {"context_length", m.context_length()},
                        {"parameters", m.parameters()},
                        {"weight_type", m.weight_type()},
                        {"chat_template", m.chat_template()},
                        {"vocabulary_size", m.vocabulary_size()},
                        {"device", m.device()},
                        {"unavailable", m.unavailable()}});
    }
    std::cout << Dump(Json{{"models", models}}) << std::endl;
    return kExitOk;
  }
  if (resp.models().empty()) {
    std::fprintf(stderr, "airlockctl: no models (none configured, or none that your roles grant)\n");
    return kExitOk;
  }
  size_t name_w = 4, arch_w = 12, weights_w = 7;
  for (const v1::ModelInfo& m : resp.models()) {
    name_w = std::max(name_w, m.name().size());
    arch_w = std::max(arch_w, m.architecture().size());
    weights_w = std::max(weights_w, m.weight_type().size());
  }
  const int nw = static_cast<int>(name_w), aw = static_cast<int>(arch_w), ww = static_cast<int>(weights_w);
  size_t chat_w = 13;
  for (const v1::ModelInfo& m : resp.models()) chat_w = std::max(chat_w, m.chat_template().empty() ? 11 : m.chat_template().size());
  const int cw = static_cast<int>(chat_w);
  std::printf("%-*s  %-*s  %7s  %10s  %-*s  %-*s  %s\n", nw, "NAME", aw, "ARCHITECTURE", "CONTEXT", "PARAMETERS", ww,
              "WEIGHTS", cw, "CHAT TEMPLATE", "DEVICE");
  for (const v1::ModelInfo& m : resp.models()) {
    std::printf("%-*s  %-*s  %7u  %10s  %-*s  %-*s  %s\n", nw, m.name().c_str(), aw, m.architecture().c_str(),
                m.context_length(), HumanCount(m.parameters()).c_str(), ww, m.weight_type().c_str(), cw,
                m.chat_template().empty() ? "- (no chat)" : m.chat_template().c_str(),
                m.device().empty() ? "cpu" : m.device().c_str());
  }
  for (const v1::ModelInfo& m : resp.models()) {
    if (!m.unavailable().empty()) std::printf("%s is unavailable: %s\n", m.name().c_str(), m.unavailable().c_str());
  }
  return kExitOk;
}

// ---- tokenize ----

struct TokenizeFlags {
  ConnectionFlags conn;
  std::string model;
  std::string text;
  bool add_special = false;
  bool parse_special = false;
  bool json = false;
};

int RunTokenize(const TokenizeFlags& f) {
  std::string server;
  std::shared_ptr<grpc::Channel> channel = ConnectOrReport(f.conn, &server);
  if (channel == nullptr) return kExitLocalError;
  v1::TokenizeRequest req;
  req.set_model(f.model);
  req.set_text(f.text.empty() || f.text == "-" ? ReadStdin("text") : f.text);
  req.set_add_special(f.add_special);
  req.set_parse_special(f.parse_special);
  auto stub = v1::Inference::NewStub(channel);
  grpc::ClientContext ctx;
  ctx.set_deadline(CallDeadline(f.conn, kShortTimeoutSeconds));
  ScopedCancelOnInterrupt cancel_on_interrupt(&ctx);
  v1::TokenizeResponse resp;
  grpc::Status status = stub->Tokenize(&ctx, req, &resp);
  if (!status.ok()) return ReportRpcError("Tokenize", status, server);
  if (f.json) {
    Json j;
    j["token_ids"] = std::vector<int32_t>(resp.token_ids().begin(), resp.token_ids().end());
    j["pieces"] = std::vector<std::string>(resp.pieces().begin(), resp.pieces().end());
    std::cout << Dump(j) << std::endl;
    return kExitOk;
  }
  // Pieces are shown JSON-quoted so that spaces, newlines and control characters stay visible.
  for (int i = 0; i < resp.token_ids_size(); ++i) {
    const std::string piece = i < resp.pieces_size() ? Dump(Json(resp.pieces(i))) : "";
    std::printf("%8d  %s\n", resp.token_ids(i), piece.c_str());
  }
  std::fprintf(stderr, "[%d tokens]\n", resp.token_ids_size());
  return kExitOk;
}

// ---- health ----

struct HealthFlags {
  ConnectionFlags conn;
  std::string service;
};

int RunHealth(const HealthFlags& f) {
  std::string server;
  std::shared_ptr<grpc::Channel> channel = ConnectOrReport(f.conn, &server);
  if (channel == nullptr) return kExitLocalError;
  auto stub = grpc::health::v1::Health::NewStub(channel);
  grpc::ClientContext ctx;
  ctx.set_deadline(CallDeadline(f.conn, kShortTimeoutSeconds));
  ScopedCancelOnInterrupt cancel_on_interrupt(&ctx);
  grpc::health::v1::HealthCheckRequest req;
  req.set_service(f.service);
  grpc::health::v1::HealthCheckResponse resp;
  grpc::Status status = stub->Check(&ctx, req, &resp);
  if (!status.ok()) return ReportRpcError("Check", status, server);
  std::printf("%s\n", grpc::health::v1::HealthCheckResponse::ServingStatus_Name(resp.status()).c_str());
  return resp.status() == grpc::health::v1::HealthCheckResponse::SERVING ? kExitOk : kExitUnavailable;
}

}  // namespace

void AddClientCommands(CLI::App& app) {
  {
    auto f = std::make_shared<GenerateFlags>();
    CLI::App* cmd = app.add_subcommand("generate", "Complete a raw prompt on airlockd (streamed)");
    cmd->add_option("--prompt,-p", f->prompt, "Prompt text; '-' or absent: read stdin");
    AddGenerationFlags(*cmd, f->gen);
    cmd->callback([f] { SetExitCode(RunGenerate(*f)); });
  }
  {
    auto f = std::make_shared<ChatFlags>();
    CLI::App* cmd = app.add_subcommand("chat", "Chat with a model on airlockd (one turn, or --interactive)");
    cmd->add_option("--system", f->system, "System message, placed first");
    cmd->add_option("--message", f->message, "User message; '-' or absent: read stdin");
    cmd->add_option("--messages", f->messages_file, "JSON file: an array of {\"role\", \"content\"} (the history)")
        ->check(CLI::ExistingFile);
    cmd->add_flag("--interactive,-i", f->interactive,
                  "Read one user message per stdin line until EOF, keeping the history");
    AddGenerationFlags(*cmd, f->gen);
    cmd->callback([f] { SetExitCode(RunChat(*f)); });
  }
  {
    auto f = std::make_shared<ModelsFlags>();
    CLI::App* cmd = app.add_subcommand("models", "List the models airlockd serves to you");
    cmd->add_flag("--json", f->json, "Print JSON instead of a table");
    AddConnectionFlags(*cmd, f->conn);
    cmd->callback([f] { SetExitCode(RunModels(*f)); });
  }
  {
    auto f = std::make_shared<TokenizeFlags>();
    CLI::App* cmd = app.add_subcommand("tokenize", "Split text into a model's tokens on airlockd");
    cmd->add_option("--model,-m", f->model, "Model name")->required();
    cmd->add_option("--text", f->text, "Text; '-' or absent: read stdin");
    cmd->add_flag("--add-special", f->add_special, "Add BOS/EOS as the model does");
    cmd->add_flag("--parse-special", f->parse_special, "Read control tokens spelled in the text as tokens");
    cmd->add_flag("--json", f->json, "Print JSON instead of one token per line");
    AddConnectionFlags(*cmd, f->conn);
    cmd->callback([f] { SetExitCode(RunTokenize(*f)); });
  }
  {
    auto f = std::make_shared<HealthFlags>();
    CLI::App* cmd = app.add_subcommand("health", "Ask airlockd whether it is serving (exit 0 only if SERVING)");
    cmd->add_option("--service", f->service, "Service name (default: the whole server)");
    AddConnectionFlags(*cmd, f->conn);
    cmd->callback([f] { SetExitCode(RunHealth(*f)); });
  }
}

}  // namespace airlock::ctl
