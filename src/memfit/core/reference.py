"""Classic published rules of thumb for LLM memory, as named methods shown beside memfit's own estimate.

Each method is a pure function `(spec, workload, *, num_params=None) -> ReferenceResult | None`: it applies
its source's rule *as the source writes it*, quirks included, and returns None when the rule says nothing
about the workload (a fine-tuning rule asked about inference, a 16-bit rule asked about int4 weights).
`num_params` defaults to `count_params(spec).num_params`; a worked example that used a rounded count ("104B")
passes that count to reproduce the source's own numbers.

Units: every result carries the unit the source printed (`unit`) and what that unit meant in the source's
arithmetic (`unit_bytes`): the Command-R+ notebook prints "GB" but divides by 1024**3, so its GB is 2**30
bytes; the "4X GB" rule multiplies billions by bytes, so its GB is 10**9 bytes. `nbytes` is always exact
integer bytes (fractions rounded up); `value` is `nbytes` in the source's unit, as the source would print it.

Sources (the four seed write-ups of memfit issue 5, and EleutherAI):
- commandr-*: "Estimating Memory Consumption of LLMs for Inference and Fine-Tuning for Cohere Command-R+",
  Hugging Face community article, 2024-04-26, section "Code Implementation".
- optmem-*: "Optimizing Memory for Large Language Model Inference and Fine-Tuning" (11 min read), sections
  "Understanding Memory Requirements" and "Estimating Memory for Fine-Tuning".
- specs-*: "Figuring out general specs for running LLM models" (Ali Hasan, Q&A page), Solutions 1 and 2.
- deepdive-*: "Understanding Large Language Model Parameters and Memory Requirements: A Deep Dive", sections
  "Calculating Model Memory", "Estimating Working Memory", "Steady-State Memory Usage", "Peak Memory Usage".
- eleuther-*: "Transformer Math 101" (Anthony, Biderman, Schoelkopf; EleutherAI blog, 2023-04-18),
  section "Inference": Total Inference Memory ≈ 1.2 × Model Memory.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from fractions import Fraction

from memfit.core.choices import Method, Optimizer, Precision
from memfit.core.errors import InvalidWorkload
from memfit.core.spec import ModelSpec
from memfit.core.units import GB, MB, GiB
from memfit.core.workload import Inference, Training

Workload = Inference | Training


@dataclass(frozen=True, slots=True, kw_only=True)
class ReferenceResult:
    """One classic rule applied to one job: exact bytes, and the unit the source printed them in."""

    name: str               # key in REFERENCE_METHODS
    source: str             # title, and where in it the rule is
    formula: str            # the rule as the source writes it, with our reading of its symbols
    unit: str               # the unit the source printed ("GB", "MB", "B")
    unit_bytes: int         # what that unit meant in the source's arithmetic (10**9, 2**30, 10**6, 1)
    unit_note: str          # how we know which convention the source used
    nbytes: int             # exact bytes, fractions rounded up
    note: str = ""          # quirks kept on purpose, and inputs the rule was given

    @property
    def value(self) -> Fraction:
        """`nbytes` in the source's own unit (exact; the source rounds it when printing)."""
        return Fraction(self.nbytes, self.unit_bytes)


ReferenceMethod = Callable[..., ReferenceResult | None]

# --- shared inputs -------------------------------------------------------------------------------------

ADAM_FAMILY = frozenset({Optimizer.ADAMW, Optimizer.ADAMW_FUSED, Optimizer.ADAMW_LOOP, Optimizer.ADAM,
                         Optimizer.ADAMW_8BIT, Optimizer.PAGED_ADAMW_8BIT, Optimizer.PAGED_ADAMW_32BIT})
"""Optimizers with two moments per parameter: the only ones the Adam-based rules describe."""

EIGHT_BIT_ADAM = frozenset({Optimizer.ADAMW_8BIT, Optimizer.PAGED_ADAMW_8BIT})
"""Adam variants whose two moments are 8-bit (bitsandbytes): the notebook's o = 8."""


def _num_params(spec: ModelSpec, num_params: int | None) -> int:
    if num_params is not None:
        if num_params < 1:
            raise InvalidWorkload(f"num_params={num_params} must be at least 1")
        return num_params
    from memfit.core.params import count_params

    return count_params(spec).num_params


