"""Every Hypothesis strategy used by the property tests lives here."""

# --- training (core/training.py) -----------------------------------------------------------------------
import os as _os
from fractions import Fraction as _Fraction

from hypothesis import strategies as _st

from memfit.core.choices import AttnImpl as _AttnImpl
from memfit.core.choices import Checkpointing as _Checkpointing
from memfit.core.choices import Method as _Method
from memfit.core.choices import Optimizer as _Optimizer
from memfit.core.choices import Precision as _Precision
from memfit.core.dtypes import quant as _quant
from memfit.core.families import spec_from_config as _spec_from_config
from memfit.core.spec import ModelSource as _ModelSource
from memfit.core.workload import Lora as _Lora
from memfit.core.workload import Parallelism as _Parallelism
from memfit.core.workload import Training as _Training

FUZZ_EXAMPLES = int(_os.environ.get("MEMFIT_FUZZ_EXAMPLES", "200"))
"""Examples per fuzz property (CLI, API, web, configs): 200 in the suite, about 15 s in all on one core;
benchmarks/fuzz.py raises it (MEMFIT_FUZZ_EXAMPLES) for the 10^4-input run."""

TRAINING_LINEAR_NAMES = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
"""Module names of the llama-like layers `training_specs` builds (valid LoRA targets)."""


@_st.composite
def training_specs(draw: _st.DrawFn) -> object:
    """Tiny llama/qwen2/mistral specs: hidden 32-256, 1-4 layers, GQA or MHA, tied or untied head."""
    heads = draw(_st.sampled_from([2, 4, 8]))
    head_dim = draw(_st.sampled_from([16, 32]))
    kv = draw(_st.sampled_from([h for h in (1, 2, 4, 8) if heads % h == 0]))
    config = {
        "model_type": draw(_st.sampled_from(["llama", "qwen2", "mistral"])),
        "hidden_size": heads * head_dim, "head_dim": head_dim, "num_attention_heads": heads,
        "num_key_value_heads": kv, "num_hidden_layers": draw(_st.integers(1, 4)),
        "intermediate_size": draw(_st.sampled_from([96, 128, 256, 512])),
        "vocab_size": draw(_st.sampled_from([100, 1000, 5000])), "max_position_embeddings": 4096,
        "tie_word_embeddings": draw(_st.booleans()),
    }
    return _spec_from_config(config, name="prop", source=_ModelSource(kind="config", ref="prop"))


@_st.composite
def training_workloads(draw: _st.DrawFn, *, method: _Method | None = None) -> _Training:
    """Training jobs over every method, precision, optimizer, attention and checkpointing choice.

    LoRA ranks stay ≤ 8 so that adapters stay smaller than the model they adapt.
    """
    chosen = method if method is not None else draw(_st.sampled_from(list(_Method)))
    lora = None
    if chosen is not _Method.FULL:
        targets = draw(_st.one_of(_st.just(("all-linear",)),
                                  _st.lists(_st.sampled_from(TRAINING_LINEAR_NAMES), min_size=1, max_size=7,
                                            unique=True).map(tuple)))
        lora = _Lora(rank=draw(_st.integers(1, 8)), alpha=16, targets=targets,
                     dropout=draw(_st.sampled_from([_Fraction(0), _Fraction(1, 20)])),
                     prepare_kbit=draw(_st.booleans()))
    precisions = [p for p in _Precision if not (chosen is _Method.QLORA and p is _Precision.FP32)]
    precision = draw(_st.sampled_from(precisions))
    attns = [a for a in _AttnImpl if not (a is _AttnImpl.FLASH and precision is _Precision.FP32)]
    return _Training(
        seq_len=draw(_st.integers(1, 512)), batch_size=draw(_st.integers(1, 4)),
        grad_accum=draw(_st.integers(1, 3)), method=chosen, lora=lora,
        quant=_quant(draw(_st.sampled_from(["nf4", "nf4-dq", "fp4"]))) if chosen is _Method.QLORA
        else _quant("none"),
        precision=precision, optimizer=draw(_st.sampled_from(list(_Optimizer))),
        checkpointing=draw(_st.sampled_from(list(_Checkpointing))), attn=draw(_st.sampled_from(attns)),
        chunked_loss=draw(_st.booleans()),
    )


