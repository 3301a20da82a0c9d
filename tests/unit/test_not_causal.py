"""A model that is not a causal LM is refused with one line saying what it is and what memfit covers."""

from __future__ import annotations

from typing import Any

import pytest

from memfit.core.errors import UnsupportedArchitecture
from memfit.core.families import supported_families
from memfit.core.spec import ModelSource
from memfit.sources._config import build_spec
from memfit.sources.not_causal import (
    ENCODER_DECODER_TYPES,
    ENCODER_ONLY_TYPES,
    VISION_LANGUAGE_TYPES,
    covered_line,
    not_causal_line,
)

SOURCE = ModelSource(kind="config", ref="config.json")


@pytest.mark.parametrize(
    ("config", "what"),
    [
        ({"model_type": "bert", "architectures": ["BertForMaskedLM"]},
         "model_type 'bert' is an encoder-only model"),
        ({"model_type": "deberta-v2"}, "model_type 'deberta-v2' is an encoder-only model"),
        ({"model_type": "t5", "architectures": ["T5ForConditionalGeneration"]},
         "model_type 't5' is an encoder-decoder model"),
        ({"model_type": "whisper"}, "model_type 'whisper' is an encoder-decoder model"),
        ({"model_type": "clip"}, "model_type 'clip' is a vision, audio or image-text encoder"),
        ({"model_type": "my_seq2seq", "is_encoder_decoder": True},
         "model_type 'my_seq2seq' is an encoder-decoder model"),
        ({"model_type": "my_encoder", "architectures": ["MyEncoderForSequenceClassification"]},
         "model_type 'my_encoder' is not a causal LM (architectures MyEncoderForSequenceClassification)"),
    ],
)
def test_what_the_config_says_it_is(config: dict[str, Any], what: str) -> None:
    """model_type, is_encoder_decoder or non-generative heads say what the model is, then what is covered."""
    assert not_causal_line(config, name="m") == f"m: {what}; {covered_line()}"


@pytest.mark.parametrize(
    "config",
    [
        {"model_type": "jamba", "architectures": ["JambaForCausalLM"]},
        {"model_type": "chatglm", "architectures": ["ChatGLMModel"]},      # remote code, a causal LM
        {"model_type": "llava", "architectures": ["LlavaForConditionalGeneration"]},
        {"model_type": "new_lm"},
    ],
)
def test_possible_causal_lms_are_not_refused(config: dict[str, Any]) -> None:
    """A causal head, a bare backbone name, a vision-language head or no architectures at all is left to the
    meta-device fallback."""
    assert not_causal_line(config, name="m") is None


def test_the_type_sets_do_not_overlap_the_families() -> None:
    """No mapped family is in a refused set, and the three refused sets are disjoint."""
    refused = ENCODER_ONLY_TYPES | ENCODER_DECODER_TYPES
    assert refused & set(supported_families()) == set()
    assert not ENCODER_ONLY_TYPES & ENCODER_DECODER_TYPES


def test_covered_line_names_the_mapped_vision_language_families() -> None:
    """The covered line names exactly the vision-language model types with a family module."""
    mapped = sorted(VISION_LANGUAGE_TYPES & set(supported_families()))
    line = covered_line()
    assert line.startswith("memfit estimates decoder-only causal LMs")
    assert all(model_type in line for model_type in mapped)


def test_build_spec_refuses_before_any_meta_build() -> None:
    """build_spec raises UnsupportedArchitecture with the line for a T5 config (no meta-device build)."""
    expected = r"^t5-base: model_type 't5' is an encoder-decoder model; memfit estimates decoder-only causal"
    with pytest.raises(UnsupportedArchitecture, match=expected):
        build_spec({"model_type": "t5", "d_model": 768, "num_layers": 12}, name="t5-base", source=SOURCE)


def test_a_mapped_family_is_never_refused_by_its_heads() -> None:
    """A llama config is mapped by its family whatever its architectures list says."""
    config = {"model_type": "llama", "architectures": ["LlamaForSequenceClassification"], "vocab_size": 64,
              "hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 1, "num_attention_heads": 4,
              "max_position_embeddings": 64}
    assert build_spec(config, name="tiny", source=SOURCE).family == "llama"
