// A context-free grammar over bytes, compiled into one deterministic automaton per rule, and the
// pushdown matcher that runs it one byte at a time (the core of constrained, structured output).
//
// Shape: a rule is a set of states; a state has byte-range edges (to a state of the same rule),
// call edges (enter another rule's start, continue at a return state when that rule finishes) and
// may be final (the rule may finish there). Rules are written as a nondeterministic automaton with
// epsilon edges through GrammarBuilder and Build() determinises each one (subset construction), so
// the only nondeterminism left at run time comes from call edges (an `anyOf` of two `$ref`s, say).
// A matcher state is therefore a small set of "threads", each a stack of state ids whose top is the
// position inside the innermost rule: a plain value that can be copied, hashed and compared.
//
// Thread-safety: a built Grammar is immutable and may be shared by any number of threads.
// GrammarBuilder and GrammarMatcher are not thread-safe; each belongs to one thread at a time.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace airlock::inference {

// Bounds on what a grammar may grow to. Build() refuses a grammar past them with INVALID_ARGUMENT
// (the input that produced the grammar, a client's schema, is what was too big).
struct GrammarLimits {
  // Nodes of the nondeterministic automaton the builder accepts. Default: 200,000.
  int32_t max_nfa_nodes = 200'000;
  // States after determinisation, all rules together. Default: 50,000.
  int32_t max_states = 50'000;
  // Frames in one thread's stack: how deeply rules may nest at run time (for JSON, about the
  // nesting depth of the output). A derivation that would go deeper is not followed. Default: 64.
  int32_t max_stack_depth = 64;
  // Threads in one matcher state (parallel parses after an ambiguous call). Further threads are
  // dropped, which narrows what the grammar accepts but never lets an invalid output through.
  // Default: 64.
  int32_t max_threads = 64;
};

// Where a matcher is: its threads, and whether the bytes so far form a complete sentence.
// Two equal states accept exactly the same continuations.
struct MatcherState {
  // Threads concatenated, each as [depth, bottom frame, ..., top frame] (frames are state ids).
  // Only the grammar's stepping (and the token mask walk, which follows it) writes it; callers
  // copy, compare and hash it.
  std::vector<int32_t> threads;
  // The input so far is a complete sentence of the grammar (it may end here).
  bool complete = false;

  // Some byte can follow.
  bool CanContinue() const { return !threads.empty(); }
  // Neither complete nor able to continue: the input was refused.
  bool dead() const { return threads.empty() && !complete; }
  size_t Hash() const;
  friend bool operator==(const MatcherState& a, const MatcherState& b) {
    return a.complete == b.complete && a.threads == b.threads;
  }
};

struct MatcherStateHash {
  size_t operator()(const MatcherState& state) const { return state.Hash(); }
};

class Grammar {
 public:
  // An edge on the bytes [lo, hi].
  struct ByteRange {
    uint8_t lo = 0;
    uint8_t hi = 0;
    int32_t target = 0;
  };
  // Enter the rule starting at callee_start; when it finishes, continue at ret.
  struct Call {
    int32_t callee_start = 0;
    int32_t ret = 0;
  };
  struct State {
    uint32_t ranges_begin = 0, ranges_end = 0;  // into ranges_
    uint32_t calls_begin = 0, calls_end = 0;    // into calls_
    bool final = false;
    // Final with no edges: a call returning here returns at once, so it is not pushed (tail call).
    bool tail = false;
    // Byte edges only, not final: a thread landing here needs no expansion (the fast path).
    bool plain = false;
    // For states with many ranges (a string's body has a dozen): offset into dense_ of a
    // 256-entry byte -> target table, or -1 (then the ranges are scanned).
    int32_t dense = -1;
  };

  // The state before any input.
  const MatcherState& initial_state() const { return initial_; }

  // Advances `in` by one byte into `out` (which must not alias `in`). Returns false, with `out`
  // dead, when the byte is refused. `scratch` is working memory the caller keeps between calls so
  // that stepping allocates nothing once the buffers have grown.
  bool Step(const MatcherState& in, uint8_t byte, MatcherState* out,
            std::vector<int32_t>* scratch) const;
  // Whether Step would accept `byte`, without computing the next state.
  bool CanAccept(const MatcherState& in, uint8_t byte) const;

  // For walkers that follow a single thread without building states (the token mask walk): the
  // state a byte edge of `state` leads to (-1: none), and whether a thread landing there needs no
  // expansion, i.e. Step() would only replace the top of the stack.
  int32_t ByteTarget(int32_t state, uint8_t byte) const { return Target(state, byte); }
  bool IsPlain(int32_t state) const { return states_[static_cast<size_t>(state)].plain; }

  const GrammarLimits& limits() const { return limits_; }
  int32_t num_states() const { return static_cast<int32_t>(states_.size()); }
  int32_t num_rules() const { return static_cast<int32_t>(rule_names_.size()); }

