"""Results: parameter trees, memory trees, phases, peaks and estimates.

Top-level memory terms (a closed vocabulary; children are free-form and documented where they are built):

| term               | figure    | contents                                                               |
|--------------------|-----------|------------------------------------------------------------------------|
| `weights`          | allocated | parameters as loaded; quantized parts at their exact bits              |
| `adapters`         | allocated | LoRA A and B matrices (fp32 under peft)                                |
| `kv_cache`         | allocated | K/V or MLA latents                                                     |
| `activations`      | allocated | saved for backward; forward/backward temporaries; prefill intermediates |
| `logits`           | allocated | LM head output, its fp32 upcast, loss buffers                          |
| `gradients`        | allocated | `.grad` of trainable parameters (or this rank's shard)                 |
| `optimizer_states` | allocated | moments, 8-bit block scales, step temporaries                          |
| `master_weights`   | allocated | fp32 copies kept when parameters are low precision                     |
| `runtime_overhead` | allocated | cuBLAS workspaces, attention scratch, dequantisation buffers           |
| `fragmentation`    | reserved  | reserved − allocated: block rounding, split segments, cached blocks    |
| `non_torch`        | device    | device − reserved: CUDA context, kernels, NCCL, CUDA managed memory    |

allocated = sum of the nine allocator terms; reserved = allocated + fragmentation;
device = reserved + non_torch.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from fractions import Fraction
from typing import Any, TypeVar

from memfit.core.choices import Engine, PhaseName
from memfit.core.codec import decode, encode
from memfit.core.devices import ARCHS, DEFAULT_ARCH
from memfit.core.errors import InvalidWorkload
from memfit.core.spec import ModelSpec
from memfit.core.workload import Inference, Training

ALLOCATED_TERMS = (
    "weights", "adapters", "kv_cache", "activations", "logits", "gradients", "optimizer_states",
    "master_weights", "runtime_overhead",
)
RESERVED_TERM = "fragmentation"
DEVICE_TERM = "non_torch"
TOP_TERMS = (*ALLOCATED_TERMS, RESERVED_TERM, DEVICE_TERM)

ESTIMATE_SCHEMA = "memfit.estimate/1"
PARAMS_SCHEMA = "memfit.params/1"


_Node = TypeVar("_Node", "ParamNode", "Term")


def _flat_paths(root: _Node, value: Callable[[_Node], int]) -> dict[str, int]:
    """`value` of every node below `root`, keyed by its '/'-joined path of names (root excluded)."""
    out: dict[str, int] = {}
    stack = [(child, child.name) for child in reversed(root.children)]
    while stack:
        node, path = stack.pop()
        out[path] = value(node)
        stack.extend((child, f"{path}/{child.name}") for child in reversed(node.children))
    return out


@dataclass(frozen=True, slots=True, kw_only=True)
class ParamNode:
    """A component's parameter count; a parent's count is the sum of its children."""

    name: str
    num_params: int
    children: tuple[ParamNode, ...] = ()

    @classmethod
    def group(cls, name: str, children: Iterable[ParamNode]) -> ParamNode:
        """A parent node whose count is the sum of its children (children with 0 parameters dropped)."""
        kept = tuple(c for c in children if c.num_params)
        return cls(name=name, num_params=sum(c.num_params for c in kept), children=kept)

    def flat(self) -> dict[str, int]:
        """Counts by path below this node: {"layers": ..., "layers/attention/q_proj": ...}."""
        return _flat_paths(self, lambda node: node.num_params)

    def find(self, path: str) -> ParamNode:
        """The node at a '/'-separated path below this one; KeyError if there is none."""
        node = self
        for part in path.split("/"):
            node = next((c for c in node.children if c.name == part), None)  # type: ignore[assignment]
            if node is None:
                raise KeyError(path)
        return node


@dataclass(frozen=True, slots=True, kw_only=True)
class Term:
    """A named amount of memory in bytes; a parent is the sum of its children (built with `Term.group`)."""

    name: str
    nbytes: int
    children: tuple[Term, ...] = ()
    note: str = ""
    evictable: bool = False

    def __post_init__(self) -> None:
        if self.nbytes < 0:
            raise ValueError(f"term {self.name} has negative bytes {self.nbytes}")

    @classmethod
    def group(cls, name: str, children: Iterable[Term], *, note: str = "") -> Term:
        """A parent term: nbytes is the sum of its children; zero-byte children are dropped."""
        kept = tuple(c for c in children if c.nbytes or c.children)
        return cls(name=name, nbytes=sum(c.nbytes for c in kept), children=kept, note=note,
                   evictable=bool(kept) and all(c.evictable for c in kept))

    def flat(self) -> dict[str, int]:
        """Bytes by path below this term: {"weights": ..., "weights/layers/mlp": ...}."""
        return _flat_paths(self, lambda term: term.nbytes)

    def child(self, name: str) -> Term | None:
        """The direct child called `name`, or None."""
        return next((c for c in self.children if c.name == name), None)

    def bytes_of(self, name: str) -> int:
        """Bytes of the direct child `name`, 0 if absent."""
        found = self.child(name)
        return found.nbytes if found else 0

    @property
    def evictable_bytes(self) -> int:
        """Bytes in evictable leaves (CUDA managed memory that can page out)."""
        if not self.children:
            return self.nbytes if self.evictable else 0
        return sum(c.evictable_bytes for c in self.children)


def memory(terms: Iterable[Term]) -> Term:
    """The root of a phase's memory tree from top-level terms; names outside the vocabulary are refused."""
    terms = tuple(terms)
    for term in terms:
        if term.name not in TOP_TERMS:
            raise ValueError(f"{term.name!r} is not a top-level term; use one of {', '.join(TOP_TERMS)}")
    order = {name: i for i, name in enumerate(TOP_TERMS)}
    return Term.group("memory", sorted(terms, key=lambda t: order[t.name]))


