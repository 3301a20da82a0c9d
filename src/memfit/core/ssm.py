"""Working sets of a Mamba-2 mixer under transformers' torch path (no mamba_ssm / causal_conv1d kernels).

What is modelled is what a pip-installed transformers 5.17 runs unless the user installs the CUDA kernels
(and what the trace engine sees): `mamba2_chunk_scan`, the reference chunked SSD scan in plain torch, and
`mamba2_selective_state_update` for decode. Its prefill materialises (batch, chunks, chunk, chunk, heads,
d_state) and (batch, chunks, chunk, heads, head_dim, d_state) fp32 products before reducing them, so it
needs far more memory than the fused kernels (which keep per-chunk tiles on chip).

Prefill, in order (b sequences of s tokens, chunk L, nc = ceil(s / L) chunks, sp = nc·L; H heads of P,
d_state N, conv_dim C; fp32 = 4 B, e = compute-dtype bytes), with what is live beside each step:
- the layer holds its normed input; in_proj's (b, s, D + C + H) output lives to the end (the gate and dt
  are views of it); the depthwise conv's (b, C, s + K − 1) output and its SiLU (b, s, C) (x, B, C views);
- dt + dt_bias, softplus, clamp (b, s, H); x in fp32 × dt (b, s, D); B and C in fp32 repeated to every
  head (b, s, H, N) each; D·x padded (b, sp, D); then every input padded to sp (the unpadded ones alive
  until all four are built);
- segment_sum: three (b, H, nc, L, L) fp32 tensors, then L = exp (one kept); G = Σ_N C·B over a
  (b, nc, L, L, H, N) product; M = Σ G·L (two more of L's size); Y_diag = Σ_L M·x over a
  (b, nc, L, L, H, P) product; the chunk states Σ_L B·decay·x over a (b, nc, L, H, P, N) product;
  the inter-chunk recurrence over a (b, nc + 1, nc + 1, H, P, N) product; C·states (b, nc, L, H, P, N)
  kept to the end; Y_off, Y_diag + Y_off and + D·x (b, sp, D) each;
- after the scan: the output, the final states (b, nc + 1, H, P, N) and the gated RMSNorm's fp32 temps.
Decode (recurrent form): dA = exp(dt·A) (fp32), dB and dB·x (compute dtype), state·dA and the new state
(fp32), its compute-dtype copy: (b, H, P, N) each.
Falcon-H1's muP scaling (MambaSpec.mup_scaled) adds the scaled input and a second in_proj output.
Source: transformers 5.17.0 modeling_granitemoehybrid.py / modeling_nemotron_h.py (mamba2_chunk_scan,
segment_sum, reshape_into_chunks, causal_conv1d_fn, mamba2_selective_state_update, the mixers' forward,
GraniteMoeHybridRMSNormGated / Zamba2RMSNormGated); checked against the trace engine (tests/crosscheck).

A Mamba-1 mixer (Mamba1Spec, Jamba) runs `mamba_selective_scan`'s sequential loop instead: see
selective_scan_prefill_step and selective_scan_decode_step. A gated DeltaNet mixer (GatedDeltaNetSpec,
Qwen3-Next) runs the chunked gated delta rule: see core/gated_delta_net.py.
"""

from __future__ import annotations

from memfit.core.gated_delta_net import delta_net_decode_step, delta_net_prefill_step
from memfit.core.overhead import round_block
from memfit.core.result import Term
from memfit.core.spec import GatedDeltaNetSpec, Mamba1Spec, MixerSpec

FP32_BYTES = 4
"""The chunked scan and the recurrent update run in fp32 (`.float()` on x, B, C, dt)."""


