// The OpenAI-compatible HTTPS listener on libevent's evhttp (openai_server.h).
//
// Threads: evhttp and every request object live on the listener's loop thread. A generation's
// pieces (the engine's step thread) and its end (the queue's dispatcher thread) are put into the
// call's own buffer under its mutex, and a flush is posted to the loop (event_base_once, which
// libevent makes thread-safe once evthread_use_pthreads has run); the flush writes on the loop.
//
// A request object stays valid until its final reply is sent, even when the client has gone:
// evhttp then only detaches it from the connection, and the final evhttp_send_reply* frees it.
// So every call ends with exactly one final reply, whatever happened to its connection.
#include "daemon/openai_server.h"

#include <arpa/inet.h>
#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/bufferevent_ssl.h>
#include <event2/event.h>
#include <event2/http.h>
#include <event2/keyvalq_struct.h>
#include <event2/listener.h>
#include <event2/thread.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <openssl/pem.h>
#include <openssl/ssl.h>
#include <sys/socket.h>

#include <chrono>
#include <deque>
#include <cstdlib>
#include <fstream>
#include <map>
#include <mutex>
#include <optional>
#include <set>
#include <thread>
#include <utility>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "auth/openssl_util.h"
#include "daemon/generation_call.h"
#include "daemon/log.h"
#include "daemon/openai_api.h"
#include "inference/base/status.h"

namespace airlock::daemon {
namespace {

constexpr char kChatRoute[] = "openai/v1/chat/completions";
constexpr char kCompletionsRoute[] = "openai/v1/completions";
constexpr char kModelsRoute[] = "openai/v1/models";
// The methods that use a model, for the model list: a model is listed when one of them may use it.
constexpr std::string_view kModelRoutes[] = {kChatRoute, kCompletionsRoute};
// Longest wait for a client's next bytes (a request on an idle keep-alive connection, the rest of
// a request) or for it to take ours (a stalled stream is cut, and its generation cancelled).
constexpr int kIoTimeoutSeconds = 30;
constexpr size_t kMaxHeaderBytes = 16 * 1024;
// Threads admitting requests (workers below): enough to keep audit group commits full and a
// hostile schema's compilation from holding up the others.
constexpr int kAdmissionThreads = 4;

using Clock = std::chrono::steady_clock;

void AddHeader(evhttp_request* req, const char* name, const char* value) {
  evhttp_add_header(evhttp_request_get_output_headers(req), name, value);
}

// A whole reply (not streamed): status and JSON body, then evhttp frees the request.
void SendJson(evhttp_request* req, int code, const std::string& body) {
  AddHeader(req, "Content-Type", "application/json");
  evbuffer* buf = evbuffer_new();
  evbuffer_add(buf, body.data(), body.size());
  evhttp_send_reply(req, code, nullptr, buf);
  evbuffer_free(buf);
}

void SendError(evhttp_request* req, const absl::Status& status) {
  const openai::HttpError error = openai::ErrorResponse(status);
  if (error.retry_after_seconds.has_value()) {
    AddHeader(req, "Retry-After", absl::StrCat(*error.retry_after_seconds).c_str());
  }
  SendJson(req, error.status, error.body);
}

std::string RequestBody(evhttp_request* req) {
  evbuffer* in = evhttp_request_get_input_buffer(req);
  std::string body(evbuffer_get_length(in), '\0');
  if (!body.empty()) evbuffer_copyout(in, body.data(), body.size());
  return body;
}

// What the connection's TLS session says of the caller.
CallOrigin OriginOf(evhttp_request* req) {
  CallOrigin origin;
  evhttp_connection* conn = evhttp_request_get_connection(req);
  if (conn == nullptr) return origin;
  char* address = nullptr;
  uint16_t port = 0;
  evhttp_connection_get_peer(conn, &address, &port);
  if (address != nullptr) {
    const bool v6 = std::string_view(address).find(':') != std::string_view::npos;
    origin.peer = v6 ? absl::StrCat("ipv6:[", address, "]:", port) : absl::StrCat("ipv4:", address, ":", port);
  }
  bufferevent* bev = evhttp_connection_get_bufferevent(conn);
  SSL* ssl = bev == nullptr ? nullptr : bufferevent_openssl_get_ssl(bev);
  X509* cert = ssl == nullptr ? nullptr : SSL_get0_peer_certificate(ssl);
  if (cert != nullptr) origin.client_cert_pem = auth::ossl::CertificatePem(cert).value_or("");
  // "Authorization: Bearer <credential>" (the scheme's case does not matter, RFC 7235): an API key
  // when the site accepts them (AdmitCall decides; bounded by the header limit).
  if (const char* authorization = evhttp_find_header(evhttp_request_get_input_headers(req), "Authorization");
      authorization != nullptr) {
    std::string value(authorization);
    const auto blank = [](char c) { return c == ' ' || c == '\t'; };
    while (!value.empty() && blank(value.back())) value.pop_back();
    constexpr std::string_view kBearer = "bearer ";
    if (value.size() > kBearer.size() && absl::EqualsIgnoreCase(value.substr(0, kBearer.size()), "bearer ")) {
      size_t start = kBearer.size();
      while (start < value.size() && blank(value[start])) ++start;
      origin.api_key = value.substr(start);
    }
  }
  return origin;
}

int64_t UnixNow() { return absl::ToUnixSeconds(absl::Now()); }

}  // namespace

// Posts closures to the loop thread; a no-op once the listener stops (late results are dropped).
class LoopPoster {
 public:
  explicit LoopPoster(event_base* base) : base_(base) {}
  void Post(std::function<void()> fn) {
    std::lock_guard<std::mutex> lock(mu_);
    if (base_ == nullptr) return;
    auto* heap = new std::function<void()>(std::move(fn));
    const timeval now{0, 0};
    if (event_base_once(
            base_, -1, EV_TIMEOUT,
            [](evutil_socket_t, short, void* arg) {
              std::unique_ptr<std::function<void()>> f(static_cast<std::function<void()>*>(arg));
              (*f)();
            },
            heap, &now) != 0) {
      delete heap;
    }
  }
  void Stop() {
    std::lock_guard<std::mutex> lock(mu_);
    base_ = nullptr;
  }

