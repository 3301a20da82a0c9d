"""The launch line that realises a workload: `vllm serve …`, `llama-server …`, or transformers'
`from_pretrained(…)` arguments, so a fitted plan can be pasted.

Flag spellings follow vLLM 0.11-0.20 (`vllm serve --help`), llama.cpp's `llama-server` (common/arg.cpp)
and transformers 5.17 / peft 0.21 keyword arguments.
"""

from __future__ import annotations

import shlex

from memfit.core.choices import (
    AttnImpl,
    Checkpointing,
    DeviceMap,
    Method,
    Optimizer,
    Precision,
    Runtime,
)
from memfit.core.dtypes import DType, Quant
from memfit.core.spec import ModelSpec
from memfit.core.workload import Inference, Training

_LLAMA_CPP_CACHE = {DType.FP16: "f16", DType.BF16: "bf16", DType.FP32: "f32", DType.Q8_0: "q8_0",
                    DType.Q4_0: "q4_0", DType.Q4_1: "q4_1", DType.Q5_0: "q5_0", DType.Q5_1: "q5_1",
                    DType.IQ4_NL: "iq4_nl"}
"""llama.cpp --cache-type-k / -v names. Source: common/arg.cpp kv_cache_types."""
LLAMA_CPP_ALL_LAYERS = 999
"""The --n-gpu-layers value people pass for "everything on the GPU" (any value above the layer count)."""


def _model_ref(spec: ModelSpec) -> str:
    """What the runtime loads: the Hub id or path the spec came from, else its catalog name."""
    return spec.source.ref or spec.name


def launch_command(spec: ModelSpec, workload: Inference | Training) -> str:
    """The command line or Python call that runs `workload` on `spec` with the settings memfit estimated.

    Inference: the workload's runtime (vLLM, llama.cpp, transformers); training: transformers + peft.
    """
    if isinstance(workload, Training):
        return _transformers_training(spec, workload)
    match workload.runtime:
        case Runtime.VLLM:
            return vllm_command(spec, workload)
        case Runtime.LLAMA_CPP:
            return llama_cpp_command(spec, workload)
    return _transformers_inference(spec, workload)


def vllm_command(spec: ModelSpec, wl: Inference) -> str:
    """`vllm serve <model> …`: parallelism, the context it must hold, the memory share, cache type."""
    args = ["vllm", "serve", _model_ref(spec)]
    if wl.parallel.tp > 1:
        args += ["--tensor-parallel-size", str(wl.parallel.tp)]
    if wl.parallel.pp > 1:
        args += ["--pipeline-parallel-size", str(wl.parallel.pp)]
    if wl.parallel.ep > 1:     # vLLM's EP group is tp × dp (fused_moe/config.py FusedMoEParallelConfig.make)
        if wl.parallel.dp > 1:
            args += ["--data-parallel-size", str(wl.parallel.dp)]
        args.append("--enable-expert-parallel")
    args += ["--max-model-len", str(wl.total_tokens)]
    if wl.gpu_memory_utilization is not None:
        args += ["--gpu-memory-utilization", f"{float(wl.gpu_memory_utilization):g}"]
    if wl.dtype is not None:
        args += ["--dtype", {DType.BF16: "bfloat16", DType.FP16: "float16", DType.FP32: "float32"}.get(
            wl.dtype, str(wl.dtype))]
    if wl.kv_cache_dtype is not None and wl.kv_cache_dtype in (DType.FP8_E4M3, DType.FP8_E5M2):
        args += ["--kv-cache-dtype", "fp8"]
    quantization = _vllm_quantization(wl.quant)
    if quantization:
        args += ["--quantization", quantization]
    if wl.batch_size > 1:
        args += ["--max-num-seqs", str(wl.batch_size)]
    if wl.block_size != 16:
        args += ["--block-size", str(wl.block_size)]
    return shlex.join(args)


def _vllm_quantization(quant: Quant) -> str | None:
    """vLLM's --quantization for an on-the-fly format; a checkpoint's own format needs no flag."""
    if not quant.is_quantized or quant.checkpoint:
        return None
    if quant.kind == "fp8":
        return "fp8"                 # vLLM quantizes a bf16 checkpoint to FP8 at load
    if quant.kind.startswith("bnb"):
        return "bitsandbytes"
    return quant.kind               # gptq / awq name the checkpoint's own format


def llama_cpp_command(spec: ModelSpec, wl: Inference) -> str:
    """`llama-server -m <gguf> …`: the context of every slot, the layers and experts on the GPU, the cache
    types. -c is the context of all --parallel slots together (each slot gets c / np)."""
    model = (spec.source.ref if spec.source.kind == "gguf"
             else f"{spec.name}-{wl.quant.name.removeprefix('gguf-')}.gguf")
    n_ctx = (wl.max_cache_tokens or wl.total_tokens) * wl.batch_size
    args = ["llama-server", "-m", model, "-c", str(n_ctx)]
    if wl.batch_size > 1:
        args += ["-np", str(wl.batch_size)]
    layers = LLAMA_CPP_ALL_LAYERS if wl.n_gpu_layers is None else wl.n_gpu_layers
    args += ["-ngl", str(layers)]
    if wl.n_cpu_moe:
        args += ["--n-cpu-moe", str(wl.n_cpu_moe)]
    if wl.tensor_split is not None:   # llama.cpp -ts: proportions, integers where exact
        args += ["-ts", ",".join(str(p.numerator) if p.denominator == 1 else str(float(p))
                                 for p in wl.tensor_split)]
    k_type = wl.kv_cache_dtype
    v_type = wl.v_cache_dtype or k_type
    if k_type is not None and k_type in _LLAMA_CPP_CACHE:
        args += ["-ctk", _LLAMA_CPP_CACHE[k_type]]
    if v_type is not None and v_type in _LLAMA_CPP_CACHE:
        args += ["-ctv", _LLAMA_CPP_CACHE[v_type]]
    return shlex.join(args)