def _ceil(amount: Fraction | int) -> int:
    amount = Fraction(amount)
    return -(-amount.numerator // amount.denominator)


def _weight_bits(spec: ModelSpec, workload: Workload) -> int:
    """Nominal bits per weight, the 'precision' these rules take: 32, 16, 8 or 4 (quant scales left out)."""
    if isinstance(workload, Training) and not workload.quant.is_quantized:
        return 32 if workload.precision in (Precision.FP32, Precision.AMP_BF16, Precision.AMP_FP16) else 16
    if workload.quant.is_quantized:
        bits = workload.quant.bits_per_weight   # nf4 9/2, gptq-4bit-g128 133/32: nominal 4
        return bits.numerator // bits.denominator
    dtype = (workload.dtype if isinstance(workload, Inference) else None) or spec.checkpoint_dtype
    return dtype.bits


def _model_bytes(spec: ModelSpec, workload: Workload, num_params: int | None) -> int:
    """Parameters × nominal weight bits ÷ 8: the 'model memory' every source starts from."""
    return _ceil(Fraction(_num_params(spec, num_params) * _weight_bits(spec, workload), 8))


def _num_heads(spec: ModelSpec) -> int:
    """The rules' `a`: attention heads of the first attention layer (0 for a model without attention)."""
    return spec.attention_specs[0].num_heads if spec.attention_specs else 0


def _tokens(workload: Workload) -> tuple[int, int]:
    """(s, b): tokens per sequence and sequences per batch, as the rules' s (or S) and b (or B)."""
    if isinstance(workload, Training):
        return workload.seq_len, workload.batch_size
    return workload.total_tokens, workload.batch_size


def _full_adam_training(workload: Workload) -> Training | None:
    """The workload if it is full fine-tuning with an Adam-family optimizer (the training rules' case)."""
    if not isinstance(workload, Training):
        return None
    return workload if workload.method is Method.FULL and workload.optimizer in ADAM_FAMILY else None


# --- "Estimating Memory Consumption of LLMs ... Command-R+" (seed 000) -------------------------------

COMMANDR_SOURCE = ("Estimating Memory Consumption of LLMs for Inference and Fine-Tuning for Cohere "
                   "Command-R+ (Hugging Face community article, 2024-04-26), section 'Code Implementation'")
COMMANDR_UNIT_NOTE = ("prints 'GB' but divides bytes by 1024**3 (estimate_model_size: "
                      "n*p/8*(1000**3)/(1024**3)), so its GB is GiB = 2**30 bytes")
COMMANDR_ACTIVATION_BYTES = 2
"""Bytes per activation element: the notebook multiplies 34sbh + 5as²b by 2 (16-bit activations)."""
COMMANDR_OPTIMIZER_BITS = 32
"""The notebook's default optimizer bitwidth o (bitwidth_optimizer = 32); 8 for 8-bit Adam."""


def _commandr_layer_activation_bytes(spec: ModelSpec, workload: Workload) -> int:
    """(34·s·b·h + 5·a·s²·b) × 2 bytes: one layer, as estimate_consumption() writes it."""
    s, b = _tokens(workload)
    h, a = spec.hidden_size, _num_heads(spec)
    return (34 * s * b * h + 5 * a * s * s * b) * COMMANDR_ACTIVATION_BYTES


def _commandr_optimizer_bytes(spec: ModelSpec, workload: Training, num_params: int | None) -> int:
    bits = 8 if workload.optimizer in EIGHT_BIT_ADAM else COMMANDR_OPTIMIZER_BITS
    return 2 * _num_params(spec, num_params) * bits // 8


def _commandr(name: str, formula: str, nbytes: int, note: str = "") -> ReferenceResult:
    return ReferenceResult(name=name, source=COMMANDR_SOURCE, formula=formula, unit="GB", unit_bytes=GiB,
                           unit_note=COMMANDR_UNIT_NOTE, nbytes=nbytes, note=note)


def commandr_model(spec: ModelSpec, workload: Workload, *, num_params: int | None = None) -> ReferenceResult:
    """Model memory, bytes: n × p / 8 (estimate_model_size; p = the weights' bitwidth)."""
    return _commandr("commandr-model", "n · p / 8  (n parameters, p bits each)",
                     _model_bytes(spec, workload, num_params))


def commandr_optimizer(spec: ModelSpec, workload: Workload, *,
                       num_params: int | None = None) -> ReferenceResult | None:
    """Optimizer memory, bytes: 2 × n × o / 8 (estimate_optimizer_size; two Adam moments of o bits)."""
    training = _full_adam_training(workload)
    if training is None:
        return None
    return _commandr("commandr-optimizer", "2 · n · o / 8  (two moments of o = 32 bits; 8 for 8-bit Adam)",
                     _commandr_optimizer_bytes(spec, training, num_params))


def commandr_activations_train(spec: ModelSpec, workload: Workload, *,
                               num_params: int | None = None) -> ReferenceResult | None:
    """Fine-tuning activations, bytes: L × (34·s·b·h + 5·a·s²·b) × 2."""
    if not isinstance(workload, Training):
        return None
    return _commandr("commandr-activations-train", "L · (34·s·b·h + 5·a·s²·b) · 2",
                     spec.num_layers * _commandr_layer_activation_bytes(spec, workload),
                     note="the notebook multiplies the per-layer GB after rounding it to 2 decimals")


def commandr_activations_infer(spec: ModelSpec, workload: Workload, *,
                               num_params: int | None = None) -> ReferenceResult | None:
    """Inference activations, bytes: (34·s·b·h + 5·a·s²·b) × 2, one layer's worth, as the notebook prints."""
    if not isinstance(workload, Inference):
        return None
    return _commandr("commandr-activations-infer", "(34·s·b·h + 5·a·s²·b) · 2  (one layer, not × L)",
                     _commandr_layer_activation_bytes(spec, workload),
                     note="s = prompt + new tokens; the notebook counts a single layer's activations")


def commandr_infer_total(spec: ModelSpec, workload: Workload, *,
                         num_params: int | None = None) -> ReferenceResult | None:
    """Inference total, bytes: model + one layer's activations."""
    if not isinstance(workload, Inference):
        return None
    total = (_model_bytes(spec, workload, num_params)
             + _commandr_layer_activation_bytes(spec, workload))
    return _commandr("commandr-infer-total", "n·p/8 + (34·s·b·h + 5·a·s²·b)·2", total,
                     note="no KV cache term; activations of one layer")


def commandr_train_total(spec: ModelSpec, workload: Workload, *,
                         num_params: int | None = None) -> ReferenceResult | None:
    """Fine-tuning total, bytes: model + optimizer + L layers of activations (no gradients term)."""
    training = _full_adam_training(workload)
    if training is None:
        return None
    total = (_model_bytes(spec, training, num_params)
             + _commandr_optimizer_bytes(spec, training, num_params)
             + spec.num_layers * _commandr_layer_activation_bytes(spec, training))
    return _commandr("commandr-train-total", "n·p/8 + 2·n·o/8 + L·(34·s·b·h + 5·a·s²·b)·2", total,
                     note="the notebook's total has no gradients term")


# --- "Optimizing Memory for Large Language Model Inference and Fine-Tuning" (seed 001) ----------------

OPTMEM_SOURCE = "Optimizing Memory for Large Language Model Inference and Fine-Tuning"
OPTMEM_UNIT_NOTE = ("'X billion parameters → 4X GB': billions times bytes per parameter, so its GB is "
                    "10**9 bytes (its example: 175B in bfloat16 → 350GB)")
OPTMEM_LOAD_BYTES_PER_PARAM = {32: 4, 16: 2}
"""Bytes per parameter by weight bits: '4X GB ... 32-bit float', '2X GB ... 16-bit bfloat16/float16'."""
OPTMEM_FINETUNE_BYTES_PER_PARAM = 8
"""'fine-tuning an LLM with X billion parameters requires around 4 * (2X) = 8X GB ... in bfloat16'."""


def optmem_load(spec: ModelSpec, workload: Workload, *,
                num_params: int | None = None) -> ReferenceResult | None:
    """Memory to load the model for inference, bytes: 4 per parameter in fp32, 2 in 16-bit; no others."""
    if not isinstance(workload, Inference):
        return None
    per_param = OPTMEM_LOAD_BYTES_PER_PARAM.get(_weight_bits(spec, workload))
    if per_param is None:
        return None
    return ReferenceResult(
        name="optmem-load", source=f"{OPTMEM_SOURCE}, section 'Understanding Memory Requirements'",
        formula="4X GB in fp32, 2X GB in bfloat16/float16 (X = billions of parameters)", unit="GB",
        unit_bytes=GB, unit_note=OPTMEM_UNIT_NOTE, nbytes=per_param * _num_params(spec, num_params),
        note="weights only: the rule has no activation or KV cache term")


def optmem_finetune(spec: ModelSpec, workload: Workload, *,
                    num_params: int | None = None) -> ReferenceResult | None:
    """Full fine-tuning in 16-bit, bytes: 8 per parameter ('4 * (2X) = 8X GB')."""
    if not (isinstance(workload, Training) and workload.method is Method.FULL
            and workload.precision in (Precision.BF16, Precision.FP16)):
        return None
    return ReferenceResult(
        name="optmem-finetune-8x", source=f"{OPTMEM_SOURCE}, section 'Estimating Memory for Fine-Tuning'",
        formula="4 · (2X) = 8X GB in bfloat16 (X = billions of parameters)", unit="GB", unit_bytes=GB,
        unit_note=OPTMEM_UNIT_NOTE, nbytes=OPTMEM_FINETUNE_BYTES_PER_PARAM * _num_params(spec, num_params),
        note="'a conservative estimate'; independent of batch size and sequence length")


# --- "Figuring out general specs for running LLM models" (seed 002) -----------------------------------

SPECS_SOURCE = "Figuring out general specs for running LLM models (Ali Hasan, Q&A page)"


def specs_activation_elements(spec: ModelSpec, workload: Workload) -> Fraction:
    """The answer's 'activations' term, as written: l·(5/2)·a·b·s² + 17·b·h·s (only the first term × l)."""
    s, b = _tokens(workload)
    h, a, l = spec.hidden_size, _num_heads(spec), spec.num_layers  # noqa: E741
    return l * Fraction(5, 2) * a * b * s * s + 17 * b * h * s


def specs_total(spec: ModelSpec, workload: Workload, *,
                num_params: int | None = None) -> ReferenceResult | None:
    """Inference total, bytes: p·(params + activations) bits with p the weights' bits, divided by 8."""
    if not isinstance(workload, Inference):
        return None
    p = _weight_bits(spec, workload)
    bits = p * (_num_params(spec, num_params) + specs_activation_elements(spec, workload))
    return ReferenceResult(
        name="specs-p-params-activations",
        source=f"{SPECS_SOURCE}, Solution 1 'Computing GPU RAM Requirement for LLM Models'",
        formula="p · (params + activations), activations = l·(5/2)·a·b·s² + 17·b·h·s; p = 32 for float32",
        unit="GB", unit_bytes=GiB,
        unit_note=("p is in bits, so the product is bits: ÷ 8 gives bytes, and the answer's own example "
                   "(7B, p=32, b=1, s=2048, l=32, a=32, h=4096 → 'approximately 66 GB') is 71.5e9 bytes "
                   "= 66.6 × 2**30: its GB is GiB"),
        nbytes=_ceil(bits / 8),
        note=("kept as written: 17·b·h·s is not multiplied by l, and the per-layer 34 and 5 are halved; "
              "p for quantized weights is their nominal bits ('bit quantization ... about 8 GB' is p = 4)"))


def specs_two_bytes(spec: ModelSpec, workload: Workload, *,
                    num_params: int | None = None) -> ReferenceResult | None:
    """Inference, bytes: 2 per parameter ('float16 ... uses 2 bytes per parameter')."""
    if not isinstance(workload, Inference):
        return None
    return ReferenceResult(
        name="specs-2-bytes-per-param",
        source=f"{SPECS_SOURCE}, Solution 2 'How much VRAM do you need to run the model?'",
        formula="params (in billions) × 2 = GB of VRAM in float16", unit="GB", unit_bytes=GB,
        unit_note="billions × 2 bytes, so its GB is 10**9 bytes (its example: 7B → 14GB)",
        nbytes=2 * _num_params(spec, num_params),
        note="assumes float16 whatever dtype the workload names")


# --- "Understanding LLM Parameters and Memory Requirements: A Deep Dive" (seed 003) -------------------

DEEPDIVE_SOURCE = "Understanding Large Language Model Parameters and Memory Requirements: A Deep Dive"
DEEPDIVE_MB_NOTE = ("'123,383,808 * 4 bytes = 493,535,232 bytes ≈ 494 MB': its MB is 10**6 bytes "
                    "(and its GB 10**9: '988 MB ≈ 1 GB')")
DEEPDIVE_BYTES_NOTE = "the formulas are written in bytes"
DEEPDIVE_INFERENCE_FACTOR = 2
"""'Working Memory ≈ 2 * Model Memory' (inference)."""
DEEPDIVE_TRAINING_FACTOR = 4
"""'Training Memory ≈ 4 * Model Memory'."""


def _deepdive(name: str, section: str, formula: str, nbytes: int, *, unit: str = "MB",
              note: str = "") -> ReferenceResult:
    unit_bytes, unit_note = (MB, DEEPDIVE_MB_NOTE) if unit == "MB" else (1, DEEPDIVE_BYTES_NOTE)
    return ReferenceResult(name=name, source=f"{DEEPDIVE_SOURCE}, section '{section}'", formula=formula,
                           unit=unit, unit_bytes=unit_bytes, unit_note=unit_note, nbytes=nbytes, note=note)


def deepdive_model(spec: ModelSpec, workload: Workload, *, num_params: int | None = None) -> ReferenceResult:
    """Model memory, bytes: number of parameters × bytes per parameter (4 in fp32, 2 in 16-bit)."""
    return _deepdive("deepdive-model", "Calculating Model Memory",
                     "Model Memory (bytes) = Number of parameters * Bytes per parameter",
                     _model_bytes(spec, workload, num_params))


def deepdive_inference(spec: ModelSpec, workload: Workload, *,
                       num_params: int | None = None) -> ReferenceResult | None:
    """Inference working memory, bytes: 2 × model memory."""
    if not isinstance(workload, Inference):
        return None
    return _deepdive("deepdive-inference-2x", "Estimating Working Memory",
                     "Working Memory ≈ 2 * Model Memory",
                     DEEPDIVE_INFERENCE_FACTOR * _model_bytes(spec, workload, num_params),
                     note="its example doubles the rounded 494 MB: 988 MB")


def deepdive_training(spec: ModelSpec, workload: Workload, *,
                      num_params: int | None = None) -> ReferenceResult | None:
    """Training memory, bytes: 4 × model memory (full fine-tuning; model memory at the parameter dtype)."""
    if not (isinstance(workload, Training) and workload.method is Method.FULL):
        return None
    return _deepdive("deepdive-training-4x", "Estimating Working Memory",
                     "Training Memory ≈ 4 * Model Memory",
                     DEEPDIVE_TRAINING_FACTOR * _model_bytes(spec, workload, num_params),
                     note="its example quadruples the rounded 494 MB: 1,976 MB")


def _deepdive_steady_bytes(spec: ModelSpec, training: Training, num_params: int | None) -> int:
    """16N + 8BD: fp32 weights 4N, Adam states 8N, fp32 gradients 4N, int64 inputs 8BD (D = seq_len)."""
    return 16 * _num_params(spec, num_params) + 8 * training.batch_size * training.seq_len


def _deepdive_activation_bytes(spec: ModelSpec, training: Training) -> int:
    """L·(14E + 4BSS) + 6BSV with E = BSH, as written (its listed parts add up to 20E, not 14E)."""
    b, s = training.batch_size, training.seq_len
    e = b * s * spec.hidden_size
    return spec.num_layers * (14 * e + 4 * b * s * s) + 6 * b * s * spec.vocab_size


def deepdive_steady_state(spec: ModelSpec, workload: Workload, *,
                          num_params: int | None = None) -> ReferenceResult | None:
    """Training steady state, bytes: M_steady = 16N + 8BD (Adam, fp32 weights and gradients)."""
    training = _full_adam_training(workload)
    if training is None:
        return None
    return _deepdive("deepdive-steady-state", "Steady-State Memory Usage", "M_steady = 16N + 8BD bytes",
                     _deepdive_steady_bytes(spec, training, num_params), unit="B",
                     note="D, the 'input dimension', is taken as the sequence length in tokens")


def deepdive_activations(spec: ModelSpec, workload: Workload, *,
                         num_params: int | None = None) -> ReferenceResult | None:
    """Training activations, bytes: M_act = L·(14E + 4BSS) + 6BSV, E = B·S·H."""
    if not isinstance(workload, Training):
        return None
    return _deepdive("deepdive-activations", "Peak Memory Usage",
                     "M_act = L * (14E + 4BSS) + 6BSV bytes, E = BSH",
                     _deepdive_activation_bytes(spec, workload), unit="B",
                     note="kept as written: its per-block list (4E+2E+2E+2E+8E+2E) sums to 20E, not 14E")


def deepdive_peak(spec: ModelSpec, workload: Workload, *,
                  num_params: int | None = None) -> ReferenceResult | None:
    """Training peak, bytes: M_peak = M_steady + M_act + 4BSV."""
    training = _full_adam_training(workload)
    if training is None:
        return None
    b, s = training.batch_size, training.seq_len
    total = (_deepdive_steady_bytes(spec, training, num_params) + _deepdive_activation_bytes(spec, training)
             + 4 * b * s * spec.vocab_size)
    return _deepdive("deepdive-peak", "Total Peak Memory Usage", "M_peak = M_steady + M_act + 4BSV bytes",
                     total, unit="B", note="4BSV: 'an extra allocation at the start of the backward pass'")


# --- EleutherAI, "Transformer Math 101" ----------------------------------------------------------------

ELEUTHER_SOURCE = ("Transformer Math 101 (Anthony, Biderman, Schoelkopf; EleutherAI blog, 2023-04-18), "
                   "section 'Inference'")
ELEUTHER_INFERENCE_FACTOR = Fraction(6, 5)
"""'Total Inference Memory ≈ 1.2 × Model Memory': forward-pass overhead of at most 20 %."""
ELEUTHER_BYTES_PER_PARAM = {8: 1, 16: 2, 32: 4}
"""Model memory per parameter by weight bits: int8 1 byte, fp16/bf16 2 bytes, fp32 4 bytes."""


def eleuther_inference(spec: ModelSpec, workload: Workload, *,
                       num_params: int | None = None) -> ReferenceResult | None:
    """Inference total, bytes: 1.2 × model memory (int8, 16-bit and fp32 weights only)."""
    if not isinstance(workload, Inference):
        return None
    per_param = ELEUTHER_BYTES_PER_PARAM.get(_weight_bits(spec, workload))
    if per_param is None:
        return None
    return ReferenceResult(
        name="eleuther-inference-1.2x", source=ELEUTHER_SOURCE,
        formula="Total Inference Memory ≈ 1.2 × Model Memory; Model Memory = bytes/param × params",
        unit="B", unit_bytes=1, unit_note="the rule is stated in bytes per parameter, with no GB conversion",
        nbytes=_ceil(ELEUTHER_INFERENCE_FACTOR * per_param * _num_params(spec, num_params)),
        note="no KV cache or sequence-length term")


# --- registry -------------------------------------------------------------------------------------------

REFERENCE_METHODS: dict[str, ReferenceMethod] = {
    "commandr-model": commandr_model,
    "commandr-optimizer": commandr_optimizer,
    "commandr-activations-train": commandr_activations_train,
    "commandr-activations-infer": commandr_activations_infer,
    "commandr-infer-total": commandr_infer_total,
    "commandr-train-total": commandr_train_total,
    "optmem-load": optmem_load,
    "optmem-finetune-8x": optmem_finetune,
    "specs-p-params-activations": specs_total,
    "specs-2-bytes-per-param": specs_two_bytes,
    "deepdive-model": deepdive_model,
    "deepdive-inference-2x": deepdive_inference,
    "deepdive-training-4x": deepdive_training,
    "deepdive-steady-state": deepdive_steady_state,
    "deepdive-activations": deepdive_activations,
    "deepdive-peak": deepdive_peak,
    "eleuther-inference-1.2x": eleuther_inference,
}
"""Every classic rule by name, in source order; each returns None when its source says nothing about a job."""


def reference_estimates(spec: ModelSpec, workload: Workload, names: Iterable[str] = ("all",), *,
                        num_params: int | None = None) -> tuple[ReferenceResult, ...]:
    """The named classic rules applied to one job, skipping those that do not apply to it.

    Args:
        names: keys of REFERENCE_METHODS, or "all".
        num_params: the parameter count to use; None: count_params(spec).num_params.

    Raises:
        InvalidWorkload: a name that is not a reference method (the message lists them).
    """
    wanted = tuple(names)
    if "all" in wanted:
        wanted = tuple(REFERENCE_METHODS)
    unknown = [n for n in wanted if n not in REFERENCE_METHODS]
    if unknown:
        raise InvalidWorkload(f"reference method {unknown[0]!r} is unknown; use all or one of: "
                              f"{', '.join(REFERENCE_METHODS)}")
    count = _num_params(spec, num_params)
    results = (REFERENCE_METHODS[n](spec, workload, num_params=count) for n in wanted)
    return tuple(r for r in results if r is not None)
