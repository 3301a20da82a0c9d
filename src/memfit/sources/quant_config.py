"""A checkpoint's weight format, read from config.json's `quantization_config`: exact storage per matrix.

`checkpoint_quant(config)` maps a quantization_config to a `Quant` with `checkpoint=True`: the code bits
per weight in `bits_per_weight`, every scale / zero-point / index tensor the format stores beside the codes
as a `ScaleGrid` sized by each matrix's shape, which module kinds stay unquantized (`keeps`, from
`modules_to_not_convert` / `ignore`), and which are converted (`targets`). How each runtime holds the
weights after loading (kept packed, or dequantized) is decided in `core/checkpoint_load.py`.

Tensor layouts (what the files store per quantized (out, in) matrix; g = group size):
- fp8 (transformers FineGrainedFP8Config; DeepSeek-V3/R1, Qwen3-FP8): e4m3 weight (1 B) and an fp32
  `weight_scale_inv` of ceil(out/128) × ceil(in/128) (weight_block_size). Source: transformers 5.17.0
  integrations/finegrained_fp8.py FP8Linear; DeepSeek-V3 safetensors index.
- fbgemm_fp8 (Llama-3.1-405B-FP8): e4m3 weight and one fp32 scale per output row. Source: transformers
  integrations/fbgemm_fp8.py FbgemmFp8Linear (weight_scale (out, 1) float32).
- mxfp4 (gpt-oss): only the MoE experts; 4-bit e2m1 codes (`*_blocks`, two per byte) and one uint8 e8m0
  scale per 32 input features (`*_scales`); attention, router, embeddings and head stay bf16.
  Source: transformers 5.17.0 integrations/mxfp4.py (Mxfp4GptOssExperts), gpt-oss model card.
- gptq (AutoGPTQ / GPTQModel "gptq" format): qweight int32 (in·bits/32, out), qzeros int32
  (ceil(in/g), out·bits/32), fp16 scales (ceil(in/g), out), int32 g_idx (in). Source: gptqmodel
  nn_modules/qlinear TorchQuantLinear.register_buffer calls.
- awq (AutoAWQ GEMM/GEMV): qweight int32 (in, out/8) for 4 bits, fp16 scales (ceil(in/g), out), qzeros
  int32 (ceil(in/g), out·bits/32) when zero_point. Source: AutoAWQ WQLinear_GEMM.
- compressed-tensors (llm-compressor): per config group, codes of `num_bits` (int4 packed in int32
  `weight_packed`, fp8 / int8 `weight`), `weight_scale` in the checkpoint dtype by strategy (tensor: one,
  channel: per output row, group: per `group_size` inputs, block: per block_structure), an int8 (packed
  int32 for pack-quantized) `weight_zero_point` when asymmetric, an int64[2] `weight_shape` for packed
  formats; nvfp4-pack-quantized: e2m1 codes, fp8 e4m3 scales per 16 inputs, fp32 weight_global_scale and
  input_global_scale; mxfp4-pack-quantized: uint8 scales per 32. Source: compressed-tensors 0.15
  quantization/lifecycle/initialize.py (scale dtype follows the weight; fp4 scales are fp8) and
  compressors/quantized_compressors (pack_quantized, nvfp4, float/int/naive quantized).
- bitsandbytes checkpoints saved quantized: the bnb formats of core/quants.py (nf4, fp4, -dq, int8).
- modelopt (NVIDIA TensorRT Model Optimizer) FP8: fp8 weight, fp32 weight_scale and input_scale per
  matrix; NVFP4: e2m1 codes, fp8 weight_scale per 16 inputs, fp32 weight_scale_2 and input_scale.
  Source: vLLM model_executor/layers/quantization/modelopt.py create_weights.
- hqq: packed codes, fp16 scale and zero per group (default 64). torchao: Int4WeightOnly (bf16 scale and
  zero per group), Int8WeightOnly / Float8WeightOnly (one scale per output row). eetq: int8 codes and one
  fp16 scale per output row.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping
from fractions import Fraction
from typing import Any

from memfit.core.choices import Runtime
from memfit.core.dtypes import DType, Quant, ScaleGrid, quant
from memfit.core.errors import ConfigError

_ALL_KEPT = frozenset({"embeddings", "lm_head", "norms", "router", "biases"})
"""Module kinds no loader converts by default: embeddings, the LM head, norms, MoE routers, biases."""
_LOADERS = frozenset({Runtime.TRANSFORMERS, Runtime.VLLM})

_ROLE_PATTERNS: tuple[tuple[re.Pattern[str], str], ...] = (
    (re.compile(r"lm_head"), "lm_head"),
    (re.compile(r"embed"), "embeddings"),
    (re.compile(r"shared_expert"), "shared_experts"),
    (re.compile(r"router|mlp\.gate\$?$|\.gate\$?$|block_sparse_moe\.gate"), "router"),
    (re.compile(r"expert"), "experts"),
    (re.compile(r"self_attn|attention|\.attn\b|attn\$?$"), "attention"),
    (re.compile(r"mlp|feed_forward|ffn"), "mlp"),
)
_LAYER_INDEX = re.compile(r"layers\.\d+\.")
_TOWER = re.compile(r"vision|visual|image|audio|multi_modal|mm_projector")


def checkpoint_quant(config: Mapping[str, Any], *, name: str,
                     checkpoint_dtype: DType = DType.BF16) -> Quant | None:
    """The weight format a config.json's quantization_config stores, or None when there is none.

    An unknown quant_method gives a Quant of kind "unknown" (the estimate refuses it unless `--quant`
    overrides), never a silent fp16 count.

    Raises:
        ConfigError: quantization_config present but malformed (one line naming the field).
    """
    qc = config.get("quantization_config")
    if qc is None:
        return None
    if not isinstance(qc, Mapping):
        raise ConfigError(f"{name}: quantization_config must be a JSON object")
    method = str(qc.get("quant_method", "")).lower().replace("_", "-")
    try:
        built = _BUILDERS[method](qc, checkpoint_dtype) if method in _BUILDERS else None
    except (TypeError, ValueError, KeyError, ZeroDivisionError) as err:
        raise ConfigError(f"{name}: quantization_config ({method or 'no quant_method'}) is malformed: "
                          f"{err}") from err
    if built is None:
        shown = method or "(none)"
        return Quant(name=f"checkpoint-{shown}", bits_per_weight=Fraction(16), kind="unknown",
                     checkpoint=True, runtimes=_LOADERS,
                     note=f"quantization_config.quant_method {shown!r} is not a format memfit sizes")
    return built


def _bits(value: Any, *, field: str, allowed: Iterable[int] = (2, 3, 4, 8)) -> int:
    bits = int(value)
    if bits not in tuple(allowed):
        raise ValueError(f"{field}={value!r} (expected one of {', '.join(map(str, allowed))})")
    return bits


def _group(value: Any, *, field: str = "group_size") -> int:
    """A group size; -1 / None / 0 mean one group per row (the whole input width)."""
    if value is None:
        return 0
    group = int(value)
    if group == -1 or group == 0:
        return 0
    if group < 1:
        raise ValueError(f"{field}={value!r} must be positive or -1")
    return group


def _not_converted(names: Any) -> tuple[frozenset[str], tuple[str, ...]]:
    """Module kinds a list of module names / `re:` patterns leaves unquantized, and the entries it could
    not map to a whole kind (single layers, towers) to name in the format's note."""
    if names is None:
        return frozenset(), ()
    if isinstance(names, str) or not isinstance(names, Iterable):
        raise ValueError(f"module list {names!r} is not a list of names")
    roles: set[str] = set()
    partial: list[str] = []
    for raw in names:
        text = str(raw).removeprefix("re:")
        if _TOWER.search(text):
            continue   # a vision / audio tower: not part of the decoder memfit counts here
        role = next((r for pattern, r in _ROLE_PATTERNS if pattern.search(text)), None)
        if role is None or _LAYER_INDEX.search(text):
            partial.append(str(raw))
        else:
            roles.add(role)
    return frozenset(roles), tuple(partial)


