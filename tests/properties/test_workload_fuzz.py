"""Fuzzing the workload constructors: any value in any field is accepted as its declared type or refused
with InvalidWorkload, and an accepted workload estimates to int bytes everywhere (or a MemfitError)."""

import dataclasses
import types
import typing
from fractions import Fraction
from typing import Any

from hypothesis import event, given, settings
from hypothesis import strategies as st
from tests.strategies import FUZZ_EXAMPLES

from memfit import api
from memfit.core.choices import Choice, Optimizer
from memfit.core.deepspeed import ZeroConfig
from memfit.core.errors import InvalidWorkload, MemfitError
from memfit.core.workload import Inference, Lora, Parallelism, Training

SMALL_MODEL = "SmolLM2-135M-Instruct"
"""A small catalog model (30 layers, 9 heads, 3 KV heads): each estimate takes well under a millisecond."""

QUANTS = ["none", "nf4", "nf4-dq", "fp4", "int8", "fp8", "gguf-Q4_K_M", "awq-4bit-g128", "gptq-4bit-g128"]
DTYPES = ["bf16", "fp16", "fp32", "fp8", "float16", "int8", "q8_0", "q4_0"]

PLAUSIBLE: dict[str, st.SearchStrategy[Any]] = {
    # Parallelism
    "dp": st.integers(1, 8), "tp": st.sampled_from([1, 2, 3]), "pp": st.integers(1, 4),
    "sequence_parallel": st.booleans(), "zero": st.sampled_from([0, 1, 2, 3, "3", "none"]),
    "fsdp": st.sampled_from([None, "full", "shard-grad-op", "hybrid"]),
    "offload_optimizer": st.sampled_from(["none", "cpu", "nvme"]),
    "offload_params": st.sampled_from(["none", "cpu", "nvme"]),
    "device_map": st.sampled_from([None, "auto", "balanced"]),
    "max_gpu_memory_bytes": st.integers(1, 1 << 36),
    "gpus_per_node": st.integers(1, 16), "ep": st.sampled_from([1, 2, 4]),
    "zero_config": st.sampled_from([None, ZeroConfig(), ZeroConfig(reduce_bucket_elements=None,
                                                                    overlap_comm=True)]),
    "pp_schedule": st.sampled_from(["1f1b", "gpipe", "GPipe", "interleaved"]),
    "pp_virtual_stages": st.integers(1, 4),
    # Lora
    "rank": st.integers(1, 64), "alpha": st.integers(1, 128),
    "targets": st.sampled_from(["all-linear", ("q_proj", "v_proj"), "q_proj,v_proj", ["k_proj"]]),
    "dropout": st.sampled_from([None, 0, 0.05, "0.1", Fraction(1, 20)]), "prepare_kbit": st.booleans(),
    # Inference
    "prompt_tokens": st.integers(1, 4096), "new_tokens": st.integers(0, 64), "batch_size": st.integers(1, 8),
    "dtype": st.sampled_from(DTYPES), "quant": st.sampled_from(QUANTS),
    "kv_cache_dtype": st.sampled_from(DTYPES), "v_cache_dtype": st.sampled_from(DTYPES),
    "kv_cache": st.sampled_from(["dynamic", "static", "paged"]),
    "attn": st.sampled_from(["sdpa", "eager", "flash", "flash_attention_2"]),
    "runtime": st.sampled_from(["transformers", "vllm", "llama.cpp"]),
    "gpu_memory_utilization": st.sampled_from([0.5, 0.9, "0.9", Fraction(9, 10), 1]),
    "n_gpu_layers": st.integers(0, 40), "n_cpu_moe": st.integers(0, 40),
    "block_size": st.sampled_from([16, 32]),
    "max_cache_tokens": st.integers(1, 8192), "allow_longer": st.booleans(),
    "tensor_split": st.sampled_from([None, "3,1", (1, 1), "0.6,0.4"]),
    "images": st.integers(0, 4), "image_size": st.sampled_from([None, (896, 896), (448, 672), "336x336"]),
    "max_num_batched_tokens": st.sampled_from([512, 2048, 8192, "8192", 0]),
    "max_num_seqs": st.sampled_from([1, 64, 256, 1024]), "enforce_eager": st.booleans(),
    "kv_cache_memory": st.sampled_from([2**30, 40 * 2**30, 0, "1GiB"]),
    "vllm_version": st.sampled_from(["0.11.2", "v0.18.0", "0.20", "latest", 0.11]),
    # Training
    "seq_len": st.integers(1, 4096), "grad_accum": st.integers(1, 8),
    "method": st.sampled_from(["full", "lora", "qlora"]),
    "precision": st.sampled_from(["bf16", "fp16", "fp32", "amp-bf16", "amp-fp16"]),
    "optimizer": st.sampled_from([o.value for o in Optimizer] + ["adamw8bit"]),
    "checkpointing": st.sampled_from(["none", "full", True, False]), "chunked_loss": st.booleans(),
}
"""Values a user might pass for each field: the CLI spellings, in and out of each runtime's range."""

