// The body of attention.comp (F32 KV) and attention_f16.comp (F16 KV, KV_F16 defined): causal
// attention of one query head of one row over its own sequence's positions 0..pos, read through
// the sequence's block table: scores = (q . k_p) * scale, softmax, out = sum_p w_p v_p. With an
// F16 cache, q and the probabilities are rounded to F16 first, as ggml (and the CPU backend) do.
// One workgroup per (head, row); the scores live in shared memory (at most 4096 positions: longer
// rows are left to attention_long.glsl).
#include "attention_common.glsl"

layout(std430, binding = 5) writeonly buffer Out { float o[]; };

const uint kMaxPositions = 4096;
shared float scores[kMaxPositions];

void main() {
  const uint h = gl_WorkGroupID.x;
  const uint t = gl_WorkGroupID.y;
  if (h >= p.n_head || t >= p.rows) return;
  const uint lid = gl_LocalInvocationID.x;
  const uint kv_dim = p.n_head_kv * p.head_dim;
  const uint kvh = h / (p.n_head / p.n_head_kv);
  const uint n_kv = meta[4 * t] + 1;
  if (n_kv > kMaxPositions) return;  // attention_long.glsl's (uniform over the workgroup)
  const uint table = meta[4 * t + 3];
  const uint qb = (t * p.n_head + h) * p.head_dim;

  float local_max = -3.402823466e38;
  for (uint pos = lid; pos < n_kv; pos += 64) {
    const float s = Score(qb, table, pos, kvh, kv_dim);
    scores[pos] = s;
    local_max = max(local_max, s);
  }
  const float m = GroupMax(local_max, lid);
  float local_sum = 0.0;
  for (uint pos = lid; pos < n_kv; pos += 64) {
    const float e = exp(scores[pos] - m);
    scores[pos] = e;
    local_sum += e;
  }
  const float inv = 1.0 / GroupSum(local_sum, lid);
  for (uint d = lid; d < p.head_dim; d += 64) {
    float acc = 0.0;
    for (uint pos = 0; pos < n_kv; ++pos) acc = fma(Round(scores[pos] * inv), Kv(vc[KvBase(table, pos, kvh, kv_dim) + d]), acc);
    o[qb + d] = acc;
  }
}