@_st.composite
def parallel_settings(draw: _st.DrawFn, *, heads: int = 8, layers: int = 1) -> "_Parallelism":
    """Multi-GPU settings the runtime can run on a model of `heads` heads and `layers` layers: DDP, ZeRO
    1-3 (with DeepSpeed's offloads), FSDP full / shard-grad-op / hybrid (with CPU offload), tp dividing the
    heads (with or without sequence parallelism), pp up to the layer count."""
    from memfit.core.choices import FsdpStrategy as _Fsdp
    from memfit.core.choices import Offload as _Offload
    from memfit.core.choices import ZeroStage as _Zero
    tp = draw(_st.sampled_from([t for t in (1, 2, 4) if heads % t == 0]))
    kind = draw(_st.sampled_from(["ddp", "zero", "fsdp"]))
    kwargs: dict[str, object] = {"dp": draw(_st.integers(1, 16)), "tp": tp,
                                 "pp": draw(_st.integers(1, max(1, min(layers, 4)))),
                                 "sequence_parallel": tp > 1 and draw(_st.booleans()),
                                 "gpus_per_node": draw(_st.sampled_from([4, 8]))}
    if kind == "zero":
        stage = draw(_st.sampled_from([_Zero.OPTIMIZER, _Zero.GRADIENTS, _Zero.PARAMETERS]))
        kwargs["zero"] = stage
        kwargs["offload_optimizer"] = draw(_st.sampled_from([_Offload.NONE, _Offload.CPU]))
        if stage is _Zero.PARAMETERS:
            kwargs["offload_params"] = draw(_st.sampled_from([_Offload.NONE, _Offload.CPU]))
    elif kind == "fsdp":
        kwargs["fsdp"] = draw(_st.sampled_from(list(_Fsdp)))
        kwargs["offload_params"] = draw(_st.sampled_from([_Offload.NONE, _Offload.CPU]))
        node, dp = int(str(kwargs["gpus_per_node"])), int(str(kwargs["dp"]))
        if kwargs["fsdp"] is _Fsdp.HYBRID and dp > node:   # HSDP fills whole nodes
            kwargs["dp"] = draw(_st.sampled_from([2 * node, 4 * node]))
    return _Parallelism(**kwargs)  # type: ignore[arg-type]


# --- inference (core/inference.py) ----------------------------------------------------------------------
from hypothesis import strategies as _ist  # noqa: E402

from memfit.core.choices import AttnImpl as _IAttnImpl  # noqa: E402
from memfit.core.choices import KvCache as _IKvCache  # noqa: E402
from memfit.core.choices import Runtime as _IRuntime  # noqa: E402
from memfit.core.dtypes import DType as _IDType  # noqa: E402
from memfit.core.dtypes import quant as _iquant  # noqa: E402
from memfit.core.spec import AttentionSpec as _IAttentionSpec  # noqa: E402
from memfit.core.spec import LayerSpec as _ILayerSpec  # noqa: E402
from memfit.core.spec import MlpSpec as _IMlpSpec  # noqa: E402
from memfit.core.spec import ModelSource as _IModelSource  # noqa: E402
from memfit.core.spec import ModelSpec as _IModelSpec  # noqa: E402
from memfit.core.workload import Inference as _Inference  # noqa: E402


@_ist.composite
def inference_specs(draw: _ist.DrawFn) -> _IModelSpec:
    """Tiny llama-like specs: MHA, GQA or MQA; some layers sliding; tied or untied head; 1-4 layers."""
    heads = draw(_ist.sampled_from([1, 2, 4, 8]))
    kv = draw(_ist.sampled_from([h for h in (1, 2, 4, 8) if heads % h == 0]))
    head_dim = draw(_ist.sampled_from([8, 16, 32]))
    window = draw(_ist.one_of(_ist.none(), _ist.integers(4, 64)))
    full = _IAttentionSpec(num_heads=heads, num_kv_heads=kv, head_dim=head_dim)
    sliding = _IAttentionSpec(num_heads=heads, num_kv_heads=kv, head_dim=head_dim, sliding_window=window)
    mlp = _IMlpSpec(intermediate_size=draw(_ist.sampled_from([32, 64, 128])), gated=draw(_ist.booleans()))
    pattern = draw(_ist.lists(_ist.booleans(), min_size=1, max_size=4))
    layers = tuple(_ILayerSpec(attention=sliding if slide else full, mlp=mlp) for slide in pattern)
    return _IModelSpec(name="prop-infer", family="llama", vocab_size=draw(_ist.sampled_from([64, 1000])),
                       hidden_size=heads * head_dim, max_position_embeddings=4096,
                       tie_word_embeddings=draw(_ist.booleans()), layers=layers,
                       source=_IModelSource(kind="config", ref="prop-infer"))