JUNK: st.SearchStrategy[Any] = st.one_of(
    st.none(), st.booleans(), st.integers(-(2**70), 2**70), st.just(10**400), st.just(-(10**5000)),
    st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=12), st.just("1e999999999"),
    st.lists(st.integers(), max_size=2), st.fractions(), st.dictionaries(st.text(max_size=3), st.integers(),
                                                                       max_size=1),
)
"""Values nobody should pass: every field must refuse them with InvalidWorkload or take them as its type."""


@dataclasses.dataclass(frozen=True)
class Kwargs:
    """Keyword arguments for a nested Parallelism or Lora, told apart from a junk dict."""

    values: dict[str, Any]


@st.composite
def field_values(draw: st.DrawFn, cls: type) -> dict[str, Any]:
    """Keyword arguments for `cls`: up to four fields set to plausible values, then no junk (two examples
    in three), junk in one field, or junk in any field."""
    names = [f.name for f in dataclasses.fields(cls) if f.name not in ("parallel", "lora")]
    chosen = draw(st.lists(st.sampled_from(names), max_size=4, unique=True))
    kwargs: dict[str, Any] = {name: draw(PLAUSIBLE[name]) for name in chosen}
    mode = draw(st.sampled_from(["clean", "clean", "clean", "clean", "one-junk", "wild"]))
    if mode == "one-junk":
        kwargs[draw(st.sampled_from(names))] = draw(JUNK)
    elif mode == "wild":
        kwargs.update({name: draw(JUNK) for name in names if draw(st.integers(0, 3)) == 0})
    return kwargs


def _is(hint: Any, value: Any) -> bool:
    """Whether `value` is exactly of the declared field type (ints as int, not bool; enums as members)."""
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        return any(_is(option, value) for option in typing.get_args(hint))
    if origin is tuple:
        args = [a for a in typing.get_args(hint) if a is not Ellipsis]
        return isinstance(value, tuple) and all(_is(args[min(i, len(args) - 1)], v)
                                                for i, v in enumerate(value))
    if hint is type(None):
        return value is None
    if hint is int:
        return type(value) is int
    if isinstance(hint, type) and issubclass(hint, Choice):
        return type(value) is hint
    return isinstance(value, hint)


def _assert_declared_types(obj: Any) -> None:
    hints = typing.get_type_hints(type(obj))
    for f in dataclasses.fields(obj):
        value = getattr(obj, f.name)
        assert _is(hints[f.name], value), f"{type(obj).__name__}.{f.name}={value!r} is not {hints[f.name]}"
        if isinstance(value, (Parallelism, Lora)):
            _assert_declared_types(value)


def _assert_int_bytes(data: Any, path: str = "") -> None:
    """Every `*bytes` value and breakdown entry of an estimate's JSON is an int (None only when unset)."""
    if isinstance(data, dict):
        for key, value in data.items():
            where = f"{path}.{key}"
            if key.endswith("bytes") or path.endswith("breakdown"):
                assert value is None or type(value) is int, f"{where}={value!r}"
            _assert_int_bytes(value, where)
    elif isinstance(data, list):
        for i, value in enumerate(data):
            _assert_int_bytes(value, f"{path}[{i}]")


