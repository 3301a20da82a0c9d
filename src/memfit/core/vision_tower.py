"""Images in an inference job: their prompt tokens, and the vision tower's memory while it encodes them.

The image tokens join the prompt: `--prompt-tokens` counts the user's text tokens and each image adds
`tokens_per_image` placeholder tokens (core/vision.py), so the decoder (its KV cache, prefill activations
and logits) runs over text + image tokens (`decoder_workload`). The tower runs once, in the prefill's
forward, before the first decoder layer (Gemma3Model.forward: get_image_features, then masked_scatter
into the text embeddings), on all batch × images images at once; its peak is one more candidate moment of
the prefill phase (`VisionLoad.tower`), beside the decoder's peak layer and the LM head. The projected
image features stay referenced through the decoder and the logits (the model output's
image_hidden_states), and generate() keeps pixel_values in its model kwargs to the end.
Source: transformers 5.17 models/gemma3/modeling_gemma3.py Gemma3Model.forward and
Gemma3ForConditionalGeneration; models/siglip/modeling_siglip.py SiglipVisionEmbeddings,
SiglipEncoderLayer, SiglipAttention, SiglipMLP.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from memfit.core.attention_kinds import eager_bytes_per_score, sdpa_backend
from memfit.core.choices import AttnImpl
from memfit.core.dtypes import DType
from memfit.core.errors import InvalidWorkload
from memfit.core.kv_cache import compute_dtype
from memfit.core.result import Term
from memfit.core.runtimes import RuntimeProfile
from memfit.core.spec import AttentionSpec, ModelSpec
from memfit.core.transients import PYTHON_ACTIVATION_LIVE, SDPA_MASK_ALIGN
from memfit.core.vision import VisionSpec, patches_per_image, resized, tokens_per_image, tower_positions
from memfit.core.workload import Inference


@dataclass(frozen=True, slots=True, kw_only=True)
class VisionLoad:
    """What a job's images add to its prefill: the tower's peak working set (activations, beside the
    weights and the inputs, before any KV cache exists), what the decoder keeps of them, and the inputs."""

    tower: Term             # activations at the tower's peak (text embeddings, tower layer working set)
    features: Term          # image features and the placeholder mask, alive through the decoder and logits
    pixel_values: Term      # the model's pixel_values input, alive for the whole job (generate's kwargs)
    image_tokens: int       # prompt tokens per sequence the images add


def image_tokens(spec: ModelSpec, workload: Inference) -> int:
    """Prompt tokens per sequence the workload's images add (0 without images)."""
    if not workload.images or spec.vision is None:
        return 0
    return workload.images * tokens_per_image(spec.vision, workload.image_size)


def check_images(spec: ModelSpec, workload: Inference, prof: RuntimeProfile) -> None:
    """Images only on a vision-language model, under what memfit models (transformers on one GPU), and
    with text + image tokens within the model's positions.

    Raises:
        InvalidWorkload: one line naming `images` and what would work.
    """
    if not workload.images:
        return
    if spec.vision is None and spec.images_refused:
        raise InvalidWorkload(
            f"images={workload.images} on {spec.name}: {spec.images_refused}; drop --images")
    if spec.vision is None:
        raise InvalidWorkload(f"images={workload.images}: {spec.name} is a text-only model (no vision "
                              "tower); drop --images or pick a vision-language model")
    if not prof.torch_allocator or prof.preallocates_fraction:
        raise InvalidWorkload(f"images={workload.images} is modelled for runtime=transformers only, not "
                              f"runtime={workload.runtime}")
    par = workload.parallel
    if par.tp > 1 or par.pp > 1 or par.device_map is not None:
        raise InvalidWorkload(f"images={workload.images} is modelled on one GPU only; drop --tp, --pp, "
                              "--device-map or --num-gpus")
    added = image_tokens(spec, workload)
    total = workload.total_tokens + added
    if total > spec.max_position_embeddings and not workload.allow_longer:
        raise InvalidWorkload(
            f"images={workload.images} add {added} image tokens: prompt_tokens + image tokens + new_tokens = "
            f"{total} exceeds max_position_embeddings={spec.max_position_embeddings} of {spec.name}")


