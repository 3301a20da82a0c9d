"""The Python API means what the CLI means: plain values convert, bad values and misplaced settings refuse."""

import dataclasses
import enum
from fractions import Fraction

import pytest

from memfit import api
from memfit.core.choices import (
    AttnImpl,
    Checkpointing,
    DeviceMap,
    FsdpStrategy,
    KvCache,
    Method,
    Offload,
    Optimizer,
    Precision,
    Runtime,
    ZeroStage,
)
from memfit.core.dtypes import DType, quant
from memfit.core.errors import InvalidWorkload
from memfit.core.parallel import rank_share
from memfit.core.result import workload_from_dict
from memfit.core.units import GiB, format_bytes
from memfit.core.workload import (
    MAX_BATCH_SIZE,
    MAX_GPUS,
    MAX_SEQUENCES_PER_STEP,
    MAX_TOKENS,
    NORMALISED_FIELDS,
    Inference,
    Lora,
    Parallelism,
    Training,
)

TINY = "SmolLM2-135M-Instruct"
"""A small catalog model (30 layers, 9 heads, 3 KV heads): estimates in well under a millisecond."""


def _lora() -> Lora:
    return Lora(rank=8, alpha=16)


# --- conversions ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("zero", [3, "3", ZeroStage.PARAMETERS])
def test_zero_int_and_string_are_the_enum(zero: object) -> None:
    """`zero=3` and `zero="3"` are ZeRO-3: the same Parallelism as `ZeroStage.PARAMETERS`."""
    assert Parallelism(dp=8, zero=zero) == Parallelism(dp=8, zero=ZeroStage.PARAMETERS)
    assert Parallelism(dp=8, zero=zero).zero is ZeroStage.PARAMETERS


def test_zero_3_as_int_shards_weights_over_dp() -> None:
    """Under dp=8 and zero=3 each rank holds 1/8 of the weights, gradients and optimizer states."""
    share = rank_share(api.load_model(TINY), Parallelism(dp=8, zero=3))
    assert (share.params, share.grads, share.states) == (Fraction(1, 8),) * 3


def test_zero_3_as_int_gives_exactly_the_enum_estimate() -> None:
    """Llama-3.1-8B, dp=8: zero=3 gives the ZeroStage.PARAMETERS estimate byte for byte, states sharded 8 ways
    (the int used to leave them whole: 150 GiB per GPU instead of 29 GiB)."""
    spec = api.load_model("Llama-3.1-8B")
    as_int = api.estimate(spec, Training(parallel=Parallelism(dp=8, zero=3)))
    as_enum = api.estimate(spec, Training(parallel=Parallelism(dp=8, zero=ZeroStage.PARAMETERS)))
    assert as_int.to_dict() == as_enum.to_dict()
    step = as_int.phase("optimizer").memory
    # 8,030,261,248 parameters: bf16 gradient partition 16,060,522,496 B / 8 ranks, plus the step's fp32
    # gradients of one sub-group (sub_group_size 1e9 elements × 4 B) and DeepSpeed's ipg bucket (5e8 bf16);
    # fp32 master copy 32,121,044,992 B / 8
    assert step.bytes_of("gradients") == 2_007_565_312 + 4_000_000_000 + 1_000_000_000
    assert step.bytes_of("master_weights") == 4_015_130_624
    # with DeepSpeed's default 5e8-element reduce bucket, the flat bf16 gradient partition and NCCL buffers
    assert as_int.peak.device_bytes < 33 * GiB


