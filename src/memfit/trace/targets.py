"""Every library internal the trace patches or mirrors, checked before a trace runs (worker side).

A patch whose target was renamed does nothing, and a mirrored code path whose original changed keyword
answers for code that no longer exists: either gives a wrong peak without complaint. `check()` resolves
each target, checks the parameters memfit relies on, and, for a module global memfit replaces, that its
caller still looks it up by that name (so the replacement takes effect). Any failure refuses the trace in
one line naming the target and the installed version, whatever MEMFIT_TRACE_UNVERIFIED says.

`cache_argument()` answers the one keyword that moved in the verified range: transformers 5.24 renamed the
cache argument of forward(), generate() and its helpers from `past_key_values` to `cache`.
"""

from __future__ import annotations

import importlib
import inspect
from dataclasses import dataclass
from typing import Any

from memfit.core.errors import EngineUnavailable


@dataclass(frozen=True, slots=True, kw_only=True)
class Target:
    """A library object the trace depends on: `path` (module, then attributes), why, what must hold."""

    path: str
    why: str
    params: tuple[str, ...] = ()          # parameters the patch or mirror passes or reads
    called_from: str = ""                 # a function that must call `path`'s last name as a global


TARGETS: tuple[Target, ...] = (
    Target(path="transformers.masking_utils.find_packed_sequence_indices", params=("position_ids",),
           called_from="transformers.masking_utils._preprocess_mask_arguments",
           why="patched: fake position ids look packed"),
    Target(path="transformers.masking_utils._ignore_causal_mask_sdpa",
           params=("padding_mask", "q_length", "kv_length", "q_offset", "kv_offset", "local_attention_size"),
           called_from="transformers.masking_utils.sdpa_mask",
           why="patched: decided from the unpadded length, not fake mask values"),
    Target(path="torch._meta_registrations._meta_grouped_mm_common",
           params=("mat_a", "mat_b", "scale_a", "scale_b", "offs", "bias", "scale_result", "out_dtype",
                   "use_fast_accum"),
           called_from="torch._meta_registrations.meta_grouped_mm",
           why="patched: fp32/fp16 grouped mm as CUDA's fallback runs it"),
    Target(path="torch._meta_registrations._create_grouped_mm_output_tensor",
           params=("mat1", "mat2", "offs", "out_dtype"), why="called by the grouped-mm patch"),
    Target(path="torch.cuda.amp.common.amp_definitely_not_available", why="patched: autocast on fake CUDA"),
    Target(path="torch.ops.aten._scaled_dot_product_flash_attention", why="SDPA backend the patch calls"),
    Target(path="torch.ops.aten._scaled_dot_product_efficient_attention", why="SDPA backend the patch calls"),
    Target(path="torch.ops.aten._scaled_dot_product_attention_math", why="SDPA backend the patch calls"),
    Target(path="transformers.generation.utils.GenerationMixin.prepare_inputs_for_generation",
           params=("next_sequence_length", "is_first_iteration"), why="called by the generate loop"),
    Target(path="transformers.generation.utils.GenerationMixin._update_model_kwargs_for_generation",
           params=("outputs", "model_kwargs"), why="called by the generate loop"),
    Target(path="transformers.generation.utils.GenerationMixin._prepare_position_ids_for_generation",
           why="mirrored: position ids as generate() adds them"),
    Target(path="transformers.generation.utils.GenerationMixin._prepare_cache_for_generation",
           why="mirrored: the cache generate() builds (DynamicCache(config), StaticCache max_length - 1)"),
    Target(path="transformers.cache_utils.DynamicCache", params=("config",),
           why="built by the generate loop"),
    Target(path="transformers.cache_utils.StaticCache", params=("config", "max_cache_len"),
           why="built by the generate loop"),
    Target(path="transformers.cache_utils.DynamicSlidingWindowLayer.update",
           why="mirrored: the decode fast-forward keeps sliding_window - 1 tokens"),
    Target(path="transformers.cache_utils.StaticSlidingWindowLayer.update",
           why="mirrored: the decode fast-forward advances cumulative_length_int"),
    Target(path="transformers.integrations.bitsandbytes.replace_with_bnb_linear",
           why="mirrored: which layers the bitsandbytes stand-ins replace"),
    Target(path="transformers.pytorch_utils.Conv1D",
           why="quantized like nn.Linear by replace_with_bnb_linear"),
    Target(path="transformers.optimization.Adafactor", why="the adafactor optimizer"),
    Target(path="peft.get_peft_model", why="LoRA"),
    Target(path="peft.LoraConfig._register_custom_module", params=("mapping",),
           why="LoRA on the bitsandbytes stand-ins"),
    Target(path="peft.prepare_model_for_kbit_training", params=("model", "use_gradient_checkpointing"),
           why="mirrored: QLoRA's fp32 upcast"),
)
"""Source: the patches in trace/patches.py, the generate loop in trace/harness.py, trace/standins.py."""

