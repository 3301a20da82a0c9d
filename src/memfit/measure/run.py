"""The measure child process: `python -m memfit.measure.run` reads one JSON request on stdin and prints one
ground-truth-style record on stdout (or `{"error": ...}`). A fresh process per run, so the allocator's
counters and the CUDA context belong to this workload alone. An out-of-memory is a result (`"oom"`).

Request: {"model": name, "config_json": text, "checkpoint_dtype": "bf16", "workload": <workload dict>}.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

NO_CUDA = "memfit measure needs a CUDA GPU; none is visible"


def main() -> int:
    request = json.loads(sys.stdin.read())
    try:
        import torch
    except ImportError:
        print(json.dumps({"error": "memfit measure needs torch: pip install 'memfit[measure]'",
                          "kind": "MissingExtra"}))
        return 0
    if not torch.cuda.is_available():
        print(json.dumps({"error": NO_CUDA, "kind": "EngineUnavailable"}))
        return 0
    from memfit.core.errors import MemfitError

    try:
        print(json.dumps(measure_request(request)))
    except MemfitError as err:
        print(json.dumps({"error": str(err), "kind": type(err).__name__}))
    return 0


def measure_request(request: dict[str, Any]) -> dict[str, Any]:
    """Run the request's workload on cuda:0 and return its record."""
    import torch

    from memfit.core.dtypes import DType
    from memfit.core.result import workload_from_dict
    from memfit.core.workload import Inference, Training
    from memfit.measure.probe import CudaProbe, nvml_memory
    from memfit.measure.record import case_of
    from memfit.trace import harness

    workload = workload_from_dict(request["workload"])
    checkpoint_dtype = DType(request.get("checkpoint_dtype", "bf16"))
    record: dict[str, Any] = {"case": case_of(request["model"], workload)}
    # bitsandbytes: the random bf16 checkpoint is written once, on the CPU, before CUDA starts
    folder = _random_checkpoint(request["config_json"]) if workload.quant.is_quantized else None
    record["nvml_dev_used_before_init"] = nvml_memory().get("device", 0)
    torch.cuda.init()  # type: ignore[no-untyped-call]
    torch.zeros(1, device="cuda")           # creates the CUDA context; the tensor dies at once
    after = nvml_memory()
    record.update(nvml_proc_after_init=after.get("proc", 0), nvml_dev_used_after_init=after.get("device", 0),
                  alloc_after_init=torch.cuda.memory_allocated())
    props = torch.cuda.get_device_properties(0)
    record.update(gpu=props.name, gpu_total_bytes=int(props.total_memory), versions=_versions())
    probe = CudaProbe()
    started = time.perf_counter()
    try:
        with probe.phase("load"):
            model = _load(request["config_json"], workload, checkpoint_dtype, folder)
        record.update(n_params=sum(p.numel() for p in model.parameters()),
                      param_bytes=sum(p.numel() * p.element_size() for p in model.parameters()),
                      attn_impl_used=getattr(model.config, "_attn_implementation", None))
        model = _apply_method(model, workload)
        if isinstance(workload, Training):
            record["trainable_params"] = sum(p.numel() for p in model.parameters() if p.requires_grad)
            harness.run_training(model, workload, probe, "cuda", real_bnb=True)
        elif isinstance(workload, Inference) and workload.new_tokens == 0:
            harness.run_prefill(model, workload, probe, "cuda")
        else:
            _generate(model, workload, probe)
        record["ok"] = True
    except torch.cuda.OutOfMemoryError:
        record.update(ok=False, oom=probe.oom or "load")
    record["phases"] = probe.phases
    record["peak_alloc"] = max(p["peak_alloc"] for p in probe.phases)
    record["peak_reserved"] = max(p["peak_reserved"] for p in probe.phases)
    end = nvml_memory()
    record.update(nvml_proc_end=end.get("proc", 0), nvml_dev_used_end=end.get("device", 0),
                  wall_s=round(time.perf_counter() - started, 2))
    return record


def _versions() -> dict[str, str]:
    import importlib.metadata

    import torch

    out = {"torch": str(torch.__version__), "cuda": str(torch.version.cuda)}
    for name in ("transformers", "peft", "bitsandbytes"):
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
    from memfit._version import __version__

    out["memfit"] = __version__
    try:
        import pynvml

        pynvml.nvmlInit()
        out["driver"] = str(pynvml.nvmlSystemGetDriverVersion())
        pynvml.nvmlShutdown()
    except Exception:
        pass
    return out