@pytest.mark.parametrize(
    ("kwargs", "field", "expected"),
    [
        ({"quant": "nf4"}, "quant", quant("nf4")),
        ({"quant": "NF4-DQ"}, "quant", quant("nf4-dq")),
        ({"dtype": "fp16"}, "dtype", DType.FP16),
        ({"dtype": "bfloat16"}, "dtype", DType.BF16),
        ({"dtype": "fp8"}, "dtype", DType.FP8_E4M3),
        ({"kv_cache_dtype": "fp8"}, "kv_cache_dtype", DType.FP8_E4M3),
        ({"kv_cache": "static"}, "kv_cache", KvCache.STATIC),
        ({"attn": "flash_attention_2"}, "attn", AttnImpl.FLASH),
        ({"runtime": "vllm"}, "runtime", Runtime.VLLM),
        ({"runtime": "vllm", "gpu_memory_utilization": 0.9}, "gpu_memory_utilization", Fraction(9, 10)),
        ({"runtime": "vllm", "gpu_memory_utilization": "0.9"}, "gpu_memory_utilization", Fraction(9, 10)),
        ({"runtime": "vllm", "gpu_memory_utilization": "9/10"}, "gpu_memory_utilization", Fraction(9, 10)),
        ({"runtime": "vllm", "gpu_memory_utilization": 1}, "gpu_memory_utilization", Fraction(1)),
        ({"runtime": "llama.cpp", "v_cache_dtype": "q4_0"}, "v_cache_dtype", DType.Q4_0),
    ],
)
def test_inference_fields_take_the_cli_spellings(kwargs: dict, field: str, expected: object) -> None:
    """Each enum, dtype, quant and fraction field of Inference takes the value the CLI takes."""
    assert getattr(Inference(**kwargs), field) == expected


def test_inference_quant_string_estimates_like_the_quant() -> None:
    """`quant="nf4"` gives the same estimate as `quant=quant("nf4")` (it used to raise AttributeError)."""
    spec = api.load_model(TINY)
    plain = api.estimate(spec, Inference(prompt_tokens=64, quant="nf4"))
    typed = api.estimate(spec, Inference(prompt_tokens=64, quant=quant("nf4")))
    assert plain.to_dict() == typed.to_dict()


@pytest.mark.parametrize(
    ("kwargs", "field", "expected"),
    [
        ({"checkpointing": "full"}, "checkpointing", Checkpointing.FULL),
        ({"checkpointing": True}, "checkpointing", Checkpointing.FULL),
        ({"checkpointing": False}, "checkpointing", Checkpointing.NONE),
        ({"optimizer": "adamw-8bit"}, "optimizer", Optimizer.ADAMW_8BIT),
        ({"optimizer": "adamw8bit"}, "optimizer", Optimizer.ADAMW_8BIT),
        ({"optimizer": "PAGED_ADAMW_8BIT"}, "optimizer", Optimizer.PAGED_ADAMW_8BIT),
        ({"precision": "amp-bf16"}, "precision", Precision.AMP_BF16),
        ({"method": "lora", "lora": Lora(rank=8, alpha=16)}, "method", Method.LORA),
        ({"method": "qlora", "lora": Lora(rank=8, alpha=16), "quant": "nf4"}, "quant", quant("nf4")),
        ({"attn": "eager"}, "attn", AttnImpl.EAGER),
    ],
)
def test_training_fields_take_the_cli_spellings(kwargs: dict, field: str, expected: object) -> None:
    """Each enum and quant field of Training takes the value the CLI takes."""
    assert getattr(Training(**kwargs), field) == expected


@pytest.mark.parametrize(
    ("kwargs", "field", "expected"),
    [
        ({"zero": "none"}, "zero", ZeroStage.NONE),
        ({"zero": 0}, "zero", ZeroStage.NONE),
        ({"dp": 4, "fsdp": "shard_grad_op"}, "fsdp", FsdpStrategy.SHARD_GRAD_OP),
        ({"dp": 2, "zero": 2, "offload_optimizer": "cpu"}, "offload_optimizer", Offload.CPU),
        ({"dp": 2, "zero": 3, "offload_params": "nvme"}, "offload_params", Offload.NVME),
        ({"pp": 2, "device_map": "auto"}, "device_map", DeviceMap.AUTO),
    ],
)
def test_parallelism_fields_take_the_cli_spellings(kwargs: dict, field: str, expected: object) -> None:
    """Each enum field of Parallelism takes the value the CLI takes."""
    assert getattr(Parallelism(**kwargs), field) == expected