 private:
  std::mutex mu_;
  event_base* base_;
};

// Threads that run what may wait (admission and refusal records, validation and tokenization, a
// JSON schema's compilation, the quota reservation, the durable begin record) so that the loop
// thread only moves bytes: one slow or hostile request never holds up the other connections.
class Workers {
 public:
  explicit Workers(int n) {
    for (int i = 0; i < n; ++i) threads_.emplace_back([this] { Run(); });
  }
  ~Workers() {
    {
      absl::MutexLock lock(&mu_);
      stop_ = true;
    }
    for (std::thread& t : threads_) t.join();
  }
  void Submit(std::function<void()> task) {
    absl::MutexLock lock(&mu_);
    tasks_.push_back(std::move(task));
  }

 private:
  void Run() {
    for (;;) {
      std::function<void()> task;
      {
        absl::MutexLock lock(&mu_);
        mu_.Await(absl::Condition(
            +[](Workers* w) ABSL_EXCLUSIVE_LOCKS_REQUIRED(w->mu_) { return w->stop_ || !w->tasks_.empty(); }, this));
        if (tasks_.empty()) return;  // stopping, nothing left
        task = std::move(tasks_.front());
        tasks_.pop_front();
      }
      task();
    }
  }
  absl::Mutex mu_;
  std::deque<std::function<void()>> tasks_ ABSL_GUARDED_BY(mu_);
  bool stop_ ABSL_GUARDED_BY(mu_) = false;
  std::vector<std::thread> threads_;
};

// A generation call as the workers leave it for the loop: refused (`error`), or begun.
struct Begun {
  static Begun Refused(absl::Status status) {
    Begun b;
    b.error = std::move(status);
    return b;
  }
  absl::Status error;
  std::shared_ptr<CallState> state;
  std::optional<PreparedGeneration> prepared;
  bool stream = false, include_usage = false;
  std::string model;
};

// One generation call over HTTP, shared by the loop (its request), the engine (pieces) and the
// queue (the end).
class HttpGeneration : public std::enable_shared_from_this<HttpGeneration> {
 public:
  HttpGeneration(OpenAiServer::Impl* server, evhttp_request* req, std::shared_ptr<CallState> state, bool chat,
                 bool stream, bool include_usage, std::string model)
      : server_(server),
        req_(req),
        state_(std::move(state)),
        chat_(chat),
        stream_(stream),
        include_usage_(include_usage),
        model_(std::move(model)),
        id_(absl::StrCat(chat ? "chatcmpl-" : "cmpl-", state_->call.request_id)),
        created_(UnixNow()) {}