SPEC = api.load_model(SMALL_MODEL)


def _nested(cls: type) -> st.SearchStrategy[Any]:
    """For a Parallelism or Lora field: left out (half the examples), built from fuzzed keywords, or junk.
    (A plain one_of would flatten JUNK's branches and draw junk nearly every time.)"""
    built = field_values(cls).map(Kwargs)
    return st.integers(0, 3).flatmap(lambda k: st.none() if k < 2 else built if k == 2 else JUNK)


NESTED_PARALLEL = _nested(Parallelism)
NESTED_LORA = _nested(Lora)


def _estimate_if_accepted(build: Any, gpu: str | None) -> None:
    """Build the workload; if it is accepted, check its types and that its estimate has int bytes."""
    try:
        workload = build()
    except InvalidWorkload:
        event("refused")
        return
    _assert_declared_types(workload)
    try:
        est = api.estimate(SPEC, workload, gpu=gpu)
    except MemfitError:
        event("accepted, estimate refused")
        return
    event("estimated")
    _assert_int_bytes(est.to_dict())
    assert str(est).startswith(f"{SMALL_MODEL}: ")


@settings(max_examples=FUZZ_EXAMPLES)
@given(kwargs=field_values(Inference), parallel=NESTED_PARALLEL,
       gpu=st.sampled_from([None, "24GiB", "H100-SXM-80GB"]))
def test_inference_takes_its_types_or_refuses(kwargs: dict, parallel: Any, gpu: str | None) -> None:
    """Inference(...) with any values raises only InvalidWorkload; an accepted one estimates to int bytes."""

    def build() -> Inference:
        extra = {"parallel": Parallelism(**parallel.values) if isinstance(parallel, Kwargs) else parallel}
        return Inference(**kwargs, **({} if parallel is None else extra))

    _estimate_if_accepted(build, gpu)


@settings(max_examples=FUZZ_EXAMPLES)
@given(kwargs=field_values(Training), parallel=NESTED_PARALLEL,
       lora=NESTED_LORA, gpu=st.sampled_from([None, "24GiB"]))
def test_training_takes_its_types_or_refuses(kwargs: dict, parallel: Any, lora: Any, gpu: str | None) -> None:
    """Training(...) with any values raises only InvalidWorkload; an accepted one estimates to int bytes."""

    def build() -> Training:
        extra: dict[str, Any] = {}
        if parallel is not None:
            extra["parallel"] = Parallelism(**parallel.values) if isinstance(parallel, Kwargs) else parallel
        if lora is not None:
            extra["lora"] = Lora(**{"rank": 8, "alpha": 16, **lora.values}) if isinstance(lora, Kwargs) \
                else lora
        return Training(**kwargs, **extra)

    _estimate_if_accepted(build, gpu)


@settings(max_examples=FUZZ_EXAMPLES)
@given(kwargs=field_values(Parallelism))
def test_parallelism_takes_its_types_or_refuses(kwargs: dict) -> None:
    """Parallelism(...) with any values raises only InvalidWorkload; accepted, it has its declared types."""
    try:
        par = Parallelism(**kwargs)
    except InvalidWorkload:
        return
    _assert_declared_types(par)
    assert par.num_gpus == par.dp * par.tp * par.pp


@settings(max_examples=FUZZ_EXAMPLES)
@given(kwargs=field_values(Lora), rank=st.one_of(st.integers(1, 64), JUNK),
       alpha=st.one_of(st.integers(1, 64), JUNK))
def test_lora_takes_its_types_or_refuses(kwargs: dict, rank: Any, alpha: Any) -> None:
    """Lora(...) with any values raises only InvalidWorkload; an accepted one has its declared types."""
    try:
        lora = Lora(**{**kwargs, "rank": rank, "alpha": alpha})
    except InvalidWorkload:
        return
    _assert_declared_types(lora)
    assert 0 <= lora.rate < 1
