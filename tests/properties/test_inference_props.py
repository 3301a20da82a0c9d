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