def _load(config_json: str, workload: Any, checkpoint_dtype: Any, folder: Path | None) -> Any:
    """from_config on the GPU; bitsandbytes: random bf16 weights saved once, loaded quantized as users do."""
    import torch

    from memfit.trace import harness

    if not workload.quant.is_quantized:
        return harness.build_model(config_json, _full(workload), checkpoint_dtype, "cuda")
    from transformers import AutoModelForCausalLM, BitsAndBytesConfig

    assert folder is not None       # written by measure_request for every quantized workload
    name = workload.quant.name
    if name.startswith("int8"):
        quant = BitsAndBytesConfig(load_in_8bit=True)  # type: ignore[no-untyped-call]
    else:
        quant = BitsAndBytesConfig(  # type: ignore[no-untyped-call]
            load_in_4bit=True, bnb_4bit_quant_type=name.split("-")[0],
            bnb_4bit_use_double_quant=name.endswith("-dq"), bnb_4bit_compute_dtype=torch.bfloat16)
    model = AutoModelForCausalLM.from_pretrained(
        folder, quantization_config=quant, device_map="cuda", dtype=torch.bfloat16,
        attn_implementation=harness.attn_implementation(workload))
    return model


def _full(workload: Any) -> Any:
    """The workload without its method: LoRA is applied after the load phase, as the ground truth does."""
    import dataclasses

    from memfit.core.choices import Checkpointing, Method
    from memfit.core.workload import Training

    if isinstance(workload, Training):
        return dataclasses.replace(workload, method=Method.FULL, lora=None, checkpointing=Checkpointing.NONE)
    return workload


def _apply_method(model: Any, workload: Any) -> Any:
    from memfit.core.choices import Checkpointing, Method
    from memfit.core.workload import Training
    from memfit.trace import harness

    if not isinstance(workload, Training):
        return model.eval()
    if workload.method is Method.QLORA:
        from peft import prepare_model_for_kbit_training

        assert workload.lora is not None
        if workload.lora.prepare_kbit:
            model = prepare_model_for_kbit_training(  # type: ignore[no-untyped-call]
                model, use_gradient_checkpointing=workload.checkpointing is Checkpointing.FULL,
                gradient_checkpointing_kwargs={"use_reentrant": False})
    return harness.apply_method(model, workload)


def _random_checkpoint(config_json: str) -> Path:
    """A folder with random bf16 weights for this config, built on the CPU and saved once (by config hash)."""
    import torch

    from memfit.trace import harness

    digest = hashlib.sha256(config_json.encode()).hexdigest()[:16]
    root = Path(os.environ.get("MEMFIT_CACHE_DIR") or os.path.expanduser("~/.cache/memfit"))
    folder = root / "random-weights" / digest
    if (folder / "config.json").exists():
        return folder
    from memfit.trace.meta import auto_class

    cfg = harness.hf_config(config_json)
    model = auto_class(cfg.model_type).from_config(cfg, dtype=torch.bfloat16)
    partial = folder.with_name(f"{folder.name}.partial-{os.getpid()}")
    model.save_pretrained(partial)
    os.replace(partial, folder)         # concurrent runs never read a half-written checkpoint
    return folder


def _generate(model: Any, workload: Any, probe: Any, device: str = "cuda") -> None:
    """`generate(max_new_tokens=n, min_new_tokens=n, do_sample=False)`, EOS disabled, as users call it."""
    import torch

    from memfit.core.choices import KvCache
    from memfit.trace import harness

    ids = harness.random_ids(model.config.vocab_size, workload.batch_size, workload.prompt_tokens, device)
    model.generation_config.eos_token_id = None
    extra: dict[str, Any] = {}
    if workload.kv_cache is KvCache.STATIC:
        extra["cache_implementation"] = "static"
    with torch.no_grad(), probe.phase("generate"):
        out = model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=workload.new_tokens,
                             min_new_tokens=workload.new_tokens, do_sample=False, pad_token_id=0, **extra)
        del out


if __name__ == "__main__":
    sys.exit(main())