def test_lora_takes_plain_targets_and_dropout() -> None:
    """LoRA targets as "q_proj, v_proj" or a list become a tuple; dropout 0.05 is exactly 1/20."""
    lora = Lora(rank=8, alpha=16, targets="q_proj, v_proj", dropout=0.05)
    assert lora == Lora(rank=8, alpha=16, targets=("q_proj", "v_proj"), dropout=Fraction(1, 20))
    assert Lora(rank=8, alpha=16, targets=["k_proj"]).targets == ("k_proj",)
    assert Lora(rank=8, alpha=16, dropout=0).dropout == 0


def test_integer_types_become_plain_ints() -> None:
    """An IntEnum (or any int-like with __index__) is stored as a plain int, so bytes stay int."""

    class Size(enum.IntEnum):
        FOUR = 4

    wl = Inference(batch_size=Size.FOUR)
    assert type(wl.batch_size) is int
    assert wl.batch_size == 4


def test_defaults_are_the_cli_defaults() -> None:
    """Inference() and Training() need no arguments: 2,048 tokens, as the CLI's defaults."""
    from memfit.cli.options import DEFAULT_PROMPT_TOKENS, DEFAULT_SEQ_LEN, FLAG_NAMES, workload_from_flags

    assert Inference().prompt_tokens == DEFAULT_PROMPT_TOKENS == 2048
    assert Training().seq_len == DEFAULT_SEQ_LEN == 2048
    no_flags = {name: None for name in FLAG_NAMES}
    assert workload_from_flags(no_flags) == Inference()
    assert workload_from_flags({**no_flags, "task": "train"}) == Training()


def test_json_workload_without_lengths_gets_the_defaults() -> None:
    """The web body {"task": "train"} decodes to Training() with its 2,048-token sequence."""
    assert workload_from_dict({"task": "train"}) == Training()
    assert workload_from_dict({"task": "infer"}) == Inference()


def test_every_field_is_normalised() -> None:
    """Each dataclass field of Parallelism, Lora, Inference and Training has a normaliser."""
    for cls, names in NORMALISED_FIELDS.items():
        assert names == {f.name for f in dataclasses.fields(cls)}, cls.__name__


# --- rejected values --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("build", "message"),
    [
        (lambda: Inference(batch_size=2.5), "batch_size=2.5 must be an integer"),
        (lambda: Inference(batch_size=2.0), "batch_size=2.0 must be an integer"),
        (lambda: Inference(batch_size=True), "batch_size=True must be an integer"),
        (lambda: Inference(batch_size="4"), "batch_size='4' must be an integer"),
        (lambda: Inference(batch_size=None), "batch_size=None must be an integer"),
        (lambda: Inference(batch_size=0), "batch_size=0 must be at least 1"),
        (lambda: Inference(batch_size=10**400), r"batch_size=about 10\^400 is more than 1,048,576"),
        (lambda: Inference(batch_size=10**5000), r"batch_size=about 10\^5000 is more than"),
        (lambda: Inference(batch_size=MAX_BATCH_SIZE + 1), "batch_size=1048577 is more than 1,048,576"),
        (lambda: Inference(prompt_tokens=0), "prompt_tokens=0 must be at least 1"),
        (lambda: Inference(prompt_tokens=MAX_TOKENS + 1), "prompt_tokens=1073741825 is more than"),
        (lambda: Inference(new_tokens=-1), "new_tokens=-1 must be at least 0"),
        (lambda: Training(seq_len=1.5), "seq_len=1.5 must be an integer"),
        (lambda: Training(grad_accum=0), "grad_accum=0 must be at least 1"),
        (lambda: Parallelism(dp=0), "dp=0 must be at least 1"),
        (lambda: Parallelism(tp=MAX_GPUS + 1), "tp=1048577 is more than 1,048,576 GPUs"),
        (lambda: Parallelism(dp=1024, tp=1024, pp=2), "dp × tp × pp = 2097152 GPUs is more than"),
        (lambda: Parallelism(sequence_parallel=1), "sequence_parallel=1 must be true or false"),
        (lambda: Parallelism(max_gpu_memory_bytes=2**60, device_map="auto"), "max_gpu_memory_bytes="),
        (lambda: Lora(rank=0, alpha=1), "lora_rank=0 must be at least 1"),
        (lambda: Lora(rank=8.0, alpha=16), "lora_rank=8.0 must be an integer"),
        (lambda: Inference(allow_longer="yes"), "allow_longer='yes' must be true or false"),
    ],
)
def test_bad_numbers_are_refused_with_the_field(build, message: str) -> None:
    """Bools, floats (2.0 too), strings, None and out-of-range ints in int fields raise InvalidWorkload."""
    with pytest.raises(InvalidWorkload, match=message):
        build()