@_ist.composite
def inference_workloads(draw: _ist.DrawFn) -> _Inference:
    """Inference jobs: scoring or generation; transformers (dynamic or static cache, every attention,
    bnb, every compute dtype), vLLM (paged) or llama.cpp (GGUF, quantized K/V caches, partial offload)."""
    prompt, new, batch = draw(_ist.integers(1, 300)), draw(_ist.integers(0, 40)), draw(_ist.integers(1, 4))
    runtime = draw(_ist.sampled_from([_IRuntime.TRANSFORMERS] * 3 + [_IRuntime.VLLM, _IRuntime.LLAMA_CPP]))
    if runtime is _IRuntime.LLAMA_CPP:
        return _Inference(prompt_tokens=prompt, new_tokens=new, batch_size=batch, runtime=runtime,
                          quant=_iquant(draw(_ist.sampled_from(["gguf-Q4_K_M", "gguf-Q8_0", "gguf-IQ4_XS"]))),
                          v_cache_dtype=draw(_ist.sampled_from([None, _IDType.Q8_0, _IDType.Q4_0])),
                          n_gpu_layers=draw(_ist.one_of(_ist.none(), _ist.integers(0, 5))))
    if runtime is _IRuntime.VLLM:
        return _Inference(prompt_tokens=prompt, new_tokens=new, batch_size=batch, runtime=runtime)
    return _Inference(
        prompt_tokens=prompt, new_tokens=new, batch_size=batch,
        dtype=draw(_ist.sampled_from([None, _IDType.FP16, _IDType.FP32])),
        quant=_iquant(draw(_ist.sampled_from(["none", "nf4", "nf4-dq", "int8"]))),
        kv_cache=draw(_ist.sampled_from([_IKvCache.DYNAMIC, _IKvCache.STATIC])),
        attn=draw(_ist.sampled_from(list(_IAttnImpl))),
    )


# --- planner (core/plan.py) -----------------------------------------------------------------------------
from hypothesis import strategies as _pst  # noqa: E402

from memfit.core.result import Gpu as _PGpu  # noqa: E402
from memfit.core.units import MiB as _PMiB  # noqa: E402

PLANNER_CATALOG_MODELS = ("SmolLM2-135M-Instruct", "Qwen2.5-0.5B", "Llama-3.2-1B", "gemma-2-2b-it",
                          "Qwen3-4B", "Llama-3.1-8B", "Mixtral-8x7B-v0.1", "DeepSeek-V2-Lite")
"""Catalog models covering GQA, MHA, sliding windows, MoE and MLA, for planner properties at real scale."""


def planner_gpus(*, min_mib: int = 512, max_mib: int = 192 * 1024) -> _pst.SearchStrategy[_PGpu]:
    """Anonymous GPUs of min_mib..max_mib MiB, all of it usable (as `--gpu 24GiB` gives)."""
    return _pst.integers(min_mib, max_mib).map(
        lambda mib: _PGpu(name=f"{mib}MiB", memory_bytes=mib * _PMiB, usable_bytes=mib * _PMiB))


def planner_jobs() -> _pst.SearchStrategy[tuple[object, object]]:
    """(spec, workload) pairs: tiny inference or training specs with a matching workload."""
    return _pst.one_of(_pst.tuples(inference_specs(), inference_workloads()),
                       _pst.tuples(training_specs(), training_workloads()))


def planner_catalog_jobs() -> _pst.SearchStrategy[tuple[str, object]]:
    """(catalog model name, workload) pairs at real scale: inference up to 8k tokens, training up to 4k."""
    infer = _pst.builds(_Inference, prompt_tokens=_pst.integers(1, 8192), new_tokens=_pst.integers(0, 512),
                        batch_size=_pst.integers(1, 8))
    train = _pst.builds(_Training, seq_len=_pst.integers(1, 4096), batch_size=_pst.integers(1, 4))
    return _pst.tuples(_pst.sampled_from(PLANNER_CATALOG_MODELS), _pst.one_of(infer, train))


# --- the CLI's argv, fuzzed (tests/properties/test_cli_fuzz.py, benchmarks/fuzz.py) ------------------------
from memfit.cli.options import FLAGS as _FLAGS  # noqa: E402

CLI_MODELS = ("SmolLM2-135M-Instruct", "gpt2", "Llama-3.1-8B", "DeepSeek-V2-Lite", "no-such-model", "",
              "x" * 300, "../../etc/passwd", "/dev/zero", "-", "org/not-cached")
