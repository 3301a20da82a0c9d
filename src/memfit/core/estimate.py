"""estimate(spec, workload, gpu) → Estimate: the analytic engine, phase by phase.

Inference phases are built in `core/inference.py`, training phases in `core/training.py`; this module only
checks the workload against the GPU (`device_support.workload_for_gpu`), dispatches and attaches the GPU,
which both builders receive (its SDPA backends and BLAS workspace; None: an H100).
"""

from __future__ import annotations

from memfit.core.attention_kinds import modeled_attention
from memfit.core.checkpoint_load import with_loaded_quant
from memfit.core.choices import Engine, Runtime
from memfit.core.device_support import workload_for_gpu
from memfit.core.errors import InvalidWorkload
from memfit.core.result import Estimate, Gpu, KvCapacity
from memfit.core.runtimes import PROFILES
from memfit.core.spec import MIXER_NOT_MODELED, GatedDeltaNetSpec, ModelSpec
from memfit.core.versions import modeled_note
from memfit.core.workload import Inference, Training


def estimate(spec: ModelSpec, workload: Inference | Training, gpu: Gpu | None = None) -> Estimate:
    """The analytic estimate of `workload` on `spec`, per phase, on the most loaded GPU.

    Raises:
        InvalidWorkload: the workload is impossible for this model, or asks `gpu` for a dtype or kernel it
            does not have (the message names the field).
    """
    refuse_unmodeled_mixers(spec, workload)
    workload, gpu_notes = workload_for_gpu(spec, workload, gpu)
    asked = workload                    # the user's job as it runs on this GPU, before the checkpoint loads
    workload, load_notes = with_loaded_quant(spec, workload, gpu)
    capacity_ok: bool | None = None
    capacity: KvCapacity | None = None
    match workload:
        case Inference():
            from memfit.core.inference import inference_parts

            phases, assumptions, capacity = inference_parts(spec, workload, gpu)
            if capacity is not None:   # vLLM on a GPU: fits when its KV capacity holds the batch
                capacity_ok = capacity.holds_batch
        case Training():
            from memfit.core.training import training_phases

            phases, assumptions = training_phases(spec, workload, gpu)
    if PROFILES[workload.runtime].follows_modeled_versions:
        versions = modeled_note(spec.family, attention=modeled_attention(spec, workload.attn))
        assumptions = (*versions, *assumptions)
    if spec.has_mamba:
        assumptions = (*assumptions, *mixer_path_notes(spec))
    return Estimate(engine=Engine.ANALYTIC, model=spec, workload=asked, phases=phases, gpu=gpu,
                    assumptions=(*spec.assumptions, *gpu_notes, *load_notes, *assumptions),
                    required_capacity_ok=capacity_ok, capacity=capacity)


MAMBA_PATH_NOTE = ("Mamba layers: transformers' torch path (mamba2_chunk_scan, or Mamba-1's "
                   "mamba_selective_scan loop; no mamba_ssm / causal_conv1d kernels) is modelled; with those "
                   "CUDA kernels installed the prefill needs far less activation memory. Their cache is a "
                   "fixed-size conv state (compute dtype) and fp32 SSM state per sequence, whatever the "
                   "context")
"""The assumption every estimate of a model with Mamba layers carries."""
DELTA_NET_PATH_NOTE = ("gated DeltaNet layers: transformers' torch path (torch_chunk_gated_delta_rule in "
                       "fp32 chunks of 64, torch_recurrent_gated_delta_rule, the causal conv1d fallback; no "
                       "flash-linear-attention / causal-conv1d kernels) is modelled; with those CUDA kernels "
                       "installed the prefill needs far less activation memory. Their cache is a fixed-size "
                       "conv state (compute dtype) and fp32 recurrent state per sequence, whatever "
                       "the context")
"""The assumption every estimate of a model with gated DeltaNet layers (Qwen3-Next) carries."""


def mixer_path_notes(spec: ModelSpec) -> tuple[str, ...]:
    """The torch-path assumption of each kind of recurrent mixer the model has (Mamba, gated DeltaNet)."""
    delta = [isinstance(layer.mamba, GatedDeltaNetSpec) for layer in spec.layers if layer.mamba is not None]
    return (*((MAMBA_PATH_NOTE,) if not all(delta) else ()), *((DELTA_NET_PATH_NOTE,) if any(delta) else ()))


def refuse_unmodeled_mixers(spec: ModelSpec, workload: Inference | Training) -> None:
    """InvalidWorkload for a model with Mamba (or gated DeltaNet) layers outside what is modelled:
    inference under runtime=transformers on one GPU (training, vLLM, llama.cpp and tp/pp splits are not
    modelled yet)."""
    if not spec.has_mamba:
        return
    what = None
    if isinstance(workload, Training):
        what = "training"
    elif workload.runtime is not Runtime.TRANSFORMERS:
        what = f"runtime={workload.runtime}"
    elif workload.parallel.tp > 1 or workload.parallel.pp > 1 or workload.parallel.device_map is not None:
        what = "splitting it over GPUs (tp, pp, device_map)"
    if what is not None:
        raise InvalidWorkload(MIXER_NOT_MODELED.format(name=spec.name, what=what))
