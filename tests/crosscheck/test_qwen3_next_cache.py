"""Qwen3-Next's cache as transformers 5.17 really fills it: the tiny model run for real (bf16, CPU, torch
paths: no flash-linear-attention, no causal_conv1d) against kv_cache's conv state, recurrent state and K/V,
byte for byte, with the dtypes the cache keeps (conv state in the compute dtype, recurrent state fp32)."""

import json
from pathlib import Path

from tests.helpers import requires_transformers

from memfit.core.dtypes import DType
from memfit.core.families import spec_from_config
from memfit.core.kv_cache import kv_cache
from memfit.core.spec import ModelSource
from memfit.core.workload import Inference

pytestmark = requires_transformers

CONFIG = Path(__file__).parents[1] / "data" / "configs" / "tiny-qwen3_next.json"


def test_cache_bytes_match_the_real_cache() -> None:
    """A 70-token bf16 prompt for 2 sequences: every cached tensor's bytes, by kind, equal kv_cache's."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    config = json.loads(CONFIG.read_text())
    model = AutoModelForCausalLM.from_config(AutoConfig.for_model(**config), dtype=torch.bfloat16)
    with torch.no_grad():
        cache = model(input_ids=torch.zeros((2, 70), dtype=torch.long), use_cache=True).past_key_values
    real = {"conv_state": 0, "ssm_state": 0, "full_attention": 0}
    for layer in cache.layers:
        if hasattr(layer, "recurrent_states"):
            for conv in layer.conv_states.values():
                assert conv.dtype is torch.bfloat16
                real["conv_state"] += conv.nbytes
            for state in layer.recurrent_states.values():
                assert state.dtype is torch.float32
                real["ssm_state"] += state.nbytes
        else:
            real["full_attention"] += layer.keys.nbytes + layer.values.nbytes
    spec = spec_from_config(config, name=CONFIG.stem, source=ModelSource(kind="config", ref=str(CONFIG)))
    ours = kv_cache(spec, Inference(prompt_tokens=70, new_tokens=1, batch_size=2, dtype=DType.BF16))
    assert ours.flat() == real
