"""Trace on a tiny two-layer Llama: the tracker on fake tensors vs the same run on real CPU tensors, and the
trace engine end to end (worker subprocess, fake-CUDA shim)."""

import json

import pytest
from tests.helpers import requires_transformers

from memfit.core.choices import AttnImpl, Checkpointing, Engine, Method, PhaseName, Precision
from memfit.core.families import spec_from_config
from memfit.core.spec import ModelSource
from memfit.core.workload import Inference, Lora, Training

pytestmark = requires_transformers

TINY = {
    "model_type": "llama", "architectures": ["LlamaForCausalLM"], "hidden_size": 64, "intermediate_size": 128,
    "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2, "vocab_size": 256,
    "max_position_embeddings": 256, "rms_norm_eps": 1e-5, "tie_word_embeddings": False,
    "torch_dtype": "float32",
}


def _spec():
    return spec_from_config(TINY, name="tiny-llama", source=ModelSource(kind="config", ref="tiny-llama",
                                                                      config_json=json.dumps(TINY)))


def _phase_peaks(device, fake):
    """Per-phase peaks of one LoRA training step (eager attention, fp32) under the tracker."""
    import contextlib

    import torch
    from torch._subclasses.fake_tensor import FakeTensorMode

    from memfit.core.dtypes import DType
    from memfit.trace import harness
    from memfit.trace.tracker import Tracker

    torch.manual_seed(0)
    workload = Training(seq_len=32, batch_size=2, method=Method.LORA, lora=Lora(rank=4, alpha=8),
                        attn=AttnImpl.EAGER, precision=Precision.FP32, checkpointing=Checkpointing.FULL)
    model = harness.build_model(json.dumps(TINY), workload, DType.FP32, "meta")
    tracker = Tracker(device_type=device)
    with (FakeTensorMode() if fake else contextlib.nullcontext()), tracker:
        with tracker.phase("load"):
            harness.materialize(model, device)
            for param in model.parameters():   # real run: finite values, so nothing takes a NaN path
                with torch.no_grad():
                    param.normal_(0, 0.02)
        harness.run_training(model, workload, tracker, device, steps=1)
    return [(p.name, p.peak_bytes, p.end_bytes) for p in tracker.phases]


def test_tracker_on_fake_tensors_matches_real_cpu_tensors():
    """Fake tensors allocate exactly what real CPU tensors do, phase by phase, for a LoRA step."""
    pytest.importorskip("torch")
    assert _phase_peaks("cpu", fake=True) == _phase_peaks("cpu", fake=False)


def test_trace_engine_inference_weights_are_exact():
    """Load = the fp32 parameters and rotary buffers, each rounded to 512 B: 429,568 B.

    embed 256·64·4 = 65,536; lm_head 65,536; per layer q 16,384, k 8,192, v 8,192, o 16,384,
    gate/up/down 32,768 each, two norms 256 → 512 each: 148,480 × 2 = 296,960; final norm 512;
    rotary inv_freq and original_inv_freq, 8 floats each → 512 each.
    65,536 + 65,536 + 296,960 + 512 + 2 · 512 = 429,568.
    """
    from memfit.trace.engine import trace_estimate

    est = trace_estimate(_spec(), Inference(prompt_tokens=16, new_tokens=4, batch_size=2), None)
    assert est.engine is Engine.TRACE
    assert est.phase(PhaseName.LOAD).allocated_bytes == 429_568
    assert est.phase(PhaseName.DECODE).memory.bytes_of("kv_cache") > 0
    assert est.peak.allocated_bytes > 429_568


def test_a_trace_names_the_library_versions_it_ran():
    import importlib.metadata

    from memfit.trace.engine import trace_estimate

    est = trace_estimate(_spec(), Inference(prompt_tokens=16), None)
    versions = {p: importlib.metadata.version(p) for p in ("torch", "transformers", "peft")}
    assert est.assumptions[0] == ("traced with torch {torch}, transformers {transformers}, "
                                  "peft {peft}".format(**versions))


def test_trace_engine_training_has_gradients_and_states():
    """A LoRA step: the optimizer phase holds fp32 adapter gradients and two AdamW moments per adapter."""
    from memfit.trace.engine import trace_estimate

    est = trace_estimate(_spec(), Training(seq_len=16, method=Method.LORA, lora=Lora(rank=4, alpha=8)), None)
    optimizer = est.phase(PhaseName.OPTIMIZER).memory
    assert [p.name for p in est.phases] == [PhaseName.LOAD, PhaseName.FORWARD, PhaseName.BACKWARD,
                                            PhaseName.OPTIMIZER]
    assert optimizer.child("optimizer_states").bytes_of("states") == 2 * optimizer.bytes_of("gradients")
    assert optimizer.bytes_of("gradients") == optimizer.bytes_of("adapters")


def test_measure_generate_and_training_paths_run_on_cpu():
    """measure's own code paths (generate() with EOS off, LoRA training) run on a tiny model on CPU."""
    import torch

    from memfit.core.dtypes import DType
    from memfit.measure.run import _apply_method, _full, _generate
    from memfit.trace import harness

    gen = Inference(prompt_tokens=8, new_tokens=3, batch_size=2)
    model = harness.build_model(json.dumps(TINY), gen, DType.FP32, "cpu")
    _generate(model, gen, harness.NullProbe(), device="cpu")
    train = Training(seq_len=8, method=Method.LORA, lora=Lora(rank=2, alpha=4), precision=Precision.FP32)
    model = _apply_method(harness.build_model(json.dumps(TINY), _full(train), DType.FP32, "cpu"), train)
    optimizer = harness.run_training(model, train, harness.NullProbe(), "cpu", steps=1)
    trainable = [p for p in model.parameters() if p.requires_grad]
    assert trainable
    assert all("lora_" in name for name, p in model.named_parameters() if p.requires_grad)
    assert len(optimizer.state) == len(trainable)
    assert isinstance(trainable[0], torch.nn.Parameter)


def test_measure_writes_the_random_checkpoint_once(tmp_path, monkeypatch):
    """bitsandbytes runs load a random bf16 checkpoint: written once per config, then reused."""
    from memfit.measure.run import _random_checkpoint

    monkeypatch.setenv("MEMFIT_CACHE_DIR", str(tmp_path))
    first = _random_checkpoint(json.dumps(TINY))
    assert (first / "config.json").exists()
    assert any(first.glob("*.safetensors"))
    stamp = (first / "config.json").stat().st_mtime_ns
    assert _random_checkpoint(json.dumps(TINY)) == first
    assert (first / "config.json").stat().st_mtime_ns == stamp
