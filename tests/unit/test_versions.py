"""core.versions: release tuples, ranges, behaviour changes, the version lines analytic estimates carry."""

from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from memfit.api import estimate, load_model
from memfit.core.choices import AttnImpl
from memfit.core.versions import (
    CHANGES,
    MODELED,
    TRACE_VERIFIED,
    Attention,
    BehaviourChange,
    VersionRange,
    later_changes,
    modeled_note,
    parse_version,
)
from memfit.core.workload import Inference, Training

CONSTRAINTS = Path(__file__).resolve().parents[2] / "constraints.txt"


@pytest.mark.parametrize(("text", "expected"), [
    ("5.25.0", (5, 25, 0)),
    ("2.13.0+cpu", (2, 13, 0)),
    ("2.11.0+cu130", (2, 11, 0)),
    ("5.26.0.dev0", (5, 26, 0)),
    ("0.21.0rc1", (0, 21, 0)),
    ("5", (5,)),
    (" 1.2 ", (1, 2)),
])
def test_parse_version_keeps_the_release(text, expected):
    assert parse_version(text) == expected


@pytest.mark.parametrize("text", ["", "dev", "+cpu", "v5.0"])
def test_parse_version_refuses_text_without_a_release(text):
    with pytest.raises(ValueError, match="not a version"):
        parse_version(text)


@given(st.lists(st.integers(0, 999), min_size=1, max_size=4))
def test_parse_version_round_trips_any_release(parts):
    assert parse_version(".".join(map(str, parts)) + "+local") == tuple(parts)


def test_range_is_inclusive_below_and_exclusive_above():
    verified = VersionRange(package="transformers", low="5.17.0", below="5.26")
    assert verified.contains("5.17.0")
    assert verified.contains("5.25.0")
    assert verified.contains("5.25.9")
    assert not verified.contains("5.26.0")
    assert not verified.contains("5.16.1")
    assert verified.pip_spec == "transformers>=5.17.0,<5.26"


def test_verified_ranges_hold_the_modeled_versions():
    """The trace is verified where the analytic formulas were calibrated, the constraints' pins included."""
    pins = {}
    for line in CONSTRAINTS.read_text().splitlines():
        if "==" in line and not line.startswith("#"):
            name, version = line.split("==")
            pins[name.lower()] = version
    for verified in TRACE_VERIFIED:
        assert verified.contains(pins[verified.package]), verified
    assert pins["transformers"] == MODELED["transformers"]
    assert pins["bitsandbytes"] == MODELED["bitsandbytes"]


SDPA_DEFAULT = Attention(runs="sdpa")
EAGER_DEFAULT = Attention(runs="eager")
EAGER_ASKED = Attention(runs="eager", default=False)


def test_gemma2_sdpa_change_applies_from_5_21_where_memfit_models_default_sdpa():
    change = next(c for c in CHANGES if "gemma2" in c.families)
    assert change.since == "5.21.0"
    assert change.default_attention == "eager"
    assert change.applies("gemma2", "5.21.0", attention=SDPA_DEFAULT)
    assert change.applies("gemma2", "5.25.0", attention=SDPA_DEFAULT)
    assert not change.applies("gemma2", "5.20.0", attention=SDPA_DEFAULT)
    assert not change.applies("llama", "5.25.0", attention=SDPA_DEFAULT)
    # attention named explicitly, or a config that already asks for eager (gemma-2-27b): nothing changes
    assert not change.applies("gemma2", "5.25.0", attention=EAGER_ASKED)
    assert not change.applies("gemma2", "5.25.0", attention=EAGER_DEFAULT)


def test_gptj_gets_sdpa_from_5_24():
    change = next(c for c in CHANGES if "gptj" in c.families)
    assert (change.since, change.default_attention) == ("5.24.0", "sdpa")
    assert change.applies("gptj", "5.24.0", attention=EAGER_DEFAULT)
    assert not change.applies("gptj", "5.23.0", attention=EAGER_DEFAULT)


def test_falcon_eager_code_change_applies_wherever_eager_runs():
    change = next(c for c in CHANGES if "falcon" in c.families)
    assert (change.since, change.attention) == ("5.25.0", "eager")
    assert change.applies("falcon", "5.25.0", attention=EAGER_ASKED)
    assert change.applies("falcon", "5.25.0", attention=EAGER_DEFAULT)
    assert not change.applies("falcon", "5.25.0", attention=SDPA_DEFAULT)
    assert not change.applies("falcon", "5.24.0", attention=EAGER_ASKED)


def test_a_change_without_families_touches_every_family():
    change = BehaviourChange(package="transformers", since="6.0", families=frozenset(), what="x")
    assert change.applies("llama")
    assert change.applies("gemma2")
    assert later_changes("peft", "gemma2") == ()


def test_modeled_note_names_the_versions_and_the_later_change():
    first, *rest = modeled_note("gemma2", attention=SDPA_DEFAULT)
    assert "transformers 5.17.0" in first
    assert "peft 0.21.0" in first
    assert "bitsandbytes 0.50.2" in first
    [later] = rest
    assert "5.21.0" in later
    assert "attn=eager" in later
    assert modeled_note("gemma2", attention=EAGER_ASKED) == (first,)
    assert modeled_note("llama") == (first,)


def test_analytic_estimates_name_the_versions_they_model():
    gemma = estimate(load_model("gemma-2-2b-it"), Training(seq_len=512))
    assert any("follows transformers 5.17.0" in a for a in gemma.assumptions)
    assert any("5.21.0 and later differ" in a for a in gemma.assumptions)
    eager = estimate(load_model("gemma-2-2b-it"), Training(seq_len=512, attn=AttnImpl.EAGER))
    assert not any("differ" in a for a in eager.assumptions)
    # gemma-2-27b's published config asks for eager itself, so 5.21's change does not touch it
    big = estimate(load_model("gemma-2-27b"), Inference(prompt_tokens=512))
    assert not any("differ" in a for a in big.assumptions)
    falcon = estimate(load_model("falcon-rw-1b"), Inference(prompt_tokens=512, attn=AttnImpl.EAGER))
    assert any("5.25.0 and later differ here: Falcon's eager" in a for a in falcon.assumptions)


def test_runtimes_with_their_own_versions_do_not_claim_transformers():
    from memfit.core.choices import KvCache, Runtime

    est = estimate(load_model("Llama-3.1-8B"), Inference(prompt_tokens=512, runtime=Runtime.VLLM,
                                                           kv_cache=KvCache.PAGED))
    assert not any("follows transformers" in a for a in est.assumptions)


def test_the_api_says_when_another_transformers_is_installed(monkeypatch):
    import memfit.api as api

    monkeypatch.setattr(api, "_installed_transformers", lambda: "5.25.0")
    est = api.estimate("gemma-2-2b-it", Inference(prompt_tokens=512))
    assert est.assumptions[-1].startswith("transformers 5.25.0 is installed here; these figures follow "
                                          "5.17.0")
    monkeypatch.setattr(api, "_installed_transformers", lambda: MODELED["transformers"])
    same = api.estimate("gemma-2-2b-it", Inference(prompt_tokens=512))
    assert not any("installed here" in a for a in same.assumptions)
    monkeypatch.setattr(api, "_installed_transformers", lambda: None)
    assert api.estimate("gemma-2-2b-it", Inference(prompt_tokens=512)).assumptions == same.assumptions
