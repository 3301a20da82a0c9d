"""transformers' device_map="auto" under a per-GPU cap: modules placed as accelerate places them.

The torch-allocator phases of the job on one GPU (torch_inference), re-cut for the most loaded GPU of the
split: its modules' weights, its layers' share of the KV cache, and one CPU-offloaded layer staged on GPU 0;
offloaded weights in `Phase.host`.
"""

from __future__ import annotations

from dataclasses import replace
from fractions import Fraction

from memfit.core.choices import DeviceMap, KvCache
from memfit.core.kv_cache import (
    compute_dtype,
    final_cache_tokens,
    kv_tensor_groups,
)
from memfit.core.result import Gpu, Phase, Term, replace_terms
from memfit.core.runtimes import RuntimeProfile
from memfit.core.spec import ModelSpec
from memfit.core.torch_inference import carry_reserved, torch_phases
from memfit.core.weights import weight_tensor_groups
from memfit.core.workload import Inference

BALANCED_BUFFER = Fraction(5, 4)
"""transformers' device_map="auto" balances GPUs: each but the last gets at most model/num_gpus + 1.25 × the
largest decoder layer. Source: transformers integrations/accelerate.get_balanced_memory (buffer = 1.25 ×
max(largest no-split block, mean leaf); the mean leaf is far smaller than a decoder layer in an LLM)."""

def auto_map_applies(workload: Inference, prof: RuntimeProfile) -> bool:
    """device_map="auto" with a per-GPU cap on a runtime that splits by device_map (transformers), no TP."""
    par = workload.parallel
    return (prof.num_gpus_split == "device_map" and par.device_map is DeviceMap.AUTO
            and par.max_gpu_memory_bytes is not None and par.tp == 1)

def auto_device_map(sizes: list[int], *, num_gpus: int, cap_bytes: int, balance_buffer: int) -> list[int]:
    """The device of each module (0..num_gpus-1 a GPU, num_gpus the CPU), modules given in load order.

    accelerate's infer_auto_device_map on transformers' balanced budgets: every GPU but the last may hold
    min(cap, total/num_gpus + balance_buffer), the last the cap; modules go in order to the current GPU
    while they fit, else to the next; on GPU 0 (the main device, where CPU-offloaded layers run) the
    largest module still to place is kept free. What no GPU takes goes to the CPU.
    Source: transformers integrations/accelerate.py get_balanced_memory, infer_auto_device_map.
    """
    budgets = [cap_bytes] * num_gpus
    if num_gpus > 1:
        per_gpu = sum(sizes) // num_gpus + balance_buffer
        budgets[:-1] = [min(per_gpu, cap_bytes)] * (num_gpus - 1)
    largest_after = [0] * len(sizes)
    for i in range(len(sizes) - 2, -1, -1):
        largest_after[i] = max(largest_after[i + 1], sizes[i + 1])
    devices: list[int] = []
    device, used = 0, 0
    for i, size in enumerate(sizes):
        while device < num_gpus:
            room = budgets[device] - (largest_after[i] if device == 0 else 0)
            if used + size <= room:
                break
            device, used = device + 1, 0
        devices.append(device)
        if device < num_gpus:
            used += size
    return devices

