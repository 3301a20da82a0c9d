"""gpt-oss (20b, 120b): biased GQA with per-head attention sinks, alternating sliding/global layers, and
biased SwiGLU experts behind a biased router.

Source: transformers 5.17.0 models/gpt_oss: GptOssExperts holds gate_up_proj (E, h, 2·I), gate_up_proj_bias
(E, 2·I), down_proj (E, I, h), down_proj_bias (E, h) as raw Parameters; `router` has weight (E, h) and bias
(E); `sinks` has num_attention_heads entries; layer_types default to sliding for even layers.
How it runs: GptOssPreTrainedModel does not support SDPA (the sinks need eager_attention_forward's cat), so
eager runs; GptOssRMSNorm returns (w × normalised).to(dtype), keeping the fp32 normalised tensor when the
weight trains; GptOssExperts._apply_gate is a clamped GLU over strided halves of one gate_up output.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

from memfit.core.dtypes import DType
from memfit.core.families._config import opt_bool, req_int
from memfit.core.families._decoder import decoder_spec, layer_windows, read_dims
from memfit.core.families._layout import GPT_OSS
from memfit.core.families._moe import moe_block
from memfit.core.families.gemma2 import alternating
from memfit.core.spec import AttentionSpec, ModelSource, ModelSpec

STORED_DTYPE = DType.BF16
"""Checkpoint dtype when config.json names none (the published configs do not): attention, embeddings and
norms are stored in bf16, the MoE experts in MXFP4 (quantization_config). Source: vLLM gpt-oss launch post
(MXFP4 MoE weights, bfloat16 for attention and other layers)."""


def _with_sinks(_index: int, attention: AttentionSpec) -> AttentionSpec:
    return dataclasses.replace(attention, sinks=True)


def spec_from_config(config: Mapping[str, Any], *, name: str, source: ModelSource) -> ModelSpec:
    """A gpt-oss ModelSpec from its config.json."""
    moe = moe_block(config, name=name, expert_width=req_int(config, "intermediate_size", name=name),
                    router_bias=True)
    moe = dataclasses.replace(moe, expert=dataclasses.replace(moe.expert, bias=True, clamped_glu=True))
    windows = layer_windows(config, name=name, num_layers=read_dims(config, name=name).num_layers,
                            default_types=alternating(2))
    bias = opt_bool(config, "attention_bias", default=True, name=name)
    return decoder_spec(config, name=name, source=source, family="gpt_oss", windows=windows, qkv_bias=bias,
                        out_bias=bias, default_dtype=STORED_DTYPE,
                        attention_for_layer=_with_sinks, mlp_for_layer=lambda _index: moe,
                        modules=GPT_OSS, sdpa_supported=False, norm_fp32_output=True)
