// Grammar construction (per-rule subset construction, pruning, left-recursion check) and the
// pushdown stepping that GrammarMatcher and the token masks run on.
#include "inference/sampling/grammar.h"

#include <algorithm>
#include <cstring>
#include <deque>
#include <map>
#include <unordered_map>
#include <utility>

#include "absl/strings/str_cat.h"
#include "inference/base/status.h"

namespace airlock::inference {
namespace {

// Expansions (calls entered, returns taken) one Step may make. Grammars without left recursion
// need about (threads x nesting) of them; the bound only stops a pathological ambiguous grammar
// from making one byte arbitrarily expensive. Paths past it are dropped, like extra threads.
constexpr int32_t kExpandBudget = 4096;

// States with more byte ranges than this get a 256-entry lookup table (1 KiB each).
constexpr uint32_t kDenseAbove = 4;

uint64_t Mix(uint64_t h, uint64_t v) {
  h ^= v + 0x9E3779B97F4A7C15ull + (h << 6) + (h >> 2);
  return h;
}

struct NodeSetHash {
  size_t operator()(const std::vector<int32_t>& set) const {
    uint64_t h = set.size();
    for (const int32_t v : set) h = Mix(h, static_cast<uint32_t>(v));
    return static_cast<size_t>(h);
  }
};

}  // namespace

size_t MatcherState::Hash() const {
  uint64_t h = complete ? 0x51ED27u : 0x2545F491u;
  for (const int32_t v : threads) h = Mix(h, static_cast<uint32_t>(v));
  h ^= h >> 33;
  h *= 0xFF51AFD7ED558CCDull;
  h ^= h >> 33;
  return static_cast<size_t>(h);
}

// ---------------------------------------------------------------------------------------------
// Stepping

void Grammar::AddThread(const std::vector<int32_t>& stack, MatcherState* out) const {
  std::vector<int32_t>& t = out->threads;
  const auto depth = static_cast<int32_t>(stack.size());
  int32_t count = 0;
  size_t i = 0;
  while (i < t.size()) {
    const int32_t d = t[i];
    if (d == depth &&
        std::memcmp(&t[i + 1], stack.data(), static_cast<size_t>(depth) * sizeof(int32_t)) == 0) {
      return;  // already there
    }
    i += static_cast<size_t>(d) + 1;
    ++count;
  }
  if (count >= limits_.max_threads) return;
  t.push_back(depth);
  t.insert(t.end(), stack.begin(), stack.end());
}

void Grammar::Expand(std::vector<int32_t>& stack, MatcherState* out, int32_t* budget) const {
  if (--*budget < 0) return;
  const int32_t top = stack.back();
  const State& s = states_[static_cast<size_t>(top)];
  if (s.ranges_begin != s.ranges_end) AddThread(stack, out);
  for (uint32_t c = s.calls_begin; c < s.calls_end; ++c) {
    const Call& call = calls_[c];
    if (states_[static_cast<size_t>(call.ret)].tail) {
      // Returning to `ret` would return again at once: call in place of the current frame.
      stack.back() = call.callee_start;
      Expand(stack, out, budget);
      stack.back() = top;
    } else if (static_cast<int32_t>(stack.size()) < limits_.max_stack_depth) {
      stack.back() = call.ret;
      stack.push_back(call.callee_start);
      Expand(stack, out, budget);
      stack.pop_back();
      stack.back() = top;
    }
  }
  if (s.final) {
    if (stack.size() == 1) {
      out->complete = true;
    } else {
      stack.pop_back();
      Expand(stack, out, budget);
      stack.push_back(top);
    }
  }
}

bool Grammar::Step(const MatcherState& in, uint8_t byte, MatcherState* out,
                   std::vector<int32_t>* scratch) const {
  out->threads.clear();
  out->complete = false;
  const std::vector<int32_t>& t = in.threads;
  // One thread landing on a state with byte edges only (inside a string, a number, a literal):
  // the next state is the same stack with a new top.
  if (!t.empty() && static_cast<size_t>(t[0]) + 1 == t.size()) {
    const int32_t target = Target(t.back(), byte);
    if (target < 0) return false;
    if (states_[static_cast<size_t>(target)].plain) {
      out->threads.assign(t.begin(), t.end());
      out->threads.back() = target;
      return true;
    }
  }
  int32_t budget = kExpandBudget;
  size_t i = 0;
  while (i < t.size()) {
    const auto depth = static_cast<size_t>(t[i]);
    const int32_t target = Target(t[i + depth], byte);
    if (target >= 0) {
      scratch->assign(t.begin() + static_cast<ptrdiff_t>(i + 1),
                      t.begin() + static_cast<ptrdiff_t>(i + 1 + depth));
      scratch->back() = target;
      Expand(*scratch, out, &budget);
    }
    i += depth + 1;
  }
  return !out->dead();
}

bool Grammar::CanAccept(const MatcherState& in, uint8_t byte) const {
  // A real step: a target state may still expand to nothing past the depth or thread bounds.
  MatcherState next;
  std::vector<int32_t> scratch;
  return Step(in, byte, &next, &scratch);
}

// ---------------------------------------------------------------------------------------------
// Building

GrammarBuilder::GrammarBuilder(GrammarLimits limits) : limits_(limits) {}

bool GrammarBuilder::CheckNode(int32_t node) {
  AIRLOCK_CHECK(node >= 0 && static_cast<size_t>(node) < nodes_.size());
  return true;
}

int32_t GrammarBuilder::AddRule(std::string name) {
  const auto rule = static_cast<int32_t>(rules_.size());
  rules_.push_back(Rule{std::move(name), 0, 0});
  const int32_t start = AddNode(rule);
  const int32_t end = AddNode(rule);
  rules_.back().start = start;
  rules_.back().end = end;
  return rule;
}

int32_t GrammarBuilder::AddNode(int32_t rule) {
  AIRLOCK_CHECK(rule >= 0 && static_cast<size_t>(rule) < rules_.size());
  if (static_cast<int64_t>(nodes_.size()) >= limits_.max_nfa_nodes) {
    if (status_.ok()) {
      status_ = absl::InvalidArgumentError(absl::StrCat("grammar too large: more than ",
                                                        limits_.max_nfa_nodes,
                                                        " automaton nodes (limit max_nfa_nodes)"));
    }
    // Edges to this stand-in are harmless: Build() returns the error.
    return nodes_.empty() ? AddNodeUnchecked(rule) : 0;
  }
  return AddNodeUnchecked(rule);
}

int32_t GrammarBuilder::AddNodeUnchecked(int32_t rule) {
  nodes_.push_back(Node{});
  nodes_.back().rule = rule;
  return static_cast<int32_t>(nodes_.size() - 1);
}

void GrammarBuilder::AddEpsilon(int32_t from, int32_t to) {
  CheckNode(from);
  CheckNode(to);
  if (!status_.ok()) return;
  AIRLOCK_CHECK(nodes_[static_cast<size_t>(from)].rule == nodes_[static_cast<size_t>(to)].rule);
  nodes_[static_cast<size_t>(from)].epsilon.push_back(to);
}

void GrammarBuilder::AddBytes(int32_t from, uint8_t lo, uint8_t hi, int32_t to) {
  CheckNode(from);
  CheckNode(to);
  if (!status_.ok()) return;
  AIRLOCK_CHECK(lo <= hi);
  AIRLOCK_CHECK(nodes_[static_cast<size_t>(from)].rule == nodes_[static_cast<size_t>(to)].rule);
  nodes_[static_cast<size_t>(from)].bytes.push_back(ByteEdge{lo, hi, to});
}

void GrammarBuilder::AddCall(int32_t from, int32_t rule, int32_t to) {
  CheckNode(from);
  CheckNode(to);
  AIRLOCK_CHECK(rule >= 0 && static_cast<size_t>(rule) < rules_.size());
  if (!status_.ok()) return;
  AIRLOCK_CHECK(nodes_[static_cast<size_t>(from)].rule == nodes_[static_cast<size_t>(to)].rule);
  nodes_[static_cast<size_t>(from)].calls.push_back(CallEdge{rule, to});
}

int32_t GrammarBuilder::AddLiteral(int32_t from, std::string_view bytes) {
  CheckNode(from);
  const int32_t rule = nodes_[static_cast<size_t>(from)].rule;
  int32_t at = from;
  for (const char c : bytes) {
    const int32_t next = AddNode(rule);
    const auto b = static_cast<uint8_t>(c);
    AddBytes(at, b, b, next);
    at = next;
  }
  return at;
}

namespace {

// Worklist fixpoint: marks `flag[s]` for every state for which `holds(s)` becomes true, where
// holds depends only on the flags of the states listed in dependents' reverse edges.
template <typename Holds>
void Fixpoint(const std::vector<std::vector<int32_t>>& reverse, std::vector<char>* flag,
              Holds holds) {
  std::deque<int32_t> work;
  for (size_t s = 0; s < flag->size(); ++s) {
    if (!(*flag)[s] && holds(static_cast<int32_t>(s))) {
      (*flag)[s] = 1;
      work.push_back(static_cast<int32_t>(s));
    }
  }
  while (!work.empty()) {
    const int32_t s = work.front();
    work.pop_front();
    for (const int32_t p : reverse[static_cast<size_t>(s)]) {
      if (!(*flag)[static_cast<size_t>(p)] && holds(p)) {
        (*flag)[static_cast<size_t>(p)] = 1;
        work.push_back(p);
      }
    }
  }
}

}  // namespace

absl::StatusOr<std::shared_ptr<const Grammar>> GrammarBuilder::Build(int32_t root_rule) && {
  if (!status_.ok()) return status_;
  AIRLOCK_CHECK(root_rule >= 0 && static_cast<size_t>(root_rule) < rules_.size());
  std::shared_ptr<Grammar> g(new Grammar());
  g->limits_ = limits_;

  std::vector<char> is_end(nodes_.size(), 0);
  for (const Rule& r : rules_) is_end[static_cast<size_t>(r.end)] = 1;

  // Epsilon closure of a node set, sorted (stamp-marked to avoid clearing a visited array).
  std::vector<uint32_t> seen(nodes_.size(), 0);
  uint32_t stamp = 0;
  std::vector<int32_t> dfs;
  auto close = [&](std::vector<int32_t>* set) {
    ++stamp;
    dfs.assign(set->begin(), set->end());
    set->clear();
    while (!dfs.empty()) {
      const int32_t n = dfs.back();
      dfs.pop_back();
      if (seen[static_cast<size_t>(n)] == stamp) continue;
      seen[static_cast<size_t>(n)] = stamp;
      set->push_back(n);
      for (const int32_t e : nodes_[static_cast<size_t>(n)].epsilon) dfs.push_back(e);
    }
    std::sort(set->begin(), set->end());
  };

  std::vector<int32_t> rule_start(rules_.size(), 0);
  std::vector<int32_t> call_rule;  // parallel to g->calls_: the callee's rule id
  for (size_t r = 0; r < rules_.size(); ++r) {
    // Closed node set -> state, and (as a shortcut: closing is the costly part) the sets of
    // edge targets already seen -> the state of their closure.
    std::unordered_map<std::vector<int32_t>, int32_t, NodeSetHash> ids;
    std::unordered_map<std::vector<int32_t>, int32_t, NodeSetHash> ids_by_targets;
    std::vector<std::vector<int32_t>> sets;  // local id -> node set
    const auto base = static_cast<int32_t>(g->states_.size());
    bool too_many = false;
    auto intern = [&](std::vector<int32_t> set) -> int32_t {
      std::sort(set.begin(), set.end());
      set.erase(std::unique(set.begin(), set.end()), set.end());
      auto known = ids_by_targets.find(set);
      if (known != ids_by_targets.end()) return known->second;
      std::vector<int32_t> targets = set;
      close(&set);
      auto it = ids.find(set);
      int32_t id = 0;
      if (it != ids.end()) {
        id = it->second;
      } else {
        if (static_cast<int64_t>(g->states_.size()) >= limits_.max_states) {
          too_many = true;
          return 0;
        }
        id = static_cast<int32_t>(g->states_.size());
        ids.emplace(set, id);
        sets.push_back(std::move(set));
        g->states_.emplace_back();
      }
      ids_by_targets.emplace(std::move(targets), id);
      return id;
    };
    rule_start[r] = intern({rules_[r].start});
    std::vector<ByteEdge> edges;
    std::vector<int> bounds;
    for (size_t k = 0; k < sets.size() && !too_many; ++k) {
      const std::vector<int32_t> members = sets[k];
      const int32_t id = base + static_cast<int32_t>(k);
      bool final = false;
      edges.clear();
      std::map<int32_t, std::vector<int32_t>> calls_by_rule;
      for (const int32_t n : members) {
        const Node& node = nodes_[static_cast<size_t>(n)];
        final = final || is_end[static_cast<size_t>(n)];
        edges.insert(edges.end(), node.bytes.begin(), node.bytes.end());
        for (const CallEdge& c : node.calls) calls_by_rule[c.rule].push_back(c.to);
      }
      bounds.clear();
      for (const ByteEdge& e : edges) {
        bounds.push_back(e.lo);
        bounds.push_back(e.hi + 1);
      }
      std::sort(bounds.begin(), bounds.end());
      bounds.erase(std::unique(bounds.begin(), bounds.end()), bounds.end());
      const auto ranges_begin = static_cast<uint32_t>(g->ranges_.size());
      for (size_t b = 0; b + 1 < bounds.size(); ++b) {
        const int lo = bounds[b];
        const int hi = bounds[b + 1] - 1;
        std::vector<int32_t> targets;
        for (const ByteEdge& e : edges) {
          if (e.lo <= lo && hi <= e.hi) targets.push_back(e.to);
        }
        if (targets.empty()) continue;
        const int32_t target = intern(std::move(targets));
        if (too_many) break;
        if (g->ranges_.size() > ranges_begin && g->ranges_.back().target == target &&
            g->ranges_.back().hi + 1 == lo) {
          g->ranges_.back().hi = static_cast<uint8_t>(hi);
        } else {
          g->ranges_.push_back(
              Grammar::ByteRange{static_cast<uint8_t>(lo), static_cast<uint8_t>(hi), target});
        }
      }
      const auto calls_begin = static_cast<uint32_t>(g->calls_.size());
      for (auto& [callee, returns] : calls_by_rule) {
        const int32_t ret = intern(std::move(returns));
        if (too_many) break;
        g->calls_.push_back(Grammar::Call{callee, ret});  // callee patched to its start below
        call_rule.push_back(callee);
      }
      Grammar::State& s = g->states_[static_cast<size_t>(id)];
      s.ranges_begin = ranges_begin;
      s.ranges_end = static_cast<uint32_t>(g->ranges_.size());
      s.calls_begin = calls_begin;
      s.calls_end = static_cast<uint32_t>(g->calls_.size());
      s.final = final;
    }
    if (too_many) {
      return absl::InvalidArgumentError(absl::StrCat(
          "grammar too large: more than ", limits_.max_states,
          " states after determinisation (limit max_states), at rule '", rules_[r].name, "'"));
    }
  }
  for (size_t c = 0; c < g->calls_.size(); ++c) {
    g->calls_[c].callee_start = rule_start[static_cast<size_t>(call_rule[c])];
  }

  const size_t n_states = g->states_.size();
  std::vector<std::vector<int32_t>> reverse(n_states);
  for (size_t s = 0; s < n_states; ++s) {
    const Grammar::State& st = g->states_[s];
    for (uint32_t i = st.ranges_begin; i < st.ranges_end; ++i) {
      reverse[static_cast<size_t>(g->ranges_[i].target)].push_back(static_cast<int32_t>(s));
    }
    for (uint32_t i = st.calls_begin; i < st.calls_end; ++i) {
      reverse[static_cast<size_t>(g->calls_[i].callee_start)].push_back(static_cast<int32_t>(s));
      reverse[static_cast<size_t>(g->calls_[i].ret)].push_back(static_cast<int32_t>(s));
    }
  }

  // Productive: can reach the end of its rule through some finite input.
  std::vector<char> productive(n_states, 0);
  Fixpoint(reverse, &productive, [&](int32_t s) {
    const Grammar::State& st = g->states_[static_cast<size_t>(s)];
    if (st.final) return true;
    for (uint32_t i = st.ranges_begin; i < st.ranges_end; ++i) {
      if (productive[static_cast<size_t>(g->ranges_[i].target)]) return true;
    }
    for (uint32_t i = st.calls_begin; i < st.calls_end; ++i) {
      const Grammar::Call& c = g->calls_[i];
      if (productive[static_cast<size_t>(c.callee_start)] &&
          productive[static_cast<size_t>(c.ret)]) {
        return true;
      }
    }
    return false;
  });
  if (!productive[static_cast<size_t>(rule_start[static_cast<size_t>(root_rule)])]) {
    return absl::InvalidArgumentError(
        absl::StrCat("'", rules_[static_cast<size_t>(root_rule)].name,
                     "' has no finite instance (every alternative recurses without a way out)"));
  }
  // Drop the edges into dead ends, so that a matcher only ever takes a path that can finish.
  {
    std::vector<Grammar::ByteRange> ranges;
    std::vector<Grammar::Call> calls;
    std::vector<int32_t> kept_call_rule;
    for (Grammar::State& st : g->states_) {
      const auto rb = static_cast<uint32_t>(ranges.size());
      for (uint32_t i = st.ranges_begin; i < st.ranges_end; ++i) {
        if (productive[static_cast<size_t>(g->ranges_[i].target)]) ranges.push_back(g->ranges_[i]);
      }
      const auto cb = static_cast<uint32_t>(calls.size());
      for (uint32_t i = st.calls_begin; i < st.calls_end; ++i) {
        const Grammar::Call& c = g->calls_[i];
        if (productive[static_cast<size_t>(c.callee_start)] &&
            productive[static_cast<size_t>(c.ret)]) {
          calls.push_back(c);
          kept_call_rule.push_back(call_rule[i]);
        }
      }
      st.ranges_begin = rb;
      st.ranges_end = static_cast<uint32_t>(ranges.size());
      st.calls_begin = cb;
      st.calls_end = static_cast<uint32_t>(calls.size());
    }
    g->ranges_ = std::move(ranges);
    g->calls_ = std::move(calls);
    call_rule = std::move(kept_call_rule);
  }

  // Nullable: can reach the end of its rule without consuming a byte.
  std::vector<char> nullable(n_states, 0);
  Fixpoint(reverse, &nullable, [&](int32_t s) {
    const Grammar::State& st = g->states_[static_cast<size_t>(s)];
    if (st.final) return true;
    for (uint32_t i = st.calls_begin; i < st.calls_end; ++i) {
      const Grammar::Call& c = g->calls_[i];
      if (nullable[static_cast<size_t>(c.callee_start)] && nullable[static_cast<size_t>(c.ret)]) {
        return true;
      }
    }
    return false;
  });

  // Left recursion: rule A calls B before consuming anything (through nullable callees), and B
  // reaches A the same way. A matcher would expand such a cycle forever.
  std::vector<std::vector<int32_t>> left_calls(rules_.size());
  {
    std::vector<char> visited(n_states, 0);
    std::vector<int32_t> touched;
    for (size_t r = 0; r < rules_.size(); ++r) {
      std::vector<int32_t> work = {rule_start[r]};
      touched.clear();
      while (!work.empty()) {
        const int32_t s = work.back();
        work.pop_back();
        if (visited[static_cast<size_t>(s)]) continue;
        visited[static_cast<size_t>(s)] = 1;
        touched.push_back(s);
        const Grammar::State& st = g->states_[static_cast<size_t>(s)];
        for (uint32_t i = st.calls_begin; i < st.calls_end; ++i) {
          left_calls[r].push_back(call_rule[i]);
          if (nullable[static_cast<size_t>(g->calls_[i].callee_start)])
            work.push_back(g->calls_[i].ret);
        }
      }
      for (const int32_t s : touched) visited[static_cast<size_t>(s)] = 0;
    }
    // Iterative depth-first search with colours: 1 on the path, 2 done.
    std::vector<char> colour(rules_.size(), 0);
    for (size_t r0 = 0; r0 < rules_.size(); ++r0) {
      if (colour[r0]) continue;
      std::vector<std::pair<int32_t, size_t>> path = {{static_cast<int32_t>(r0), 0}};
      colour[r0] = 1;
      while (!path.empty()) {
        auto& [rule, next] = path.back();
        const std::vector<int32_t>& out = left_calls[static_cast<size_t>(rule)];
        if (next == out.size()) {
          colour[static_cast<size_t>(rule)] = 2;
          path.pop_back();
          continue;
        }
        const int32_t callee = out[next++];
        if (colour[static_cast<size_t>(callee)] == 1) {
          return absl::InvalidArgumentError(
              absl::StrCat("left recursion: '", rules_[static_cast<size_t>(callee)].name,
                           "' can reach itself without consuming any input"));
        }
        if (colour[static_cast<size_t>(callee)] == 0) {
          colour[static_cast<size_t>(callee)] = 1;
          path.emplace_back(callee, 0);
        }
      }
    }
  }

  for (Grammar::State& st : g->states_) {
    const bool has_ranges = st.ranges_begin != st.ranges_end;
    const bool has_calls = st.calls_begin != st.calls_end;
    st.tail = st.final && !has_ranges && !has_calls;
    st.plain = has_ranges && !has_calls && !st.final;
    if (st.ranges_end - st.ranges_begin > kDenseAbove) {
      st.dense = static_cast<int32_t>(g->dense_.size());
      g->dense_.resize(g->dense_.size() + 256, -1);
      for (uint32_t i = st.ranges_begin; i < st.ranges_end; ++i) {
        const Grammar::ByteRange& r = g->ranges_[i];
        for (int b = r.lo; b <= r.hi; ++b) g->dense_[static_cast<size_t>(st.dense + b)] = r.target;
      }
    }
  }
  for (const Rule& r : rules_) g->rule_names_.push_back(r.name);

  std::vector<int32_t> stack = {rule_start[static_cast<size_t>(root_rule)]};
  int32_t budget = kExpandBudget;
  g->Expand(stack, &g->initial_, &budget);
  return std::shared_ptr<const Grammar>(std::move(g));
}

// ---------------------------------------------------------------------------------------------
// GrammarMatcher

GrammarMatcher::GrammarMatcher(std::shared_ptr<const Grammar> grammar)
    : grammar_(std::move(grammar)), state_(grammar_->initial_state()) {}

bool GrammarMatcher::Accept(uint8_t byte) {
  if (!grammar_->Step(state_, byte, &next_, &scratch_)) return false;
  std::swap(state_, next_);
  return true;
}

bool GrammarMatcher::Accept(std::string_view bytes) {
  MatcherState saved = state_;
  for (const char c : bytes) {
    if (!Accept(static_cast<uint8_t>(c))) {
      state_ = std::move(saved);
      return false;
    }
  }
  return true;
}

}  // namespace airlock::inference
