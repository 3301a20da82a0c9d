"""vLLM's start-up memory profile and KV capacity (core/vllm.py, core/vllm_profile.py), by hand and against
real start-up logs."""

from __future__ import annotations

import itertools
import json
from fractions import Fraction
from pathlib import Path

import pytest

from memfit import api
from memfit.core.dtypes import DType
from memfit.core.errors import InvalidWorkload
from memfit.core.units import GiB
from memfit.core.vllm import (
    KvLayout,
    blocks_per_request,
    capacity_tokens,
    kv_blocks,
    kv_layout,
    vllm_serve_flags,
)
from memfit.core.vllm_profile import (
    VllmSettings,
    mlp_block_bytes,
    parse_vllm_version,
    sampler_bytes_per_logit,
    vllm_settings,
)
from memfit.core.workload import Inference, Parallelism

LOGS = Path(__file__).resolve().parents[1] / "data" / "vllm_startup_logs.jsonl"
"""Three real `vllm serve` start-ups (a copy of ../shared/groundtruth/vllm/startup_logs.jsonl; its README:
the vllm-memory-estimator project's validation database, facts only)."""


def _settings(**overrides: object) -> VllmSettings:
    base: dict[str, object] = {
        "version": (0, 20, 0), "max_num_batched_tokens": 8192, "max_num_seqs": 1024, "max_model_len": 8192,
        "block_size": 16, "enforce_eager": False, "utilization": Fraction(9, 10),
        "kv_cache_memory_bytes": None, "rocm": False,
    }
    return VllmSettings(**{**base, **overrides})  # type: ignore[arg-type]


@pytest.mark.parametrize("record", [json.loads(line) for line in LOGS.read_text().splitlines()],
                         ids=lambda r: f"{r['model']}-tp{r['tp']}-{r['vllm_version']}")
def test_startup_logs_weights_and_kv_tokens(record: dict[str, object]) -> None:
    """Each logged start-up: weights per GPU within 1 % and KV tokens within 8 % (memfit issue 14)."""
    wl = Inference(prompt_tokens=int(record["max_model_len"]), runtime="vllm",  # type: ignore[arg-type]
                   parallel=Parallelism(tp=int(record["tp"])),  # type: ignore[arg-type]
                   gpu_memory_utilization=Fraction(str(record["gpu_memory_utilization"])),
                   vllm_version=str(record["vllm_version"]))
    est = api.estimate(str(record["model"]), wl, gpu=str(record["gpu"]))
    weights_gib = est.phase("load").memory.bytes_of("weights") / GiB
    assert abs(weights_gib / float(record["model_load_gib"]) - 1) < 0.01  # type: ignore[arg-type]
    assert est.capacity is not None
    assert abs(est.capacity.tokens / int(record["kv_cache_tokens"]) - 1) < 0.08  # type: ignore[call-overload]


def test_sampler_sorts_before_0_17_and_masks_in_place_after() -> None:
    """Bytes per logit at the dummy sampler's peak: 38 with the sort (0.11), 14 with Triton (0.17+)."""
    # 0.11: bf16 logits 2 + fp32 copy 4 + sorted values 4 + sorted indices 8 + cub's int64 index seed 8
    #       + cub's double buffers (fp32 keys 4 + int64 values 8) = 38
    assert sum(b for _, b in sampler_bytes_per_logit((0, 11, 2), rows=1024, logits_dtype=DType.BF16)) == 38
    # below 128 rows torch sorts (index, segment) int2 pairs twice instead of the int64 seed: 2+4+4+8+16+12
    assert sum(b for _, b in sampler_bytes_per_logit((0, 16, 0), rows=64, logits_dtype=DType.BF16)) == 46
    # 0.17+: bf16 2 + fp32 4 + softmax probabilities 4 + exponential noise 4 = 14
    assert sum(b for _, b in sampler_bytes_per_logit((0, 17, 0), rows=1024, logits_dtype=DType.BF16)) == 14


