"""The CLI with the multi-rank trace: per-rank terms in --json, one-line errors for what it cannot run."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from tests.helpers import requires_transformers
from tests.shells.test_cli import assert_one_error_line, invoke

from memfit.core.errors import InvalidWorkload

pytestmark = requires_transformers

TINY = {
    "model_type": "llama", "architectures": ["LlamaForCausalLM"], "hidden_size": 64, "intermediate_size": 128,
    "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2, "vocab_size": 256,
    "max_position_embeddings": 256, "rms_norm_eps": 1e-5, "tie_word_embeddings": False,
    "torch_dtype": "float32",
}
TRAIN = ["--engine", "trace", "--task", "train", "--seq-len", "16"]


@pytest.fixture
def tiny_config(tmp_path):
    path = tmp_path / "config.json"
    path.write_text(json.dumps(TINY))
    return str(path)


def test_fsdp_trace_json_has_the_per_rank_gradient_terms(tiny_config):
    """--dp 2 --fsdp full --engine trace, bf16: the optimizer phase holds this rank's gradient shards, one
    flat reduce-scatter output per unit. Layer: 36,992 parameters, half 18,496 · 2 B = 36,992 → 37,376;
    root: embed and lm_head 16,384 each and a 64-wide norm, half 16,416 · 2 B = 32,832 → 33,280;
    2 · 37,376 + 33,280 = 108,032 B."""
    outcome = invoke("estimate", tiny_config, *TRAIN, "--dp", "2", "--fsdp", "full", "--json")
    assert outcome.exit_code == 0, outcome.stderr
    optimizer = next(p for p in json.loads(outcome.stdout)["phases"] if p["name"] == "optimizer")
    assert optimizer["breakdown"]["gradients/sharded"] == 108_032
    assert optimizer["breakdown"]["gradients"] == 108_032


def test_hybrid_over_a_partial_node_is_bad_input(tiny_config):
    """--dp 12 --fsdp hybrid cannot fill nodes of 8 GPUs: exit 2 and one line naming what works."""
    outcome = invoke("estimate", tiny_config, *TRAIN, "--dp", "12", "--fsdp", "hybrid")
    assert_one_error_line(outcome, 2, mentions="fsdp=hybrid with dp=12 does not fill whole nodes")


def test_pipeline_schedule_flag(tiny_config):
    """--pp-schedule gpipe estimates a pipeline (its assumptions name GPipe); an unknown schedule, or one
    without --pp, is exit 2 and one line."""
    outcome = invoke("estimate", tiny_config, "--task", "train", "--seq-len", "16", "--pp", "2",
                     "--grad-accum", "4", "--pp-schedule", "gpipe", "--json")
    assert outcome.exit_code == 0, outcome.stderr
    assert any("pipeline GPIPE with 4 micro-batches" in a for a in json.loads(outcome.stdout)["assumptions"])
    outcome = invoke("estimate", tiny_config, "--task", "train", "--pp", "2", "--pp-schedule", "zigzag")
    assert_one_error_line(outcome, 2, mentions="pp_schedule='zigzag' is not valid; use one of: 1f1b, gpipe, "
                                                  "interleaved")
    outcome = invoke("estimate", tiny_config, "--task", "train", "--pp-schedule", "gpipe")
    assert_one_error_line(outcome, 2, mentions="pp_schedule=gpipe orders pipeline stages' micro-batches")


def test_interleaved_schedule_flags(tiny_config):
    """--pp-schedule interleaved --pp-virtual-stages 2 on the 2-layer tiny model is refused (pp 2 × 2 chunks
    exceed its layers), chunks without the interleaved schedule too, each exit 2 and one line; with 4
    layers it estimates and names the schedule."""
    base = ("estimate", tiny_config, "--task", "train", "--seq-len", "16", "--grad-accum", "4")
    outcome = invoke(*base, "--pp", "2", "--pp-schedule", "interleaved", "--pp-virtual-stages", "2")
    assert_one_error_line(outcome, 2, mentions="pp=2 × pp_virtual_stages=2 = 4 model chunks exceed "
                                               "num_hidden_layers=2")
    outcome = invoke(*base, "--pp", "2", "--pp-virtual-stages", "2")
    assert_one_error_line(outcome, 2, mentions="pp_virtual_stages=2 splits each pipeline rank into model "
                                               "chunks")
    four = Path(tiny_config).with_name("four.json")
    four.write_text(json.dumps({**TINY, "num_hidden_layers": 4}))
    outcome = invoke("estimate", str(four), *base[2:], "--pp", "2", "--pp-schedule", "interleaved",
                     "--pp-virtual-stages", "2", "--json")
    assert outcome.exit_code == 0, outcome.stderr
    assert any("pipeline INTERLEAVED (2 model chunks per rank) with 4 micro-batches" in a
               for a in json.loads(outcome.stdout)["assumptions"])


def test_tp_beside_ddp_names_the_analytic_engine(tiny_config):
    """--dp 2 --tp 2 without FSDP is not traced: exit 1 and one line naming engine=analytic."""
    outcome = invoke("estimate", tiny_config, *TRAIN, "--dp", "2", "--tp", "2")
    assert_one_error_line(outcome, 1, mentions="engine=analytic")


def test_nodes_spreads_the_gpus_evenly() -> None:
    """--nodes 2 with 16 GPUs is 8 GPUs per node (hybrid FSDP shards within a node of 8: the same figure as
    --gpus-per-node 8); --nodes 4 gives hybrid shards of 4 (more per GPU); --nodes 3 is refused."""
    from memfit.cli.options import workload_from_flags

    base = {"task": "train", "fsdp": "hybrid", "grad_checkpointing": True}
    two = workload_from_flags({**base, "nodes": 2}, num_gpus=16)
    assert two.parallel.gpus_per_node == 8
    four = workload_from_flags({**base, "nodes": 4}, num_gpus=16)
    assert four.parallel.gpus_per_node == 4
    with pytest.raises(InvalidWorkload, match="does not divide"):
        workload_from_flags({**base, "nodes": 3}, num_gpus=16)
    with pytest.raises(InvalidWorkload, match="not --gpus-per-node 8"):
        workload_from_flags({**base, "nodes": 4, "gpus_per_node": 8}, num_gpus=16)