 private:
  friend class GrammarBuilder;
  Grammar() = default;

  // Target of the byte edge of `state` that covers `byte`, or -1 (a state's ranges are disjoint).
  int32_t Target(int32_t state, uint8_t byte) const {
    const State& s = states_[static_cast<size_t>(state)];
    if (s.dense >= 0) return dense_[static_cast<size_t>(s.dense) + byte];
    for (uint32_t i = s.ranges_begin; i < s.ranges_end; ++i) {
      const ByteRange& r = ranges_[i];
      if (byte >= r.lo && byte <= r.hi) return r.target;
    }
    return -1;
  }
  // Adds to `out` every thread reachable from the stack in `stack` without consuming input
  // (entering called rules, returning from finished ones). `stack` is restored on return.
  void Expand(std::vector<int32_t>& stack, MatcherState* out, int32_t* budget) const;
  void AddThread(const std::vector<int32_t>& stack, MatcherState* out) const;

  GrammarLimits limits_;
  std::vector<State> states_;
  std::vector<ByteRange> ranges_;
  std::vector<Call> calls_;
  std::vector<int32_t> dense_;
  std::vector<std::string> rule_names_;
  MatcherState initial_;
};

// Writes a grammar as a nondeterministic automaton: nodes, epsilon edges, byte-range edges and
// call edges, grouped into rules. Every node belongs to the rule it was created for; edges join
// nodes of one rule (a call edge names the callee by rule id). Errors (a limit passed) are sticky
// and reported by Build(), so emitting code need not check each call.
class GrammarBuilder {
 public:
  explicit GrammarBuilder(GrammarLimits limits = {});

  // A new rule with a start node and an end node (reaching the end node finishes the rule).
  // `name` appears in error messages (for JSON Schema: the pointer of the subschema).
  int32_t AddRule(std::string name);
  int32_t RuleStart(int32_t rule) const { return rules_[static_cast<size_t>(rule)].start; }
  int32_t RuleEnd(int32_t rule) const { return rules_[static_cast<size_t>(rule)].end; }

  int32_t AddNode(int32_t rule);
  // The rule `node` belongs to.
  int32_t NodeRule(int32_t node) const { return nodes_[static_cast<size_t>(node)].rule; }
  void AddEpsilon(int32_t from, int32_t to);
  void AddBytes(int32_t from, uint8_t lo, uint8_t hi, int32_t to);
  void AddCall(int32_t from, int32_t rule, int32_t to);
  // A chain of nodes spelling `bytes` from `from`; returns the last node (`from` when empty).
  int32_t AddLiteral(int32_t from, std::string_view bytes);

  // Set by the first limit passed; Build() returns it.
  const absl::Status& status() const { return status_; }

  // Determinises every rule and checks the grammar:
  //   - states and nodes within GrammarLimits;
  //   - no left recursion (a rule that can reach itself without consuming a byte);
  //   - the root rule derives at least one finite sentence. Alternatives that cannot finish (a
  //     recursion with no way out) are removed, so a matcher never walks into a dead end.
  // Errors are INVALID_ARGUMENT naming the limit or the rule.
  absl::StatusOr<std::shared_ptr<const Grammar>> Build(int32_t root_rule) &&;

 private:
  struct ByteEdge {
    uint8_t lo, hi;
    int32_t to;
  };
  struct CallEdge {
    int32_t rule, to;
  };
  struct Node {
    int32_t rule = 0;
    std::vector<int32_t> epsilon;
    std::vector<ByteEdge> bytes;
    std::vector<CallEdge> calls;
  };
  struct Rule {
    std::string name;
    int32_t start = 0, end = 0;
  };
  bool CheckNode(int32_t node);
  int32_t AddNodeUnchecked(int32_t rule);

  GrammarLimits limits_;
  std::vector<Node> nodes_;
  std::vector<Rule> rules_;
  absl::Status status_;
};

// Runs a Grammar over a byte stream: the matcher holds one MatcherState.
class GrammarMatcher {
 public:
  explicit GrammarMatcher(std::shared_ptr<const Grammar> grammar);

  // Consumes `byte` when the grammar accepts it (returns true); otherwise returns false and the
  // state is unchanged.
  bool Accept(uint8_t byte);
  // All of `bytes` or nothing: on refusal the state is unchanged.
  bool Accept(std::string_view bytes);
  bool CanAccept(uint8_t byte) const { return grammar_->CanAccept(state_, byte); }
  // The input so far is a complete sentence.
  bool IsComplete() const { return state_.complete; }
  // Some byte can follow.
  bool CanContinue() const { return state_.CanContinue(); }
  void Reset() { state_ = grammar_->initial_state(); }

  const MatcherState& state() const { return state_; }
  const Grammar& grammar() const { return *grammar_; }

 private:
  std::shared_ptr<const Grammar> grammar_;
  MatcherState state_;
  MatcherState next_;
  std::vector<int32_t> scratch_;
};

}  // namespace airlock::inference