def test_fused_moe_workspace_qwen3_235b_tp4() -> None:
    """Qwen3-235B-A22B's fused-MoE peak at 8,192 tokens on one of 4 ranks: 724,303,872 B."""
    # N = 2 × 1,536 / 4 = 768; cache13 = 8,192 × 8 × max(768, 4,096) = 268,435,456 elements;
    # cache2 = 8,192 × 8 × 384 = 25,165,824; router logits 8,192 × 128 = 1,048,576; output and its
    # all-reduce 2 × 8,192 × 4,096 = 67,108,864 → 361,758,720 × 2 B = 723,517,440
    # routing: 8,192 × 8 × (fp32 weight + int32 id + int32 index) = 786,432 → 724,303,872 B
    spec = api.load_model("Qwen3-235B-A22B")
    assert mlp_block_bytes(spec.layers[0].mlp, tokens=8192, hidden=4096, tp=4, dtype=DType.BF16,
                           fp8_activations=False) == 724_303_872


def test_hybrid_sliding_layers_share_blocks_by_group() -> None:
    """gpt-oss-20b (12 sliding + 12 full layers): 2 groups of 12 layers; 1 GiB holds 21,840 tokens."""
    spec = api.load_model("gpt-oss-20b")
    layout = kv_layout(spec, Inference(runtime="vllm"))
    # K and V: 8 heads × 64 × bf16 = 1,024 B each → 2,048 B per token and layer
    assert (layout.page_bytes_per_token, layout.group_size, layout.num_groups) == (2048, 12, 2)
    assert dict(layout.windows) == {128: 1, None: 1}
    # 1 GiB // (16 × 2,048 B page) // 12 layers = 2,730 blocks; 2,730 // 2 groups × 16 = 21,840 tokens
    blocks = kv_blocks(layout, available_bytes=GiB, block_size=16)
    assert blocks == 2730
    assert capacity_tokens(layout, num_blocks=blocks, block_size=16) == 21_840
    # per 32,768-token request: full cdiv(32,768, 16) = 2,048 blocks; sliding
    # cdiv(min(128 − 1 + 8,192, 32,768), 16) + 1 = 520 + 1 = 521 → 2,569
    assert blocks_per_request(layout, _settings(max_model_len=32768)) == 2569


def test_padding_layers_when_kinds_do_not_divide() -> None:
    """5 sliding + 2 full layers: group size 2, sliding in cdiv(5, 2) = 3 groups, 4 groups in all."""
    layout = KvLayout(page_bytes_per_token=100, group_size=2, num_groups=4, windows=((64, 3), (None, 1)))
    # 1,000,000 // (16 × 100) // 2 = 312 blocks → 312 // 4 × 16 = 1,248 tokens (7 layers' worth per token
    # would give more: the padding costs one layer)
    assert capacity_tokens(layout, num_blocks=kv_blocks(layout, available_bytes=1_000_000, block_size=16),
                           block_size=16) == 1248


def test_kv_cache_memory_bypasses_utilization() -> None:
    """--kv-cache-memory 10 GiB, Llama-3.1-8B: 10 GiB // (16 × 4,096 B) // 32 layers × 16 = 81,920 tokens."""
    wl = Inference(prompt_tokens=4096, runtime="vllm", kv_cache_memory=10 * GiB)
    est = api.estimate("Llama-3.1-8B", wl, gpu="H100-SXM-80GB")
    assert est.capacity is not None
    assert est.capacity.tokens == 81_920
    assert any("--kv-cache-memory" in line for line in est.assumptions)


def test_tp_above_kv_heads_is_replicated() -> None:
    """Qwen3-235B-A22B (4 KV heads) on 8 ranks: accepted, one replicated head per rank, said so."""
    wl = Inference(prompt_tokens=8192, runtime="vllm", parallel=Parallelism(tp=8))
    est = api.estimate("Qwen3-235B-A22B", wl, gpu="H200")
    # one head: K and V 128 × bf16 = 256 B each per token and layer
    assert kv_layout(est.model, wl).page_bytes_per_token == 512
    assert any("tp=8 exceeds num_kv_heads=4" in line and "replicates" in line for line in est.assumptions)
    assert est.capacity is not None
    assert est.capacity.tokens > 0


