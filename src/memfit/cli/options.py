"""Workload flags, shared by every command that takes them, and their translation into core types.

Each flag is the kebab-case mirror of a workload field (`--kv-cache-dtype` ↔ `kv_cache_dtype`). Every flag
defaults to "not given" so that we can tell a training flag used without `--task train` (an error naming
the flag) from a default. Values are parsed by the core's own parsers (`Choice.parse`, `parse_dtype`,
`quant`, `parse_size`), so a bad value is an `InvalidWorkload` with one line, exit 2.

Defaults (documented in `--help` and the README): `--task infer`; `--prompt-tokens 2048`, `--new-tokens 0`
(one scoring forward); `--seq-len 2048` for training; `--batch-size 1`; the checkpoint dtype; LoRA rank 16,
alpha 2 × rank; QLoRA weights `nf4`; one GPU.
"""

from __future__ import annotations

import inspect
import typing
from collections.abc import Callable
from dataclasses import dataclass
from fractions import Fraction
from typing import Annotated, Any

import typer

DEFAULT_PROMPT_TOKENS = 2048
DEFAULT_SEQ_LEN = 2048
DEFAULT_LORA_RANK = 16
DEFAULT_QLORA_QUANT = "nf4"


@dataclass(frozen=True)
class Flag:
    """One workload flag: its field name, Python type, help text, help panel, and the task it belongs to."""

    name: str
    kind: type
    help: str
    panel: str
    task: str = ""  # "infer" | "train" | "" (both)

    @property
    def option(self) -> str:
        return "--" + self.name.replace("_", "-")


_INFER, _TRAIN, _PAR, _MODEL, _WL = "Inference", "Training", "Parallelism", "Model source", "Workload"