def _checkpoint(*, name: str, bits: int, kind: str, grids: tuple[ScaleGrid, ...], keeps: frozenset[str],
                partial: tuple[str, ...], note: str, targets: frozenset[str] | None = None) -> Quant:
    if partial:
        shown = ", ".join(partial[:3]) + (", ..." if len(partial) > 3 else "")
        note += f"; modules left unquantized that are counted quantized: {shown}"
    return Quant(name=name, bits_per_weight=Fraction(bits), kind=kind, grids=grids, keeps=keeps,
                 targets=targets, runtimes=_LOADERS, checkpoint=True, note=note)


def _fp8(qc: Mapping[str, Any], dtype: DType) -> Quant:
    block = qc.get("weight_block_size", (128, 128))   # transformers FineGrainedFP8Config default
    skipped, partial = _not_converted(qc.get("modules_to_not_convert"))
    if block is None:
        grid = ScaleGrid(name="weight_scale", rows=0, cols=0, bits=32)
        shape = "per-tensor"
    else:
        rows, cols = (int(v) for v in block)
        if rows < 1 or cols < 1:
            raise ValueError(f"weight_block_size={list(block)} must be positive")
        grid = ScaleGrid(name="weight_scale_inv", rows=rows, cols=cols, bits=32)
        shape = f"{rows}×{cols} blocks"
    fmt = str(qc.get("fmt", "e4m3"))
    return _checkpoint(name=f"fp8-{fmt}-" + ("tensor" if block is None else f"block{grid.rows}x{grid.cols}"),
                       bits=8, kind="fp8", grids=(grid,), keeps=_ALL_KEPT | skipped, partial=partial,
                       note=f"FP8 {fmt} checkpoint, one fp32 scale per {shape}")