@pytest.mark.parametrize(
    ("build", "message"),
    [
        (lambda: Parallelism(zero=4), "zero=4 is not valid; use one of: 0, 1, 2, 3"),
        (lambda: Parallelism(zero=3.0), "zero=3.0 is not valid"),
        (lambda: Parallelism(zero=True), "zero=True is not valid"),
        (lambda: Parallelism(zero=None), "zero=None is not valid"),
        (lambda: Parallelism(dp=2, fsdp="everything"), "fsdp='everything' is not valid"),
        (lambda: Training(optimizer="adamw-9bit"), r"optimizer='adamw-9bit' is not valid \(did you mean"),
        (lambda: Training(optimizer=["adamw"]), r"optimizer=\['adamw'\] is not valid"),
        (lambda: Training(checkpointing="partial"), "checkpointing='partial' is not valid; use one of: none"),
        (lambda: Training(method="dora"), "method='dora' is not valid"),
        (lambda: Inference(quant="nf5"), "quant='nf5' is not a known format"),
        (lambda: Inference(quant=4), "quant=4 is not a known format"),
        (lambda: Inference(quant="x" * 10_000), "quant='xxxxx.*… is not a known format"),
        (lambda: Inference(dtype="int8"), "dtype=int8 is not a compute dtype"),
        (lambda: Inference(dtype=16), "dtype=16 must be a dtype name"),
        (lambda: Inference(runtime="tgi"), "runtime='tgi' is not valid"),
        (lambda: Inference(runtime="vllm", gpu_memory_utilization="1e999999999"),
         "gpu_memory_utilization='1e999999999' must be a number"),
        (lambda: Inference(runtime="vllm", gpu_memory_utilization="1.5/2"),
         "gpu_memory_utilization='1.5/2' must be a number"),
        (lambda: Inference(runtime="vllm", gpu_memory_utilization=float("nan")),
         "gpu_memory_utilization=nan must be a number"),
        (lambda: Inference(runtime="vllm", gpu_memory_utilization=1.5), r"must be in \(0, 1\]"),
        (lambda: Lora(rank=8, alpha=16, dropout=1), r"lora_dropout=1 must be in \[0, 1\)"),
        (lambda: Lora(rank=8, alpha=16, targets=[]), "lora_targets is empty"),
        (lambda: Lora(rank=8, alpha=16, targets=[1]), "lora_targets=.* must be module names"),
        (lambda: Inference(parallel={"dp": 2}), r"parallel=\{'dp': 2\} must be a Parallelism"),
        (lambda: Training(method="lora", lora={"rank": 8}), r"lora=.* must be a Lora"),
    ],
)
def test_bad_choices_are_refused_with_the_options(build, message: str) -> None:
    """Unknown names, wrong types and out-of-range fractions raise InvalidWorkload naming the field."""
    with pytest.raises(InvalidWorkload, match=message):
        build()