CACHE_ARGUMENTS = ("cache", "past_key_values")
"""The cache keyword of forward() and generate()'s helpers: `cache` from transformers 5.24, before it
`past_key_values`. Source: transformers 5.24.0 generation/utils.py prepare_inputs_for_generation."""


def resolve(path: str) -> Any:
    """The object at a dotted path: the longest importable module prefix, then attributes."""
    parts = path.split(".")
    for cut in range(len(parts), 0, -1):
        try:
            obj: Any = importlib.import_module(".".join(parts[:cut]))
        except ImportError:
            continue
        for name in parts[cut:]:
            obj = getattr(obj, name)
        return obj
    raise ImportError(f"no module in {path}")


def _parameters(obj: Any) -> set[str]:
    target = obj.__init__ if inspect.isclass(obj) else obj
    try:
        return set(inspect.signature(inspect.unwrap(target)).parameters)
    except (TypeError, ValueError):
        return set()


def problem(target: Target) -> str | None:
    """Why `target` no longer holds in the installed libraries, or None when it does."""
    try:
        obj = resolve(target.path)
    except (ImportError, AttributeError):
        return f"{target.path} is gone ({target.why})"
    missing = [p for p in target.params if p not in _parameters(obj)]
    if missing:
        return f"{target.path} no longer takes {', '.join(missing)} ({target.why})"
    if target.called_from:
        try:
            caller = inspect.unwrap(resolve(target.called_from))
        except (ImportError, AttributeError):
            return f"{target.called_from} is gone, so patching {target.path} may not take effect"
        name = target.path.rsplit(".", 1)[1]
        if name not in getattr(getattr(caller, "__code__", None), "co_names", ()):
            return f"{target.called_from} no longer calls {name}, so the patch does not take effect"
    return None


def cache_argument() -> str | None:
    """The cache keyword generate()'s helpers take in the installed transformers ("cache" or
    "past_key_values"), or None when neither."""
    try:
        from transformers.generation.utils import GenerationMixin
    except ImportError:
        return None
    params = _parameters(GenerationMixin.prepare_inputs_for_generation)
    return next((name for name in CACHE_ARGUMENTS if name in params), None)


def problems() -> list[str]:
    """Every target that does not hold, plus the cache keyword when neither name is found."""
    found = [p for p in (problem(t) for t in TARGETS) if p is not None]
    if cache_argument() is None:
        found.append("GenerationMixin.prepare_inputs_for_generation takes neither `cache` nor "
                     "`past_key_values`")
    return found


def check(versions_note: str) -> None:
    """Refuse the trace in one line when any target does not hold."""
    found = problems()
    if found:
        more = f" (and {len(found) - 1} more)" if len(found) > 1 else ""
        raise EngineUnavailable(f"the trace cannot follow the installed libraries ({versions_note}): "
                                f"{found[0]}{more}; install the verified versions from memfit's "
                                "constraints.txt, or use engine=analytic")