def test_cuda_graph_estimate_only_from_0_20_and_not_eager() -> None:
    """0.20 subtracts its CUDA-graph estimate; 0.18 and --enforce-eager do not, so they hold more tokens."""
    def capacity(**fields: object) -> tuple[int, bool]:
        wl = Inference(prompt_tokens=4096, runtime="vllm", **fields)  # type: ignore[arg-type]
        est = api.estimate("Llama-3.1-8B", wl, gpu="H100-SXM-80GB")
        assert est.capacity is not None
        overhead = est.phase("prefill").memory.child("runtime_overhead")
        assert overhead is not None
        assert overhead.child("cublas_workspace") is not None
        return est.capacity.tokens, overhead.child("cuda_graphs") is not None

    graphs, eager, older = capacity(), capacity(enforce_eager=True), capacity(vllm_version="0.18.0")
    assert graphs[1]
    assert not eager[1]
    assert not older[1]
    assert graphs[0] < eager[0]
    # 0.18 sorts nothing either (Triton since 0.17): same profile as eager 0.20
    assert older[0] == eager[0]


def test_serve_defaults_depend_on_the_gpu() -> None:
    """vllm serve: 8,192 tokens / 1,024 sequences on an H100; 2,048 / 256 on an A100 or a 24 GB card."""
    wl = Inference(runtime="vllm")
    for name, expected in (("H100-SXM-80GB", (8192, 1024)), ("A100-80GB", (2048, 256)), ("L4", (2048, 256))):
        s = vllm_settings(wl, api.get_gpu(name), default_utilization=Fraction(9, 10))
        assert (s.max_num_batched_tokens, s.max_num_seqs) == expected


def test_version_field() -> None:
    """vllm_version parses "v0.11.2" and "0.20"; garbage and another runtime are refused in one line."""
    assert parse_vllm_version("v0.11.2") == (0, 11, 2)
    assert parse_vllm_version("0.20") == (0, 20, 0)
    with pytest.raises(InvalidWorkload, match="vllm_version='latest' is not a release number"):
        Inference(runtime="vllm", vllm_version="latest")
    with pytest.raises(InvalidWorkload, match=r"vllm_version=0\.11\.2 applies to runtime=vllm"):
        Inference(vllm_version="0.11.2")
    est = api.estimate("Llama-3.2-1B", Inference(runtime="vllm", vllm_version="0.9.2"), gpu="H100")
    assert any("outside it: figures unverified" in line for line in est.assumptions)


def test_serve_flags_realise_the_workload() -> None:
    """The vllm serve arguments carry tp, max_model_len, utilization, batch and vLLM settings."""
    spec = api.load_model("Qwen3-235B-A22B")
    wl = Inference(prompt_tokens=7000, new_tokens=1192, batch_size=64, runtime="vllm",
                   parallel=Parallelism(tp=8), gpu_memory_utilization=Fraction(23, 25),
                   kv_cache_dtype=DType.FP8_E4M3, enforce_eager=True, max_num_batched_tokens=16384,
                   max_num_seqs=64)
    flags = vllm_serve_flags(spec, wl, api.get_gpu("H200"))
    assert flags[:3] == ["vllm", "serve", spec.source.ref]
    pairs = dict(itertools.pairwise(flags))
    assert pairs["--tensor-parallel-size"] == "8"
    assert pairs["--max-model-len"] == "8192"          # 7,000 + 1,192
    assert pairs["--gpu-memory-utilization"] == "0.92"  # 23/25
    assert pairs["--max-num-seqs"] == "64"
    assert pairs["--max-num-batched-tokens"] == "16384"
    assert pairs["--kv-cache-dtype"] == "fp8"
    assert flags[-1] == "--enforce-eager"
    assert "--block-size" not in flags                  # vLLM's default 16 is left out


def test_mla_blocks_are_64_tokens() -> None:
    """DeepSeek-V2-Lite (MLA) under vLLM: FlashMLA forces 64-token blocks, so the capacity is a multiple of
    64 and a 1,000-token sequence takes ceil(1,000 / 64) = 16 blocks = 1,024 tokens."""
    wl = Inference(prompt_tokens=1000, runtime="vllm")
    est = api.estimate("DeepSeek-V2-Lite", wl, gpu="H100-SXM-80GB")
    assert est.capacity is not None
    assert est.capacity.tokens % 64 == 0
    assert est.capacity.sequence_tokens == 1024