FLAGS: tuple[Flag, ...] = (
    Flag("task", str, "infer (default) or train.", _WL),
    Flag("batch_size", int, "Sequences per GPU (training: the micro-batch). Default 1.", _WL),
    Flag("attn", str, "Attention implementation: sdpa (default), eager, flash.", _WL),
    Flag(
        "quant",
        str,
        "Weight format: none, int8, nf4, nf4-dq, fp4, gptq-4bit-g128, gguf-Q4_K_M, ... "
        "(`memfit catalog quants`).",
        _WL,
    ),
    Flag("runtime", str, "transformers (default), vllm, llama.cpp.", _WL),
    Flag("prompt_tokens", int, f"Prompt length in tokens. Default {DEFAULT_PROMPT_TOKENS}.", _INFER, "infer"),
    Flag(
        "new_tokens",
        int,
        "Tokens generated after the prompt; 0 (default): one scoring forward.",
        _INFER,
        "infer",
    ),
    Flag(
        "dtype",
        str,
        "Weight and compute dtype: bf16, fp16, fp32, fp8. Default: the checkpoint's.",
        _INFER,
        "infer",
    ),
    Flag(
        "kv_cache_dtype",
        str,
        "KV cache dtype (llama.cpp: q8_0, q4_0, ...). Default: the compute dtype.",
        _INFER,
        "infer",
    ),
    Flag("kv_cache", str, "dynamic (default), static or paged.", _INFER, "infer"),
    Flag(
        "v_cache_dtype",
        str,
        "llama.cpp's V cache type; default: the same as --kv-cache-dtype.",
        _INFER,
        "infer",
    ),
    Flag("block_size", int, "Paged KV cache tokens per block (vLLM default 16).", _INFER, "infer"),
    Flag(
        "max_cache_tokens",
        int,
        "Static cache length in tokens; default: prompt + new tokens.",
        _INFER,
        "infer",
    ),
    Flag("gpu_memory_utilization", str, "vLLM's fraction of GPU memory to take, e.g. 0.9.", _INFER, "infer"),
    Flag("max_num_batched_tokens", int, "vLLM: tokens per scheduler step and profile run (default 8192 on "
         "GPUs of 70 GiB or more, else 2048).", _INFER, "infer"),
    Flag("max_num_seqs", int, "vLLM: most sequences per step (default 1024, or 256 on smaller GPUs).",
         _INFER, "infer"),
    Flag("enforce_eager", bool, "vLLM: no CUDA graphs.", _INFER, "infer"),
    Flag("kv_cache_memory", str, "vLLM: KV cache size (e.g. 40GiB), bypassing --gpu-memory-utilization.",
         _INFER, "infer"),
    Flag("vllm_version", str, "vLLM release whose memory profiling is modelled (0.11-0.20; default newest).",
         _INFER, "infer"),
    Flag("n_gpu_layers", int, "llama.cpp: layers on the GPU, the output layer first (default all).", _INFER,
         "infer"),
    Flag("n_cpu_moe", int, "llama.cpp: keep the MoE experts of the first N layers on the CPU.", _INFER,
         "infer"),
    Flag("tensor_split", str, "llama.cpp -ts: layer proportions per GPU with --num-gpus, e.g. 3,1 "
         "(default even).", _INFER, "infer"),
    Flag(
        "allow_longer",
        bool,
        "Allow prompt + new tokens beyond the model's max_position_embeddings.",
        _INFER,
        "infer",
    ),
    Flag("images", int, "Images per sequence (vision-language models); their tokens join the prompt.",
         _INFER, "infer"),
    Flag("image_size", str, "Image size HEIGHTxWIDTH in pixels, e.g. 896x896. Default: the model's.",
         _INFER, "infer"),
    Flag("method", str, "full (default), lora or qlora.", _TRAIN, "train"),
    Flag("seq_len", int, f"Tokens per training sequence. Default {DEFAULT_SEQ_LEN}.", _TRAIN, "train"),
    Flag(
        "grad_accum",
        int,
        "Gradient accumulation steps (no effect on peak memory). Default 1.",
        _TRAIN,
        "train",
    ),
    Flag("precision", str, "bf16 (default), fp16, fp32, amp-bf16, amp-fp16.", _TRAIN, "train"),
    Flag(
        "optimizer",
        str,
        "adamw (default), adamw-fused, adamw-loop, sgd, sgd-momentum, adafactor, lion, "
        "adamw-8bit, paged-adamw-8bit, paged-adamw-32bit.",
        _TRAIN,
        "train",
    ),
    Flag("lora_rank", int, f"LoRA rank. Default {DEFAULT_LORA_RANK}.", _TRAIN, "train"),
    Flag("lora_alpha", int, "LoRA alpha. Default 2 × rank.", _TRAIN, "train"),
    Flag("lora_targets", str, "all-linear (default) or module names: q_proj,v_proj,...", _TRAIN, "train"),
    Flag("lora_dropout", str, "LoRA dropout. Default 0.05 (0 where peft adapts fused MoE experts).",
         _TRAIN, "train"),
    Flag(
        "no_kbit_prep", bool, "QLoRA: skip prepare_model_for_kbit_training (no fp32 upcast).", _TRAIN, "train"
    ),
    Flag("grad_checkpointing", bool, "Activation (gradient) checkpointing, non-reentrant.", _TRAIN, "train"),
    Flag("chunked_loss", bool, "Chunked cross-entropy: no full fp32 logits.", _TRAIN, "train"),
    Flag("dp", int, "Data-parallel degree.", _PAR),
    Flag("tp", int, "Tensor-parallel degree.", _PAR),
    Flag("pp", int, "Pipeline-parallel degree.", _PAR),
    Flag("ep", int, "Expert-parallel size for MoE models: routed experts split over ep ranks, carved out of "
         "dp (training) or tp × dp (vLLM). Default 1.", _PAR),
    Flag("enable_expert_parallel", bool, "vLLM: experts over all tp × dp ranks (sets ep = tp × dp).", _PAR,
         "infer"),
    Flag("sequence_parallel", bool, "Sequence parallelism with tensor parallelism.", _PAR),
    Flag("pp_schedule", str, "Pipeline schedule with --pp: 1f1b (default), gpipe or interleaved.", _PAR,
         "train"),
    Flag("pp_virtual_stages", int, "Model chunks per pipeline rank with --pp-schedule interleaved (2 or "
         "more).", _PAR, "train"),
    Flag("zero", str, "DeepSpeed ZeRO stage 0, 1, 2 or 3.", _PAR),
    Flag("fsdp", str, "FSDP strategy: full, shard-grad-op, hybrid.", _PAR),
    Flag("offload_optimizer", str, "none (default), cpu, nvme.", _PAR),
    Flag("offload_params", str, "none (default), cpu, nvme.", _PAR),
    Flag("device_map", str, "auto or balanced: split layers over GPUs, the rest to CPU RAM.", _PAR),
    Flag("max_gpu_memory", str, "Per-GPU cap for device_map splits, e.g. 20GiB.", _PAR),
    Flag("deepspeed", str, "DeepSpeed JSON config (ds_config.json): ZeRO stage, offload, buckets, bf16.",
         _PAR, "train"),
    Flag("gpus_per_node", int, "GPUs per node (default 8): hybrid FSDP shards within one; host RAM per node.",
         _PAR),
    Flag("nodes", int, "Nodes the GPUs span (sets GPUs per node = all GPUs / nodes).", _PAR),
    Flag("accelerate_config", str, "accelerate config (default_config.yaml): processes, machines, FSDP or "
         "DeepSpeed settings, mixed precision.", _PAR, "train"),
    Flag("revision", str, "Hub revision (branch, tag or commit) to read the config from.", _MODEL),
    Flag("offline", bool, "Never touch the network (also HF_HUB_OFFLINE=1).", _MODEL),
    Flag("trust_remote_code", bool, "Allow a Hub repo's own code (only used by trace and measure).", _MODEL),
)
FLAG_NAMES = frozenset(f.name for f in FLAGS)
_BY_NAME = {f.name: f for f in FLAGS}