"""Model references: catalog models of several families, unknown names, hostile paths, an uncached Hub id
(always with --offline: a fuzz run never reaches the network)."""
CLI_VALUES = ("1", "2", "0", "-1", "3", "16", "2048", "1e999", "nan", "inf", "0.5", "9/10", "1" * 400, "abc",
              "", "auto", "none", "full", "lora", "qlora", "nf4", "int8", "bf16", "fp8", "vllm", "llama.cpp",
              "train", "infer", "static", "paged", "eager", "cpu", "nvme", "q_proj,v_proj", "24GiB", "-5GB")
"""Flag values: plausible ones of every kind and the ones that broke memfit before (huge, NaN, signs)."""
CLI_GPUS = ("H100-SXM-80GB", "A100-SXM-80GB", "24GiB", "0GiB", "1e999GiB", "nope", "-8GB")


CLI_PLAUSIBLE: dict[str, tuple[str, ...]] = {
    "batch_size": ("1", "2", "8"), "prompt_tokens": ("16", "512", "4096"), "new_tokens": ("0", "1", "64"),
    "seq_len": ("128", "1024", "4096"), "grad_accum": ("1", "4"), "lora_rank": ("8", "64"),
    "lora_alpha": ("16",), "lora_targets": ("all-linear", "q_proj,v_proj"), "lora_dropout": ("0", "0.1"),
    "method": ("full", "lora", "qlora"), "precision": ("bf16", "fp32", "amp-bf16"),
    "optimizer": ("adamw", "sgd", "adafactor", "adamw-8bit", "paged-adamw-8bit"),
    "attn": ("sdpa", "eager", "flash"), "runtime": ("transformers", "vllm", "llama.cpp"),
    "quant": ("none", "nf4", "int8", "fp8", "gguf-Q4_K_M", "awq-4bit-g128"), "dtype": ("bf16", "fp16"),
    "kv_cache": ("dynamic", "static", "paged"), "kv_cache_dtype": ("bf16", "fp8", "q8_0"),
    "gpu_memory_utilization": ("0.9", "0.5"), "n_gpu_layers": ("0", "16"), "block_size": ("16", "32"),
    "max_num_batched_tokens": ("2048", "8192"), "max_num_seqs": ("64", "256"), "kv_cache_memory": ("8GiB",),
    "vllm_version": ("0.11.2", "0.20.0"),
    "dp": ("1", "2", "8"), "tp": ("1", "2", "4"), "pp": ("1", "2"), "zero": ("0", "1", "2", "3"),
    "fsdp": ("full", "shard-grad-op"), "offload_optimizer": ("none", "cpu"), "offload_params": ("cpu",),
    "device_map": ("auto",), "max_gpu_memory": ("20GiB",), "ep": ("1", "2", "8"),
}
"""Values a user would pass per flag (the kind the task and runtime take), so fuzzing reaches results."""


@_st.composite
def cli_argvs(draw: _st.DrawFn) -> list[str]:
    """`memfit estimate|plan|params MODEL --offline [flags]`: up to six flags of one task with plausible
    values (two examples in three) or any flags with any CLI_VALUES; sometimes --gpu, --json,
    --fail-if-not-fit, --maximize."""
    command = draw(_st.sampled_from(["estimate", "estimate", "estimate", "plan", "params"]))
    argv = [command, draw(_st.sampled_from(CLI_MODELS[:4] * 3 + CLI_MODELS)), "--offline"]
    if command == "params":
        return argv + (["--json"] if draw(_st.booleans()) else [])
    task = draw(_st.sampled_from(["infer", "train"]))
    plausible = draw(_st.integers(0, 2)) > 0
    usable = [f for f in _FLAGS if f.name not in ("offline", "revision", "trust_remote_code", "task")
              and (not plausible or f.task in ("", task))]
    argv += ["--task", task]
    for flag in draw(_st.lists(_st.sampled_from(usable), max_size=6, unique_by=lambda f: f.name)):
        argv.append(flag.option)
        if flag.kind is not bool:
            values = CLI_PLAUSIBLE.get(flag.name, CLI_VALUES) if plausible else CLI_VALUES
            argv.append(draw(_st.sampled_from(values)))
    gate = draw(_st.integers(0, 3)) == 0
    if command == "plan" or gate or draw(_st.booleans()):
        argv += ["--gpu", draw(_st.sampled_from(CLI_GPUS))]
    if command == "plan" and draw(_st.booleans()):
        argv += ["--maximize", draw(_st.sampled_from(["batch", "context", "speed"]))]
    if draw(_st.booleans()):
        argv.append("--json")
    if gate:
        argv.append("--fail-if-not-fit")
    return argv