  void Start(PreparedGeneration prepared);
  // The loop, from the connection's close callback: the client is gone. evhttp has detached the
  // request from the connection (it was not ended), so it stays ours to free: at once when the
  // stream only waited for its last bytes to drain, otherwise when the generation ends.
  void ConnectionClosed();
  void Cancel() { state_->client_gone.store(true); }

 private:
  struct Final {
    absl::Status status;
    std::string text;
    airlock::v1::StopReason reason = airlock::v1::STOP_REASON_UNSPECIFIED;
    openai::UsageCounts usage;
  };
  void AddPiece(const inference::GeneratedPiece& piece);
  void Done(const absl::StatusOr<inference::GenerateResult>& result, double queue_seconds);
  void PostFlush();
  void Flush();  // the loop
  void WriteChunk(const std::string& data);
  // The end of a streamed reply, once everything before it has left the output buffer.
  static void OnDrained(evhttp_connection* connection, void* arg);
  void EndStream();

  OpenAiServer::Impl* server_;
  evhttp_request* req_;  // the loop only; null once the final reply is sent
  std::shared_ptr<CallState> state_;
  const bool chat_, stream_, include_usage_;
  const std::string model_, id_;
  const int64_t created_;

  // Set while a stream's last event drains (the loop only): the call keeps itself alive until then.
  std::shared_ptr<HttpGeneration> draining_;

  std::mutex mu_;
  std::string pending_;          // streamed text not yet written (guarded)
  std::optional<Final> final_;   // guarded
  bool flush_posted_ = false;    // guarded
};

struct OpenAiServer::Impl {
  const ModelRegistry* models = nullptr;
  const RuntimeConfigHolder* config = nullptr;
  std::unique_ptr<SSL_CTX, void (*)(SSL_CTX*)> ssl_ctx{nullptr, &SSL_CTX_free};
  std::unique_ptr<TlsListenerContext> tls;
  event_base* base = nullptr;
  evhttp* http = nullptr;
  evhttp_bound_socket* socket = nullptr;
  std::shared_ptr<LoopPoster> poster;
  std::unique_ptr<Workers> workers;
  std::thread loop;
  std::atomic<int64_t> drain_cancel_at{0};
  std::atomic<bool> draining{false};

  // Generations in progress (from Start to their final reply), and requests the workers are
  // admitting, for the drain.
  absl::Mutex calls_mu;
  std::set<std::shared_ptr<HttpGeneration>> calls ABSL_GUARDED_BY(calls_mu);
  int admitting ABSL_GUARDED_BY(calls_mu) = 0;
  // The loop only: the call each connection is serving, to cancel it when the connection closes.
  std::map<evhttp_connection*, std::weak_ptr<HttpGeneration>> by_connection;

