"""Working sets of a gated DeltaNet mixer (Qwen3-Next `linear_attn`) under transformers' torch path.

What is modelled is what a pip-installed transformers 5.17 runs unless the user installs
flash-linear-attention and causal-conv1d (and what the trace engine sees): `torch_chunk_gated_delta_rule`
for a prefill, `torch_recurrent_gated_delta_rule` for a decode step, `causal_conv1d_fn` /
`causal_conv1d_update`, and Qwen3NextRMSNormGated. The chunked rule upcasts q, k, v, β and the decay to
fp32 and materialises per-chunk (chunk × chunk) matrices for every value head, so it needs far more memory
than the fused kernels.

Shapes (b sequences of s tokens; Hk key heads of dk, Hv value heads of dv, r = Hv / Hk; Kd = Hk·dk,
Vd = Hv·dv, C = 2·Kd + Vd conv channels, K conv taps; chunk L = 64, nc = ceil(s / L), sp = nc·L; e bytes
per compute-dtype element, fp32 4). Sizes used below: Q = (b, Hv, sp, dk) fp32, V = (b, Hv, sp, dv) fp32,
S = (b, Hv, sp) fp32, LL = (b, Hv, nc, L, L) fp32, ST = (b, Hv, dk, dv) fp32 (one recurrent state); a u
suffix is the unpadded (s-token) size.
Source: transformers 5.17.0 models/qwen3_next/modeling_qwen3_next.py: Qwen3NextGatedDeltaNet.forward and
fix_query_key_value_ordering, causal_conv1d_fn, causal_conv1d_update, l2norm, torch_chunk_gated_delta_rule,
torch_recurrent_gated_delta_rule, Qwen3NextRMSNormGated.forward; cache_utils.LinearAttentionLayer
(update_conv_state, update_recurrent_state); checked against the trace engine (tests/crosscheck).
"""

from __future__ import annotations

from memfit.core.overhead import round_block
from memfit.core.result import Term
from memfit.core.spec import GatedDeltaNetSpec

FP32_BYTES = 4
"""torch_chunk_gated_delta_rule and torch_recurrent_gated_delta_rule run in fp32: `.to(torch.float32)` on
q, k, v, β and the decay. Source: transformers 5.17.0 modeling_qwen3_next.py (both functions)."""
DELTA_RULE_CHUNK_TOKENS = 64
"""torch_chunk_gated_delta_rule's chunk_size default; Qwen3NextGatedDeltaNet.forward passes none.
Source: transformers 5.17.0 modeling_qwen3_next.py torch_chunk_gated_delta_rule."""


def _split_copies(m: GatedDeltaNetSpec, *, tokens: int, dt: int) -> tuple[int, int, int]:
    """(q/k/v copies before the cat, the gate z's copy, b and a's copies) in bytes, for `tokens` tokens.

    in_proj_qkvz's output is viewed as (b, s, Hk, 2·dk + 2·r·dv) and split; with Hk > 1 no head-merging
    reshape of a split is a view, so q and k (reshape to (b, s, Kd)) and v are copied, and with r > 1 so
    are z (reshape to (b, s, Hv, dv)) and b, a (reshape to (b, s, Hv)). With r = 1 z and b, a stay views
    (z's later (b·s·Hv, dv) reshape is one too); with Hk = 1 everything is a view until z's reshape
    before the norm copies it (_late_gate_copy).
    Source: transformers 5.17.0 Qwen3NextGatedDeltaNet.fix_query_key_value_ordering and forward.
    """
    grouped = m.num_value_heads > m.num_key_heads
    if m.num_key_heads == 1:
        return 0, 0, 0                                 # z's copy comes at the norm (_late_gate_copy)
    qkv = tokens * m.conv_dim * dt
    z = tokens * m.value_dim * dt if grouped else 0
    ba = tokens * m.ba_width * dt if grouped else 0
    return qkv, z, ba


def _late_gate_copy(m: GatedDeltaNetSpec, *, tokens: int, dt: int) -> int:
    """z's copy made by its (b·s·Hv, dv) reshape just before the gated norm: with one key head only."""
    return tokens * m.value_dim * dt if m.num_key_heads == 1 else 0