def _fbgemm_fp8(qc: Mapping[str, Any], dtype: DType) -> Quant:
    skipped, partial = _not_converted(qc.get("modules_to_not_convert"))
    return _checkpoint(name="fp8-channel", bits=8, kind="fp8",
                       grids=(ScaleGrid(name="weight_scale", rows=1, cols=0, bits=32),),
                       keeps=_ALL_KEPT | skipped, partial=partial,
                       note="FP8 e4m3 checkpoint (fbgemm), one fp32 scale per output row")


def _mxfp4(qc: Mapping[str, Any], dtype: DType) -> Quant:
    # transformers converts only the MoE experts (replace_with_mxfp4_linear); the listed modules stay bf16
    return _checkpoint(name="mxfp4-experts", bits=4, kind="mxfp4",
                       grids=(ScaleGrid(name="scales", rows=1, cols=32, bits=8),),
                       keeps=_ALL_KEPT, targets=frozenset({"experts"}), partial=(),
                       note="MXFP4 checkpoint: MoE experts as 4-bit e2m1 codes and one e8m0 scale per 32 "
                            "inputs; attention, router, embeddings and head in bf16")


def _gptq(qc: Mapping[str, Any], dtype: DType) -> Quant:
    bits = _bits(qc.get("bits", 4), field="bits")
    group = _group(qc.get("group_size", 128))
    skipped, partial = _not_converted(qc.get("modules_to_not_convert"))
    keeps = _ALL_KEPT | skipped
    if qc.get("lm_head") is True:
        keeps -= {"lm_head"}
    grids = (ScaleGrid(name="scales", rows=1, cols=group, bits=16),
             ScaleGrid(name="qzeros", rows=1, cols=group, bits=bits, pack_bits=32),
             ScaleGrid(name="g_idx", rows=0, cols=1, bits=32))
    desc = "act-order" if qc.get("desc_act") else "no act-order"
    return _checkpoint(name=f"gptq-{bits}bit-" + (f"g{group}" if group else "channel"), bits=bits,
                       kind="gptq", grids=grids, keeps=keeps, partial=partial,
                       note=f"GPTQ {bits}-bit checkpoint, group size {group or 'whole row'} ({desc}): "
                            "packed int32 codes and zeros, fp16 scales, int32 g_idx")


def _awq(qc: Mapping[str, Any], dtype: DType) -> Quant:
    bits = _bits(qc.get("bits", qc.get("w_bit", 4)), field="bits")
    group = _group(qc.get("group_size", qc.get("q_group_size", 128)))
    skipped, partial = _not_converted(qc.get("modules_to_not_convert"))
    grids: tuple[ScaleGrid, ...] = (ScaleGrid(name="scales", rows=1, cols=group, bits=16),)
    if qc.get("zero_point", True):
        grids += (ScaleGrid(name="qzeros", rows=1, cols=group, bits=bits, pack_bits=32),)
    version = str(qc.get("version", "gemm")).lower()
    return _checkpoint(name=f"awq-{bits}bit-" + (f"g{group}" if group else "channel"), bits=bits,
                       kind="awq", grids=grids, keeps=_ALL_KEPT | skipped, partial=partial,
                       note=f"AWQ {bits}-bit {version} checkpoint, group size {group or 'whole row'}: "
                            "packed int32 codes and zeros, fp16 scales")


_CT_STRATEGY = {"tensor": (0, 0), "channel": (1, 0)}


