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