@dataclass(frozen=True, slots=True, kw_only=True)
class Phase:
    """One phase of the job at its peak: the memory tree, and host RAM where offload or device_map use it."""

    name: PhaseName
    memory: Term
    host: Term | None = None
    at: str = ""                          # what holds the peak (an op for trace, a step for analytic)

    @property
    def allocated_bytes(self) -> int:
        return sum(self.memory.bytes_of(name) for name in ALLOCATED_TERMS)

    @property
    def reserved_bytes(self) -> int:
        return self.allocated_bytes + self.memory.bytes_of(RESERVED_TERM)

    @property
    def device_bytes(self) -> int:
        return self.reserved_bytes + self.memory.bytes_of(DEVICE_TERM)

    @property
    def host_bytes(self) -> int:
        return self.host.nbytes if self.host else 0


@dataclass(frozen=True, slots=True, kw_only=True)
class Peak:
    """The job's peak: phase with the largest allocated bytes; each figure is its maximum over phases."""

    phase: PhaseName
    allocated_bytes: int
    reserved_bytes: int
    device_bytes: int
    evictable_bytes: int = 0


@dataclass(frozen=True, slots=True, kw_only=True)
class Gpu:
    """An accelerator: board memory as NVML reports it, what CUDA (HIP, Metal) offers one process, and what
    its architecture runs (core/devices.py: one row per architecture). The capability defaults are an
    H100's (Hopper, sm 9.0): a GPU given only as a size, or no GPU, keeps every figure an H100's."""

    name: str
    memory_bytes: int
    usable_bytes: int
    source: str = ""
    vendor: str = "nvidia"
    aliases: tuple[str, ...] = ()
    arch: str = DEFAULT_ARCH
    compute_capability: str = "9.0"      # CUDA major.minor; the gfx name on ROCm; the chip on Apple/Gaudi
    bf16: bool = ARCHS[DEFAULT_ARCH].bf16
    fp8: bool = ARCHS[DEFAULT_ARCH].fp8
    fp4: bool = ARCHS[DEFAULT_ARCH].fp4
    flash_attention: bool = ARCHS[DEFAULT_ARCH].flash_attention
    blas_workspace_bytes: int = ARCHS[DEFAULT_ARCH].blas_workspace_bytes
    unified_memory: bool = False         # Apple silicon: usable_bytes is the GPU's share of system RAM

    def describe(self) -> str:
        """'T4-16GB (turing, sm 7.5)': the name with its architecture, for messages."""
        label = f"sm {self.compute_capability}" if self.vendor == "nvidia" else self.compute_capability
        return f"{self.name} ({self.arch}, {label})"


def _workload_to_dict(workload: Inference | Training) -> dict[str, Any]:
    task = "infer" if isinstance(workload, Inference) else "train"
    return {"task": task, **encode(workload)}


def workload_from_dict(data: dict[str, Any]) -> Inference | Training:
    """The workload encoded by `_workload_to_dict` (or the web's request body)."""
    body = dict(data)
    task = body.pop("task", "infer")
    if task == "infer":
        return decode(Inference, body)
    if task == "train":
        return decode(Training, body)
    raise InvalidWorkload(f"task={task!r} is not valid; use infer or train")


