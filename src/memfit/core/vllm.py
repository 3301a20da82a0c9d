"""vLLM's KV capacity: what gpu_memory_utilization leaves after weights, profiled activations and overhead.
"""

from __future__ import annotations

from fractions import Fraction

from memfit.core.choices import PhaseName
from memfit.core.kv_cache import (
    kv_bytes_per_token,
)
from memfit.core.result import KvCapacity, Phase
from memfit.core.runtimes import profile
from memfit.core.spec import ModelSpec
from memfit.core.workload import Inference


def kv_capacity(spec: ModelSpec, workload: Inference, phases: tuple[Phase, ...], *,
                gpu_usable_bytes: int) -> KvCapacity:
    """The KV capacity vLLM allocates: gpu_memory_utilization × usable − (the prefill's device bytes
    without its cache: weights, profiled activations, overhead), in whole blocks of the per-token bytes.

    Source: vLLM gpu_worker.determine_available_memory (requested memory − non-KV peak of the profile run);
    KVCacheManager allocates whole blocks of block_size tokens.
    """
    prof = profile(workload.runtime)
    num, den = prof.default_gpu_memory_utilization or (9, 10)
    utilization = workload.gpu_memory_utilization or Fraction(num, den)
    budget = int(gpu_usable_bytes * utilization)
    prefill = next(p for p in phases if p.name is PhaseName.PREFILL)
    used = prefill.device_bytes - prefill.memory.bytes_of("kv_cache")
    per_token = max(kv_bytes_per_token(spec, workload), 1)
    block = workload.block_size
    tokens = max(budget - used, 0) // per_token // block * block
    return KvCapacity(utilization=utilization, budget_bytes=budget, tokens=tokens, nbytes=tokens * per_token,
                      sequence_tokens=-(-workload.total_tokens // block) * block,
                      batch_size=workload.batch_size)
