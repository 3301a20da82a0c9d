"""How each runtime holds a pre-quantized checkpoint's weights once loaded: kept as stored, or dequantized.

`loaded_quant(spec, workload, gpu)` returns the weight format the estimate counts and the assumption line
that names the checkpoint's format and what the runtime does with it. The checkpoint's format is
`spec.stored_quant` (read from config.json's quantization_config by sources/quant_config.py); `--quant`
(workload.quant) overrides it with a note, and `--quant dequantized` counts the weights in the compute
dtype, as transformers' `dequantize=True` loads them.

Rules (transformers 5.17.0 quantizers/, vLLM V1 0.11-0.20 model_executor/layers/quantization/):
- transformers, fp8 / fbgemm_fp8 (FineGrainedFP8HfQuantizer.validate_environment): kept in fp8 on compute
  capability ≥ 8.9 (Ada, Hopper, Blackwell); below it transformers warns and dequantizes to bf16.
- transformers, mxfp4 (Mxfp4HfQuantizer.validate_environment): kept on compute capability ≥ 7.5 when
  triton ≥ 3.4 and the `kernels` package are installed (memfit assumes they are: the gpt-oss model card
  installs them); otherwise, and below 7.5, dequantized to bf16.
- transformers, compressed-tensors (CompressedTensorsHfQuantizer): loaded compressed, then decompressed to
  the model dtype on the first forward pass unless the opt-in FP8 kernel path is used; counted dequantized.
- transformers, modelopt: no loader in transformers 5.17 (AUTO_QUANTIZER_MAPPING); refused.
- transformers, gptq / awq / bitsandbytes / hqq / torchao / eetq / nvfp4: kept as stored.
- vLLM: every supported format stays packed; FP8 on GPUs without FP8 tensor cores and FP4 on GPUs
  before Blackwell run weight-only through Marlin kernels, with the same bytes per weight
  (vLLM fp8.py / marlin_utils_fp8.py / marlin_utils_fp4.py).
- llama.cpp loads GGUF files only: convert_hf_to_gguf dequantizes the checkpoint; `--quant gguf-…` names
  the GGUF type, otherwise the weights count in the workload dtype.
"""

from __future__ import annotations

import dataclasses

from memfit.core.choices import Runtime
from memfit.core.dtypes import QUANTS, Quant
from memfit.core.errors import InvalidWorkload
from memfit.core.result import Gpu
from memfit.core.spec import ModelSpec
from memfit.core.workload import Inference, Training

FP8_MIN_CC = (8, 9)
"""transformers keeps FP8 weights from compute capability 8.9. Source: transformers 5.17.0
quantizers/quantizer_finegrained_fp8.py validate_environment."""
MXFP4_MIN_CC = (7, 5)
"""transformers keeps MXFP4 weights from compute capability 7.5. Source: quantizer_mxfp4.py."""
HOPPER_CC = (9, 0)
"""The compute capability assumed when no GPU is named (memfit's default GPU is an H100)."""

_KEPT_FOR_TRAINING = frozenset({"bnb-4bit", "bnb-int8"})
"""Formats memfit models training on as stored (bitsandbytes: QLoRA)."""
_TRAINED_DEQUANTIZED = frozenset({"fp8", "mxfp4", "nvfp4", "compressed-tensors"})
"""Formats whose transformers quantizer cannot train (is_trainable False, or the FP8 kernel path): the
fine-tuning recipes load them with dequantize=True (e.g. the gpt-oss fine-tuning cookbook's
Mxfp4Config(dequantize=True)). GPTQ / AWQ / HQQ / torchao adapters train on the packed weights, which memfit
does not model: refused."""


def compute_capability(gpu: Gpu | None) -> tuple[int, int] | None:
    """What `torch.cuda.get_device_capability()` returns on `gpu`, as (major, minor): NVIDIA's compute
    capability; on ROCm the HIP device's major/minor, which encode the gfx name (gfx90a -> (9, 0),
    gfx942 -> (9, 4): hipDeviceProp_t major/minor); None where torch has no CUDA device at all (Apple's
    MPS, Intel Gaudi's HPU), so the quantizers take their no-GPU branch. Hopper's when no GPU is named."""
    if gpu is None:
        return HOPPER_CC
    text = str(gpu.compute_capability)
    major, _, minor = text.partition(".")
    if major.isdigit() and minor.isdigit():
        return int(major), int(minor)
    gfx = text.removeprefix("gfx")
    if gpu.vendor == "amd" and len(gfx) >= 3 and gfx[:-2].isdigit():
        return int(gfx[:-2]), int(gfx[-2], 16)
    if gpu.vendor in {"apple", "intel"}:
        return None
    return HOPPER_CC


def _gpu_name(gpu: Gpu | None) -> str:
    return gpu.name if gpu is not None else "the default H100"


