// JSON Schema -> Grammar: the structured-output constraint of `response_format` (a JSON schema, or
// {"type": "json_object"}). The schema comes from a client, so it is hostile: every keyword that
// would constrain the output and is not implemented is refused by name and position, never
// ignored, and everything that could make the grammar large is bounded.
//
// What the generated JSON looks like:
//   - No whitespace before the top-level value and none after it: once the value is complete and
//     nothing can extend it, the only continuation is the end of generation.
//   - Whitespace rule: between two tokens of JSON (after `{`, `[`, `,`, `:` and before `}`, `]`,
//     `,`, `:`) the output may hold nothing, a single space, or one newline followed by at most
//     kMaxIndent spaces or tabs (so "\n" plus indentation, or " ", but never two spaces, two
//     newlines, or "\r\n"). Whitespace is therefore bounded at every point: a model cannot emit
//     spaces forever. Strings, arrays without maxItems and recursion stay unbounded, as JSON's
//     are: max_tokens bounds those.
//   - Object members appear in the order of `properties` in the schema; a required member is
//     always there, an optional one may be left out. Keys are spelled exactly as in the schema.
//   - Strings are UTF-8 (validated byte by byte, so a multi-byte character may be split across
//     tokens), with JSON's escapes; a `\u` escape of a surrogate must be a proper pair, and raw
//     control characters are refused. `enum`/`const` values are produced exactly as the compact
//     serialisation of the schema's value (raw UTF-8, no optional escapes or whitespace inside).
//   - Numbers: JSON's syntax (-?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?) with bounded digit
//     runs, so that every number fits a double (and every integer a 64-bit integer or a double)
//     and a model cannot write digits forever: at most kMaxIntegerDigits before the point,
//     kMaxFractionDigits after it, kMaxExponentDigits in the exponent. Integers have no fraction
//     or exponent.
//
// Keywords:
//   - Annotations, ignored: title, description, $schema, $comment, default, examples, deprecated,
//     readOnly, writeOnly; $id at the root only.
//   - type (a name or a list of names; without `type`, a schema with object keywords is an object,
//     with array keywords an array, and a schema with no constraint at all, `{}` or `true`, is any
//     JSON value).
//   - object: properties, required (each name must be in properties), additionalProperties:
//     absent or false (the default here is false, as OpenAI's strict mode requires: no member
//     outside `properties`); true is accepted only without `properties` and means any object.
//   - array: items (absent: any value), minItems, maxItems (both at most limits.max_array_items).
//   - enum, const: any JSON values (with `type`, values of other types are dropped).
//   - anyOf; oneOf is treated as anyOf (an instance matching two branches is not excluded).
//     Neither takes sibling keywords other than annotations; enum/const take only `type`.
//   - $ref to "#", "#/$defs/NAME" or "#/definitions/NAME" ($defs/definitions at the root only,
//     every definition compiled whether referenced or not), recursion included (a recursion that
//     consumes nothing first, or that never ends, is refused); $ref takes no sibling keywords
//     other than annotations.
//   - Refused (INVALID_ARGUMENT naming the keyword and its JSON pointer): everything else,
//     including pattern, format, minLength, maxLength, minimum, maximum, multipleOf,
//     patternProperties, propertyNames, allOf, not, if/then/else, prefixItems, contains,
//     uniqueItems, dependentRequired, remote or nested $refs, and the schema `false`.
//     (minLength/maxLength are refused on purpose rather than unrolled: every character position
//     would become a matcher state of its own, so a 1,000-character bound would cost a thousand
//     vocabulary walks before its masks are cached.)
//
// Cost: about 1 ms for an ordinary schema (tools/bench/sampling_bench.cc: an order with a dozen
// members, nested items and enums, 1,748 states); the limits bound the worst case (a 12-way
// anyOf of 60-member objects takes about 0.2 s). Callers serving many requests with one schema
// should compile it once and share the grammar (and its TokenMaskCache).
//
// Thread-safety: the functions are pure and may run on any thread; the grammar returned is
// immutable and shareable.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string_view>

#include "absl/status/statusor.h"
#include "inference/sampling/grammar.h"

namespace airlock::inference {

struct JsonSchemaLimits {
  // Size of the schema text. Default: 64 KiB.
  size_t max_schema_bytes = 64 * 1024;
  // Nesting of arrays/objects in the schema document, and of subschemas in one another.
  // Default: 32.
  int32_t max_depth = 32;
  // Values in one enum. Default: 256.
  int32_t max_enum_values = 256;
  // Members of `properties` in one object. Default: 128.
  int32_t max_properties = 128;
  // Branches of one anyOf/oneOf. Default: 64.
  int32_t max_any_of = 64;
  // minItems and maxItems, each (the bounds are unrolled into the grammar). Default: 256.
  int64_t max_array_items = 256;
  // Entries of $defs/definitions. Default: 256.
  int32_t max_definitions = 256;
  // The grammar's own bounds (states, nesting of the output, threads). Default: GrammarLimits{}.
  GrammarLimits grammar;
};

// Most spaces or tabs after the newline of one whitespace run (see the whitespace rule above).
inline constexpr int kMaxIndent = 16;
// Digit runs of a number (see above): 19 integer digits stay below 1e19 (a uint64 or an exact
// enough double), an exponent of 2 digits keeps every number far from double overflow.
inline constexpr int kMaxIntegerDigits = 19;
inline constexpr int kMaxFractionDigits = 20;
inline constexpr int kMaxExponentDigits = 2;

// Compiles a JSON Schema (the text of it) into a grammar of the JSON texts it accepts (a subset
// of them where the header says so: member order, whitespace, enum spelling). Errors are
// INVALID_ARGUMENT: malformed JSON (with the parser's position), an unsupported keyword or value
// (naming it and its JSON pointer, e.g. "/properties/date/pattern"), a limit passed (naming the
// limit), a schema without any finite instance, a $ref that does not resolve.
absl::StatusOr<std::shared_ptr<const Grammar>> CompileJsonSchema(
    std::string_view schema_json, const JsonSchemaLimits& limits = {});

// Any JSON object (OpenAI's response_format {"type": "json_object"}): an object whose members
// have any JSON values, nested at most limits.max_stack_depth deep, under the same whitespace rule.
// Built once; the same grammar is returned on every call.
std::shared_ptr<const Grammar> AnyJsonObjectGrammar();

// Whether arrays and objects in the JSON `text` nest deeper than `max_depth`, counted on the raw
// text (brackets inside strings skipped; malformed text is left to the parser), so that callers can
// refuse a document before any recursive code (a parser, dump(), the schema compiler) sees it.
bool JsonNestsDeeperThan(std::string_view text, int32_t max_depth);

}  // namespace airlock::inference