@dataclass(frozen=True, slots=True, kw_only=True)
class KvCapacity:
    """The KV cache a preallocating runtime (vLLM) allocates from its budget, and what the job needs."""

    utilization: Fraction       # gpu_memory_utilization
    budget_bytes: int           # utilization × usable bytes
    tokens: int                 # capacity in tokens (whole blocks)
    nbytes: int                 # capacity in bytes: tokens × bytes per token
    sequence_tokens: int        # one sequence of prompt + new tokens, rounded up to whole blocks
    batch_size: int

    @property
    def sequences(self) -> int:
        """Whole sequences of the requested length the capacity holds."""
        return self.tokens // max(self.sequence_tokens, 1)

    @property
    def holds_batch(self) -> bool:
        """Whether batch_size sequences of the requested length fit in the capacity."""
        return self.tokens >= self.batch_size * self.sequence_tokens

    @property
    def max_concurrency(self) -> Fraction:
        """Capacity over one sequence's tokens: vLLM's "Maximum concurrency for N tokens per request"."""
        return Fraction(self.tokens, max(self.sequence_tokens, 1))

    def describe(self) -> str:
        """One line: the capacity in tokens and in sequences of the requested length."""
        return (f"KV capacity {self.tokens:,} tokens = {self.sequences:,} sequences of "
                f"{self.sequence_tokens:,} tokens (batch {self.batch_size:,} asked)")


