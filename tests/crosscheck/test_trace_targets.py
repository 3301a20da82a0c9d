"""trace.targets against the installed transformers/peft/torch: every patched or mirrored internal is found,
a renamed one is caught, and the attention each catalog family really runs is what memfit models (or a
recorded behaviour change says why not)."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
from tests.helpers import requires_transformers

from memfit.api import load_model
from memfit.core.choices import AttnImpl
from memfit.core.errors import EngineUnavailable
from memfit.core.workload import Inference, Training

pytestmark = requires_transformers


def test_every_patched_and_mirrored_target_holds_in_the_installed_libraries():
    from memfit.trace import boot

    boot.load()
    from memfit.trace import targets

    assert targets.problems() == []


def test_a_renamed_function_is_caught():
    from memfit.trace.targets import Target, problem

    found = problem(Target(path="transformers.masking_utils.no_such_function", why="patched: x"))
    assert found == "transformers.masking_utils.no_such_function is gone (patched: x)"


def test_a_moved_keyword_is_caught():
    from memfit.trace.targets import Target, problem

    found = problem(Target(path="transformers.cache_utils.StaticCache", params=("max_length",), why="built"))
    assert found == "transformers.cache_utils.StaticCache no longer takes max_length (built)"


def test_a_patch_whose_caller_stopped_calling_it_is_caught():
    """Patching a module global only works while its caller looks it up by name."""
    from memfit.trace.targets import Target, problem

    found = problem(Target(path="transformers.masking_utils.find_packed_sequence_indices", why="patched",
                           called_from="transformers.masking_utils.sdpa_mask"))
    assert found is not None
    assert "no longer calls find_packed_sequence_indices" in found


def test_check_refuses_in_one_line_naming_the_first_problem(monkeypatch):
    from memfit.trace import targets

    broken = (targets.Target(path="transformers.masking_utils.renamed_away", why="patched: masks"),
              targets.Target(path="peft.also_gone", why="LoRA"))
    monkeypatch.setattr(targets, "TARGETS", broken + targets.TARGETS)
    with pytest.raises(EngineUnavailable) as err:
        targets.check("traced with transformers 9.0.0")
    message = str(err.value)
    assert "\n" not in message
    assert "renamed_away is gone (patched: masks) (and 1 more)" in message
    assert "constraints.txt" in message


def test_the_cache_keyword_is_the_one_generate_passes_to_forward():
    """generate() on a tiny real model hands forward its cache under the keyword cache_argument() names."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    from memfit.trace.targets import cache_argument

    cfg = AutoConfig.for_model("llama", hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                               num_attention_heads=2, num_key_value_heads=1, vocab_size=64)
    model = AutoModelForCausalLM.from_config(cfg).eval()
    passed: list[set[str]] = []
    model.register_forward_hook(lambda m, a, kw, out: passed.append(set(kw)), with_kwargs=True)
    model.generate(torch.randint(0, 64, (1, 4)), max_new_tokens=2, min_new_tokens=2, do_sample=False)
    key = cache_argument()
    assert key is not None
    assert all(key in kwargs for kwargs in passed)


def _one_model_per_family() -> list[str]:
    from memfit.api import catalog_models

    chosen: dict[str, str] = {}
    for entry in sorted(catalog_models(), key=lambda m: (m["published_params"] or 10**15, m["name"])):
        chosen.setdefault(entry["model_type"], entry["name"])
    return sorted(chosen.values())


@pytest.mark.parametrize("name", _one_model_per_family())
def test_default_attention_is_what_memfit_models_or_a_recorded_change(name):
    """Under transformers' default (attn=sdpa) each family runs SDPA unless memfit models it eager; where the
    installed release runs otherwise, core.versions.CHANGES records it (and nothing that is not so)."""
    import torch
    import transformers

    from memfit.core.attention_kinds import runs_eager
    from memfit.core.versions import CHANGES, Attention
    from memfit.trace.harness import hf_config
    from memfit.trace.meta import auto_class

    spec = load_model(name)
    with torch.device("meta"):
        config = hf_config(spec.source.config_json)
        model = auto_class(config.model_type).from_config(config)
    ran = model.config._attn_implementation
    modeled = "eager" if runs_eager(spec, AttnImpl.SDPA) else "sdpa"
    recorded = [c.default_attention for c in CHANGES
                if c.package == "transformers" and c.default_attention
                and c.applies(spec.family, transformers.__version__, attention=Attention(runs=modeled))]
    assert ran == (recorded[-1] if recorded else modeled), (spec.family, transformers.__version__)


def _model(attn: str) -> SimpleNamespace:
    return SimpleNamespace(config=SimpleNamespace(_attn_implementation=attn))


@pytest.mark.parametrize("workload", [Inference(prompt_tokens=16), Training(seq_len=16)])
def test_the_trace_refuses_an_attention_the_installed_library_runs_differently(workload, monkeypatch):
    from memfit.trace import compat
    from memfit.trace.run import check_code_paths

    monkeypatch.delenv(compat.UNVERIFIED_ENV, raising=False)
    spec = load_model("Llama-3.2-1B")
    assert check_code_paths(spec, workload, _model("sdpa")) == []
    with pytest.raises(EngineUnavailable) as err:
        check_code_paths(spec, workload, _model("eager"))
    message = str(err.value)
    assert "runs llama with eager attention where memfit models sdpa" in message
    assert "trace with attn=eager" in message
    assert "MEMFIT_TRACE_UNVERIFIED=1" in message


def test_asked_for_it_traces_the_installed_path_marked_unverified(monkeypatch):
    from memfit.trace import compat
    from memfit.trace.run import check_code_paths

    monkeypatch.setenv(compat.UNVERIFIED_ENV, "1")
    [note] = check_code_paths(load_model("Llama-3.2-1B"), Inference(prompt_tokens=16), _model("eager"))
    assert note.startswith("UNVERIFIED: transformers ")
    assert note.endswith(f"figures follow the installed {__import__('transformers').__version__}")


def test_a_family_memfit_models_eager_passes_when_it_runs_eager():
    from memfit.trace.run import check_code_paths

    assert check_code_paths(load_model("bloom-560m"), Inference(prompt_tokens=16), _model("eager")) == []


def test_a_recorded_change_to_the_path_that_runs_refuses(monkeypatch):
    """Falcon's eager attention changed in transformers 5.25: eager Falcon is refused from then on, its SDPA
    path is not touched."""
    import transformers

    from memfit.core.versions import parse_version
    from memfit.trace import compat
    from memfit.trace.run import check_code_paths

    monkeypatch.delenv(compat.UNVERIFIED_ENV, raising=False)
    spec = load_model("falcon-rw-1b")
    eager = Inference(prompt_tokens=16, attn=AttnImpl.EAGER)
    assert check_code_paths(spec, Inference(prompt_tokens=16), _model("sdpa")) == []
    if parse_version(transformers.__version__) >= (5, 25):
        with pytest.raises(EngineUnavailable, match=r"5\.25\.0 and later change this path: Falcon's eager"):
            check_code_paths(spec, eager, _model("eager"))
    else:
        assert check_code_paths(spec, eager, _model("eager")) == []