def mamba_prefill_step(mamba: MixerSpec, *, b: int, s: int, hidden: int, dt: int) -> Term:
    """The Mamba mixer's largest live set over a prefill of `s` tokens per sequence (bytes).

    `hidden` is the (b, s, hidden) normed input in the compute dtype (dt bytes per element).
    """
    if isinstance(mamba, Mamba1Spec):
        return selective_scan_prefill_step(mamba, b=b, s=s, hidden=hidden, dt=dt)
    if isinstance(mamba, GatedDeltaNetSpec):
        return delta_net_prefill_step(mamba, b=b, s=s, hidden=hidden, dt=dt)
    f, h, p, n = FP32_BYTES, mamba.num_heads, mamba.head_dim, mamba.d_state
    d, c = mamba.d_inner, mamba.conv_dim
    chunks = -(-s // mamba.chunk_size)
    sp = chunks * mamba.chunk_size
    proj = b * s * mamba.in_proj_width * dt
    xbc = b * s * c * dt                                   # SiLU(conv(x, B, C))
    outer = [Term(name="normed", nbytes=hidden), Term(name="in_proj", nbytes=proj),
             Term(name="conv", nbytes=xbc)]
    x_pad, bn_pad, heads_pad = b * sp * d * f, b * sp * h * n * f, b * sp * h * f
    ll = b * sp * mamba.chunk_size * h * f                 # one (b, nc, L, L, H) fp32 tensor
    state = b * h * p * n * f                              # one (b, H, P, N) fp32 state
    xn = b * sp * h * p * n * f                            # a (b, nc, L, H, P, N) fp32 product
    dt_clamped = b * s * h * dt
    unpadded = b * s * d * f + b * s * h * f + 2 * b * s * h * n * f
    chunked = x_pad + heads_pad + 2 * bn_pad               # x, A·dt, B, C padded into chunks
    scan_in = dt_clamped + x_pad + chunked + heads_pad     # + D·x and the cumsum of A·dt
    after_diag = scan_in + 3 * ll + x_pad                  # L, G, M kept; Y_diag
    after_states = after_diag + heads_pad + bn_pad         # decay_states, B·decay
    recurrence = state + 2 * (chunks + 1) * state + (chunks + 1) ** 2 * (state + b * h * f)
    after_recurrence = after_states + state + (chunks + 1) * state + (chunks + 1) ** 2 * b * h * f
    moments = {
        "conv": b * c * (s + mamba.conv_kernel - 1) * dt,
        "chunking": dt_clamped + x_pad + unpadded + chunked,
        "segment_sum": scan_in + 3 * ll,
        "cb_product": scan_in + 2 * ll + ll * n,
        "decay_mask": scan_in + 4 * ll,
        "y_diag_product": scan_in + 3 * ll + ll * p + x_pad,
        "chunk_states": after_diag + heads_pad + bn_pad + xn + chunks * state,
        "recurrence": after_states + recurrence,
        "output": after_recurrence + heads_pad + xn + 3 * x_pad,
        "gated_norm": x_pad + (chunks + 1) * state + (3 if dt != f else 2) * b * s * d * f,
    }
    if mamba.mup_scaled:
        # muP: input × ssm_in_multiplier lives until the conv output is split; in_proj's output × mup_vector
        # is a second in_proj-sized tensor while it is formed
        moments["conv"] += hidden
        moments["mup_projection"] = hidden + proj
    moment, extra = max(moments.items(), key=lambda item: item[1])
    return Term.group("mamba", [*outer, Term(name=f"scan_{moment}", nbytes=extra)])


def mamba_decode_step(mamba: MixerSpec, *, b: int, hidden: int, dt: int) -> Term:
    """The Mamba mixer's largest live set in one decode step (bytes): in_proj's output, the conv window
    (b, C, K + 1) and the recurrent update's (b, H, P, N) temporaries (see the module docstring)."""
    if isinstance(mamba, Mamba1Spec):
        return selective_scan_decode_step(mamba, b=b, hidden=hidden, dt=dt)
    if isinstance(mamba, GatedDeltaNetSpec):
        return delta_net_decode_step(mamba, b=b, hidden=hidden, dt=dt)
    state = b * mamba.num_heads * mamba.head_dim * mamba.d_state
    update = state * (3 * FP32_BYTES + 2 * dt)
    window = b * mamba.conv_dim * (mamba.conv_kernel + 1) * dt
    return Term.group("mamba", [Term(name="normed", nbytes=hidden),
                                Term(name="in_proj", nbytes=b * mamba.in_proj_width * dt),
                                Term(name="state_update", nbytes=max(update, window))])


def selective_scan_prefill_step(mamba: Mamba1Spec, *, b: int, s: int, hidden: int, dt: int) -> Term:
    """A Mamba-1 mixer's largest live set over a prefill of `s` tokens per sequence (bytes).

    Shapes (d = d_inner, N = d_state, R = dt_rank, K = conv_kernel; X = (b, d, s), P = (b, d, s, N)):
    A = −exp(A_log) (d, N) fp32 lives through the forward; in_proj's (b, s, 2d) output (x and the gate z
    are views), the conv's (b, d, s + K − 1) output and its SiLU (b, d, s) live from the conv on; then
    x_proj's (b, s, R + 2N), the dt/B/C RMSNorms (fp32 upcasts), and dt_proj's (b, d, s) output in the
    compute dtype, kept with the normed B and C. mamba_selective_scan then
    keeps dt + bias → softplus (X, in dt's dtype: the bias is cast to it), discrete_A = exp(A·dt),
    discrete_B = dt·B and deltaB_u =
    discrete_B·x (P each, fp32, all three alive to the end of the scan; exp's argument is a fourth while
    discrete_A forms); its loop appends one (b, d) compute-dtype output per token (s separate
    allocations, each rounded to the allocator's block) and stacks them (X), the last fp32 (b, d, N) state
    alive; the D skip (x·D, the sum) and the gate (SiLU(z), the product) are fp32 X tensors. out_proj
    reads the fp32 output cast back.
    Source: transformers 5.17.0 modeling_jamba.py JambaMambaMixer.forward, mamba_selective_scan,
    causal_conv1d_fn, JambaRMSNorm (the torch path: no mamba_ssm, no mambapy, not compiled).
    """
    f, d, n, r = FP32_BYTES, mamba.d_inner, mamba.d_state, mamba.dt_rank
    x_e, x_f = b * d * s * dt, b * d * s * f
    p = b * d * s * n * f
    proj = b * s * mamba.in_proj_width * dt
    outer = [Term(name="normed", nbytes=hidden), Term(name="in_proj", nbytes=proj),
             Term(name="a_matrix", nbytes=_a_matrix_bytes(mamba)), Term(name="conv", nbytes=x_e)]
    x_proj = b * s * mamba.x_proj_width * dt
    bc = 2 * b * s * n * dt                                # normed B and C, kept
    scan_in = bc + 2 * x_e                                 # + dt_proj's output and softplus(dt + bias)
    outputs = s * round_block(b * d * dt)                  # the loop's per-token outputs, kept as a list
    state = b * d * n
    moments = {
        "conv": b * d * (s + mamba.conv_kernel - 1) * dt,
        "dt_norm": x_proj + 2 * b * s * r * f,
        "dt_proj": b * s * r * dt + bc + x_e,
        "softplus": bc + 3 * x_e,
        "discretize": scan_in + 2 * p,
        "delta_b_u": scan_in + 3 * p + x_f,                # + x.float()
        "loop": scan_in + 3 * p + outputs + 2 * state * f + state * dt,
        "output": scan_in + 3 * p + outputs + state * f + x_e + 2 * x_f,   # the stack, x·D and the sum
        "out_proj": bc + x_e + x_f + state * f + x_e + hidden,  # fp32 output, final state, cast, output
    }
    moment, extra = max(moments.items(), key=lambda item: item[1])
    return Term.group("mamba", [*outer, Term(name=f"scan_{moment}", nbytes=extra)])


def selective_scan_decode_step(mamba: Mamba1Spec, *, b: int, hidden: int, dt: int) -> Term:
    """A Mamba-1 mixer's largest live set in one decode step (bytes): in_proj's output, then the larger of
    the conv window (cat of the (b, d, K) state and the new column, the conv's two outputs, SiLU) and the
    recurrent update: dA = exp(dt·A) (with its argument), dB, dB·x, state·dA and the new state, fp32
    (b, d, N) each, beside the (b, d) conv output, dt_proj output and softplus(dt) in the compute dtype.
    Source: transformers 5.17.0 modeling_jamba.py causal_conv1d_update, mamba_selective_state_update."""
    d, n = mamba.d_inner, mamba.d_state
    state = b * d * n
    column = round_block(b * d * dt)
    update = 5 * round_block(state * FP32_BYTES) + 3 * column
    window = b * d * (mamba.conv_kernel + 1) * dt + 2 * b * d * dt + column
    return Term.group("mamba", [Term(name="normed", nbytes=hidden),
                                Term(name="in_proj", nbytes=b * mamba.in_proj_width * dt),
                                Term(name="a_matrix", nbytes=_a_matrix_bytes(mamba)),
                                Term(name="state_update", nbytes=max(update, window))])


def _a_matrix_bytes(mamba: Mamba1Spec) -> int:
    """A = −exp(A_log.float()): one fp32 (d_inner, d_state) tensor alive through the whole mixer forward."""
    return mamba.d_inner * mamba.d_state * FP32_BYTES