  void Handle(evhttp_request* req);
  // On the loop: hand the request's work to the workers, then its reply back to the loop.
  void ListModels(evhttp_request* req, std::optional<std::string> one);
  void Generate(evhttp_request* req, bool chat);
  // On a worker.
  Begun AdmitAndBegin(bool chat, const CallOrigin& origin, const std::string& body);
  // Runs `work` on a worker, then `reply` with its result on the loop; counted for the drain.
  template <typename Result>
  void OffLoop(std::function<Result()> work, std::function<void(Result)> reply);
  void Track(evhttp_request* req, const std::shared_ptr<HttpGeneration>& call);
  void Finished(const std::shared_ptr<HttpGeneration>& call) {
    absl::MutexLock lock(&calls_mu);
    calls.erase(call);
  }
};

void HttpGeneration::Start(PreparedGeneration prepared) {
  const ServedModel& model = *prepared.model;
  std::shared_ptr<HttpGeneration> self = shared_from_this();
  if (stream_) {
    AddHeader(req_, "Content-Type", "text/event-stream");
    AddHeader(req_, "Cache-Control", "no-cache");
    AddHeader(req_, "X-Request-Id", state_->call.request_id.c_str());
    evhttp_send_reply_start(req_, 200, "OK");
    if (chat_) {  // OpenAI's first chunk carries the role
      WriteChunk(openai::SseEvent(openai::ChatCompletionChunk(id_, created_, model_, "assistant", "", std::nullopt)));
    }
  }
  auto job = MakeGenerationJob(
      state_, model, std::move(prepared.request),
      [self](const inference::GeneratedPiece& piece) {
        self->AddPiece(piece);
        return !self->state_->client_gone.load(std::memory_order_relaxed);
      },
      [self](absl::StatusOr<inference::GenerateResult> result, double queue_seconds) {
        self->Done(result, queue_seconds);
      });
  // A refusal (queue full, shutting down) ends the generation as the queue's own refusals do
  // (quota settled, the end record written, the error reply).
  if (absl::Status submitted = model.queue->Submit(std::move(job)); !submitted.ok()) Done(submitted, 0);
}

void HttpGeneration::AddPiece(const inference::GeneratedPiece& piece) {
  if (!stream_ || piece.text.empty()) return;
  std::lock_guard<std::mutex> lock(mu_);
  pending_ += piece.text;
  PostFlush();
}

void HttpGeneration::Done(const absl::StatusOr<inference::GenerateResult>& result, double queue_seconds) {
  const absl::Status status = EndGeneration(*state_, result, queue_seconds);
  LogCallEnd(state_->call, status, GenerationLogFields(result, queue_seconds));
  Final f{status, "", airlock::v1::STOP_REASON_UNSPECIFIED, {}};
  if (status.ok()) {
    f.text = result->text;
    f.reason = ToProto(result->stop_reason);
    f.usage = {static_cast<uint32_t>(result->prompt_tokens.size()), static_cast<uint32_t>(result->output_tokens.size())};
  }
  std::lock_guard<std::mutex> lock(mu_);
  final_ = std::move(f);
  PostFlush();
}

void HttpGeneration::PostFlush() {  // mu_ held
  if (flush_posted_) return;
  flush_posted_ = true;
  server_->poster->Post([self = shared_from_this()] { self->Flush(); });
}

void HttpGeneration::WriteChunk(const std::string& data) {
  evbuffer* buf = evbuffer_new();
  evbuffer_add(buf, data.data(), data.size());
  evhttp_send_reply_chunk(req_, buf);
  evbuffer_free(buf);
}

void HttpGeneration::Flush() {
  std::string text;
  std::optional<Final> final;
  {
    std::lock_guard<std::mutex> lock(mu_);
    flush_posted_ = false;
    text.swap(pending_);
    final.swap(final_);
  }
  if (req_ == nullptr) return;
  if (!stream_) {
    if (!final.has_value()) return;
    if (!final->status.ok()) {
      SendError(req_, final->status);
    } else {
      AddHeader(req_, "X-Request-Id", state_->call.request_id.c_str());
      SendJson(req_, 200,
               chat_ ? openai::ChatCompletionBody(id_, created_, model_, final->text, final->reason, final->usage)
                     : openai::CompletionBody(id_, created_, model_, final->text, final->reason, final->usage));
    }
  } else {
    if (!text.empty()) {
      WriteChunk(openai::SseEvent(chat_ ? openai::ChatCompletionChunk(id_, created_, model_, std::nullopt, text,
                                                                       std::nullopt)
                                        : openai::CompletionChunk(id_, created_, model_, text, std::nullopt)));
    }
    if (!final.has_value()) return;
    std::string tail;
    if (!final->status.ok()) {
      // The status line went out with the first chunk: the error is the stream's last event.
      tail = openai::SseEvent(openai::ErrorResponse(final->status).body);
    } else {
      tail = openai::SseEvent(chat_ ? openai::ChatCompletionChunk(id_, created_, model_, std::nullopt, "", final->reason)
                                    : openai::CompletionChunk(id_, created_, model_, "", final->reason));
      if (include_usage_) {
        tail += openai::SseEvent(chat_ ? openai::ChatUsageChunk(id_, created_, model_, final->usage)
                                       : openai::CompletionUsageChunk(id_, created_, model_, final->usage));
      }
      tail += openai::kSseDone;
    }
    // The chunked terminator goes out only once everything before it has left the output buffer:
    // with TLS bufferevents the write callback of an earlier chunk can run after more was queued,
    // and evhttp, told the reply had ended, would close the connection with the stream's tail unsent.
    if (evhttp_request_get_connection(req_) == nullptr) return EndStream();  // the client is gone
    draining_ = shared_from_this();
    evbuffer* buf = evbuffer_new();
    evbuffer_add(buf, tail.data(), tail.size());
    evhttp_send_reply_chunk_with_cb(req_, buf, &HttpGeneration::OnDrained, this);
    evbuffer_free(buf);
    return;
  }
  req_ = nullptr;  // freed by evhttp
  server_->Finished(shared_from_this());
}

void HttpGeneration::OnDrained(evhttp_connection* connection, void* arg) {
  bufferevent* bev = evhttp_connection_get_bufferevent(connection);
  if (bev != nullptr && evbuffer_get_length(bufferevent_get_output(bev)) != 0) return;  // an earlier write's
  static_cast<HttpGeneration*>(arg)->EndStream();
}

void HttpGeneration::EndStream() {
  if (req_ == nullptr) return;
  evhttp_send_reply_end(req_);  // the terminator, then evhttp frees the request (at once when detached)
  req_ = nullptr;
  const std::shared_ptr<HttpGeneration> self = shared_from_this();
  draining_.reset();
  server_->Finished(self);
}

void HttpGeneration::ConnectionClosed() {
  state_->client_gone.store(true);
  if (draining_ != nullptr) server_->poster->Post([self = shared_from_this()] { self->EndStream(); });
}

void OpenAiServer::Impl::Track(evhttp_request* req, const std::shared_ptr<HttpGeneration>& call) {
  {
    absl::MutexLock lock(&calls_mu);
    calls.insert(call);
  }
  evhttp_connection* conn = evhttp_request_get_connection(req);
  if (conn == nullptr) return;
  by_connection[conn] = call;
  evhttp_connection_set_closecb(
      conn,
      [](evhttp_connection* closed, void* arg) {
        auto* self = static_cast<OpenAiServer::Impl*>(arg);
        auto it = self->by_connection.find(closed);
        if (it == self->by_connection.end()) return;
        if (std::shared_ptr<HttpGeneration> c = it->second.lock()) c->ConnectionClosed();
        self->by_connection.erase(it);
      },
      this);
}

template <typename Result>
void OpenAiServer::Impl::OffLoop(std::function<Result()> work, std::function<void(Result)> reply) {
  {
    absl::MutexLock lock(&calls_mu);
    ++admitting;
  }
  workers->Submit([this, work = std::move(work), reply = std::move(reply)]() mutable {
    auto result = std::make_shared<Result>(work());
    poster->Post([this, result, reply = std::move(reply)] {
      reply(std::move(*result));
      absl::MutexLock lock(&calls_mu);
      --admitting;
    });
  });
}

// What a model listing answers: the status, and the body when OK.
struct Listing {
  absl::Status status;
  std::string body;
};

void OpenAiServer::Impl::ListModels(evhttp_request* req, std::optional<std::string> one) {
  OffLoop<Listing>(
      [this, origin = OriginOf(req), one = std::move(one)]() -> Listing {
        absl::StatusOr<CallInfo> call = AdmitCall(origin, kModelsRoute, "", *config);
        if (!call.ok()) return {call.status(), ""};
        std::vector<std::string> names;
        for (const auto& model : models->models()) {
          if (one.has_value() && model->name != *one) continue;
          if (call->config->policy->AllowsAnyOf(call->identity.name, kModelRoutes, model->name)) {
            names.push_back(model->name);
          }
        }
        // A model the caller may not use is as absent as one not served: its name is not confirmed.
        absl::Status status = absl::OkStatus();
        if (one.has_value() && names.empty()) status = absl::NotFoundError("model: no such model is served to you");
        const absl::Status recorded = AuditSingle(*call, status);
        LogCallEnd(*call, recorded, {{"models", names.size()}});
        if (!recorded.ok()) return {recorded, ""};
        const int64_t created = UnixNow();
        return {absl::OkStatus(),
                one.has_value() ? openai::ModelBody(names.front(), created) : openai::ModelsBody(names, created)};
      },
      [req](Listing listing) {
        if (!listing.status.ok()) return SendError(req, listing.status);
        SendJson(req, 200, listing.body);
      });
}

Begun OpenAiServer::Impl::AdmitAndBegin(bool chat, const CallOrigin& origin, const std::string& body) {
  const char* route = chat ? kChatRoute : kCompletionsRoute;
  // The body is parsed before admission only to learn the model; a body that does not parse is
  // refused after the caller is admitted for the route, so that strangers learn nothing from it.
  Begun begun;
  absl::Status parse_error;
  std::optional<airlock::v1::ChatRequest> chat_request;
  std::optional<airlock::v1::GenerateRequest> completion_request;
  // A parsed ChatCompletionCall or CompletionCall: its flags, its request and the model it names.
  const auto take = [&](auto parsed, auto& request) {
    if (!parsed.ok()) {
      parse_error = parsed.status();
      return;
    }
    begun.stream = parsed->stream;
    begun.include_usage = parsed->include_usage;
    request = std::move(parsed->request);
    begun.model = request->model();
  };
  if (chat) {
    take(openai::ParseChatCompletion(body), chat_request);
  } else {
    take(openai::ParseCompletion(body), completion_request);
  }
  if (!parse_error.ok()) {
    absl::StatusOr<CallInfo> call = AdmitCall(origin, route, "", *config);
    if (!call.ok()) return Begun::Refused(call.status());
    const absl::Status recorded = AuditSingle(*call, parse_error);
    LogCallEnd(*call, recorded);
    return Begun::Refused(recorded);
  }
  absl::StatusOr<std::shared_ptr<CallState>> state =
      AdmitGeneration(origin, route, begun.model, *config, drain_cancel_at, std::nullopt);
  if (!state.ok()) return Begun::Refused(state.status());
  absl::StatusOr<PreparedGeneration> prepared =
      chat ? BeginGeneration(**state, *chat_request, *models) : BeginGeneration(**state, *completion_request, *models);
  if (!prepared.ok()) {
    LogCallEnd((*state)->call, prepared.status());
    return Begun::Refused(prepared.status());
  }
  begun.state = *std::move(state);
  begun.prepared = *std::move(prepared);
  return begun;
}

void OpenAiServer::Impl::Generate(evhttp_request* req, bool chat) {
  OffLoop<Begun>([this, chat, origin = OriginOf(req), body = RequestBody(req)] { return AdmitAndBegin(chat, origin, body); },
                 [this, req, chat](Begun begun) {
                   if (!begun.error.ok()) return SendError(req, begun.error);
                   // Begun and recorded: it runs and ends with its end record even when the
                   // client left meanwhile (then it is cancelled at once).
                   if (evhttp_request_get_connection(req) == nullptr) begun.state->client_gone.store(true);
                   auto call = std::make_shared<HttpGeneration>(this, req, begun.state, chat, begun.stream,
                                                                begun.include_usage, begun.model);
                   Track(req, call);
                   call->Start(*std::move(begun.prepared));
                 });
}

void OpenAiServer::Impl::Handle(evhttp_request* req) {
  const evhttp_uri* uri = evhttp_request_get_evhttp_uri(req);
  const char* raw_path = uri == nullptr ? nullptr : evhttp_uri_get_path(uri);
  const std::string_view path = raw_path == nullptr ? "" : raw_path;
  const evhttp_cmd_type method = evhttp_request_get_command(req);
  const auto only = [&](evhttp_cmd_type allowed, const char* allow) {
    if (method == allowed) return true;
    AddHeader(req, "Allow", allow);
    SendJson(req, 405, openai::ErrorResponse(absl::InvalidArgumentError(absl::StrCat("this route takes ", allow, " only"))).body);
    return false;
  };
  if (draining.load()) {
    AddHeader(req, "Connection", "close");
    return SendError(req, absl::UnavailableError("airlockd is shutting down"));
  }
  if (path == "/v1/chat/completions") {
    if (only(EVHTTP_REQ_POST, "POST")) Generate(req, true);
  } else if (path == "/v1/completions") {
    if (only(EVHTTP_REQ_POST, "POST")) Generate(req, false);
  } else if (path == "/v1/models") {
    if (only(EVHTTP_REQ_GET, "GET")) ListModels(req, std::nullopt);
  } else if (path.starts_with("/v1/models/") && path.size() > 11) {
    // A model id may itself hold slashes ("org/name"); evhttp leaves it percent-encoded.
    char* decoded = evhttp_uridecode(std::string(path.substr(11)).c_str(), 0, nullptr);
    const std::string id = decoded == nullptr ? "" : decoded;
    free(decoded);  // NOLINT: evhttp's allocation
    if (only(EVHTTP_REQ_GET, "GET")) ListModels(req, id);
  } else {
    SendError(req, absl::NotFoundError("no such route (this endpoint serves /v1/models, /v1/chat/completions "
                                       "and /v1/completions)"));
  }
}

absl::StatusOr<std::unique_ptr<OpenAiServer>> OpenAiServer::Start(const OpenAiOptions& options, Settings settings,
                                                                  const ModelRegistry& models,
                                                                  const RuntimeConfigHolder& config) {
  static const bool threads_ready = evthread_use_pthreads() == 0;
  if (!threads_ready) return absl::InternalError("openai: libevent without thread support");
  std::unique_ptr<OpenAiServer> s(new OpenAiServer());
  s->impl_ = std::make_unique<Impl>();
  Impl& impl = *s->impl_;
  impl.models = &models;
  impl.config = &config;
  impl.ssl_ctx.reset(SSL_CTX_new(TLS_server_method()));
  if (impl.ssl_ctx == nullptr) return auth::ossl::OpenSslError("openai: TLS context");
  AIRLOCK_ASSIGN_OR_RETURN(impl.tls, TlsListenerContext::Attach(impl.ssl_ctx.get(), settings.tls_files,
                                                                settings.tls_policy, std::move(settings.check_client)));
  impl.base = event_base_new();
  impl.http = impl.base == nullptr ? nullptr : evhttp_new(impl.base);
  if (impl.http == nullptr) return absl::InternalError("openai: cannot create the event loop");
  impl.poster = std::make_shared<LoopPoster>(impl.base);
  impl.workers = std::make_unique<Workers>(kAdmissionThreads);
  // Every connection is TLS: evhttp would make a plain one if this returned null, so it never does.
  evhttp_set_bevcb(
      impl.http,
      [](event_base* base, void* arg) -> bufferevent* {
        SSL* ssl = SSL_new(static_cast<SSL_CTX*>(arg));
        bufferevent* bev = ssl == nullptr ? nullptr
                                          : bufferevent_openssl_socket_new(base, -1, ssl, BUFFEREVENT_SSL_ACCEPTING,
                                                                           BEV_OPT_CLOSE_ON_FREE);
        if (bev == nullptr) {
          LogError("openai: out of memory for a TLS connection; stopping rather than serving it in plaintext");
          std::abort();
        }
        return bev;
      },
      impl.ssl_ctx.get());
  const timeval io_timeout{kIoTimeoutSeconds, 0};
  evhttp_set_timeout_tv(impl.http, &io_timeout);
  evhttp_set_max_headers_size(impl.http, kMaxHeaderBytes);
  evhttp_set_max_body_size(impl.http, settings.max_request_bytes);
  evhttp_set_allowed_methods(impl.http, EVHTTP_REQ_GET | EVHTTP_REQ_POST);
  // A refused oversized body is read and dropped before the close, so the client sees the 413.
  evhttp_set_flags(impl.http, EVHTTP_SERVER_LINGERING_CLOSE);
  evhttp_set_gencb(
      impl.http, [](evhttp_request* req, void* arg) { static_cast<Impl*>(arg)->Handle(req); }, &impl);

  const size_t colon = options.listen.rfind(':');
  std::string host = options.listen.substr(0, colon);
  if (host.size() >= 2 && host.front() == '[' && host.back() == ']') host = host.substr(1, host.size() - 2);
  int port = 0;
  if (colon == std::string::npos || !absl::SimpleAtoi(options.listen.substr(colon + 1), &port)) {
    return absl::InvalidArgumentError(absl::StrCat("openai.listen: no port in ", options.listen));
  }
  impl.socket = evhttp_bind_socket_with_handle(impl.http, host.c_str(), static_cast<uint16_t>(port));
  if (impl.socket == nullptr) {
    return absl::UnavailableError(absl::StrCat("openai.listen: could not listen on ", options.listen,
                                               " (address in use, or not an address of this host?)"));
  }
  sockaddr_storage bound{};
  socklen_t length = sizeof(bound);
  const evutil_socket_t fd = evconnlistener_get_fd(evhttp_bound_socket_get_listener(impl.socket));
  // Accepted connections inherit it: a reply's header and body records, and each stream event,
  // leave at once instead of waiting for the client's delayed acknowledgement (Nagle), which cost
  // about 40 ms per exchange.
  const int one = 1;
  if (setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one)) != 0) {
    return absl::InternalError("openai.listen: cannot set TCP_NODELAY");
  }
  if (getsockname(fd, reinterpret_cast<sockaddr*>(&bound), &length) != 0) {
    return absl::InternalError("openai.listen: cannot read the bound port");
  }
  s->port_ = ntohs(bound.ss_family == AF_INET6 ? reinterpret_cast<sockaddr_in6*>(&bound)->sin6_port
                                               : reinterpret_cast<sockaddr_in*>(&bound)->sin_port);
  if (!options.port_file.empty()) {
    std::ofstream out(options.port_file, std::ios::trunc);
    out << s->port_ << "\n";
    if (!out.good()) return absl::PermissionDeniedError(absl::StrCat("openai.port_file: cannot write ", options.port_file));
  }
  impl.loop = std::thread([base = impl.base] { event_base_loop(base, EVLOOP_NO_EXIT_ON_EMPTY); });
  LogInfo("openai listening", {{"address", options.listen}, {"port", s->port_}});
  return s;
}

