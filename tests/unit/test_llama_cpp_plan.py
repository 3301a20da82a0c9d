"""llama.cpp's layer placement, the planner's layer and expert offload, and the launch lines."""

from __future__ import annotations

import dataclasses

import pytest

from memfit import api
from memfit.core.dtypes import DType, quant
from memfit.core.errors import InvalidWorkload
from memfit.core.estimate import estimate
from memfit.core.kv_cache import llama_cpp_gpu_start
from memfit.core.launch import launch_command
from memfit.core.plan import plan, plan_max_gpu_layers
from memfit.core.result import Gpu
from memfit.core.workload import Inference, Lora, Parallelism, Training
from memfit.sources.catalog import load_catalog_model

GiB = 2**30


def _spec(name: str):  # type: ignore[no-untyped-def]
    spec = load_catalog_model(name)
    assert spec is not None
    return spec


def _gpu(gib: int) -> Gpu:
    return Gpu(name=f"{gib}GiB", memory_bytes=gib * GiB, usable_bytes=gib * GiB)


@pytest.mark.parametrize(("layers", "flag", "start"), [
    (32, 999, 0), (32, 33, 0),   # every block and the output layer
    (32, 32, 1),                 # the output layer takes one slot: block 0 stays on the CPU
    (32, 1, 32), (32, 0, 32),    # only the output layer / nothing
])
def test_output_layer_is_offloaded_first(layers: int, flag: int, start: int) -> None:
    assert llama_cpp_gpu_start(layers, flag) == start


def test_one_gpu_layer_is_the_output_layer() -> None:
    spec = _spec("Llama-3.1-8B")
    wl = Inference(prompt_tokens=512, runtime="llama.cpp", quant=quant("gguf-Q4_K_M"), n_gpu_layers=1)
    weights = estimate(spec, wl).phase("load").memory.child("weights")
    assert weights is not None
    # Q4_K_M keeps output.weight in Q6_K (210 B per 256 weights): 128,256 × 4,096 × 210 / 256 = 430,940,160 B,
    # plus the F32 output norm 4,096 × 4 = 16,384 B; no block on the GPU
    assert weights.bytes_of("lm_head") == 430_940_160 + 16_384
    assert weights.bytes_of("layers") == 0


def test_n_cpu_moe_moves_the_leading_blocks_experts_to_host_ram() -> None:
    spec = _spec("Mixtral-8x7B-v0.1")
    base = Inference(prompt_tokens=512, runtime="llama.cpp", quant=quant("gguf-Q4_K_M"))
    full = estimate(spec, base).phase("load")
    moved = estimate(spec, dataclasses.replace(base, n_cpu_moe=4)).phase("load")
    delta = full.memory.bytes_of("weights") - moved.memory.bytes_of("weights")
    assert moved.host is not None
    assert full.host is not None
    assert moved.host.bytes_of("layers") - full.host.bytes_of("layers") == delta
    # Mixtral's experts: 8 × 3 matrices of 4,096 × 14,336 per block; Q4_K (4.5 bits), with ffn_down in Q6_K
    # (6.5625 bits) on llama.cpp's "more bits" blocks, 0-3 of 32 among them: per block
    # 8 × 4,096 × 14,336 × (2 × 4.5 + 6.5625) / 8 = 913,833,984 B
    assert delta == 4 * 913_833_984


def test_maximize_n_gpu_layers_is_the_boundary() -> None:
    spec = _spec("Mixtral-8x7B-v0.1")
    wl = Inference(prompt_tokens=4096, runtime="llama.cpp", quant=quant("gguf-Q4_K_M"))
    gpu = _gpu(22)
    layers = plan_max_gpu_layers(spec, wl, gpu)
    assert 0 < layers <= spec.num_layers
    assert estimate(spec, dataclasses.replace(wl, n_gpu_layers=layers), gpu).fits is True
    assert estimate(spec, dataclasses.replace(wl, n_gpu_layers=layers + 1), gpu).fits is False
    result = plan(spec, wl, gpu, maximize="n-gpu-layers")
    assert result.max_value == layers
    assert result.maximize_field == "n_gpu_layers"
    with pytest.raises(InvalidWorkload, match=r"llama\.cpp"):
        plan_max_gpu_layers(spec, Inference(prompt_tokens=512), gpu)


def test_default_plan_proposes_expert_then_layer_offload() -> None:
    spec = _spec("Mixtral-8x7B-v0.1")
    wl = Inference(prompt_tokens=4096, runtime="llama.cpp", quant=quant("gguf-Q4_K_M"))
    result = plan(spec, wl, _gpu(22))
    assert result.baseline.fits is False
    labels = [c.label for c in result.changes]
    # the offloads keep the one GPU the user has: they come before any "N GPUs" change
    assert "--n-cpu-moe" in labels[0]
    assert "--n-gpu-layers" in labels[1]
    assert all("--num-gpus" in label for label in labels[2:])
    experts = next(c for c in result.changes if "--n-cpu-moe" in c.label)
    fewer = dataclasses.replace(experts.workload, n_cpu_moe=experts.workload.n_cpu_moe - 1)
    assert estimate(spec, fewer, _gpu(22)).fits is False     # the fewest leading layers that fit
    assert result.chosen is result.changes[0].estimate


def test_launch_lines() -> None:
    spec = _spec("Mixtral-8x7B-v0.1")
    wl = Inference(prompt_tokens=4000, new_tokens=96, batch_size=2, runtime="llama.cpp",
                   quant=quant("gguf-Q4_K_M"), n_gpu_layers=27, kv_cache_dtype=DType.Q8_0)
    # -c is the context of both slots together (2 × 4,096)
    assert launch_command(spec, wl) == ("llama-server -m Mixtral-8x7B-v0.1-Q4_K_M.gguf -c 8192 -np 2 "
                                        "-ngl 27 -ctk q8_0 -ctv q8_0")
    llama = _spec("Llama-3.1-70B")
    served = Inference(prompt_tokens=8000, new_tokens=192, runtime="vllm", parallel=Parallelism(tp=4),
                       kv_cache_dtype=DType.FP8_E4M3)
    assert launch_command(llama, served) == ("vllm serve meta-llama/Llama-3.1-70B --tensor-parallel-size 4 "
                                             "--max-model-len 8192 --kv-cache-dtype fp8")
    qlora = Training(seq_len=1024, method="qlora", quant=quant("nf4-dq"), lora=Lora(rank=16, alpha=32),
                     checkpointing="full")
    code = launch_command(llama, qlora)
    assert ("BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type='nf4', "
            "bnb_4bit_use_double_quant=True") in code
    assert "LoraConfig(r=16, lora_alpha=32, target_modules='all-linear'" in code
    assert "gradient_checkpointing=True" in code
    assert api.launch_command("Llama-3.1-70B", served) == launch_command(llama, served)
