"""Mixtral 8x7B / 8x22B: Mistral attention with a top-2 router over 8 SwiGLU experts in every layer.

Source: transformers 5.17.0 models/mixtral: MixtralExperts stores gate_up_proj (E, 2·I, h) and down_proj
(E, h, I) as raw Parameters; the router `gate` is a (E, h) Parameter without bias.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from memfit.core.families._config import req_int
from memfit.core.families._decoder import decoder_spec
from memfit.core.families._moe import moe_block
from memfit.core.spec import ModelSource, ModelSpec


def spec_from_config(config: Mapping[str, Any], *, name: str, source: ModelSource) -> ModelSpec:
    """A Mixtral ModelSpec from its config.json."""
    moe = moe_block(config, name=name, expert_width=req_int(config, "intermediate_size", name=name))
    return decoder_spec(config, name=name, source=source, family="mixtral", qkv_bias=False, out_bias=False,
                        window_on_every_layer=True, mlp_for_layer=lambda _index: moe)
