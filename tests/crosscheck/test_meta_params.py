"""count_params equals the real transformers model built on the meta device, per component, for every config.

Configs: the bundled catalog (src/memfit/catalog/models/*.json, whatever exists) and tests/data/configs/
(published configs and small per-family ones). Each is built with AutoModelForCausalLM.from_config under
torch.device("meta"); named_parameters() prefixes are mapped onto ParamNode paths by memfit.trace.meta.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from tests.helpers import requires_transformers

from memfit.core.families import spec_from_config
from memfit.core.params import count_params
from memfit.core.spec import ModelSource

ROOT = Path(__file__).resolve().parents[2]
CONFIG_FILES = sorted((ROOT / "src" / "memfit" / "catalog" / "models").glob("*.json")) + sorted(
    (ROOT / "tests" / "data" / "configs").glob("*.json")
)


def _spec(path: Path):
    config = json.loads(path.read_text())
    return config, spec_from_config(config, name=path.stem, source=ModelSource(kind="config", ref=str(path)))


@requires_transformers
@pytest.mark.parametrize("path", CONFIG_FILES, ids=[f"{p.parent.name}/{p.stem}" for p in CONFIG_FILES])
def test_counts_match_meta_device(path: Path) -> None:
    """Every component path (top level, layers/attention/q_proj, ...) has the meta model's exact count."""
    from memfit.trace.meta import count_params_on_meta

    config, spec = _spec(path)
    ours = count_params(spec)
    theirs = count_params_on_meta(config, name=spec.name)
    assert {n.name: n.num_params for n in ours.children} == {n.name: n.num_params for n in theirs.children}
    assert ours.flat() == theirs.flat()
    assert ours.num_params == theirs.num_params


UNMAPPED_BASE = {"hidden_size": 64, "num_hidden_layers": 3, "num_attention_heads": 4, "vocab_size": 96,
                 "max_position_embeddings": 128, "intermediate_size": 80, "bos_token_id": 0,
                 "eos_token_id": 0, "pad_token_id": 0}


@requires_transformers
@pytest.mark.parametrize("model_type", ["olmo", "stablelm", "smollm3", "persimmon"])
def test_spec_on_meta_total_is_exact(model_type: str) -> None:
    """A model_type with no family module gets a spec whose total equals the meta-device count."""
    from memfit.trace.meta import count_params_on_meta, spec_on_meta

    config = {**UNMAPPED_BASE, "model_type": model_type}
    spec, assumptions = spec_on_meta(config, name=model_type, source=ModelSource(kind="config", ref="x"))
    assert count_params(spec).num_params == count_params_on_meta(config).num_params
    assert spec.source.kind == "meta"
    assert "counted exactly on the meta device" in assumptions[0]


@requires_transformers
def test_unknown_to_transformers_is_unsupported() -> None:
    """A model_type transformers does not know raises UnsupportedArchitecture, not a transformers error."""
    from memfit.core.errors import UnsupportedArchitecture
    from memfit.trace.meta import count_params_on_meta

    with pytest.raises(UnsupportedArchitecture, match="does not know model_type 'no-such-model'"):
        count_params_on_meta({**UNMAPPED_BASE, "model_type": "no-such-model"})