# --- every family kind (core/families) --------------------------------------------------------------------

FAMILY_KINDS = ("llama", "mistral", "qwen3_moe", "deepseek_v2", "gemma2", "gpt2", "phi3", "bloom", "falcon",
                "gpt_oss", "cohere", "granitemoehybrid", "nemotron_h", "falcon_h1")
"""Model types standing for every kind the spec fields describe: GQA (llama), sliding windows (mistral,
gemma2 with soft-capping), MoE (qwen3_moe, gpt_oss with sinks and a clamped GLU), MLA (deepseek_v2), fused
qkv (gpt2, phi3, falcon), ALiBi (bloom; falcon with `alibi`), Python LayerNorm (cohere), Mamba-2 mixers
between attention layers (granitemoehybrid; nemotron_h with MLP-only and MoE-only blocks) or beside
attention in every layer (falcon_h1)."""


@_st.composite
def family_specs(draw: _st.DrawFn) -> object:
    """Tiny specs of every family kind, from config.json dicts through the family mappers."""
    kind = draw(_st.sampled_from(FAMILY_KINDS))
    heads = draw(_st.sampled_from([2, 4]))
    head_dim = draw(_st.sampled_from([16, 32]))
    hidden = heads * head_dim
    layers = draw(_st.integers(1, 3))
    vocab = draw(_st.sampled_from([96, 1000]))
    inter = draw(_st.sampled_from([64, 128]))
    base = {"model_type": kind, "hidden_size": hidden, "num_attention_heads": heads, "head_dim": head_dim,
            "num_hidden_layers": layers, "intermediate_size": inter, "vocab_size": vocab,
            "max_position_embeddings": 4096, "num_key_value_heads": draw(_st.sampled_from([1, heads]))}
    window = draw(_st.sampled_from([8, 64]))
    extras: dict[str, dict[str, object]] = {
        "mistral": {"sliding_window": window},
        "gemma2": {"sliding_window": window, "attn_logit_softcapping": 50.0},
        "qwen3_moe": {"num_experts": 4, "num_experts_per_tok": 2, "moe_intermediate_size": inter // 2},
        "gpt_oss": {"num_local_experts": 4, "num_experts_per_tok": 2, "sliding_window": window},
        "deepseek_v2": {"n_routed_experts": 4, "num_experts_per_tok": 2, "moe_intermediate_size": inter // 2,
                        "n_shared_experts": 1, "first_k_dense_replace": 1, "q_lora_rank": None,
                        "kv_lora_rank": 32, "qk_nope_head_dim": 16, "qk_rope_head_dim": 8, "v_head_dim": 16},
        "gpt2": {"n_embd": hidden, "n_layer": layers, "n_head": heads, "n_positions": 4096},
        "bloom": {"n_layer": layers, "n_head": heads},
        "falcon": {"alibi": draw(_st.booleans()), "new_decoder_architecture": False, "multi_query": True},
        "phi3": {"pad_token_id": 0},
        "cohere": {"use_qk_norm": False},
        "granitemoehybrid": {"layer_types": ["attention" if i == 1 else "mamba" for i in range(layers)],
                             "mamba_n_heads": heads, "mamba_n_groups": 1, "mamba_d_state": 16,
                             "mamba_chunk_size": draw(_st.sampled_from([16, 64])),
                             "num_local_experts": draw(_st.sampled_from([0, 4])), "num_experts_per_tok": 2,
                             "shared_intermediate_size": inter, "position_embedding_type": "rope"},
        "falcon_h1": {"mamba_d_ssm": 2 * hidden, "mamba_n_heads": heads, "mamba_n_groups": 1,
                      "mamba_d_state": 16, "mamba_chunk_size": 16, "mamba_rms_norm": draw(_st.booleans())},
        "nemotron_h": {"hybrid_override_pattern": draw(_st.sampled_from(["M*-E", "M-M*", "*ME"])),
                       "mamba_num_heads": heads, "mamba_head_dim": head_dim, "n_groups": 1,
                       "ssm_state_size": 16, "chunk_size": 16, "n_routed_experts": 4,
                       "num_experts_per_tok": 2, "moe_intermediate_size": inter // 2,
                       "moe_shared_expert_intermediate_size": inter},
    }
    config = {**base, **extras.get(kind, {})}
    return _spec_from_config(config, name=f"prop-{kind}", source=_ModelSource(kind="config", ref=kind))
