// RefusalLimiter: per-key windows, individual records up to the limit, aggregates beyond it.
#include "daemon/refusal_limiter.h"

#include "absl/strings/str_cat.h"

namespace airlock::daemon {

std::string RefusalKey(const CallInfo& call) {
  if (!call.identity.name.empty()) return absl::StrCat("identity:", call.identity.name);
  if (!call.identity.fingerprint.empty()) return absl::StrCat("cert:", call.identity.fingerprint);
  // "ipv4:10.0.0.1:51234" -> "ipv4:10.0.0.1": a new connection must not be a new key.
  const size_t port = call.peer.rfind(':');
  const size_t scheme = call.peer.find(':');
  return absl::StrCat("peer:", port != std::string::npos && port != scheme ? call.peer.substr(0, port) : call.peer);
}

bool RefusalLimiter::Admit(const CallInfo& call, audit::Decision decision, absl::StatusCode code, absl::Time now,
                           std::vector<Aggregate>* due) {
  if (options_.records_per_window == 0) return true;
  std::string key = RefusalKey(call);
  absl::MutexLock lock(&mutex_);
  CloseExpired(now, due);
  auto it = keys_.find(key);
  if (it == keys_.end()) {
    while (!keys_.empty() && keys_.size() >= options_.max_keys) CloseOldest(due);
    order_.emplace_back(now, key);
    it = keys_.emplace(std::move(key), KeyWindow{now, 0, {}}).first;
  }
  KeyWindow& window = it->second;
  if (window.recorded < options_.records_per_window) {
    ++window.recorded;
    return true;
  }
  for (Aggregate& a : window.counted) {
    if (a.decision == decision && a.code == code && a.call.method == call.method) {
      ++a.suppressed;
      return false;
    }
  }
  Aggregate& a = window.counted.emplace_back();
  a.call = call;
  a.call.config = nullptr;
  a.decision = decision;
  a.code = code;
  a.suppressed = 1;
  a.window_start = window.start;
  a.window = options_.window;
  return false;
}

void RefusalLimiter::CloseOldest(std::vector<Aggregate>* due) {
  auto node = keys_.extract(order_.front().second);
  order_.pop_front();
  for (Aggregate& a : node.mapped().counted) due->push_back(std::move(a));
}

void RefusalLimiter::CloseExpired(absl::Time now, std::vector<Aggregate>* due) {
  while (!order_.empty() && order_.front().first + options_.window <= now) CloseOldest(due);
}

std::vector<RefusalLimiter::Aggregate> RefusalLimiter::TakeClosed(absl::Time now) {
  std::vector<Aggregate> due;
  absl::MutexLock lock(&mutex_);
  CloseExpired(now, &due);
  return due;
}

std::vector<RefusalLimiter::Aggregate> RefusalLimiter::TakeAll() {
  std::vector<Aggregate> due;
  absl::MutexLock lock(&mutex_);
  while (!order_.empty()) CloseOldest(&due);
  return due;
}

size_t RefusalLimiter::tracked_keys() const {
  absl::MutexLock lock(&mutex_);
  return keys_.size();
}

}  // namespace airlock::daemon