def _parameter(flag: Flag) -> inspect.Parameter:
    option = typer.Option(flag.option, help=flag.help, rich_help_panel=flag.panel, show_default=False)
    if flag.kind is bool:
        annotation: Any = Annotated[bool, option]
        default: Any = False
    else:
        annotation = Annotated[flag.kind | None, option]
        default = None
    return inspect.Parameter(
        flag.name, inspect.Parameter.KEYWORD_ONLY, default=default, annotation=annotation
    )


def with_workload_flags(func: Callable[..., Any]) -> Callable[..., Any]:
    """Give a command every workload flag: the wrapped function receives them as one dict `flags`."""
    hints = typing.get_type_hints(func, include_extras=True)
    own = [
        p.replace(annotation=hints[p.name], kind=inspect.Parameter.KEYWORD_ONLY)
        for p in inspect.signature(func).parameters.values()
        if p.name != "flags"
    ]
    shared = [_parameter(flag) for flag in FLAGS]

    def command(**kwargs: Any) -> Any:
        flags = {name: kwargs.pop(name) for name in FLAG_NAMES}
        return func(flags=flags, **kwargs)

    command.__name__ = func.__name__
    command.__doc__ = func.__doc__
    # help panels appear in order of first use: the command's own plain options (--gpu, --engine) first,
    # then the workload panels, then its own paneled options (--num-gpus joins Parallelism; Output last)
    first = [p for p in own if _panel(p) is None]
    last = [p for p in own if _panel(p) is not None]
    ordered = [*first, *shared, *last]
    command.__signature__ = inspect.Signature(ordered)  # type: ignore[attr-defined]
    command.__annotations__ = {p.name: p.annotation for p in ordered}
    return command


def _panel(parameter: inspect.Parameter) -> str | None:
    """The rich help panel a typer Annotated parameter names, if any."""
    for meta in getattr(parameter.annotation, "__metadata__", ()):
        panel = getattr(meta, "rich_help_panel", None)
        if panel:
            return str(panel)
    return None


def _given(flags: dict[str, Any], name: str) -> bool:
    value = flags.get(name)
    return value is not None and value is not False


def _check_task_flags(flags: dict[str, Any], task: str) -> None:
    from memfit.core.errors import InvalidWorkload

    for flag in FLAGS:
        if flag.name in _IMAGE_FLAGS and task == "train" and _given(flags, flag.name):
            raise InvalidWorkload(f"{flag.option}: training with images is not modelled (text-only "
                                  "fine-tuning of a vision-language model is); drop the flag")
        if flag.task and flag.task != task and _given(flags, flag.name):
            other = "--task train" if flag.task == "train" else "--task infer (the default)"
            raise InvalidWorkload(f"{flag.option} applies to {other}; this is --task {task}")


_IMAGE_FLAGS = frozenset({"images", "image_size"})


def _fraction(text: str, field: str) -> Fraction:
    """A fraction flag, bounded (no exponents: "1e99999999" would make Fraction build a huge integer)."""
    from memfit.core.workload import parse_fraction

    return parse_fraction(text, field)


