"""Models that are not causal LMs (encoder-only, encoder-decoder, vision or audio encoders): one line saying
what the model is and what memfit covers, instead of a meta-device build or a list of supported types.

memfit's formulas follow `AutoModelForCausalLM`: a decoder stack, a KV cache that grows with the generated
tokens, an LM head over the vocabulary. BERT-style encoders (no cache, no generation), T5/BART/Whisper
encoder-decoders (two stacks, a cross-attention cache sized by the encoder's input) and CLIP-style contrastive
encoders have none of that, so they are refused by what their config.json says they are: its `model_type`
(the sets below, HF model_type names as transformers registers them in `models/auto/configuration_auto.py`),
else `is_encoder_decoder: true`, else `architectures` that are all non-generative heads.
"""

from __future__ import annotations

from typing import Any

from memfit.core.families import supported_families

ENCODER_ONLY_TYPES = frozenset({
    "albert", "bert", "big_bird", "camembert", "canine", "convbert", "data2vec-text", "deberta", "deberta-v2",
    "distilbert", "electra", "ernie", "esm", "flaubert", "funnel", "ibert", "layoutlm", "layoutlmv2",
    "layoutlmv3", "longformer", "luke", "megatron-bert", "mobilebert", "modernbert", "mpnet", "nezha",
    "nomic_bert", "nystromformer", "rembert", "roberta", "roberta-prelayernorm", "roc_bert", "roformer",
    "splinter", "squeezebert", "xlm", "xlm-roberta", "xlm-roberta-xl", "xmod", "yoso",
})
"""Encoder-only (bidirectional, masked-LM pre-trained) model types: embeddings, classifiers, rerankers."""

ENCODER_DECODER_TYPES = frozenset({
    "bart", "bigbird_pegasus", "blenderbot", "blenderbot-small", "encoder-decoder", "fsmt", "led", "longt5",
    "m2m_100", "marian", "mbart", "mt5", "mvp", "nllb-moe", "pegasus", "pegasus_x", "plbart", "prophetnet",
    "seamless_m4t", "seamless_m4t_v2", "speech_to_text", "speecht5", "switch_transformers", "t5", "t5gemma",
    "umt5", "whisper",
})
"""Encoder-decoder (sequence-to-sequence) model types, text and speech."""

ENCODER_MODEL_TYPES = frozenset({
    "beit", "blip", "clap", "clip", "convnext", "deit", "detr", "dinov2", "dpt", "hubert", "owlvit", "sam",
    "siglip", "siglip2", "swin", "vit", "wav2vec2", "wavlm",
})
"""Vision, audio and contrastive image-text encoders."""

VISION_LANGUAGE_TYPES = frozenset({
    "gemma3", "idefics3", "llama4", "llava", "llava_next", "mistral3", "mllama", "paligemma", "qwen2_5_vl",
    "qwen2_vl", "qwen3_vl", "qwen3_vl_moe",
})
"""Vision-language checkpoints (a vision tower feeding a causal LM); those with a family module are named in
the refusal line as covered."""

_NON_GENERATIVE_HEADS = (
    "ForMaskedLM", "ForSequenceClassification", "ForTokenClassification", "ForQuestionAnswering",
    "ForMultipleChoice", "ForImageClassification", "ForAudioClassification", "ForCTC", "ForSpeechSeq2Seq",
)
"""`architectures` suffixes of models that do not generate left to right with a causal LM head. Neither
`*ForConditionalGeneration` (vision-language models use it too) nor a bare `*Model` (ChatGLM's remote code
publishes `ChatGLMModel` for a causal LM) decides anything."""


def _what(config: dict[str, Any]) -> str | None:
    """What the config describes when it is not a causal LM ("an encoder-decoder model"), else None."""
    model_type = config.get("model_type")
    architectures = [str(a) for a in config.get("architectures") or [] if isinstance(a, str)]
    if model_type in ENCODER_ONLY_TYPES:
        return "an encoder-only model"
    if model_type in ENCODER_DECODER_TYPES or config.get("is_encoder_decoder") is True:
        return "an encoder-decoder model"
    if model_type in ENCODER_MODEL_TYPES:
        return "a vision, audio or image-text encoder"
    heads = [a for a in architectures if not a.endswith("ForConditionalGeneration")]
    if heads and all(a.endswith(_NON_GENERATIVE_HEADS) for a in heads):
        return f"not a causal LM (architectures {', '.join(heads)})"
    return None


def covered_line() -> str:
    """What memfit estimates, with the vision-language families it maps (from the family registry)."""
    multimodal = sorted(VISION_LANGUAGE_TYPES.intersection(supported_families()))
    with_vlm = (f"; vision-language checkpoints of the families it maps: {', '.join(multimodal)}"
                if multimodal else "")
    return (f"memfit estimates decoder-only causal LMs (AutoModelForCausalLM: Llama, Qwen, Mistral, Gemma, "
            f"GPT-2, ...{with_vlm}); see `memfit catalog models`")


def not_causal_line(config: dict[str, Any], *, name: str) -> str | None:
    """The one-line refusal for a config that is not a causal LM, or None when it may be one.

    `t5-base: model_type 't5' is an encoder-decoder model; memfit estimates decoder-only causal LMs (...)`
    """
    what = _what(config)
    if what is None:
        return None
    model_type = config.get("model_type")
    described = f"model_type {model_type!r}" if isinstance(model_type, str) and model_type else "its config"
    return f"{name}: {described} is {what}; {covered_line()}"
