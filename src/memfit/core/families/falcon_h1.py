"""TII Falcon-H1: every layer runs a Mamba-2 mixer and GQA attention side by side on the same normed input,
then a gated MLP; muP multipliers scale inputs and outputs throughout.

Source: transformers 5.17.0 models/falcon_h1: FalconH1DecoderLayer (mamba, then self_attn on
`hidden_states * attention_in_multiplier`, their scaled outputs summed; feed_forward FalconH1MLP gate, up,
down with mlp_bias); FalconH1Mixer (d_inner = mamba_d_ssm, else mamba_expand × hidden_size; in_proj bias
mamba_proj_bias, out_proj bias projectors_bias; a gated RMSNorm only with mamba_rms_norm, else
`y · silu(gate)`; input × ssm_in_multiplier and in_proj's output × the per-layer `mup_vector` buffer);
FalconH1Model (embeddings × embedding_multiplier, one `mup_vector` per layer); FalconH1ForCausalLM (logits ×
lm_head_multiplier). FalconH1Config: layers_block_type "hybrid" on every layer.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

from memfit.core.families._config import opt_bool, opt_int, req_int
from memfit.core.families._decoder import decoder_spec
from memfit.core.families._hybrid import mamba2_from_fields
from memfit.core.spec import LayerSpec, MambaSpec, ModelSource, ModelSpec

DECODE_SHAPE_NOTE = (
    "Falcon-H1 with mamba_rms_norm: transformers 5.17's FalconH1RMSNormGated drops the decode step's "
    "sequence axis, so with batch > 1 the Mamba output broadcasts against attention's to (batch, batch, "
    "hidden) and later layers run on that; decode figures here assume the intended (batch, 1, hidden)")
"""Seen on CPU tensors: a tiny config with mamba_rms_norm and batch 2 feeds layer 1 a (2, 2, 64) input in
decode. Source: transformers 5.17 FalconH1RMSNormGated.forward (`if seq_len == 1: squeeze(1)`)."""


def _mamba(config: Mapping[str, Any], *, name: str) -> MambaSpec:
    hidden = req_int(config, "hidden_size", name=name)
    d_ssm = opt_int(config, "mamba_d_ssm", default=1024, name=name)
    expand = opt_int(config, "mamba_expand", default=2, name=name) or 2
    d_inner = d_ssm if d_ssm is not None else expand * hidden
    return mamba2_from_fields(
        config, name=name, d_inner=d_inner,
        width="the Mamba width (mamba_d_ssm, else mamba_expand × hidden_size)",
        out_proj_bias=opt_bool(config, "projectors_bias", default=False, name=name),
        gated_norm=opt_bool(config, "mamba_rms_norm", default=False, name=name),
        mup_scaled=True,
    )


def spec_from_config(config: Mapping[str, Any], *, name: str, source: ModelSource) -> ModelSpec:
    """A Falcon-H1 ModelSpec from its config.json."""
    # embeddings × embedding_multiplier and logits × lm_head_multiplier are out-of-place copies
    base = decoder_spec(config, name=name, source=source, family="falcon_h1", logits_scaled=True,
                        embedding_multiplier_is_scaled=True)
    mamba = _mamba(config, name=name)
    layer = base.layers[0]
    both = LayerSpec(attention=layer.attention, mamba=mamba, mlp=layer.mlp, norm=layer.norm,
                     norms_per_layer=layer.norms_per_layer)
    notes = (DECODE_SHAPE_NOTE,) if mamba.gated_norm else ()
    return dataclasses.replace(base, layers=(both,) * base.num_layers, assumptions=notes)