# --- settings that do not apply ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("build", "message"),
    [
        (lambda: Inference(parallel=Parallelism(dp=2, zero=3)), "zero=3 applies to training, not inference"),
        (lambda: Inference(parallel=Parallelism(dp=2, fsdp="full")), "fsdp=full applies to training"),
        (lambda: Inference(parallel=Parallelism(dp=2, fsdp="full", offload_params="cpu")),
         "fsdp=full applies to training"),
        (lambda: Inference(parallel=Parallelism(tp=2, sequence_parallel=True)),
         "sequence_parallel=True applies to training, not inference"),
        (lambda: Inference(n_gpu_layers=10),
         "n_gpu_layers=10 applies to runtime=llama.cpp, not runtime=transformers"),
        (lambda: Inference(runtime="vllm", v_cache_dtype="q4_0"),
         "v_cache_dtype=q4_0 applies to runtime=llama.cpp"),
        (lambda: Inference(gpu_memory_utilization=0.8), "gpu_memory_utilization=4/5 applies to runtime=vllm"),
        (lambda: Inference(runtime="llama.cpp", quant="gguf-Q4_K_M", gpu_memory_utilization=0.8),
         "gpu_memory_utilization=4/5 applies to runtime=vllm, not runtime=llama.cpp"),
        (lambda: Inference(block_size=32), "block_size=32 applies to runtime=vllm"),
        (lambda: Inference(runtime="vllm", parallel=Parallelism(pp=2, device_map="auto")),
         "device_map=auto applies to runtime=transformers, not runtime=vllm"),
        (lambda: Inference(kv_cache_dtype="q8_0"),
         "kv_cache_dtype=q8_0 is not a cache type of runtime=transformers"),
        (lambda: Inference(runtime="llama.cpp", kv_cache_dtype="int8"),
         "kv_cache_dtype=int8 is not a cache type of runtime=llama.cpp"),
        (lambda: Training(parallel=Parallelism(pp=2, device_map="auto")),
         "device_map=auto applies to inference, not training"),
        (lambda: Training(runtime="vllm"), "runtime=vllm does not train"),
        (lambda: Training(lora=Lora(rank=8, alpha=16)),
         "lora applies to method=lora or qlora, not method=full"),
        (lambda: Training(method="lora"), "method=lora needs a LoRA config"),
        (lambda: Training(method="qlora", lora=Lora(rank=8, alpha=16), quant="int8"),
         "method=qlora needs a 4-bit bitsandbytes quant .* not quant=int8"),
        (lambda: Training(method="qlora", lora=Lora(rank=8, alpha=16), quant="gptq-4bit-g128"),
         "not quant=gptq-4bit-g128"),
        (lambda: Training(method="qlora", lora=Lora(rank=8, alpha=16)), "not quant=none"),
        (lambda: Training(batch_size=MAX_BATCH_SIZE, grad_accum=MAX_SEQUENCES_PER_STEP),
         "batch_size × grad_accum more than 1,073,741,824 sequences per step"),
        (lambda: Parallelism(dp=2, zero=1, fsdp="full"), "fsdp=full and zero=1 are exclusive"),
        (lambda: Parallelism(sequence_parallel=True), "sequence_parallel .* needs tp > 1"),
        (lambda: Parallelism(max_gpu_memory_bytes=GiB), "max_gpu_memory_bytes caps a device_map split"),
        (lambda: Parallelism(dp=2, offload_optimizer="cpu"), "offload_optimizer=cpu needs zero=1, 2 or 3"),
        (lambda: Parallelism(dp=2, zero=2, offload_params="cpu"), "offload_params=cpu needs zero=3"),
        (lambda: Parallelism(dp=2, zero=2, offload_optimizer="nvme"), "offload_optimizer=nvme needs zero=3"),
    ],
)
def test_settings_that_do_not_apply_are_refused(build, message: str) -> None:
    """A setting of the other task, of another runtime, or an impossible combination is one line naming it."""
    with pytest.raises(InvalidWorkload, match=message):
        build()


@pytest.mark.parametrize(
    "build",
    [
        lambda: Parallelism(zero=1, offload_optimizer="cpu"),            # ZeRO-Offload on one GPU
        lambda: Parallelism(dp=4, fsdp="full", offload_params="cpu"),    # FSDP CPUOffload
        lambda: Parallelism(dp=4, zero=3, offload_params="nvme", offload_optimizer="nvme"),  # ZeRO-Infinity
        lambda: Inference(runtime="llama.cpp", quant="gguf-Q4_K_M", kv_cache_dtype="q8_0",
                          v_cache_dtype="q4_0", n_gpu_layers=16),
        lambda: Inference(runtime="vllm", gpu_memory_utilization=0.95, block_size=32, kv_cache_dtype="fp8"),
        lambda: Inference(parallel=Parallelism(pp=2, device_map="auto", max_gpu_memory_bytes=20 * GiB)),
        lambda: Inference(parallel=Parallelism(dp=2)),                  # replicas serve independently
        lambda: Training(method="qlora", lora=Lora(rank=8, alpha=16), quant="fp4-dq"),
        lambda: Training(parallel=Parallelism(tp=2, sequence_parallel=True)),
    ],
)
def test_settings_that_apply_are_accepted(build) -> None:
    """The combinations the runtimes and the planner use construct without error."""
    assert build() is not None


