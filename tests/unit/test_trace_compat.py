"""trace.compat: the trace refuses outside its verified library versions, in one line, before any worker."""

from fractions import Fraction

import pytest

from memfit.api import estimate
from memfit.core.errors import EngineUnavailable, InvalidWorkload
from memfit.core.versions import TRACE_VERIFIED
from memfit.core.workload import Inference, Lora, Training
from memfit.trace import compat

VERIFIED = {"torch": "2.13.0+cpu", "transformers": "5.17.0", "peft": "0.21.2"}


def test_verified_versions_pass_without_notes():
    assert compat.outside_range(VERIFIED) == []
    assert compat.check_installed(VERIFIED) == []


def test_a_newer_transformers_is_refused_in_one_line_naming_range_and_pip_line(monkeypatch):
    monkeypatch.delenv(compat.UNVERIFIED_ENV, raising=False)
    with pytest.raises(EngineUnavailable) as err:
        compat.check_installed({**VERIFIED, "transformers": "5.26.0"})
    message = str(err.value)
    assert "\n" not in message
    assert "transformers 5.26.0" in message
    assert "pip install 'transformers>=5.17.0,<5.26'" in message
    assert compat.UNVERIFIED_ENV in message


def test_every_package_out_of_range_is_named(monkeypatch):
    monkeypatch.delenv(compat.UNVERIFIED_ENV, raising=False)
    with pytest.raises(EngineUnavailable, match=r"torch 2\.9\.1.*peft 0\.30\.0"):
        compat.check_installed({"torch": "2.9.1", "transformers": "5.17.0", "peft": "0.30.0"})


def test_an_unparseable_version_counts_as_unverified(monkeypatch):
    monkeypatch.delenv(compat.UNVERIFIED_ENV, raising=False)
    with pytest.raises(EngineUnavailable, match="transformers main"):
        compat.check_installed({**VERIFIED, "transformers": "main"})


def test_asking_for_unverified_runs_with_an_assumption_that_says_so(monkeypatch):
    monkeypatch.setenv(compat.UNVERIFIED_ENV, "1")
    notes = compat.check_installed({**VERIFIED, "peft": "0.22.0"})
    assert len(notes) == 1
    assert notes[0].startswith("UNVERIFIED: traced with peft 0.22.0")
    assert "0.21.0 up to (not including) 0.22" in notes[0]


def test_absent_packages_are_not_version_problems():
    assert compat.outside_range({"torch": "2.13.0"}) == []


def test_versions_note_lists_what_ran():
    assert compat.versions_note(VERIFIED) == "traced with torch 2.13.0+cpu, transformers 5.17.0, peft 0.21.2"


def test_the_api_refuses_before_starting_a_worker(monkeypatch):
    """An out-of-range transformers never reaches the worker: the refusal comes from package metadata."""
    pytest.importorskip("torch")
    pytest.importorskip("transformers")
    pytest.importorskip("peft")
    monkeypatch.delenv(compat.UNVERIFIED_ENV, raising=False)
    monkeypatch.setattr(compat, "installed_versions", lambda *a: {**VERIFIED, "transformers": "9.0.0"})

    def no_worker(*args, **kwargs):
        raise AssertionError("a worker was started")

    monkeypatch.setattr("memfit.trace.engine.run_worker", no_worker)
    with pytest.raises(EngineUnavailable, match=r"not verified on transformers 9\.0\.0"):
        estimate("Llama-3.2-1B", Inference(prompt_tokens=16), engine="trace")


def test_ranges_cover_the_traced_packages():
    assert {r.package for r in TRACE_VERIFIED} == set(compat.TRACED_PACKAGES)


def test_a_training_job_peft_cannot_run_is_refused_as_the_analytic_engine_refuses_it(monkeypatch):
    """LoRA dropout on Qwen3-30B-A3B's fused experts (peft's ParamWrapper takes none): the trace refuses
    it with the analytic engine's InvalidWorkload line (exit 2), without starting a worker."""
    pytest.importorskip("torch")
    pytest.importorskip("transformers")
    pytest.importorskip("peft")
    monkeypatch.setattr(compat, "installed_versions", lambda *a: VERIFIED)

    def no_worker(*args, **kwargs):
        raise AssertionError("a worker was started")

    monkeypatch.setattr("memfit.trace.engine.run_worker", no_worker)
    job = Training(seq_len=64, method="lora", lora=Lora(rank=8, alpha=16, dropout=Fraction(1, 20)))
    for engine in ("analytic", "trace"):
        with pytest.raises(InvalidWorkload, match="needs lora_dropout=0"):
            estimate("Qwen3-30B-A3B", job, engine=engine)
