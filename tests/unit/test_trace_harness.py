"""The shared harness's choices: config refusal, dtypes, attention, optimizers as CUDA runs them; and what
the trace refuses to run."""

import json

import pytest
from tests.helpers import requires_transformers

from memfit.core.choices import AttnImpl, Optimizer, Precision, Runtime
from memfit.core.dtypes import DType
from memfit.core.errors import EngineUnavailable
from memfit.core.workload import Inference, Parallelism, Training

pytestmark = requires_transformers

torch = pytest.importorskip("torch")

from memfit.trace import harness  # noqa: E402


def test_remote_code_is_refused():
    """A config with auto_map needs remote code: EngineUnavailable naming engine=analytic."""
    with pytest.raises(EngineUnavailable, match=r"remote code.*engine=analytic"):
        harness.hf_config(json.dumps({"model_type": "custom", "auto_map": {"AutoModelForCausalLM": "x.Y"}}))


@pytest.mark.parametrize(("workload", "expected"), [
    (Inference(prompt_tokens=8), torch.bfloat16),                          # the checkpoint dtype
    (Inference(prompt_tokens=8, dtype=DType.FP16), torch.float16),
    (Training(seq_len=8), torch.bfloat16),
    (Training(seq_len=8, precision=Precision.AMP_BF16), torch.float32),    # AMP: fp32 weights
])
def test_model_dtype(workload, expected):
    """Parameters are built in the inference dtype, the training precision, or fp32 under AMP."""
    assert harness.model_dtype(workload, DType.BF16) == expected


def test_flash_attention_is_refused():
    """attn=flash needs the flash-attn package; the trace says what to use instead."""
    with pytest.raises(EngineUnavailable, match="attn=sdpa or engine=analytic"):
        harness.attn_implementation(Training(seq_len=8, attn=AttnImpl.FLASH))


@pytest.mark.parametrize(("optimizer", "foreach", "fused"), [
    (Optimizer.ADAMW, True, None), (Optimizer.ADAMW_FUSED, None, True), (Optimizer.ADAMW_LOOP, False, None),
    (Optimizer.SGD_MOMENTUM, True, None),
])
def test_optimizers_are_explicit_about_foreach_and_fused(optimizer, foreach, fused):
    """torch would pick the for-loop on fake tensors; each optimizer names CUDA's implementation."""
    params = [torch.nn.Parameter(torch.empty(4, device="meta"))]
    defaults = harness.make_optimizer(params, optimizer).defaults
    assert (defaults.get("foreach"), defaults.get("fused")) == (foreach, fused)


@pytest.mark.parametrize(("workload", "message"), [
    (Inference(prompt_tokens=8, runtime=Runtime.VLLM), "transformers only"),
    (Inference(prompt_tokens=8, parallel=Parallelism(dp=2)), "multi-GPU training only"),
    (Training(seq_len=8, chunked_loss=True), "chunked_loss"),
])
def test_trace_refuses_what_it_cannot_run(workload, message):
    """Other runtimes, multi-GPU inference and non-transformers code paths: one line naming the
    alternative (multi-GPU training is traced: tests/crosscheck/test_trace_multirank.py)."""
    from memfit.sources.resolve import load_model
    from memfit.trace.run import check_supported

    with pytest.raises(EngineUnavailable, match=message):
        check_supported(load_model("Llama-3.2-1B"), workload)


def test_builtin_model_type_ignores_auto_map():
    """A phi3 config that also names remote code builds transformers' own Phi3 config."""
    cfg = harness.hf_config(json.dumps({"model_type": "phi3", "auto_map": {"AutoConfig": "x.Y"}}))
    assert type(cfg).__name__ == "Phi3Config"


@pytest.mark.parametrize(("config", "expected"), [
    ("tiny-phi3-gqa-tied.json", 96 * 64 * 2),     # tied: vocab 96 × hidden 64 × 2 B (bf16) = 12,288 B
    ("tiny-mistral.json", 0),                     # untied head: it is a weight of its own, nothing freed
])
def test_untied_head_block_of_a_random_weight_build(config, expected):
    """The LM head block from_config allocates before tie_weights replaces it (trace/run.py): only for a
    tied head, in the head's dtype; the replay keeps it cached (Tracker.cached_block)."""
    from pathlib import Path

    from memfit.trace.run import _untied_head_bytes

    text = (Path(__file__).parents[1] / "data" / "configs" / config).read_text()
    workload = Inference(prompt_tokens=8)
    model = harness.build_model(text, workload, DType.BF16, "meta")
    assert _untied_head_bytes(model, workload) == expected