def decoder_workload(spec: ModelSpec, workload: Inference) -> Inference:
    """The workload the decoder runs: the prompt lengthened by the image tokens, images handed over."""
    added = image_tokens(spec, workload)
    if not added:
        return workload
    cache = workload.max_cache_tokens
    return replace(workload, prompt_tokens=workload.prompt_tokens + added, images=0, image_size=None,
                   max_cache_tokens=None if cache is None else max(cache, workload.total_tokens + added))


def image_assumption(spec: ModelSpec, workload: Inference) -> str:
    """The assumption line naming how the images were counted."""
    vision = spec.vision
    assert vision is not None  # only called with images, after check_images
    height, width = resized(vision, workload.image_size)
    per_image = tokens_per_image(vision, workload.image_size)
    sizing = str(vision.sizing)
    if vision.max_pixels is not None:
        sizing += f" within {vision.min_pixels:,}-{vision.max_pixels:,} px"
    tower = ("" if not vision.packed else "; the packed tower's attention chunk by chunk, rotary copies "
             "in the compute dtype (the fp32 rotary transients not sized); checked on real CPU tensors only "
             "(eager, fp32): the trace cannot feed it")
    if vision.block_mask:
        tower = ("; every image's patches in one tower sequence behind a (patches, patches) block mask in "
                 "the compute dtype; the projector's patch merger not sized (smaller than a tower layer); "
                 "checked on real CPU tensors only (eager, fp32): the trace cannot build the mask on fake "
                 "tensors")
    if vision.deepstack_layers:
        tower += (f"; {len(vision.deepstack_layers)} deepstack features, the tower's output and its fp32 "
                  "resampled position table kept where the model keeps them; the deepstack additions in "
                  "the first decoder layers and the merger moments not sized (smaller than a tower block)")
    return (f"images: {workload.images} per sequence, each {height}x{width} px in the tower "
            f"({patches_per_image(vision, workload.image_size)} patches, {sizing} sizing) and "
            f"{per_image} image tokens: {image_tokens(spec, workload)} tokens added to the "
            f"{workload.prompt_tokens} text tokens of prompt_tokens; pixel_values in the compute dtype; the "
            f"decoder's mask taken as causal over the image tokens (no token_type_ids){tower}")


def vision_load(spec: ModelSpec, workload: Inference) -> VisionLoad | None:
    """The images' memory for the prefill, or None for a text-only job (see the module docstring)."""
    vision = spec.vision
    if not workload.images or vision is None:
        return None
    dt = compute_dtype(spec, workload)
    b, n = workload.batch_size, workload.batch_size * workload.images
    height, width = resized(vision, workload.image_size)
    added = image_tokens(spec, workload)
    tokens = workload.prompt_tokens + added
    pixels = Term(name="pixel_values",
                  nbytes=dt.nbytes(n * vision.num_channels * vision.temporal_patch_size * height * width))
    embeds = Term(name="text_embeds", nbytes=dt.nbytes(b * tokens * spec.hidden_size))
    positions = tower_positions(vision, workload.image_size)
    layer = tower_layer_peak(vision, workload, patches=positions, num_images=n, dtype=dt)
    tower = Term.group("vision_tower", [embeds, layer])
    if vision.position_taps:
        resample = position_resample(vision, rows=n * positions, dtype=dt)
        tower = max(tower, Term.group("vision_tower", [embeds, resample]), key=lambda t: t.nbytes)
    if vision.keeps_hidden_states:
        projector = _projector_peak(vision, num_images=n, positions=positions,
                                    tokens=tokens_per_image(vision, workload.image_size), dtype=dt)
        tower = max(tower, Term.group("vision_tower", [embeds, projector]), key=lambda t: t.nbytes)
    projected = dt.nbytes(b * added * spec.hidden_size)
    features = Term.group("image_features", [
        Term(name="projected", nbytes=projected),
        Term(name="placeholder_mask", nbytes=b * tokens),     # (b, s, 1) bool
        *_kept_tower_outputs(vision, rows=n * positions, projected_bytes=projected, dtype=dt),
    ])
    return VisionLoad(tower=tower, features=features,
                      pixel_values=pixels, image_tokens=added)


