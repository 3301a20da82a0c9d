"""Multi-rank trace pieces without a trace: mesh degrees, what the trace refuses, storage resizes, and the
grouping of per-rank roles into terms."""

import pytest
from tests.helpers import requires_transformers

from memfit.core.errors import EngineUnavailable, InvalidWorkload
from memfit.core.workload import Inference, Parallelism, Training

pytestmark = requires_transformers

torch = pytest.importorskip("torch")

from memfit.trace.pipeline import in_flight, stage_layers  # noqa: E402
from memfit.trace.ranks import shard_degrees  # noqa: E402
from memfit.trace.run import _grouped, check_supported  # noqa: E402
from memfit.trace.tracker import Tracker  # noqa: E402


@pytest.mark.parametrize(("par", "expected"), [
    (Parallelism(dp=64, fsdp="hybrid"), (8, 8)),           # 8 nodes of 8: shard in a node, replicate across
    (Parallelism(dp=16, fsdp="hybrid"), (2, 8)),
    (Parallelism(dp=4, fsdp="hybrid"), (1, 4)),            # within one node HSDP is full sharding
    (Parallelism(dp=64, fsdp="full"), (1, 64)),
    (Parallelism(dp=8, fsdp="shard-grad-op"), (1, 8)),
])
def test_shard_degrees(par, expected):
    """(replicate, shard) mesh degrees: HSDP shards over a node of 8 GPUs; the others over every rank."""
    assert shard_degrees(par) == expected


def test_hybrid_over_a_partial_node_is_refused():
    """dp=12 with fsdp=hybrid leaves a node half full: one line naming the values that work."""
    with pytest.raises(InvalidWorkload, match=r"^fsdp=hybrid with dp=12 does not fill whole nodes of 8 GPUs"):
        shard_degrees(Parallelism(dp=12, fsdp="hybrid"))


class _Spec:
    source = type("Source", (), {"config_json": "{}"})()


@pytest.mark.parametrize(("workload", "message"), [
    (Training(seq_len=16, parallel=Parallelism(pp=2, dp=2, fsdp="full")), r"^trace runs pipeline stages"),
    (Training(seq_len=16, parallel=Parallelism(dp=2, tp=2)), r"tp with fsdp=full or shard-grad-op only"),
    (Training(seq_len=16, parallel=Parallelism(dp=2, zero=3)), r"not DeepSpeed zero=3"),
    (Inference(prompt_tokens=16, parallel=Parallelism(dp=2)), r"^trace runs multi-GPU training only"),
    (Training(seq_len=16, parallel=Parallelism(dp=16, fsdp="hybrid", ep=2)), r"^trace runs ep=2 with DDP or"),
])
def test_trace_refuses_what_it_does_not_run(workload, message):
    """PP beside dp, DeepSpeed ZeRO, TP beside DDP, multi-GPU inference and expert parallelism under HSDP
    name engine=analytic instead."""
    with pytest.raises(EngineUnavailable, match=message):
        check_supported(_Spec(), workload)


def test_dp_with_fsdp_or_ddp_and_tp_are_accepted():
    """fsdp full over 8 ranks, plain DDP over 2, tp 4 with sequence parallelism, fsdp × tp, and expert
    parallelism under fsdp full or DDP pass."""
    check_supported(_Spec(), Training(seq_len=16, parallel=Parallelism(dp=8, fsdp="full")))
    check_supported(_Spec(), Training(seq_len=16, parallel=Parallelism(dp=2)))
    check_supported(_Spec(), Training(seq_len=16, parallel=Parallelism(tp=4, sequence_parallel=True)))
    check_supported(_Spec(), Training(seq_len=16, parallel=Parallelism(dp=2, tp=2, fsdp="full")))
    check_supported(_Spec(), Training(seq_len=16, parallel=Parallelism(dp=8, ep=4, fsdp="full")))
    check_supported(_Spec(), Training(seq_len=16, parallel=Parallelism(dp=2, ep=2)))


def test_resizing_a_storage_to_zero_and_back_is_counted_and_keeps_its_role():
    """FSDP frees unsharded parameters by resizing their storage to 0 and re-allocates them by resizing
    back: 1,024 fp32 elements are 4,096 B, 0 B, then 4,096 B again, tagged the same all along."""
    tracker = Tracker()
    with tracker, tracker.resizes():
        param = torch.empty(1024)
        tracker.mark("weights/unsharded_params", [param])
        with tracker.phase("forward") as record:
            param.untyped_storage().resize_(0)
            assert tracker.total == 0
            param.untyped_storage().resize_(4096)
        assert tracker.total == 4096
    assert record.peak_bytes == 4096
    assert tracker.breakdown(record, "activations") == {"weights/unsharded_params": 4096}


def test_grouped_roles_become_children():
    """"parent/child" roles are children of their parent; a plain parent tag is the `other` child, or
    `param_grads` for gradients (DDP's `.grad` beside its buckets)."""
    terms = {t.name: t for t in _grouped({"weights/local_shards": 1024, "weights/buffers": 512,
                                          "gradients/ddp_buckets": 4096, "gradients": 4608,
                                          "activations": 2048})}
    assert terms["weights"].nbytes == 1536
    assert [c.name for c in terms["weights"].children] == ["buffers", "local_shards"]
    assert {c.name: c.nbytes for c in terms["gradients"].children} == {"ddp_buckets": 4096,
                                                                      "param_grads": 4608}
    assert terms["activations"].nbytes == 2048
    assert not terms["activations"].children


@pytest.mark.parametrize(("num_layers", "pp", "expected"), [
    (32, 4, [8, 8, 8, 8]),
    (32, 3, [11, 11, 10]),          # the first 32 % 3 = 2 stages take one more
    (2, 2, [1, 1]),
])
def test_stage_layers_split_evenly_and_cover_every_layer_once(num_layers, pp, expected):
    """Stages take consecutive layers, the remainder on the first stages."""
    stages = [stage_layers(num_layers, pp, stage) for stage in range(pp)]
    assert [len(s) for s in stages] == expected
    assert [i for s in stages for i in s] == list(range(num_layers))


@pytest.mark.parametrize(("pp", "stage", "micro_batches", "expected"), [
    (4, 0, 8, 4), (4, 3, 8, 1), (4, 0, 2, 2), (2, 1, 1, 1),
])
def test_in_flight_micro_batches_follow_1f1b(pp, stage, micro_batches, expected):
    """Under 1F1B stage s warms up with pp − s forwards, never more than the micro-batches there are."""
    assert in_flight(pp, stage, micro_batches) == expected