def delta_net_prefill_step(m: GatedDeltaNetSpec, *, b: int, s: int, hidden: int, dt: int) -> Term:
    """A gated DeltaNet mixer's largest live set over a prefill of `s` tokens per sequence (bytes).

    `hidden` is the (b, s, hidden) normed input. Alive across the mixer (locals of its forward): the
    normed input, in_proj_qkvz's and in_proj_ba's outputs, the z and b/a copies (_split_copies), then the
    conv's SiLU output (b, C, s) (v stays a view of it), β (b, s, Hv) and the fp32 decay g, and with r > 1
    q and k repeated to every value head (b, s, Hv, dk) each. Moments before the rule: the cat of q, k, v
    beside their copies, then the depthwise conv's (b, C, s + K − 1) output and its SiLU. The rule's
    moments are in _chunk_rule_moments; after it, its (b, s, Hv, dv) output and final state (a local
    beside the cache's copy) sit beside the gated RMSNorm's temporaries (_gated_norm_bytes) and then
    out_proj's output.
    """
    f, tokens = FP32_BYTES, b * s
    qkv, z, ba = _split_copies(m, tokens=tokens, dt=dt)
    mixed = tokens * m.conv_dim * dt
    projections = [Term(name="normed", nbytes=hidden),
                   Term(name="in_proj", nbytes=tokens * m.in_proj_width * dt),
                   Term(name="split_copies", nbytes=z + ba)]
    rep = m.num_value_heads > m.num_key_heads
    repeated = 2 * tokens * m.num_value_heads * m.key_head_dim * dt if rep else 0
    gates = tokens * m.num_value_heads * (dt + f)                      # β and g
    out_e = tokens * m.value_dim * dt
    state = b * m.ssm_state_elements * f
    moments = {
        "cat": qkv + mixed,                             # the q, k, v copies (if any) beside their cat
        "conv": qkv + mixed + b * m.conv_dim * (s + m.conv_kernel - 1) * dt + mixed,
        **{f"rule_{name}": mixed + repeated + gates + nbytes
           for name, nbytes in _chunk_rule_moments(m, b=b, s=s, dt=dt).items()},
        "gated_norm": mixed + repeated + gates + out_e + state + _late_gate_copy(m, tokens=tokens, dt=dt)
        + _gated_norm_bytes(m, tokens=tokens, dt=dt),
        "out_proj": mixed + repeated + gates + out_e + state + hidden,
    }
    moment, extra = max(moments.items(), key=lambda item: item[1])
    return Term.group("mamba", [*projections, Term(name=f"delta_{moment}", nbytes=extra)])