def loaded_quant(spec: ModelSpec, workload: Inference | Training,
                 gpu: Gpu | None = None) -> tuple[Quant, tuple[str, ...]]:
    """The weight format the runtime holds after loading `spec`'s checkpoint, and the assumption lines.

    Raises:
        InvalidWorkload: a checkpoint format memfit does not size, one the runtime cannot load, or
            training a format that cannot be trained here (one line naming `--quant dequantized`).
    """
    stored, asked = spec.stored_quant, workload.quant
    if stored is None:
        return asked, ()
    if asked.name == "dequantized":
        return QUANTS["none"], (f"checkpoint stored as {stored.name} ({stored.note}); counted dequantized to "
                                "the compute dtype at load (--quant dequantized)",)
    if asked.is_quantized:
        same = asked.name == stored.name
        return asked, ((f"checkpoint stored as {stored.name}; --quant {asked.name} matches it",) if same else
                       (f"--quant {asked.name} replaces the checkpoint's own format {stored.name}: counted "
                        "as if a full-precision checkpoint were loaded that way",))
    if stored.kind == "unknown":
        raise InvalidWorkload(f"{spec.name}: {stored.note}; pass quant='dequantized' (--quant dequantized) "
                              "to count the weights in the compute dtype, or a named format (`memfit "
                              "catalog quants`)")
    kept, how = _runtime_keeps(stored, workload.runtime, gpu)
    if isinstance(workload, Training) and kept and stored.kind not in _KEPT_FOR_TRAINING:
        if stored.kind in _TRAINED_DEQUANTIZED:
            return QUANTS["none"], (
                f"checkpoint stored as {stored.name} ({stored.note}); transformers cannot train it as stored "
                "(its quantizer's is_trainable is False), so fine-tuning loads it with dequantize=True: "
                "counted dequantized to the compute dtype",)
        raise InvalidWorkload(f"{spec.name}: training adapters on a {stored.name} checkpoint as stored is "
                              "not modelled; pass quant='dequantized' (--quant dequantized) to count the "
                              "dequantized model")
    note = f"checkpoint stored as {stored.name} ({stored.note}); {how}"
    if kept and workload.runtime is Runtime.LLAMA_CPP:     # the GGUF file convert_hf_to_gguf writes
        stored = dataclasses.replace(stored, runtimes=stored.runtimes | {Runtime.LLAMA_CPP})
    return (stored if kept else QUANTS["none"]), (note,)


def _runtime_keeps(stored: Quant, runtime: Runtime, gpu: Gpu | None) -> tuple[bool, str]:
    """Whether `runtime` keeps the stored format on `gpu`, and the clause saying what it does."""
    cc = compute_capability(gpu)
    where = _gpu_name(gpu)
    match runtime:
        case Runtime.LLAMA_CPP:
            if stored.kind == "mxfp4" and stored.targets == frozenset({"experts"}):
                return True, ("llama.cpp loads GGUF files only: convert_hf_to_gguf "
                              "(GptOssModel.repack_mxfp4) keeps the MXFP4 experts as GGML MXFP4, 17 bytes "
                              "per 32 weights as stored, and converts the other tensors to the workload "
                              "dtype")
            return False, ("llama.cpp loads GGUF files only: convert_hf_to_gguf dequantizes the checkpoint; "
                           "counted in the workload dtype unless --quant names a GGUF type")
        case Runtime.VLLM:
            if stored.kind == "fp8" and cc is not None and cc < FP8_MIN_CC:
                return True, (f"vLLM keeps it in fp8 and runs it weight-only through Marlin on {where} "
                              "(no FP8 tensor cores)")
            return True, "vLLM keeps it as stored"
    if stored.name.startswith("modelopt"):
        raise InvalidWorkload(f"{stored.name} checkpoints have no loader in transformers 5.17 "
                              "(AUTO_QUANTIZER_MAPPING); use runtime='vllm' or --quant dequantized")
    if cc is None:
        if stored.kind in {"fp8", "mxfp4"}:
            return False, (f"transformers dequantizes it to bf16 on {where}: its {stored.kind} quantizer "
                           "needs a CUDA or XPU device (validate_environment)")
        return True, "transformers keeps it as stored"
    match stored.kind:
        case "fp8":
            if cc < FP8_MIN_CC:
                return False, (f"transformers dequantizes it to bf16 on {where} (compute capability "
                               f"{cc[0]}.{cc[1]} < 8.9)")
            return True, "transformers keeps it in fp8 (compute capability ≥ 8.9)"
        case "mxfp4":
            if cc < MXFP4_MIN_CC:
                return False, (f"transformers dequantizes it to bf16 on {where} (compute capability "
                               f"{cc[0]}.{cc[1]} < 7.5)")
            return True, ("transformers keeps it in MXFP4, assuming triton ≥ 3.4 and the `kernels` package "
                          "are installed (without them it dequantizes the experts to bf16: pass "
                          "--quant dequantized to count that)")
        case "compressed-tensors":
            return False, ("transformers decompresses compressed-tensors weights to the model dtype on the "
                           "first forward pass; counted dequantized (vLLM keeps them packed)")
    return True, "transformers keeps it as stored"


def with_loaded_quant(spec: ModelSpec, workload: Inference | Training,
                      gpu: Gpu | None = None) -> tuple[Inference | Training, tuple[str, ...]]:
    """`workload` with its weight format replaced by the one the runtime holds for `spec`'s checkpoint."""
    loaded, notes = loaded_quant(spec, workload, gpu)
    if loaded is workload.quant:
        return workload, notes
    return dataclasses.replace(workload, quant=loaded), notes