@dataclass(frozen=True, slots=True, kw_only=True)
class Estimate:
    """Memory per phase of one job on one GPU (the most loaded rank), from one engine."""

    engine: Engine
    model: ModelSpec
    workload: Inference | Training
    phases: tuple[Phase, ...]
    gpu: Gpu | None = None
    assumptions: tuple[str, ...] = ()
    required_capacity_ok: bool | None = None   # a preallocating runtime (vLLM): its KV capacity holds the
                                               # batch; when not None, `fits` is this (None: peak decides)
    capacity: KvCapacity | None = None         # a preallocating runtime on a GPU: the KV cache it allocates

    @property
    def peak(self) -> Peak:
        top = max(self.phases, key=lambda p: p.allocated_bytes)
        return Peak(
            phase=top.name,
            allocated_bytes=top.allocated_bytes,
            reserved_bytes=max(p.reserved_bytes for p in self.phases),
            device_bytes=max(p.device_bytes for p in self.phases),
            evictable_bytes=max(p.memory.evictable_bytes for p in self.phases),
        )

    @property
    def fits(self) -> bool | None:
        """Whether the peak fits the GPU's usable memory (evictable managed memory excluded); None: no GPU.
        A preallocating runtime fits when its KV capacity holds the batch (`required_capacity_ok`)."""
        if self.gpu is None:
            return None
        if self.required_capacity_ok is not None:
            return self.required_capacity_ok
        peak = self.peak
        return peak.device_bytes - peak.evictable_bytes <= self.gpu.usable_bytes

    def __str__(self) -> str:
        """Three lines: model and workload; the peak's allocated, reserved and on-device GiB; the fit.

        e.g. "Llama-3.1-8B: inference, batch 1 × 2048 prompt + 0 new tokens (analytic)",
        "peak in prefill: 15.08 GiB allocated · 15.21 GiB reserved · 15.89 GiB on device",
        "fits H100-SXM-80GB: needs 15.89 GiB of 79.19 GiB usable, 63.30 GiB to spare".
        """
        from memfit.core.units import format_bytes

        peak, num_gpus = self.peak, self.workload.parallel.num_gpus
        gpus = f", figures per GPU of {num_gpus}" if num_gpus > 1 else ""
        lines = [
            f"{self.model.name}: {self.workload.summary()}{gpus} ({self.engine})",
            f"peak in {peak.phase}: {format_bytes(peak.allocated_bytes)} allocated · "
            f"{format_bytes(peak.reserved_bytes)} reserved · {format_bytes(peak.device_bytes)} on device",
        ]
        if self.gpu is None:
            return "\n".join([*lines, "fit not checked: no GPU given"])
        needed = peak.device_bytes - peak.evictable_bytes
        spare = self.gpu.usable_bytes - needed
        verdict = "fits" if self.fits else "does not fit"
        fit = (f"{verdict} {self.gpu.name}: needs {format_bytes(needed)} of "
               f"{format_bytes(self.gpu.usable_bytes)} usable, "
               f"{format_bytes(abs(spare))} {'to spare' if spare >= 0 else 'short'}")
        if self.required_capacity_ok is not None:
            holds = "holds" if self.required_capacity_ok else "does not hold"
            fit += f"; the runtime's preallocated KV cache {holds} the batch"
        if peak.evictable_bytes:
            fit += f"; {format_bytes(peak.evictable_bytes)} of paged optimizer state can page out to host RAM"
        return "\n".join([*lines, fit])

    def phase(self, name: PhaseName | str) -> Phase:
        """The phase called `name`; KeyError if the job has none."""
        for p in self.phases:
            if p.name == name:
                return p
        raise KeyError(str(name))

    def to_dict(self) -> dict[str, Any]:
        """The `memfit.estimate/1` JSON contract; every byte value is an int."""
        from memfit.core.params import count_params

        peak = self.peak
        return {
            "schema": ESTIMATE_SCHEMA,
            "engine": str(self.engine),
            "model": {"name": self.model.name, "family": self.model.family,
                      "num_params": count_params(self.model).num_params, "source": self.model.source.ref,
                      "spec": encode(self.model)},
            "workload": _workload_to_dict(self.workload),
            "peak": {"phase": str(peak.phase), "allocated_bytes": peak.allocated_bytes,
                     "reserved_bytes": peak.reserved_bytes, "device_bytes": peak.device_bytes},
            "phases": [_phase_to_dict(p) for p in self.phases],
            "gpu": encode(self.gpu) if self.gpu else None,
            "fits": self.fits,
            "assumptions": list(self.assumptions),
            # vLLM on a GPU only: whether its KV capacity holds the batch (what `fits` says)
            **({} if self.required_capacity_ok is None
               else {"required_capacity_ok": self.required_capacity_ok}),
            **({} if self.capacity is None else {"capacity": _capacity_to_dict(self.capacity)}),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Estimate:
        """The Estimate written by `to_dict`; an unknown major schema version raises InvalidWorkload."""
        schema = str(data.get("schema", ""))
        if not schema.startswith("memfit.estimate/") or schema.split("/")[1].split(".")[0] != "1":
            raise InvalidWorkload(f"schema {schema!r} is not readable; this memfit reads {ESTIMATE_SCHEMA}")
        return cls(
            engine=Engine.parse(data["engine"]),
            model=decode(ModelSpec, data["model"]["spec"]),
            workload=workload_from_dict(data["workload"]),
            phases=tuple(_phase_from_dict(p) for p in data["phases"]),
            gpu=decode(Gpu, data["gpu"]) if data.get("gpu") else None,
            assumptions=tuple(data.get("assumptions", ())),
            required_capacity_ok=data.get("required_capacity_ok"),
            capacity=_capacity_from_dict(data["capacity"]) if data.get("capacity") else None,
        )


def _capacity_to_dict(capacity: KvCapacity) -> dict[str, Any]:
    """The KV capacity as JSON: its fields, whole sequences it holds, and vLLM's maximum concurrency
    (capacity tokens over one sequence's tokens, rounded to 2 places as vLLM logs it)."""
    return {**encode(capacity), "sequences": capacity.sequences,
            "max_concurrency": round(float(capacity.max_concurrency), 2)}


def _capacity_from_dict(data: dict[str, Any]) -> KvCapacity:
    fields = {k: v for k, v in data.items() if k not in ("sequences", "max_concurrency")}
    return decode(KvCapacity, fields)


def _phase_to_dict(phase: Phase) -> dict[str, Any]:
    return {
        "name": str(phase.name), "allocated_bytes": phase.allocated_bytes,
        "reserved_bytes": phase.reserved_bytes, "device_bytes": phase.device_bytes,
        "host_bytes": phase.host_bytes, "at": phase.at,
        "breakdown": phase.memory.flat(),
        "tree": encode(phase.memory),
        "host": encode(phase.host) if phase.host else None,
    }


def _phase_from_dict(data: dict[str, Any]) -> Phase:
    return Phase(
        name=PhaseName.parse(data["name"]),
        memory=decode(Term, data["tree"]),
        host=decode(Term, data["host"]) if data.get("host") else None,
        at=data.get("at", ""),
    )


def replace_terms(phase: Phase, *terms: Term) -> Phase:
    """`phase` with the named top-level terms replaced or added."""
    names = {t.name for t in terms}
    kept = [t for t in phase.memory.children if t.name not in names]
    return dataclasses.replace(phase, memory=memory([*kept, *terms]))