void OpenAiServer::BeginDrain(absl::Time forced_at) {
  Impl& impl = *impl_;
  impl.drain_cancel_at.store(absl::ToUnixNanos(forced_at));
  impl.draining.store(true);
  // No new connections (on the loop, which owns the listener).
  impl.poster->Post([&impl] {
    if (impl.socket != nullptr) evhttp_del_accept_socket(impl.http, impl.socket);
    impl.socket = nullptr;
  });
}

void OpenAiServer::AwaitCalls(absl::Time forced_at) {
  Impl& impl = *impl_;
  absl::MutexLock lock(&impl.calls_mu);
  const auto none = [&impl]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(impl.calls_mu) {
    return impl.calls.empty() && impl.admitting == 0;
  };
  if (!impl.calls_mu.AwaitWithDeadline(absl::Condition(&none), forced_at)) {
    for (const std::shared_ptr<HttpGeneration>& call : impl.calls) call->Cancel();
  }
}

OpenAiServer::~OpenAiServer() {
  if (impl_ == nullptr) return;
  Impl& impl = *impl_;
  if (impl.loop.joinable()) {
    event_base_loopbreak(impl.base);
    impl.loop.join();
  }
  impl.poster->Stop();
  impl.workers.reset();  // finishes the tasks it holds; their replies are dropped (the loop is gone)
  {
    // Calls whose final reply never went out (their jobs ended while the loop was stopping).
    absl::MutexLock lock(&impl.calls_mu);
    impl.calls.clear();
  }
  evhttp_free(impl.http);  // closes every connection and frees their requests
  event_base_free(impl.base);
}

absl::Status OpenAiServer::ReloadCertificates() { return impl_->tls->Reload(); }

absl::Time OpenAiServer::certificate_not_after() const { return impl_->tls->not_after(); }

}  // namespace airlock::daemon