def _chunk_rule_moments(m: GatedDeltaNetSpec, *, b: int, s: int, dt: int) -> dict[str, int]:
    """Live bytes inside torch_chunk_gated_delta_rule at each of its moments, its inputs aside.

    In order: the fp32 transposed copies of q, k, v, β, g (2Qu + Vu + 2Su), l2norm's x·x beside them
    (+ Qu), F.pad to sp of all five (it copies even when nothing is padded); v·β and k·β (V + Q); the
    cumulative decay (S); the pairwise decay (masked_fill and exp: two LL at once); ut_system = (k·β)
    Kᵀ ⊙ decay and the intra-chunk attention q Kᵀ ⊙ decay (a product and its matmul beside the kept ones:
    up to four LL); the decayed k·β (Q); two solve_triangular results (V, Q); the zero initial state (ST)
    and the output buffer (V); q and k rescaled by their decays (one old and one new copy, with the exp);
    the chunk loop (v_new and the inter-chunk read kept, the state's decayed copy, its update and their
    sum: two (b, Hv, L, dv) and three ST); then the output buffer, zeros_like of solve_triangular's
column-major result, is copied when its chunks are flattened (V), then cast back (b, s, Hv, dv).
    The rule's final state is left out of every moment after it is made: the engine counts the layer's
    cached state, which transformers allocates only once the rule returns (update_recurrent_state).
    Source: transformers 5.17.0 torch_chunk_gated_delta_rule, l2norm; F.pad / linalg.solve_triangular
    allocate only their outputs on fake tensors.
    """
    f, hv, dk, dv = FP32_BYTES, m.num_value_heads, m.key_head_dim, m.value_head_dim
    chunk = DELTA_RULE_CHUNK_TOKENS
    nc = -(-s // chunk)
    sp = nc * chunk
    q_u, v_u, s_u = b * hv * s * dk * f, b * hv * s * dv * f, b * hv * s * f
    q, v, small = b * hv * sp * dk * f, b * hv * sp * dv * f, b * hv * sp * f
    ll = b * hv * sp * chunk * f
    state = b * hv * dk * dv * f
    chunk_out = b * hv * chunk * dv * f
    upcast = 2 * q_u + v_u + 2 * s_u
    base = 3 * q + 2 * v + 3 * small                   # padded q, k, v, β, g; v·β, k·β; cumulative decay
    held = base + 3 * ll + 2 * q + 2 * v               # + pairwise, ut, intra; decayed k·β; solves; output
    return {
        "l2norm": upcast + q_u + s_u,
        "pad": upcast + 2 * q + v + 2 * small,
        "pairwise_decay": base + 2 * ll,
        "intra_chunk": base + 4 * ll,
        "decay_qk": held + q + small,
        "chunk_loop": held + 2 * chunk_out + 3 * state + b * hv * nc * f,
        # the output buffer is zeros_like(solve_triangular's column-major result): flattening its chunks
        # copies it (V) before the compute-dtype cast, which is smaller
        "output": held + 2 * chunk_out + v + b * hv * nc * f,
    }


def _gated_norm_bytes(m: GatedDeltaNetSpec, *, tokens: int, dt: int) -> int:
    """Qwen3NextRMSNormGated's largest live set beside its input (bytes), over X = tokens × Vd elements:
    the fp32 upcast with its square, then with the normed fp32 copy (X·(2·4)); the cast back and the
    weight product (X·(4 + 2e)); silu(z.float()) beside the weight product and the fp32 gated product
    (X·(e + 8)); with fp32 activations the upcasts are no-ops.
    Source: transformers 5.17.0 Qwen3NextRMSNormGated.forward."""
    x = tokens * m.value_dim
    f = FP32_BYTES
    if dt == f:
        return 3 * x * f
    return max(2 * x * f, x * (f + 2 * dt), x * (dt + 2 * f))


def delta_net_decode_step(m: GatedDeltaNetSpec, *, b: int, hidden: int, dt: int) -> Term:
    """A gated DeltaNet mixer's largest live set in one decode step (bytes).

    Beside the normed input and in_proj's outputs: the z and b/a copies, the conv's (b, C) SiLU output,
    q and k repeated to every value head, β and g; then either the conv window (causal_conv1d_update: the
    q/k/v copies, their cat, its cat with the (b, C, K) state, the conv's (b, C, 2) output and the SiLU)
    or the recurrent update (torch_recurrent_gated_delta_rule on one token: fp32 q, k, v, β, g, the output
    buffer, kv_mem and δ (b, Hv, dv), and three (b, Hv, dk, dv) fp32 states: the cached state · exp(g),
    the k ⊗ δ outer product and their sum; the cached state itself is `.to()` a no-op). Tensors of a few
    bytes per sequence take a whole allocator block (round_block).
    Source: transformers 5.17.0 Qwen3NextGatedDeltaNet.forward, torch_recurrent_gated_delta_rule,
    causal_conv1d_update; live storages on real CPU bf16 tensors (80B-A3B shapes, one sequence: exact)."""
    f, hv, dk, dv = FP32_BYTES, m.num_value_heads, m.key_head_dim, m.value_head_dim
    qkv, z, ba = _split_copies(m, tokens=b, dt=dt)
    ba = 2 * round_block(ba // 2) if ba else 0
    mixed = b * m.conv_dim * dt
    repeated = 2 * b * hv * dk * dt if hv > m.num_key_heads else 0
    gates = round_block(b * hv * dt) + round_block(b * hv * f)
    upcast = (2 * b * hv * dk + b * hv * dv) * f + 2 * round_block(b * hv * f)
    state = b * m.ssm_state_elements * f
    update = mixed + repeated + gates + upcast + 3 * b * hv * dv * f + 3 * state
    window = qkv + mixed + b * m.conv_dim * (m.conv_kernel + 1 + 2 + 1) * dt
    return Term.group("mamba", [Term(name="normed", nbytes=hidden),
                                Term(name="in_proj", nbytes=b * m.in_proj_width * dt),
                                Term(name="split_copies", nbytes=z + ba),
                                Term(name="state_update", nbytes=max(update, window))])