_HF_OPTIM = {Optimizer.ADAMW: "adamw_torch", Optimizer.ADAMW_FUSED: "adamw_torch_fused",
             Optimizer.ADAMW_LOOP: "adamw_torch", Optimizer.ADAM: "adamw_torch", Optimizer.SGD: "sgd",
             Optimizer.SGD_MOMENTUM: "sgd", Optimizer.ADAFACTOR: "adafactor", Optimizer.LION: "lion_32bit",
             Optimizer.ADAMW_8BIT: "adamw_bnb_8bit", Optimizer.PAGED_ADAMW_8BIT: "paged_adamw_8bit",
             Optimizer.PAGED_ADAMW_32BIT: "paged_adamw_32bit"}
"""TrainingArguments(optim=...) names. Source: transformers 5.17 training_args.OptimizerNames."""
_TORCH_DTYPE = {DType.BF16: "torch.bfloat16", DType.FP16: "torch.float16", DType.FP32: "torch.float32"}
_ATTN = {AttnImpl.SDPA: "sdpa", AttnImpl.EAGER: "eager", AttnImpl.FLASH: "flash_attention_2"}


def _from_pretrained(spec: ModelSpec, *, dtype: DType | None, quant: Quant, attn: AttnImpl,
                     device_map: str) -> list[str]:
    lines = ["import torch", "from transformers import AutoModelForCausalLM"]
    torch_dtype = _TORCH_DTYPE.get(dtype or spec.checkpoint_dtype, "torch.bfloat16")
    kwargs = [f"dtype={torch_dtype}",
              f"device_map={device_map!r}", f"attn_implementation={_ATTN[attn]!r}"]
    if quant.kind.startswith("bnb") and not quant.checkpoint:
        lines[1] += ", BitsAndBytesConfig"
        if quant.kind == "bnb-int8":
            kwargs.append("quantization_config=BitsAndBytesConfig(load_in_8bit=True)")
        else:
            base = quant.name.removesuffix("-dq")
            kwargs.append(
                "quantization_config=BitsAndBytesConfig(load_in_4bit=True, "
                f"bnb_4bit_quant_type={base!r}, bnb_4bit_use_double_quant={quant.name.endswith('-dq')}, "
                f"bnb_4bit_compute_dtype={torch_dtype})")
    elif quant.name == "dequantized":
        kwargs.append("# quantization_config: the checkpoint's own, with dequantize=True")
    body = ",\n    ".join(kwargs)
    lines.append(f"model = AutoModelForCausalLM.from_pretrained(\n    {_model_ref(spec)!r},\n    {body},\n)")
    return lines


def _transformers_inference(spec: ModelSpec, wl: Inference) -> str:
    device_map = "auto" if wl.parallel.device_map is DeviceMap.AUTO or wl.parallel.pp > 1 else "cuda"
    lines = _from_pretrained(spec, dtype=wl.dtype, quant=wl.quant, attn=wl.attn, device_map=device_map)
    if wl.new_tokens:
        cache = ', cache_implementation="static"' if str(wl.kv_cache) == "static" else ""
        lines.append(f"# model.generate(input_ids (batch {wl.batch_size} × {wl.prompt_tokens} tokens), "
                     f"max_new_tokens={wl.new_tokens}{cache})")
    return "\n".join(lines)


def _transformers_training(spec: ModelSpec, wl: Training) -> str:
    dtype = {Precision.FP16: DType.FP16, Precision.FP32: DType.FP32,
             Precision.AMP_FP16: DType.FP32, Precision.AMP_BF16: DType.FP32}.get(wl.precision, DType.BF16)
    lines = _from_pretrained(spec, dtype=dtype, quant=wl.quant, attn=wl.attn, device_map="cuda")
    if wl.method is not Method.FULL and wl.lora is not None:
        targets = list(wl.lora.targets)
        target = targets[0] if targets == ["all-linear"] else targets
        lines += ["from peft import LoraConfig, get_peft_model",
                  f"model = get_peft_model(model, LoraConfig(r={wl.lora.rank}, lora_alpha={wl.lora.alpha}, "
                  f"target_modules={target!r}, lora_dropout={float(wl.lora.rate):g}))"]
    amp = {Precision.AMP_BF16: "bf16=True", Precision.AMP_FP16: "fp16=True"}.get(wl.precision)
    args = [f"per_device_train_batch_size={wl.batch_size}", f"gradient_accumulation_steps={wl.grad_accum}",
            f"optim={_HF_OPTIM[wl.optimizer]!r}"]
    if wl.checkpointing is not Checkpointing.NONE:
        args.append("gradient_checkpointing=True")
    if amp:
        args.append(amp)
    lines += ["from transformers import TrainingArguments",
              f"args = TrainingArguments(output_dir='out', {', '.join(args)})",
              f"# sequences of {wl.seq_len} tokens"]
    return "\n".join(lines)
