"""Every Hypothesis strategy used by the property tests lives here."""


# --- inference (core/inference.py) ----------------------------------------------------------------------
from hypothesis import strategies as _ist  # noqa: E402

from memfit.core.choices import AttnImpl as _IAttnImpl  # noqa: E402
from memfit.core.choices import KvCache as _IKvCache  # noqa: E402
from memfit.core.dtypes import quant as _iquant  # noqa: E402
from memfit.core.spec import AttentionSpec as _IAttentionSpec  # noqa: E402
from memfit.core.spec import LayerSpec as _ILayerSpec  # noqa: E402
from memfit.core.spec import MlpSpec as _IMlpSpec  # noqa: E402
from memfit.core.spec import ModelSource as _IModelSource  # noqa: E402
from memfit.core.spec import ModelSpec as _IModelSpec  # noqa: E402
from memfit.core.workload import Inference as _Inference  # noqa: E402


@_ist.composite
def inference_specs(draw: _ist.DrawFn) -> _IModelSpec:
    """Tiny llama-like specs: MHA, GQA or MQA; some layers sliding; tied or untied head; 1-4 layers."""
    heads = draw(_ist.sampled_from([1, 2, 4, 8]))
    kv = draw(_ist.sampled_from([h for h in (1, 2, 4, 8) if heads % h == 0]))
    head_dim = draw(_ist.sampled_from([8, 16, 32]))
    window = draw(_ist.one_of(_ist.none(), _ist.integers(4, 64)))
    full = _IAttentionSpec(num_heads=heads, num_kv_heads=kv, head_dim=head_dim)
    sliding = _IAttentionSpec(num_heads=heads, num_kv_heads=kv, head_dim=head_dim, sliding_window=window)
    mlp = _IMlpSpec(intermediate_size=draw(_ist.sampled_from([32, 64, 128])), gated=draw(_ist.booleans()))
    pattern = draw(_ist.lists(_ist.booleans(), min_size=1, max_size=4))
    layers = tuple(_ILayerSpec(attention=sliding if slide else full, mlp=mlp) for slide in pattern)
    return _IModelSpec(name="prop-infer", family="llama", vocab_size=draw(_ist.sampled_from([64, 1000])),
                       hidden_size=heads * head_dim, max_position_embeddings=4096,
                       tie_word_embeddings=draw(_ist.booleans()), layers=layers,
                       source=_IModelSource(kind="config", ref="prop-infer"))


@_ist.composite
def inference_workloads(draw: _ist.DrawFn) -> _Inference:
    """transformers inference jobs: scoring or generation, dynamic or static cache, every attention, bnb."""
    return _Inference(
        prompt_tokens=draw(_ist.integers(1, 300)), new_tokens=draw(_ist.integers(0, 40)),
        batch_size=draw(_ist.integers(1, 4)),
        quant=_iquant(draw(_ist.sampled_from(["none", "nf4", "nf4-dq", "int8"]))),
        kv_cache=draw(_ist.sampled_from([_IKvCache.DYNAMIC, _IKvCache.STATIC])),
        attn=draw(_ist.sampled_from(list(_IAttnImpl))),
    )
