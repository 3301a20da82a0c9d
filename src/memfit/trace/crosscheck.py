"""The multi-rank trace beside torch's own FSDPMemTracker on the same FSDP2 step, category by category.

`python -m memfit.trace.crosscheck` reads {"config_json": str, "workload": <workload dict>} on stdin and
prints {"points": {point: {"memfit": {category: bytes}, "torch": {category: bytes}}}}: the model-state
categories at the end of forward, backward and the optimizer step of one training step, and at the step's
peak. Both trackers sit in one dispatch-mode stack and see the same ops; FSDPMemTracker
(torch/distributed/_tools/fsdp2_mem_tracker.py) tags by FSDP2's own hooks and collectives, memfit by the
roles of trace/sharding.py, so agreement checks the tagging, the resize accounting and the DTensor handling.
"""

from __future__ import annotations

import contextlib
import json
import sys
from collections.abc import Iterator
from typing import Any

CATEGORIES = {
    "Sharded Param": ("weights/local_shards", "adapters"),
    "Buffer": ("weights/buffers",),
    "Unsharded Param": ("weights/unsharded_params",),
    "All Gather": ("weights/all_gather_buffers",),
    "Sharded Grad": ("gradients/sharded",),
    "Unsharded Grad": ("gradients/unsharded",),
    "Reduce Scatter": ("gradients/reduce_scatter_buffers",),
    "OptState": ("optimizer_states", "optimizer_step"),
}
"""FSDPMemTracker's model-state categories (_FSDPRefType values) → memfit roles (trace/sharding.py). The
optimizer step's temporaries are OptState to torch (made inside step()), `optimizer_step` to memfit."""

OTHER = ("Activation", "Temp", "Inputs")
"""FSDPMemTracker's categories outside the model state; memfit's untagged storages and plain roles."""

MID_STEP_POINTS = ("first_unshard", "first_post_backward")
"""Points inside the step: after the first unit's all-gather is issued (its flat buffer alive) and after the
first unit's reduce-scatter (its input kept until the next one's)."""


def compare(config_json: str, workload: Any) -> dict[str, dict[str, dict[str, int]]]:
    """Per point, each category's bytes by memfit's tracker and by FSDPMemTracker (one training step)."""
    from torch._subclasses.fake_tensor import FakeTensorMode
    from torch.distributed._tools.fsdp2_mem_tracker import FSDPMemTracker
    from torch.distributed.tensor import DTensor

    from memfit.core.dtypes import DType
    from memfit.trace import harness, patches, ranks, sharding
    from memfit.trace.tracker import Tracker

    patches.install()
    model = harness.build_model(config_json, workload, DType.FP32, "meta")
    tracker = Tracker(device_type="cuda")
    tracker.defer_to = (DTensor,)
    points: dict[str, dict[str, dict[str, int]]] = {}
    with ranks.fake_group(workload.parallel) as group, tracker.resizes(), FakeTensorMode(), tracker:
        with tracker.phase("load"):
            sharding.shard(model, workload, group.mesh, "cuda", tracker)
        params = [p for p in model.parameters() if p.requires_grad]
        opt = harness.make_optimizer(params, workload.optimizer)
        ids = harness.random_ids(model.config.vocab_size, workload.batch_size, workload.seq_len, "cuda")
        torch_tracker = FSDPMemTracker(model, opt)
        torch_tracker.track_inputs((ids,))
        with _mid_step(points, tracker, torch_tracker), torch_tracker:   # before it wraps the groups
            with tracker.phase("forward"):
                loss = model(input_ids=ids, labels=ids).loss
            points["forward_end"] = _both(tracker, torch_tracker, tracker.live)
            with tracker.phase("backward"):
                loss.backward()
            del loss
            tracker.mark("gradients", [p.grad for p in params])
            points["backward_end"] = _both(tracker, torch_tracker, tracker.live)
            with tracker.phase("optimizer"):
                opt.step()
            tracker.mark("optimizer_states", harness.optimizer_tensors(opt))
            points["optimizer_end"] = _both(tracker, torch_tracker, tracker.live)
        peak = max(tracker.phases, key=lambda p: p.peak_bytes)
        default = "optimizer_step" if peak.name == "optimizer" else ""
        points["peak"] = {"memfit": _categories(tracker, peak.live, default),
                          "torch": _torch_categories(torch_tracker.get_tracker_snapshot("peak"))}
        points["peak"]["memfit"]["Total"] = peak.peak_bytes
    return points


@contextlib.contextmanager
def _mid_step(points: dict[str, Any], tracker: Any, torch_tracker: Any) -> Iterator[None]:
    """Snapshot both trackers at MID_STEP_POINTS (the first decoder unit's; the root is unsharded first)."""
    from torch.distributed.fsdp._fully_shard._fsdp_param_group import FSDPParamGroup

    originals: dict[str, Any] = {"unshard": FSDPParamGroup.unshard,
                                 "post_backward": FSDPParamGroup.post_backward}
    seen: dict[str, int] = {}

    def wrapped(name: str, point: str) -> Any:
        def method(self: Any, *args: Any, **kwargs: Any) -> Any:
            out = originals[name](self, *args, **kwargs)
            seen[name] = seen.get(name, 0) + 1
            if seen[name] == 2 and tracker.total:
                points[point] = _both(tracker, torch_tracker, tracker.live)
            return out
        return method

    FSDPParamGroup.unshard = wrapped("unshard", "first_unshard")  # type: ignore[method-assign]
    FSDPParamGroup.post_backward = wrapped("post_backward", "first_post_backward")  # type: ignore[method-assign]
    try:
        yield
    finally:
        FSDPParamGroup.unshard = originals["unshard"]  # type: ignore[method-assign]
        FSDPParamGroup.post_backward = originals["post_backward"]  # type: ignore[method-assign]


def _both(tracker: Any, torch_tracker: Any, live: dict[int, int]) -> dict[str, dict[str, int]]:
    mine = _categories(tracker, live)
    mine["Total"] = sum(live.values())
    return {"memfit": mine, "torch": _torch_categories(torch_tracker.get_tracker_snapshot("current"))}


def _categories(tracker: Any, live: dict[int, int], default_role: str = "") -> dict[str, int]:
    by_role: dict[str, int] = {}
    for serial, nbytes in live.items():
        role = tracker.roles.get(serial, default_role)
        by_role[role] = by_role.get(role, 0) + nbytes
    out = {name: sum(by_role.get(role, 0) for role in roles) for name, roles in CATEGORIES.items()}
    out["Other"] = sum(live.values()) - sum(out.values())
    return out


def _torch_categories(snapshot: dict[Any, dict[str, int]]) -> dict[str, int]:
    cuda = next((values for device, values in snapshot.items() if str(device).startswith("cuda")), {})
    out = {name: int(cuda.get(name, 0)) for name in [*CATEGORIES, "Total"]}
    out["Other"] = sum(int(cuda.get(name, 0)) for name in OTHER)
    return out


def main() -> int:
    from memfit.trace import boot

    boot.load()
    from memfit.core.result import workload_from_dict

    request = json.loads(sys.stdin.read())
    points = compare(request["config_json"], workload_from_dict(request["workload"]))
    print(json.dumps({"points": points}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