def parallelism_from_flags(flags: dict[str, Any]) -> Any:
    """The `Parallelism` the flags ask for (--num-gpus is applied to the whole workload after)."""
    from memfit.core.choices import DeviceMap, FsdpStrategy, Offload, PipelineSchedule, ZeroStage
    from memfit.core.units import parse_size
    from memfit.core.workload import Parallelism

    kwargs: dict[str, Any] = {name: flags[name] for name in ("dp", "tp", "pp") if flags.get(name) is not None}
    if flags.get("zero") is not None:
        kwargs["zero"] = ZeroStage.parse(flags["zero"], field="zero")
    if flags.get("fsdp") is not None:
        kwargs["fsdp"] = FsdpStrategy.parse(flags["fsdp"], field="fsdp")
    for name in ("offload_optimizer", "offload_params"):
        if flags.get(name) is not None:
            kwargs[name] = Offload.parse(flags[name], field=name)
    if flags.get("device_map") is not None:
        kwargs["device_map"] = DeviceMap.parse(flags["device_map"], field="device_map")
    if flags.get("max_gpu_memory") is not None:
        kwargs["max_gpu_memory_bytes"] = parse_size(flags["max_gpu_memory"])
    if flags.get("sequence_parallel"):
        kwargs["sequence_parallel"] = True
    if flags.get("pp_schedule") is not None:
        kwargs["pp_schedule"] = PipelineSchedule.parse(flags["pp_schedule"], field="pp_schedule")
    if flags.get("pp_virtual_stages") is not None:
        kwargs["pp_virtual_stages"] = flags["pp_virtual_stages"]
    if flags.get("gpus_per_node") is not None:
        kwargs["gpus_per_node"] = flags["gpus_per_node"]
    return Parallelism(**kwargs)


def workload_from_flags(flags: dict[str, Any], *, num_gpus: int | None = None) -> Any:
    """The `Inference` or `Training` the flags describe.

    Raises:
        InvalidWorkload: a bad value, or a flag of the other task (the message names the flag).
    """
    from memfit.core.choices import Runtime, Task

    task = str(Task.parse(flags.get("task") or "infer", field="task"))
    _check_task_flags(flags, task)
    runtime = Runtime.parse(flags.get("runtime") or "transformers", field="runtime")
    from memfit.core.plan import with_num_gpus

    parallel = parallelism_from_flags(flags)
    if task == "train":
        training = _training(flags, runtime=runtime, parallel=parallel)
        training = _with_deepspeed(flags, training) if flags.get("deepspeed") else training
        if flags.get("accelerate_config"):
            if num_gpus is not None:
                from memfit.core.errors import InvalidWorkload

                raise InvalidWorkload("--num-gpus and --accelerate-config both set the launch; drop the flag "
                                      "(the config's num_processes counts the GPUs)")
            training = _with_accelerate(flags, training)
        return _with_ep(_with_nodes(with_num_gpus(training, num_gpus), flags), flags)
    inference = with_num_gpus(_inference(flags, runtime=runtime, parallel=parallel), num_gpus)
    return _with_ep(_with_nodes(inference, flags), flags)


def _with_ep(workload: Any, flags: dict[str, Any]) -> Any:
    """--ep N, or --enable-expert-parallel (vLLM: ep = tp × dp), applied once --num-gpus has set dp and tp
    (the expert group is carved out of them, so it is checked against the final sizes)."""
    ep = flags.get("ep")
    if flags.get("enable_expert_parallel") and str(workload.runtime) != "vllm":
        from memfit.core.errors import InvalidWorkload

        raise InvalidWorkload(f"--enable-expert-parallel applies to --runtime vllm, not {workload.runtime}; "
                              "training takes --ep")
    if ep is None and flags.get("enable_expert_parallel"):
        ep = workload.parallel.tp * workload.parallel.dp
    if ep is None:
        return workload
    import dataclasses

    return dataclasses.replace(workload, parallel=dataclasses.replace(workload.parallel, ep=ep))


