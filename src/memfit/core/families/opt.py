"""OPT: learned positions (max_position_embeddings + 2 rows), biased Linears, ReLU fc1/fc2, LayerNorms.

Source: transformers 5.17.0 models/opt: OPTLearnedPositionalEmbedding has an offset of 2 rows;
`enable_bias` gates every Linear bias; when `word_embed_proj_dim` != hidden_size (OPT-350m) the token
embeddings and the tied LM head are that narrower width, with project_in/project_out Linears (no bias);
the final LayerNorm exists only when `do_layer_norm_before` and not `_remove_final_layer_norm`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from memfit.core.choices import NormKind
from memfit.core.families._config import opt_bool, opt_int
from memfit.core.families._decoder import decoder_spec, dense_mlp, read_dims
from memfit.core.families._layout import OPT
from memfit.core.spec import ModelSource, ModelSpec

POSITION_OFFSET_ROWS = 2
"""Extra learned position rows. Source: transformers OPTLearnedPositionalEmbedding.offset."""


def spec_from_config(config: Mapping[str, Any], *, name: str, source: ModelSource) -> ModelSpec:
    """An OPT ModelSpec from its config.json."""
    dims = read_dims(config, name=name)
    bias = opt_bool(config, "enable_bias", default=True, name=name)
    affine = opt_bool(config, "layer_norm_elementwise_affine", default=True, name=name)
    norm = NormKind.LAYER if affine else None
    mlp = dense_mlp(config, name=name, key="ffn_dim", bias=bias, gated=False)
    width = opt_int(config, "word_embed_proj_dim", default=dims.hidden_size, name=name) or dims.hidden_size
    extras: tuple[tuple[str, int], ...] = ()
    if width != dims.hidden_size:
        extras = (("project_in", width * dims.hidden_size), ("project_out", dims.hidden_size * width))
    has_final = (opt_bool(config, "do_layer_norm_before", default=True, name=name)
                 and not opt_bool(config, "_remove_final_layer_norm", default=False, name=name))
    return decoder_spec(config, name=name, source=source, family="opt", tie_default=True, qkv_bias=bias,
                        out_bias=bias, num_kv_heads=dims.num_heads, mlp_for_layer=lambda _index: mlp,
                        norm=norm or NormKind.LAYER, norms_per_layer=2 if affine else 0,
                        final_norm=norm if has_final else None,
                        learned_positions=dims.max_position_embeddings + POSITION_OFFSET_ROWS,
                        embedding_dim=None if width == dims.hidden_size else width, extra_params=extras,
                        modules=OPT, rotary_buffer=False, rotary=False)
