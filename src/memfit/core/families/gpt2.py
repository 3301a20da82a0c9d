"""GPT-2: learned positions, Conv1D c_attn (fused q/k/v) and c_proj, a 4×hidden GELU MLP, LayerNorms.

Source: transformers 5.17.0 models/gpt2: every Conv1D has a bias; `n_inner` null means 4 × n_embd;
wpe has n_positions rows; ln_1, ln_2 and ln_f are LayerNorms with bias; tied embeddings by default.
Its eager_attention_forward takes the softmax in the compute dtype (no fp32 upcast).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from memfit.core.choices import EagerScores, NormKind, SoftmaxDtype
from memfit.core.families._config import req_int
from memfit.core.families._decoder import decoder_spec, dense_mlp, read_dims
from memfit.core.families._layout import GPT2
from memfit.core.spec import ModelSource, ModelSpec


def spec_from_config(config: Mapping[str, Any], *, name: str, source: ModelSource) -> ModelSpec:
    """A GPT-2 ModelSpec from its config.json."""
    dims = read_dims(config, name=name)
    mlp = dense_mlp(config, name=name, key="n_inner", bias=True, gated=False, default=4 * dims.hidden_size)
    return decoder_spec(config, name=name, source=source, family="gpt2", tie_default=True, fused_qkv=True,
                        qkv_bias=True, out_bias=True, mlp_for_layer=lambda _index: mlp, norm=NormKind.LAYER,
                        final_norm=NormKind.LAYER, modules=GPT2, rotary_buffer=False, rotary=False,
                        eager_scores=EagerScores.SCORES_IN_DTYPE, softmax_dtype=SoftmaxDtype.SCORES,
                        learned_positions=req_int(config, "n_positions", "max_position_embeddings",
                                                  name=name))