def _with_nodes(workload: Any, flags: dict[str, Any]) -> Any:
    """--nodes N: the job's GPUs spread evenly over N nodes (GPUs per node = all GPUs / N)."""
    nodes = flags.get("nodes")
    if nodes is None:
        return workload
    import dataclasses

    from memfit.core.errors import InvalidWorkload

    total = workload.parallel.num_gpus
    if nodes < 1 or total % nodes:
        raise InvalidWorkload(f"--nodes {nodes} does not divide the job's {total} GPUs evenly")
    per_node = total // nodes
    given = flags.get("gpus_per_node")
    if given is not None and given != per_node:
        raise InvalidWorkload(f"--nodes {nodes} puts {per_node} GPUs on each node, not --gpus-per-node "
                              f"{given}")
    parallel = dataclasses.replace(workload.parallel, gpus_per_node=per_node)
    return dataclasses.replace(workload, parallel=parallel)


_DEEPSPEED_FLAGS = {"zero": "zero", "offload_optimizer": "offload_optimizer",
                    "offload_params": "offload_params", "precision": "precision", "batch_size": "batch_size",
                    "grad_accum": "grad_accum"}
"""Workload field a DeepSpeed config fixes → the flag that would contradict it."""


def _with_deepspeed(flags: dict[str, Any], training: Any) -> Any:
    """`training` under the --deepspeed config; a flag that contradicts the config is refused."""
    from memfit.core.deepspeed import given_by
    from memfit.core.errors import InvalidWorkload
    from memfit.sources.deepspeed import PARALLEL_FIELDS, load_deepspeed_config, with_deepspeed_config

    if flags.get("fsdp") is not None:
        raise InvalidWorkload("--deepspeed and --fsdp are exclusive; pick one")
    settings = load_deepspeed_config(flags["deepspeed"])
    for field, value in given_by(settings).items():
        flag = _DEEPSPEED_FLAGS.get(field)
        if flag is None or not _given(flags, flag):
            continue
        ours = getattr(training.parallel if field in PARALLEL_FIELDS else training, field)
        if str(ours) != str(value):
            raise InvalidWorkload(f"{_BY_NAME[flag].option} {ours} contradicts {flags['deepspeed']} "
                                  f"({field}={value}); drop the flag or change the config")
    return with_deepspeed_config(training, flags["deepspeed"])


_ACCELERATE_FLAGS = ("dp", "tp", "pp", "zero", "fsdp", "offload_optimizer", "offload_params",
                     "precision", "deepspeed", "nodes", "gpus_per_node")
"""Flags an accelerate config decides: given beside --accelerate-config they are refused, not merged."""


def _with_accelerate(flags: dict[str, Any], training: Any) -> Any:
    """`training` as the --accelerate-config launches it; a flag the config decides is refused."""
    from memfit.core.errors import InvalidWorkload
    from memfit.sources.accelerate import with_accelerate_config

    for name in _ACCELERATE_FLAGS:
        if _given(flags, name):
            raise InvalidWorkload(f"{_BY_NAME[name].option} and --accelerate-config both set the launch; "
                                  "drop the flag or change the config")
    return with_accelerate_config(training, flags["accelerate_config"])


def _common(flags: dict[str, Any]) -> dict[str, Any]:
    from memfit.core.choices import AttnImpl
    from memfit.core.dtypes import quant

    kwargs: dict[str, Any] = {}
    if flags.get("batch_size") is not None:
        kwargs["batch_size"] = flags["batch_size"]
    if flags.get("attn") is not None:
        kwargs["attn"] = AttnImpl.parse(flags["attn"], field="attn")
    if flags.get("quant") is not None:
        kwargs["quant"] = quant(flags["quant"])
    return kwargs


