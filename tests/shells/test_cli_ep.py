"""The CLI's expert-parallel flags: --ep and --enable-expert-parallel mean what Parallelism.ep means."""

from __future__ import annotations

import json

from tests.shells.test_cli import assert_one_error_line, invoke

from memfit import api
from memfit.core.choices import FsdpStrategy
from memfit.core.workload import Inference, Parallelism, Training


def test_ep_json_equals_the_api() -> None:
    """`--task train --dp 8 --fsdp full --ep 8 --json` equals the API's Training with Parallelism(ep=8)."""
    outcome = invoke("estimate", "Qwen3-30B-A3B", "--task", "train", "--seq-len", "1024", "--dp", "8",
                     "--fsdp", "full", "--ep", "8", "--gpu", "H100-SXM-80GB", "--json")
    assert outcome.exit_code == 0, outcome.stderr
    workload = Training(seq_len=1024, parallel=Parallelism(dp=8, fsdp=FsdpStrategy.FULL, ep=8))
    expected = api.estimate("Qwen3-30B-A3B", workload, gpu="H100-SXM-80GB").to_dict()
    assert json.loads(outcome.stdout) == expected


def test_enable_expert_parallel_sets_ep_to_tp_times_dp() -> None:
    """vLLM's --enable-expert-parallel with --num-gpus 4 is ep = tp × dp = 4, as Parallelism(tp=4, ep=4)."""
    outcome = invoke("estimate", "Qwen3-30B-A3B", "--runtime", "vllm", "--num-gpus", "4",
                     "--enable-expert-parallel", "--gpu", "H100-SXM-80GB", "--json")
    assert outcome.exit_code == 0, outcome.stderr
    workload = Inference(runtime="vllm", kv_cache="paged", parallel=Parallelism(tp=4, ep=4))
    expected = api.estimate("Qwen3-30B-A3B", workload, gpu="H100-SXM-80GB").to_dict()
    assert json.loads(outcome.stdout) == expected


def test_ep_errors_are_one_line_exit_2() -> None:
    """A dense model, an ep not carved out of dp, and the vLLM flag on training are one line each, exit 2."""
    assert_one_error_line(invoke("estimate", "Llama-3.2-1B", "--task", "train", "--dp", "2", "--ep", "2"), 2,
                          mentions="has no MoE layers")
    assert_one_error_line(invoke("estimate", "Qwen3-30B-A3B", "--task", "train", "--dp", "8", "--ep", "3"), 2,
                          mentions="ep=3 must divide the data-parallel ranks")
    assert_one_error_line(invoke("estimate", "Qwen3-30B-A3B", "--task", "train", "--dp", "8",
                                 "--enable-expert-parallel"), 2, mentions="--enable-expert-parallel")
    assert_one_error_line(invoke("estimate", "Qwen3-30B-A3B", "--tp", "2", "--enable-expert-parallel"), 2,
                          mentions="--enable-expert-parallel applies to --runtime vllm")


def test_plan_emit_vllm_keeps_expert_parallel() -> None:
    """`plan --runtime vllm --tp 2 --enable-expert-parallel --emit vllm` launches with the flag."""
    outcome = invoke("plan", "Qwen3-30B-A3B", "--runtime", "vllm", "--gpu", "H100-SXM-80GB", "--tp", "2",
                     "--enable-expert-parallel", "--prompt-tokens", "4096", "--emit", "vllm")
    assert outcome.exit_code == 0, outcome.stderr
    assert "vllm serve Qwen/Qwen3-30B-A3B --tensor-parallel-size 2 --enable-expert-parallel" in outcome.stdout
