"""llama.cpp's layer split over several GPUs (--num-gpus, --tensor-split): placement and per-GPU buffers."""

from __future__ import annotations

import dataclasses
from fractions import Fraction

import pytest

from memfit.core.dtypes import quant
from memfit.core.errors import InvalidWorkload
from memfit.core.estimate import estimate
from memfit.core.llama_cpp import llama_cpp_devices, llama_cpp_layer_devices
from memfit.core.plan import with_num_gpus
from memfit.core.runtimes import profile
from memfit.core.workload import Inference
from memfit.sources.catalog import load_catalog_model

ONE, THREE = Fraction(1), Fraction(3)


def _blocks(devices: tuple[int | None, ...], gpu: int | None) -> list[int]:
    return [il for il, d in enumerate(devices[:-1]) if d == gpu]


def test_even_split_over_two_gpus() -> None:
    """32 blocks + the output layer = 33 slots; GPU0 takes the slots with il / 33 < 1/2: blocks 0-16."""
    devices = llama_cpp_layer_devices(32, n_gpu_layers=None, split=(ONE, ONE))
    assert _blocks(devices, 0) == list(range(17))         # 16 / 33 < 1/2 ≤ 17 / 33
    assert _blocks(devices, 1) == list(range(17, 32))
    assert devices[-1] == 1                               # the output layer: the last slot


def test_tensor_split_three_to_one() -> None:
    """-ts 3,1: GPU0 takes the slots with il / 33 < 3/4, i.e. il ≤ 24 (24/33 = 0.727, 25/33 = 0.758)."""
    devices = llama_cpp_layer_devices(32, n_gpu_layers=None, split=(THREE, ONE))
    assert _blocks(devices, 0) == list(range(25))
    assert _blocks(devices, 1) == list(range(25, 32))


def test_partial_offload_splits_the_offloaded_slots() -> None:
    """-ngl 20 of 33 slots: blocks 0-12 on the CPU; (il − 13) / 20 < 1/2 → blocks 13-22 on GPU0, 23-31 and
    the output layer on GPU1."""
    devices = llama_cpp_layer_devices(32, n_gpu_layers=20, split=(ONE, ONE))
    assert _blocks(devices, None) == list(range(13))
    assert _blocks(devices, 0) == list(range(13, 23))
    assert _blocks(devices, 1) == list(range(23, 32))
    assert devices[-1] == 1


def test_a_zero_share_gets_nothing() -> None:
    """-ts 0,1: every slot on GPU1."""
    assert set(llama_cpp_layer_devices(32, n_gpu_layers=None, split=(Fraction(0), ONE))) == {1}


def _job(**fields: object) -> Inference:
    return Inference(prompt_tokens=8192, runtime="llama.cpp", quant=quant("gguf-Q4_K_M"),
                     **fields)  # type: ignore[arg-type]


def test_gpus_share_the_model_and_the_host_keeps_token_embd() -> None:
    """Two GPUs hold every block and the output layer once between them, host RAM the embeddings."""
    spec = load_catalog_model("Llama-3.1-8B")
    assert spec is not None
    one = estimate(spec, _job()).phase("load")
    two = with_num_gpus(_job(), 2)
    devices = llama_cpp_devices(spec, two, profile(two.runtime))
    assert [len(d.blocks) for d in devices] == [17, 15]
    assert sum(d.layers_bytes + d.head_bytes for d in devices) == one.memory.bytes_of("weights")
    # the KV cache: 8,192 cells × 8 KV heads × 128 × (K + V) × 2 B = 33,554,432 B = 32 MiB per block (f16)
    assert [sum(b for _, b in d.kv) for d in devices] == [17 * 32 * 2**20, 15 * 32 * 2**20]
    shown = estimate(spec, two)
    most = max(devices, key=lambda d: d.total_bytes)
    assert shown.phase("load").memory.bytes_of("weights") == most.layers_bytes + most.head_bytes
    assert any("GPU0 blocks 0-16" in line for line in shown.assumptions)


def test_only_the_output_gpu_reserves_the_logits_stage() -> None:
    """The GPU without the output layer reserves the layer stage only: its compute buffer is smaller."""
    spec = load_catalog_model("Llama-3.1-8B")
    assert spec is not None
    two = with_num_gpus(_job(), 2)
    first, last = llama_cpp_devices(spec, two, profile(two.runtime))
    # 512 tokens: positions 2,048; layer stage: mask 8,192 × 512 × 2 = 8,388,608
    #   + 512 × (3 × 14,336 + 4 × 4,096) × 4 = 121,634,816 → 130,023,424;
    # output stage: 512 × (128,256 × 4 + 2 × 4,096 × 4) = 279,445,504
    assert first.compute_bytes == 2_048 + 130_023_424
    assert last.compute_bytes == 2_048 + 279_445_504


def test_tensor_split_needs_one_entry_per_gpu() -> None:
    """A tensor split of 2 entries on one GPU is refused at estimate time, naming --num-gpus."""
    spec = load_catalog_model("Llama-3.1-8B")
    assert spec is not None
    with pytest.raises(InvalidWorkload, match="tensor_split has 2 entries for 1 GPU"):
        estimate(spec, _job(tensor_split="3,1"))


def test_tensor_split_is_parsed_and_llama_cpp_only() -> None:
    """"3,1" parses to proportions; the field belongs to llama.cpp."""
    assert _job(tensor_split="3,1").tensor_split == (THREE, ONE)
    with pytest.raises(InvalidWorkload, match="tensor_split"):
        Inference(tensor_split="1,1")
    with pytest.raises(InvalidWorkload, match="not all 0"):
        _job(tensor_split="0,0")
    assert dataclasses.replace(_job(tensor_split=(1, 1)), tensor_split=None).tensor_split is None


def test_launch_line_carries_the_tensor_split() -> None:
    """The llama-server line passes --tensor-split as -ts, integers as written, decimals as decimals."""
    from memfit.core.launch import launch_command

    spec = load_catalog_model("Llama-3.1-8B")
    assert spec is not None
    assert launch_command(spec, with_num_gpus(_job(tensor_split="3,1"), 2)).endswith("-ngl 999 -ts 3,1")
    assert launch_command(spec, with_num_gpus(_job(tensor_split="0.6,0.4"), 2)).endswith("-ts 0.6,0.4")