def _inference(flags: dict[str, Any], *, runtime: Any, parallel: Any) -> Any:
    from memfit.core.choices import KvCache
    from memfit.core.dtypes import parse_dtype
    from memfit.core.workload import Inference

    kwargs = _common(flags)
    prompt_tokens = flags.get("prompt_tokens")
    kwargs["prompt_tokens"] = DEFAULT_PROMPT_TOKENS if prompt_tokens is None else prompt_tokens
    if flags.get("new_tokens") is not None:
        kwargs["new_tokens"] = flags["new_tokens"]
    if flags.get("dtype") is not None:
        kwargs["dtype"] = parse_dtype(flags["dtype"], field="dtype")
    if flags.get("kv_cache_dtype") is not None:
        kwargs["kv_cache_dtype"] = parse_dtype(flags["kv_cache_dtype"], field="kv_cache_dtype")
    if flags.get("v_cache_dtype") is not None:
        kwargs["v_cache_dtype"] = parse_dtype(flags["v_cache_dtype"], field="v_cache_dtype")
    for name in ("block_size", "max_cache_tokens"):
        if flags.get(name) is not None:
            kwargs[name] = flags[name]
    if flags.get("kv_cache") is not None:
        kwargs["kv_cache"] = KvCache.parse(flags["kv_cache"], field="kv_cache")
    else:  # the runtime's own cache kind (vLLM: paged; llama.cpp: static), spelled out in the JSON
        from memfit.core.runtimes import profile

        kwargs["kv_cache"] = profile(runtime).default_kv_cache
    if flags.get("gpu_memory_utilization") is not None:
        kwargs["gpu_memory_utilization"] = _fraction(
            flags["gpu_memory_utilization"], "gpu_memory_utilization"
        )
    for name in ("n_gpu_layers", "n_cpu_moe", "tensor_split", "max_num_batched_tokens", "max_num_seqs",
                 "vllm_version"):
        if flags.get(name) is not None:
            kwargs[name] = flags[name]
    if flags.get("kv_cache_memory") is not None:
        from memfit.core.units import parse_size

        kwargs["kv_cache_memory"] = parse_size(flags["kv_cache_memory"])
    if flags.get("enforce_eager"):
        kwargs["enforce_eager"] = True
    if flags.get("allow_longer"):
        kwargs["allow_longer"] = True
    for name in ("images", "image_size"):
        if flags.get(name) is not None:
            kwargs[name] = flags[name]
    return Inference(runtime=runtime, parallel=parallel, **kwargs)


def _training(flags: dict[str, Any], *, runtime: Any, parallel: Any) -> Any:
    from memfit.core.choices import Checkpointing, Method, Optimizer, Precision
    from memfit.core.dtypes import quant
    from memfit.core.workload import Training

    kwargs = _common(flags)
    kwargs["seq_len"] = flags["seq_len"] if flags.get("seq_len") is not None else DEFAULT_SEQ_LEN
    if flags.get("grad_accum") is not None:
        kwargs["grad_accum"] = flags["grad_accum"]
    method = Method.parse(flags.get("method") or "full", field="method")
    kwargs["method"] = method
    if flags.get("precision") is not None:
        kwargs["precision"] = Precision.parse(flags["precision"], field="precision")
    if flags.get("optimizer") is not None:
        kwargs["optimizer"] = Optimizer.parse(flags["optimizer"], field="optimizer")
    if flags.get("grad_checkpointing"):
        kwargs["checkpointing"] = Checkpointing.FULL
    if flags.get("chunked_loss"):
        kwargs["chunked_loss"] = True
    lora_flags = ("lora_rank", "lora_alpha", "lora_targets", "lora_dropout", "no_kbit_prep")
    if method is Method.FULL:
        for name in lora_flags:
            if _given(flags, name):
                from memfit.core.errors import InvalidWorkload

                raise InvalidWorkload(f"{_BY_NAME[name].option} needs --method lora or qlora")
    else:
        kwargs["lora"] = _lora(flags)
        if method is Method.QLORA and "quant" not in kwargs:
            kwargs["quant"] = quant(DEFAULT_QLORA_QUANT)
    return Training(runtime=runtime, parallel=parallel, **kwargs)


def _lora(flags: dict[str, Any]) -> Any:
    from memfit.core.workload import Lora

    rank = flags["lora_rank"] if flags.get("lora_rank") is not None else DEFAULT_LORA_RANK
    kwargs: dict[str, Any] = {"rank": rank, "alpha": 2 * rank}
    if flags.get("lora_alpha") is not None:
        kwargs["alpha"] = flags["lora_alpha"]
    if flags.get("lora_targets") is not None:
        kwargs["targets"] = tuple(t.strip() for t in flags["lora_targets"].split(",") if t.strip())
    if flags.get("lora_dropout") is not None:
        kwargs["dropout"] = _fraction(flags["lora_dropout"], "lora_dropout")
    if flags.get("no_kbit_prep"):
        kwargs["prepare_kbit"] = False
    return Lora(**kwargs)


def model_options(flags: dict[str, Any]) -> dict[str, Any]:
    """Keyword arguments for `load_model` from the model-source flags."""
    return {
        "revision": flags.get("revision"),
        "offline": bool(flags.get("offline")),
        "trust_remote_code": bool(flags.get("trust_remote_code")),
    }