def device_map_phases(spec: ModelSpec, workload: Inference, prof: RuntimeProfile, kind: KvCache,
                       assumptions: list[str], device: Gpu | None = None) -> tuple[Phase, ...]:
    """device_map="auto" over parallel.pp GPUs capped at max_gpu_memory_bytes each: the phases of the most
    loaded GPU. Offloaded layers stay in host RAM and run on GPU 0 (their KV cache lives there, and one
    layer's weights are staged there while it runs). `device`: the GPU model (None: an H100)."""
    par = workload.parallel
    cap = par.max_gpu_memory_bytes or 0
    single = replace(workload, parallel=replace(par, pp=1, device_map=None, max_gpu_memory_bytes=None))
    raw = torch_phases(spec, single, prof, kind, assumptions, device)
    names, sizes, layer_of = _module_sizes(spec, single)
    largest_layer = max((size for size, layer in zip(sizes, layer_of, strict=True) if layer >= 0), default=0)
    devices = auto_device_map(sizes, num_gpus=par.pp, cap_bytes=cap,
                              balance_buffer=int(BALANCED_BUFFER * largest_layer))
    kv_layer = _kv_per_layer(spec, single)
    offloaded = [i for i, d in enumerate(devices) if d == par.pp]
    staging = max((sizes[i] for i in offloaded), default=0)

    def load(gpu: int) -> tuple[int, int, int]:
        """(weight bytes, KV share numerator, staging bytes) of one GPU."""
        runs_here = [i for i, d in enumerate(devices) if d == gpu or (gpu == 0 and d == par.pp)]
        weight = sum(sizes[i] for i, d in enumerate(devices) if d == gpu)
        kv = sum(kv_layer[layer_of[i]] for i in runs_here if layer_of[i] >= 0)
        return weight, kv, staging if gpu == 0 else 0

    loads = [load(g) for g in range(par.pp)]
    kv_total = max(sum(kv_layer), 1)
    gpu = max(range(par.pp), key=lambda g: loads[g][0] + loads[g][2] + loads[g][1])
    weight_bytes, kv_share, stage = loads[gpu]
    placed = [Term(name=names[i], nbytes=sizes[i]) for i, d in enumerate(devices) if d == gpu]
    weights_term = Term.group("weights", [*_merge(placed), Term(name="offload_staging", nbytes=stage,
                                                                note="one CPU-offloaded layer's weights")])
    host_bytes = sum(sizes[i] for i in offloaded)
    host = Term.group("host", [Term(name="weights", nbytes=host_bytes)]) if host_bytes else None
    full_weights = max(raw[0].memory.bytes_of("weights"), 1)
    layers_on = [sum(1 for i, d in enumerate(devices) if d == g and layer_of[i] >= 0) for g in range(par.pp)]
    assumptions.append(
        f'device_map="auto" over {par.pp} GPU(s) of at most {cap:,} B: decoder layers per GPU {layers_on}, '
        f"{sum(1 for i in offloaded if layer_of[i] >= 0)} offloaded to CPU RAM ({host_bytes:,} B); showing "
        f"GPU {gpu}; offloaded layers run on GPU 0 (their KV cache and one staged layer there); segment "
        "rounding scaled by this GPU's share of the weights (accelerate's infer_auto_device_map, balanced)")
    out = []
    for phase in raw:
        cache = phase.memory.child("kv_cache")
        frag = phase.memory.child("fragmentation")
        terms = [weights_term]
        if cache is not None:
            terms.append(Term.group("kv_cache", [replace(c, nbytes=c.nbytes * kv_share // kv_total)
                                                 for c in cache.children]))
        if frag is not None:
            terms.append(Term.group("fragmentation", [
                replace(c, nbytes=c.nbytes * weight_bytes // full_weights)
                if c.name == "segment_rounding" else c for c in frag.children]))
        out.append(replace(replace_terms(phase, *terms), host=host))
    return carry_reserved(tuple(out))

def _module_sizes(spec: ModelSpec, workload: Inference) -> tuple[list[str], list[int], list[int]]:
    """(name, weight bytes, decoder layer index or -1) of the modules device_map places, in load order:
    embeddings (with position embeddings and their norm), each decoder layer, final norm, LM head and the
    rest (buffers, odd parameters)."""
    dtype = compute_dtype(spec, workload)
    groups = weight_tensor_groups(spec, dtype=dtype, quant=workload.quant, runtime=workload.runtime)
    before: dict[str, int] = {}
    after: dict[str, int] = {}
    layer_sizes: list[int] = []
    front = ("embeddings", "position_embeddings", "embedding_norm")
    for tensors, times in groups:
        in_layers = sum(b for path, b in tensors if path.startswith("layers/"))
        if in_layers and spec.checkpoint is not None:   # stored tensors: the layers' bytes split evenly
            per_layer, extra = divmod(in_layers, spec.num_layers)
            layer_sizes.extend([per_layer] * (spec.num_layers - 1) + [per_layer + extra])
        elif in_layers:
            layer_sizes.extend([in_layers] * times)
        for path, nbytes in tensors:
            head = path.split("/")[0]
            if head != "layers":
                target = before if head in front else after
                target[head] = target.get(head, 0) + nbytes * times
    names = ["embeddings", *(["layers"] * len(layer_sizes)), *after]
    sizes = [sum(before.values()), *layer_sizes, *after.values()]
    layer_of = [-1, *range(len(layer_sizes)), *([-1] * len(after))]
    return names, sizes, layer_of

def _kv_per_layer(spec: ModelSpec, workload: Inference) -> list[int]:
    """KV bytes of each decoder layer at the final cache length (the share of the cache each holds)."""
    groups = kv_tensor_groups(spec, workload, tokens=final_cache_tokens(workload))
    return [size for sizes, times in groups for size in [sum(sizes)] * times]

def _merge(terms: list[Term]) -> list[Term]:
    """Terms of the same name summed, first-seen order."""
    totals: dict[str, int] = {}
    for term in terms:
        totals[term.name] = totals.get(term.name, 0) + term.nbytes
    return [Term(name=name, nbytes=nbytes) for name, nbytes in totals.items()]
