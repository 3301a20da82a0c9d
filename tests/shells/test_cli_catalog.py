"""The CLI on catalog variants and on models that are not causal LMs: resolved names, one-line refusals."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from tests.shells.test_cli import assert_one_error_line, invoke

BERT_CONFIG = {"architectures": ["BertForMaskedLM"], "model_type": "bert", "hidden_size": 768,
               "num_hidden_layers": 12, "num_attention_heads": 12, "intermediate_size": 3072,
               "max_position_embeddings": 512, "vocab_size": 30522}
WHISPER_CONFIG = {"architectures": ["WhisperForConditionalGeneration"], "model_type": "whisper",
                  "is_encoder_decoder": True, "d_model": 1280, "encoder_layers": 32, "decoder_layers": 32,
                  "vocab_size": 51866}


@pytest.mark.parametrize(
    ("args", "mentions"),
    [
        (["estimate", "t5-base"], "t5-base: model_type 't5' is an encoder-decoder model; memfit estimates "
                                  "decoder-only causal LMs"),
        (["params", "google-bert/bert-base-uncased"], "model_type 'bert' is an encoder-only model"),
        (["plan", "openai/clip-vit-large-patch14", "--gpu", "24GiB"],
         "is a vision, audio or image-text encoder"),
    ],
)
def test_well_known_non_causal_names_get_one_line(args: list[str], mentions: str) -> None:
    """Catalog-listed encoders and encoder-decoders: one `error:` line saying what they are, exit 2."""
    assert_one_error_line(invoke(*args), 2, mentions=mentions)


def test_encoder_config_file_gets_one_line(tmp_path: Path) -> None:
    """A BERT config.json file is refused in one line naming its model_type."""
    path = tmp_path / "config.json"
    path.write_text(json.dumps(BERT_CONFIG))
    outcome = invoke("params", str(path))
    assert_one_error_line(outcome, 2, mentions="model_type 'bert' is an encoder-only model")


def test_encoder_decoder_folder_gets_one_line(tmp_path: Path) -> None:
    """A Whisper model folder is refused in one line naming it an encoder-decoder."""
    (tmp_path / "whisper").mkdir()
    (tmp_path / "whisper" / "config.json").write_text(json.dumps(WHISPER_CONFIG))
    outcome = invoke("estimate", str(tmp_path / "whisper"))
    assert_one_error_line(outcome, 2, mentions="model_type 'whisper' is an encoder-decoder model")


def test_refusal_does_not_import_torch(tmp_path: Path) -> None:
    """The refusal comes before any meta-device build: the process never imports torch."""
    path = tmp_path / "config.json"
    path.write_text(json.dumps(BERT_CONFIG))
    script = ("import sys; from memfit.cli import run; code = run(['params', sys.argv[1]]); "
              "print(code, 'torch' in sys.modules)")
    done = subprocess.run([sys.executable, "-c", script, str(path)], capture_output=True, text=True,
                          timeout=60, check=False)
    assert done.stdout.split() == ["2", "False"], done.stderr
    assert "encoder-only" in done.stderr


def test_chat_variant_estimate_json_names_the_variant_and_the_rule() -> None:
    """`estimate meta-llama/Llama-2-70b-chat-hf --json`: the variant's name, Hub id and rule."""
    outcome = invoke("estimate", "meta-llama/Llama-2-70b-chat-hf", "--json")
    assert outcome.exit_code == 0, outcome.stderr
    data = json.loads(outcome.stdout)
    assert (data["model"]["name"], data["model"]["source"]) == ("Llama-2-70b-chat-hf",
                                                               "meta-llama/Llama-2-70b-chat-hf")
    assert data["model"]["num_params"] == 68_976_648_192
    assert ("Llama-2-70b-chat-hf: same shapes as catalog Llama-2-70b-hf (chat variants share the base "
            "config: post-training does not change shapes)") in data["assumptions"]


def test_catalog_models_lists_variants() -> None:
    """`catalog models` shows each entry's variants; `--json` gives them as aliases with repo ids."""
    table = invoke("catalog", "models")
    assert table.exit_code == 0
    assert "Llama-3.2-3B-Instruct" in table.stdout
    listing = json.loads(invoke("catalog", "models", "--json").stdout)
    by_name = {m["name"]: m for m in listing["models"]}
    assert "meta-llama/Llama-3.2-3B-Instruct" in by_name["Llama-3.2-3B"]["aliases"]
