"""Laws of the analytic inference estimate: monotone in work, exact cache dtype ratios, summing trees."""

from dataclasses import replace

from hypothesis import given
from hypothesis import strategies as st
from tests.strategies import inference_specs, inference_workloads

from memfit.core.dtypes import DType
from memfit.core.estimate import estimate
from memfit.core.kv_cache import kv_cache
from memfit.core.result import Term


@given(spec=inference_specs(), wl=inference_workloads(), extra=st.integers(1, 8))
def test_peak_never_shrinks_with_batch(spec, wl, extra):
    """More sequences never need less memory."""
    bigger = replace(wl, batch_size=wl.batch_size + extra)
    assert estimate(spec, bigger).peak.allocated_bytes >= estimate(spec, wl).peak.allocated_bytes


@given(spec=inference_specs(), wl=inference_workloads(), extra=st.integers(1, 200))
def test_peak_never_shrinks_with_prompt(spec, wl, extra):
    """A longer prompt never needs less memory."""
    longer = replace(wl, prompt_tokens=wl.prompt_tokens + extra)
    assert estimate(spec, longer).peak.allocated_bytes >= estimate(spec, wl).peak.allocated_bytes


@given(spec=inference_specs(), wl=inference_workloads(), extra=st.integers(1, 40))
def test_peak_never_shrinks_with_new_tokens(spec, wl, extra):
    """Generating more tokens never needs less memory."""
    longer = replace(wl, new_tokens=wl.new_tokens + extra)
    assert estimate(spec, longer).peak.allocated_bytes >= estimate(spec, wl).peak.allocated_bytes


@given(spec=inference_specs(), wl=inference_workloads())
def test_fp8_cache_is_exactly_half_of_bf16(spec, wl):
    """An fp8 KV cache takes exactly half the bytes of a bf16 one."""
    bf16 = kv_cache(spec, replace(wl, kv_cache_dtype=DType.BF16, v_cache_dtype=None)).nbytes
    fp8 = kv_cache(spec, replace(wl, kv_cache_dtype=DType.FP8_E4M3, v_cache_dtype=None)).nbytes
    assert 2 * fp8 == bf16


def _sums(term: Term) -> bool:
    return not term.children or (term.nbytes == sum(c.nbytes for c in term.children)
                                 and all(_sums(c) for c in term.children))


@given(spec=inference_specs(), wl=inference_workloads())
def test_every_tree_node_is_the_sum_of_its_children(spec, wl):
    """Every parent Term of every phase equals the sum of its children."""
    est = estimate(spec, wl)
    assert all(_sums(phase.memory) for phase in est.phases)


@given(sizes=st.lists(st.integers(0, 1000), min_size=1, max_size=40), num_gpus=st.integers(1, 4),
       cap=st.integers(1, 5000), buffer=st.integers(0, 500))
def test_auto_device_map_fills_in_order_within_budgets(sizes, num_gpus, cap, buffer):
    """Devices never go back, no GPU exceeds the cap, GPU 0 keeps the largest later module free."""
    from memfit.core.device_map import auto_device_map

    devices = auto_device_map(sizes, num_gpus=num_gpus, cap_bytes=cap, balance_buffer=buffer)
    assert len(devices) == len(sizes)
    assert devices == sorted(devices)
    assert all(0 <= d <= num_gpus for d in devices)
    for gpu in range(num_gpus):
        assert sum(s for s, d in zip(sizes, devices, strict=True) if d == gpu) <= cap
    on_zero = [i for i, d in enumerate(devices) if d == 0]
    if on_zero:
        last = on_zero[-1]
        assert sum(sizes[: last + 1]) + max(sizes[last + 1:], default=0) <= cap