def test_cli_flags_reach_the_same_checks() -> None:
    """The CLI's translation builds core types, so `--zero 3` on inference fails with the core's message."""
    from memfit.cli.options import FLAG_NAMES, workload_from_flags

    no_flags = {name: None for name in FLAG_NAMES}
    with pytest.raises(InvalidWorkload, match="zero=3 applies to training, not inference"):
        workload_from_flags({**no_flags, "zero": "3"})
    with pytest.raises(InvalidWorkload, match="not quant=int8"):
        workload_from_flags({**no_flags, "task": "train", "method": "qlora", "quant": "int8"})


def test_json_workloads_reach_the_same_checks() -> None:
    """The web's decoder builds core types too: ZeRO on an inference body is refused naming zero."""
    with pytest.raises(InvalidWorkload, match="zero=3 applies to training"):
        workload_from_dict({"task": "infer", "parallel": {"dp": 2, "zero": 3}})


# --- str() of an estimate and a plan ----------------------------------------------------------------------


def test_str_of_an_estimate_is_a_short_summary() -> None:
    """str(estimate): model and workload, the peak phase with its three figures in GiB, and the fit."""
    from memfit.core.result import Gpu

    gpu = Gpu(name="tiny-gpu", memory_bytes=GiB, usable_bytes=GiB // 8)
    est = api.estimate(TINY, Inference(prompt_tokens=64), gpu=gpu)
    peak = est.peak
    needed = peak.device_bytes
    assert str(est).splitlines() == [
        f"{TINY}: inference, batch 1 × 64 prompt + 0 new tokens (analytic)",
        f"peak in {peak.phase}: {format_bytes(peak.allocated_bytes)} allocated · "
        f"{format_bytes(peak.reserved_bytes)} reserved · {format_bytes(needed)} on device",
        f"does not fit tiny-gpu: needs {format_bytes(needed)} of 0.12 GiB usable, "
        f"{format_bytes(needed - GiB // 8)} short",
    ]
    assert str(api.estimate(TINY, Inference(prompt_tokens=64))).endswith("fit not checked: no GPU given")


def test_str_of_an_estimate_says_per_gpu_and_fits() -> None:
    """A multi-GPU training estimate says its figures are per GPU; on 80 GB it fits with room to spare."""
    est = api.estimate(TINY, Training(seq_len=128, parallel=Parallelism(dp=4, zero=2)), gpu="H100-SXM-80GB")
    first, _, last = str(est).splitlines()
    assert first == f"{TINY}: training (full), batch 1 × 128 tokens, adamw, figures per GPU of 4 (analytic)"
    assert last.startswith("fits H100-SXM-80GB: needs ")
    assert last.endswith(" to spare")


def test_str_of_a_plan_adds_the_answer() -> None:
    """str(plan) is the baseline's summary, then the largest batch that fits with its on-device GiB."""
    plan = api.plan(TINY, Inference(prompt_tokens=512), gpu="4GiB", maximize="batch")
    assert plan.best is not None
    lines = str(plan).splitlines()
    assert lines[:3] == str(plan.baseline).splitlines()
    assert lines[3] == (f"largest batch_size that fits 4GiB: {plan.max_value} "
                        f"({format_bytes(plan.best.peak.device_bytes)} on device)")


def test_str_of_a_plan_lists_the_changes() -> None:
    """Without maximize, str(plan) lists each change that fits with its on-device GiB."""
    plan = api.plan("Llama-3.1-8B", Training(), gpu="24GiB")
    lines = str(plan).splitlines()
    assert lines[3] == "changes that fit 24GiB, least invasive first:"
    assert lines[4:] == [f"  {c.label}: {format_bytes(c.estimate.peak.device_bytes)} on device"
                         for c in plan.changes]
    assert len(plan.changes) >= 1