def _compressed_tensors(qc: Mapping[str, Any], dtype: DType) -> Quant | None:
    groups = qc.get("config_groups") or {}
    if not isinstance(groups, Mapping) or not groups:
        raise ValueError("config_groups is missing or empty")
    skipped, partial = _not_converted(qc.get("ignore"))
    schemes = [g for g in groups.values() if isinstance(g, Mapping) and isinstance(g.get("weights"), Mapping)]
    if not schemes:
        raise ValueError("no config group quantizes weights")
    scheme = schemes[0]
    weights = scheme["weights"]
    bits = _bits(weights.get("num_bits", 8), field="weights.num_bits")
    kind_type = str(weights.get("type", "int")).lower()
    fmt = str(scheme.get("format") or qc.get("format") or "").lower()
    strategy = str(weights.get("strategy", "tensor")).lower()
    if strategy in _CT_STRATEGY:
        rows, cols = _CT_STRATEGY[strategy]
    elif strategy in ("group", "tensor-group", "tensor_group"):
        rows, cols = 1, _group(weights.get("group_size"))
    elif strategy == "block":
        rows, cols = (int(v) for v in weights["block_structure"])
    else:
        raise ValueError(f"weights.strategy={strategy!r} is not one memfit sizes")
    scale_bits = dtype.bits
    grids: list[ScaleGrid] = []
    label = f"{kind_type}{bits}"
    if fmt.startswith("nvfp4") or (kind_type == "float" and bits == 4 and cols == 16):
        scale_bits, label = 8, "nvfp4"
        grids += [ScaleGrid(name="weight_global_scale", rows=0, cols=0, bits=32),
                  ScaleGrid(name="input_global_scale", rows=0, cols=0, bits=32)]
    elif fmt.startswith("mxfp4") or (kind_type == "float" and bits == 4):
        scale_bits, label = 8, "mxfp4"
    grids.insert(0, ScaleGrid(name="weight_scale", rows=rows, cols=cols, bits=scale_bits))
    packed = fmt.startswith("pack") or bits < 8
    if weights.get("symmetric", True) is False:
        grids.append(ScaleGrid(name="weight_zero_point", rows=rows, cols=cols, bits=bits if packed else 8,
                               pack_bits=32 if packed else 0))
    if packed:
        grids.append(ScaleGrid(name="weight_shape", rows=0, cols=0, bits=128))
    targets = _targets(scheme.get("targets"))
    where = f"per {cols} inputs" if cols else ("per output row" if rows == 1 else "per tensor")
    return _checkpoint(name=f"ct-{label}-{strategy}" + (f"{cols}" if strategy == "group" else ""),
                       bits=bits, kind="compressed-tensors", grids=tuple(grids), keeps=_ALL_KEPT | skipped,
                       targets=targets, partial=partial,
                       note=f"compressed-tensors {fmt or 'quantized'} checkpoint: {bits}-bit {kind_type} "
                            f"weights, scales {where}")


def _targets(targets: Any) -> frozenset[str] | None:
    """The roles a compressed-tensors group's `targets` converts; None for every Linear."""
    if targets is None:
        return None
    names = [str(t) for t in targets]
    if any(t == "Linear" or t.endswith("Linear") for t in names):
        return None
    roles, _ = _not_converted(names)
    return roles or None


def _bitsandbytes(qc: Mapping[str, Any], dtype: DType) -> Quant:
    if qc.get("load_in_8bit"):
        base = quant("int8")
    elif qc.get("load_in_4bit", True):
        kind = str(qc.get("bnb_4bit_quant_type", "fp4")).lower()
        if kind not in ("nf4", "fp4"):
            raise ValueError(f"bnb_4bit_quant_type={kind!r} (expected nf4 or fp4)")
        base = quant(f"{kind}-dq" if qc.get("bnb_4bit_use_double_quant") else kind)
    else:
        raise ValueError("neither load_in_4bit nor load_in_8bit is set")
    skipped, _ = _not_converted(qc.get("llm_int8_skip_modules"))
    return Quant(name=base.name, bits_per_weight=base.bits_per_weight, kind=base.kind,
                 row_overhead_bits=base.row_overhead_bits, tensor_overhead_bits=base.tensor_overhead_bits,
                 keeps=base.keeps | skipped, runtimes=base.runtimes, checkpoint=True,
                 note=f"bitsandbytes checkpoint saved quantized: {base.note}")