def tower_layer_peak(vision: VisionSpec, workload: Inference, *, patches: int, num_images: int,
                     dtype: DType) -> Term:
    """The largest working set of one tower encoder layer over `num_images` images of `patches` patches
    (bytes), under no_grad:
    - the layer input (held by the encoder's loop) throughout, and the patch embeddings (held by
      SiglipVisionTransformer.forward's `hidden_states`) from the second layer on;
    - attention: the normed input, q, k, v (with 2-D RoPE: rotated q and k, and fp32 cos/sin tables for
      every position, Qwen2.5-VL's apply_rotary_pos_emb_vision), the kernel's output and its transposed
      contiguous copy (a packed tower: its chunks' outputs and their cat)
      (SDPA flash / efficient add an fp32 log-sum-exp; math materialises fp32 scores and their softmax;
      eager keeps the scores, their fp32 copy and softmax per (image, head, patch, patch): the decoder's
      generic eager recipe, attention_kinds.eager_bytes_per_score; a packed tower (Qwen2.5-VL) runs one
      image's chunk at a time);
    - MLP: the post-attention residual and the normed input, then fc1's output and its activation, or the
      activation and fc2's output: max(2 I, I + h) per patch (a gated MLP: three intermediates).
    Source: transformers 5.17 SiglipEncoderLayer / SiglipAttention / SiglipMLP and eager_attention_forward;
    integrations/sdpa_attention.py (transpose(1, 2).contiguous() of the output).
    """
    dt = dtype.nbytes(1)
    rows = num_images * patches
    x = rows * vision.hidden_size * dt                     # (images, patches, hidden)
    inter = rows * vision.intermediate_size * dt
    heads, head_dim = vision.num_heads, vision.head_dim
    # a packed tower attends one image (or window) at a time: one image's scores at once; a block-masked
    # tower attends all images' patches at once
    scores = heads * rows * rows if vision.block_mask else \
        (1 if vision.packed else num_images) * heads * patches * patches
    rotated = 2 * x if vision.rotary else 0        # rotated q and k, back in the compute dtype
    parts = [Term(name="normed", nbytes=x), Term(name="qkv", nbytes=3 * x),
             Term(name="rotary_copies", nbytes=rotated), Term(name="output", nbytes=2 * x)]
    if workload.attn is AttnImpl.EAGER:
        mha = AttentionSpec(num_heads=heads, num_kv_heads=heads, head_dim=head_dim)
        per_score = eager_bytes_per_score(mha, dtype)
        parts = [*parts[:3], Term(name="scores", nbytes=scores * per_score), Term(name="output", nbytes=x)]
    elif workload.attn is AttnImpl.SDPA and sdpa_backend(dtype, q_dim=head_dim, grouped=False,
                                                          masked=vision.block_mask) == "math":
        parts.append(Term(name="scores", nbytes=scores * 2 * 4))
    else:
        parts.append(Term(name="softmax_lse", nbytes=num_images * heads * patches * 4))
        if vision.block_mask and workload.attn is AttnImpl.SDPA and rows % SDPA_MASK_ALIGN:
            # the efficient kernel's aligned copy of the (rows, rows) mask
            padded = -(-rows // SDPA_MASK_ALIGN) * SDPA_MASK_ALIGN
            parts.append(Term(name="mask_pad", nbytes=rows * padded * dt))
    attention = Term.group("attention", parts)
    if vision.mlp_gated:
        live = max(3 * inter, 2 * inter + x)
    else:
        live = max(PYTHON_ACTIVATION_LIVE.get(vision.activation, 2) * inter, inter + x)
    mlp = Term.group("mlp", [Term(name="residual", nbytes=x), Term(name="normed", nbytes=x),
                             Term(name="intermediates", nbytes=live)])
    step = max(attention, mlp, key=lambda t: t.nbytes)
    # the tower's forward keeps its embeddings output referenced while the encoder runs: from the second
    # layer on it is a tensor apart from the layer input
    embeddings = x if vision.num_layers > 1 and vision.keeps_patch_embeddings else 0
    # output_hidden_states: the last layer runs beside every earlier layer's output (its input included)
    kept = (vision.num_layers - 1) * x if vision.keeps_hidden_states else 0
    # cos and sin for every position, fp32 or in the compute dtype
    tables = 2 * rows * head_dim * (4 if vision.rotary_tables_fp32 else dt) if vision.rotary else 0
    block_mask = rows * rows * dt if vision.block_mask else 0     # built once, alive through the encoder
    # deepstack features made before the last block: (images · patches / merge², projector width) each
    deepstack = sum(1 for i in vision.deepstack_layers if i < vision.num_layers - 1) * dtype.nbytes(
        rows // vision.spatial_merge_size ** 2 * vision.projector_hidden)
    # the resampled position table (fp32) and its int64 indices / fp32 weights stay referenced by the
    # tower's forward through every block (Qwen3VLVisionModel.forward's pos_embeds, interp_*)
    positions = (rows * (vision.hidden_size * 4 + vision.position_taps * (8 + 4))
                 if vision.position_taps else 0)
    return Term.group("layer", [Term(name="patch_embeddings", nbytes=embeddings),
                                Term(name="deepstack_features", nbytes=deepstack),
                                Term(name="position_embeddings", nbytes=positions),
                                Term(name="hidden_states", nbytes=kept),
                                Term(name="rotary_tables", nbytes=tables),
                                Term(name="block_mask", nbytes=block_mask),
                                Term(name="layer_input", nbytes=x), step])


def _projector_peak(vision: VisionSpec, *, num_images: int, positions: int, tokens: int,
                    dtype: DType) -> Term:
    """An MLP projector's moment beside the tower's kept hidden states (output_hidden_states=True): the
    layers + 1 recorded states, the selected features made contiguous when CLS is cropped off, then
    linear_1's output beside that copy or beside its activation, the activation beside linear_2's output.
    Source: transformers 5.17 LlavaModel.get_image_features, LlavaMultiModalProjector.forward."""
    x = dtype.nbytes(num_images * positions * vision.hidden_size)
    selected = dtype.nbytes(num_images * tokens * vision.hidden_size) if tokens < positions else 0
    out = dtype.nbytes(num_images * tokens * vision.projector_hidden)
    return Term.group("projector", [Term(name="hidden_states", nbytes=(vision.num_layers + 1) * x),
                                    Term(name="mlp", nbytes=max(selected + out, 2 * out))])


def position_resample(vision: VisionSpec, *, rows: int, dtype: DType) -> Term:
    """The learned position table resampled to every patch, beside the patch embeddings (bytes): the
    gather of `position_taps` table rows per patch in the compute dtype times their fp32 weights, an fp32
    product (rows, taps, hidden), then its fp32 sum; the int64 indices and fp32 weights (rows, taps) stay
    alive throughout: max(gather + product, product + sum).
    Source: transformers 5.17 Qwen3VLVisionModel.forward (`(self.pos_embed(interp_indices) *
    interp_weights[:, :, None]).sum(1)`); vision_utils.get_vision_interpolation_indices_and_weights."""
    taps, h = vision.position_taps, vision.hidden_size
    gather = dtype.nbytes(rows * taps * h)
    product = rows * taps * h * 4
    total = rows * h * 4
    return Term.group("position_resample", [
        Term(name="patch_embeddings", nbytes=dtype.nbytes(rows * h)),
        Term(name="taps", nbytes=rows * taps * (8 + 4)),
        Term(name="weighted", nbytes=max(gather + product, product + total)),
    ])


def _kept_tower_outputs(vision: VisionSpec, *, rows: int, projected_bytes: int, dtype: DType) -> list[Term]:
    """What the tower's output keeps alive through the decoder beyond the projected copy (bytes): with
    `keeps_tower_output`, the last hidden state (rows, hidden) and the merger's own output (split into
    per-image views, of which the model concatenates the projected copy); one projected-sized feature per
    deepstack layer. Source: transformers 5.17 Qwen3VLModel.forward and get_image_features."""
    kept = []
    if vision.keeps_tower_output:
        kept += [Term(name="tower_output", nbytes=dtype.nbytes(rows * vision.hidden_size)),
                 Term(name="merger_output", nbytes=projected_bytes)]
    if vision.deepstack_layers:
        kept.append(Term(name="deepstack_features", nbytes=len(vision.deepstack_layers) * projected_bytes))
    return kept