def _modelopt(qc: Mapping[str, Any], dtype: DType, *, prefix: str = "modelopt-") -> Quant | None:
    algo = str(qc.get("quant_algo", "")).upper()
    skipped, partial = _not_converted(qc.get("exclude_modules") or qc.get("ignore"))
    per_tensor = ScaleGrid(name="input_scale", rows=0, cols=0, bits=32)
    if algo == "FP8":
        return _checkpoint(name="modelopt-fp8", bits=8, kind="fp8", keeps=_ALL_KEPT | skipped,
                           partial=partial,
                           grids=(ScaleGrid(name="weight_scale", rows=0, cols=0, bits=32), per_tensor),
                           note="ModelOpt FP8 checkpoint: e4m3 weights, fp32 weight and input scale per "
                                "matrix")
    if algo == "NVFP4":
        group = _group(qc.get("group_size", 16)) or 16
        return _checkpoint(name=f"{prefix}nvfp4-g{group}", bits=4, kind="nvfp4", keeps=_ALL_KEPT | skipped,
                           partial=partial,
                           grids=(ScaleGrid(name="weight_scale", rows=1, cols=group, bits=8),
                                  ScaleGrid(name="weight_scale_2", rows=0, cols=0, bits=32), per_tensor),
                           note=f"NVFP4 checkpoint: e2m1 codes, an fp8 scale per {group} inputs, fp32 "
                                "global scales")
    return None


def _nvfp4(qc: Mapping[str, Any], dtype: DType) -> Quant | None:
    """transformers' own nvfp4 quant_method: the NVFP4 layout of modelopt."""
    return _modelopt({**qc, "quant_algo": "NVFP4"}, dtype, prefix="")


def _hqq(qc: Mapping[str, Any], dtype: DType) -> Quant:
    params = qc.get("quant_config", {}).get("weight_quant_params", qc)
    bits = _bits(params.get("nbits", 4), field="nbits", allowed=(1, 2, 3, 4, 8))
    group = _group(params.get("group_size", 64))
    skipped, partial = _not_converted(qc.get("skip_modules"))
    grids = (ScaleGrid(name="scale", rows=1, cols=group, bits=16),
             ScaleGrid(name="zero", rows=1, cols=group, bits=16))
    return _checkpoint(name=f"hqq-{bits}bit-g{group}", bits=bits, kind="hqq", grids=grids,
                       keeps=_ALL_KEPT | skipped, partial=partial,
                       note=f"HQQ {bits}-bit checkpoint, fp16 scale and zero per {group} weights")


def _torchao(qc: Mapping[str, Any], dtype: DType) -> Quant | None:
    quant_type = qc.get("quant_type")
    if isinstance(quant_type, Mapping):
        quant_type = quant_type.get("default", quant_type)
    kind = str(quant_type.get("_type", "") if isinstance(quant_type, Mapping) else quant_type).lower()
    data = quant_type.get("_data", {}) if isinstance(quant_type, Mapping) else {}
    skipped, partial = _not_converted(qc.get("modules_to_not_convert"))
    if "int4weightonly" in kind or kind == "int4_weight_only":
        group = _group(data.get("group_size", 128))
        grids = (ScaleGrid(name="scale", rows=1, cols=group, bits=dtype.bits),
                 ScaleGrid(name="zero", rows=1, cols=group, bits=dtype.bits))
        return _checkpoint(name=f"torchao-int4-g{group}", bits=4, kind="torchao", grids=grids,
                           keeps=_ALL_KEPT | skipped, partial=partial,
                           note=f"torchao int4 weight-only checkpoint, scale and zero per {group} weights")
    for marker, bits, label in (("int8", 8, "int8"), ("float8", 8, "fp8")):
        if marker in kind:
            return _checkpoint(name=f"torchao-{label}", bits=bits, kind="torchao",
                               grids=(ScaleGrid(name="scale", rows=1, cols=0, bits=32),),
                               keeps=_ALL_KEPT | skipped, partial=partial,
                               note=f"torchao {label} checkpoint, one scale per output row")
    return None


def _eetq(qc: Mapping[str, Any], dtype: DType) -> Quant:
    skipped, partial = _not_converted(qc.get("modules_to_not_convert"))
    return _checkpoint(name="eetq-int8", bits=8, kind="eetq",
                       grids=(ScaleGrid(name="weight_scales", rows=1, cols=0, bits=16),),
                       keeps=_ALL_KEPT | skipped, partial=partial,
                       note="EETQ int8 checkpoint, one fp16 scale per output row")


_BUILDERS: dict[str, Callable[[Mapping[str, Any], DType], Quant | None]] = {
    "fp8": _fp8, "fbgemm-fp8": _fbgemm_fp8, "mxfp4": _mxfp4, "gptq": _gptq, "awq": _awq,
    "compressed-tensors": _compressed_tensors, "bitsandbytes": _bitsandbytes, "modelopt": _modelopt,
    "hqq": _hqq, "torchao": _torchao, "eetq": _eetq,
    "nvfp4": _nvfp4,
}
