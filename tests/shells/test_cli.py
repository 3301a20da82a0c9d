"""The CLI contract (DESIGN §7): exit codes, one-line errors, --json equal to the API, units in labels."""

from __future__ import annotations

import json
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
from typer.testing import CliRunner

from memfit import api
from memfit.cli import app, run
from memfit.core.choices import KvCache, Method, Runtime
from memfit.core.errors import InvalidWorkload, MemfitError
from memfit.core.workload import Inference, Lora, Training

LORA_ARGS = ["--task", "train", "--method", "lora", "--seq-len", "1024", "--lora-rank", "16"]
LORA_WORKLOAD = Training(seq_len=1024, method=Method.LORA, lora=Lora(rank=16, alpha=32))


@dataclass
class Outcome:
    exit_code: int
    stdout: str
    stderr: str


def invoke(*args: str, env: dict[str, str] | None = None) -> Outcome:
    """Run the console entry point's logic (`run`) under CliRunner's isolation, stdout and stderr apart."""
    runner = CliRunner()
    with runner.isolation(env=env) as (out, err, _):
        code = run(list(args))
        sys.stdout.flush()
        sys.stderr.flush()
        return Outcome(code, out.getvalue().decode(), err.getvalue().decode())


def assert_one_error_line(outcome: Outcome, exit_code: int, *, mentions: str) -> None:
    assert outcome.exit_code == exit_code
    assert outcome.stdout == ""
    lines = outcome.stderr.splitlines()
    assert len(lines) == 1, outcome.stderr
    assert lines[0].startswith("error: ")
    assert mentions in lines[0]
    assert "Traceback" not in outcome.stderr


def test_help_lists_every_command() -> None:
    """`memfit --help` exits 0 and names all seven commands."""
    outcome = invoke("--help")
    assert outcome.exit_code == 0
    for command in ("params", "estimate", "plan", "measure", "compare", "catalog", "serve"):
        assert command in outcome.stdout


def test_typer_app_runs_under_clirunner() -> None:
    """The typer app itself runs under CliRunner.invoke: `catalog gpus --json` prints the GPU catalog."""
    result = CliRunner().invoke(app, ["catalog", "gpus", "--json"])
    assert result.exit_code == 0
    assert json.loads(result.stdout)["schema"] == "memfit.catalog.gpus/1"


def test_params_json_is_the_params_report() -> None:
    """`params --json` prints memfit.params/1: Llama-3.1-8B has 8,030,261,248 parameters."""
    # 2 × 128,256 × 4,096 (embeddings, untied head) + 32 layers × 218,112,000 + 4,096 (final norm)
    outcome = invoke("params", "Llama-3.1-8B", "--json")
    assert outcome.exit_code == 0
    data = json.loads(outcome.stdout)
    assert data == api.params_report("Llama-3.1-8B")
    assert data["schema"] == "memfit.params/1"
    assert data["num_params"] == 8_030_261_248
    assert data["tree"]["embeddings"] == 128_256 * 4_096


def test_params_human_output_has_total_and_components() -> None:
    """The human params view prints the exact total with separators and the top-level components."""
    outcome = invoke("params", "Llama-3.1-8B")
    assert outcome.exit_code == 0
    assert "8,030,261,248 parameters" in outcome.stdout
    assert "lm_head" in outcome.stdout


@pytest.mark.parametrize(
    ("args", "exit_code", "mentions"),
    [
        (["params", "No-Such-Model-7B"], 2, "No-Such-Model-7B"),
        (["estimate", "Llama-3.1-8B", "--bogus"], 2, "--bogus"),
        (["estimate", "Llama-3.1-8B", "--batch-size", "x"], 2, "--batch-size"),
        (["estimate", "Llama-3.1-8B", "--seq-len", "512"], 2, "--seq-len"),
        (["estimate", "Llama-3.1-8B", "--task", "train", "--prompt-tokens", "5"], 2, "--prompt-tokens"),
        (["estimate", "Llama-3.1-8B", "--task", "train", "--lora-rank", "8"], 2, "--lora-rank"),
        (["estimate", "Llama-3.1-8B", "--num-gpus", "4", "--dp", "2"], 2, "dp × tp × pp = 2"),
        (["estimate", "Llama-3.1-8B", "--gpu", "H100-80G"], 2, "H100-80G"),
        (["estimate", "Llama-3.1-8B", "--unit", "TB"], 2, "unit"),
        (["estimate", "Llama-3.1-8B", "--task", "fly"], 2, "task"),
        (["estimate", "Llama-3.1-8B", "--quant", "nf5"], 2, "nf5"),
        (["estimate"], 2, "model"),
        (["plan", "Llama-3.1-8B", "--gpu", "H100", "--maximize", "speed"], 2, "maximize"),
        (["catalog", "teapots"], 2, "teapots"),
    ],
)
def test_bad_input_is_one_error_line_and_exit_2(args: list[str], exit_code: int, mentions: str) -> None:
    """Every kind of bad input gives exactly one `error: ` line naming the culprit, exit 2, empty stdout."""
    assert_one_error_line(invoke(*args), exit_code, mentions=mentions)


without_cuda = pytest.mark.skipif(
    shutil.which("nvidia-smi") is not None, reason="a CUDA GPU is present: measure would really run"
)


@without_cuda
def test_measure_without_a_cuda_gpu_exits_1() -> None:
    """`memfit measure` on a machine without CUDA (or without the extra) is one error line, exit 1."""
    outcome = invoke("measure", "Llama-3.2-1B", "--prompt-tokens", "16")
    assert_one_error_line(outcome, 1, mentions="")


def test_memfit_debug_shows_the_exception() -> None:
    """With MEMFIT_DEBUG=1 the MemfitError propagates (a traceback) instead of the one-line message."""
    runner = CliRunner()
    with runner.isolation(env={"MEMFIT_DEBUG": "1"}), pytest.raises(MemfitError, match="No-Such"):
        run(["params", "No-Such-Model-7B"])


def test_estimate_json_equals_the_api() -> None:
    """`estimate --json` prints exactly `api.estimate(...).to_dict()` for a LoRA job on an H100."""
    outcome = invoke("estimate", "Llama-3.1-8B", *LORA_ARGS, "--gpu", "H100-SXM-80GB", "--json")
    assert outcome.exit_code == 0, outcome.stderr
    expected = api.estimate("Llama-3.1-8B", LORA_WORKLOAD, gpu="H100-SXM-80GB").to_dict()
    assert json.loads(outcome.stdout) == expected
    assert outcome.stdout == api.dumps(expected)


def test_inference_estimate_json_equals_the_api() -> None:
    """`estimate --prompt-tokens 4096 --new-tokens 128 --json` equals the API's Inference estimate."""
    outcome = invoke("estimate", "Llama-3.1-8B", "--prompt-tokens", "4096", "--new-tokens", "128", "--json")
    assert outcome.exit_code == 0, outcome.stderr
    expected = api.estimate("Llama-3.1-8B", Inference(prompt_tokens=4096, new_tokens=128)).to_dict()
    assert json.loads(outcome.stdout) == expected


def test_default_inference_workload_is_documented_defaults() -> None:
    """No workload flags: inference of 2,048 prompt tokens, no new tokens, batch 1."""
    outcome = invoke("estimate", "Llama-3.2-1B", "--json")
    assert outcome.exit_code == 0, outcome.stderr
    workload = json.loads(outcome.stdout)["workload"]
    assert (workload["task"], workload["prompt_tokens"], workload["new_tokens"], workload["batch_size"]) == (
        "infer",
        2048,
        0,
        1,
    )


def test_estimate_human_output_names_units_phases_and_fit() -> None:
    """The human training view has the peak tree, every phase, GiB in labels and the fit line."""
    outcome = invoke("estimate", "Llama-3.1-8B", *LORA_ARGS, "--gpu", "H100-SXM-80GB")
    assert outcome.exit_code == 0, outcome.stderr
    for phase in ("load", "forward", "backward", "optimizer"):
        assert f"\n{phase} " in outcome.stdout
    assert "allocated (GiB)" in outcome.stdout
    assert "fits on H100-SXM-80GB" in outcome.stdout
    assert "What would cut the peak most" in outcome.stdout
    assert " GB" not in outcome.stdout.replace("80GB", "")


def test_unit_gb_prints_decimal_gigabytes_only() -> None:
    """`--unit GB` labels every figure GB (10^9 bytes) and never GiB."""
    outcome = invoke("estimate", "Llama-3.1-8B", *LORA_ARGS, "--unit", "GB")
    assert outcome.exit_code == 0, outcome.stderr
    assert "allocated (GB)" in outcome.stdout
    assert "GiB" not in outcome.stdout


def test_does_not_fit_is_a_success() -> None:
    """A job that does not fit exits 0, says so and by how much."""
    outcome = invoke("estimate", "Llama-3.1-8B", "--task", "train", "--gpu", "24GiB")
    assert outcome.exit_code == 0, outcome.stderr
    assert "does not fit on 24GiB" in outcome.stdout
    assert "short" in outcome.stdout
    data = json.loads(
        invoke("estimate", "Llama-3.1-8B", "--task", "train", "--gpu", "24GiB", "--json").stdout
    )
    assert data["fits"] is False


def test_reference_methods_are_shown_beside_ours() -> None:
    """`--reference all` adds the reference table with each source's own unit."""
    outcome = invoke("estimate", "Llama-3.1-8B", *LORA_ARGS, "--reference", "all")
    assert outcome.exit_code == 0, outcome.stderr
    assert "Reference methods" in outcome.stdout
    assert "memfit (peak on device)" in outcome.stdout


def test_num_gpus_alone_is_data_parallel_for_training() -> None:
    """`--num-gpus 4` on a training job is dp=4 (the transformers training default)."""
    outcome = invoke("estimate", "Llama-3.1-8B", *LORA_ARGS, "--num-gpus", "4", "--json")
    assert outcome.exit_code == 0, outcome.stderr
    parallel = json.loads(outcome.stdout)["workload"]["parallel"]
    assert (parallel["dp"], parallel["tp"], parallel["pp"]) == (4, 1, 1)


def test_out_writes_the_json_file_and_nothing_to_stdout(tmp_path: Path) -> None:
    """`--out FILE` writes the same JSON to FILE, prints nothing and leaves no temporary file behind."""
    target = tmp_path / "estimate.json"
    outcome = invoke("estimate", "Llama-3.1-8B", *LORA_ARGS, "--json", "--out", str(target))
    assert outcome.exit_code == 0, outcome.stderr
    assert outcome.stdout == ""
    assert json.loads(target.read_text()) == api.estimate("Llama-3.1-8B", LORA_WORKLOAD).to_dict()
    assert [p.name for p in tmp_path.iterdir()] == ["estimate.json"]


def test_out_into_a_missing_folder_fails_cleanly(tmp_path: Path) -> None:
    """`--out` into a folder that does not exist is one error line, exit 1, and writes nothing."""
    target = tmp_path / "missing" / "estimate.json"
    outcome = invoke("params", "Llama-3.2-1B", "--json", "--out", str(target))
    assert_one_error_line(outcome, 1, mentions="missing")
    assert not target.parent.exists()


def test_plan_maximize_batch_json_matches_the_planner() -> None:
    """`plan --maximize batch --json` prints memfit.plan/1 whose max_value fits and max_value + 1 does not."""
    outcome = invoke("plan", "Llama-3.1-8B", *LORA_ARGS, "--gpu", "H100", "--maximize", "batch", "--json")
    assert outcome.exit_code == 0, outcome.stderr
    data = json.loads(outcome.stdout)
    assert data["schema"] == "memfit.plan/1"
    assert data == api.plan("Llama-3.1-8B", LORA_WORKLOAD, gpu="H100", maximize="batch").to_dict()
    best = data["max_value"]
    assert best >= 1
    assert data["best"]["fits"] is True
    from dataclasses import replace

    assert api.estimate("Llama-3.1-8B", replace(LORA_WORKLOAD, batch_size=best + 1), gpu="H100").fits is False


def test_plan_lists_changes_that_fit_when_the_job_does_not() -> None:
    """A full fine-tune of Llama-3.1-8B on 24 GiB does not fit; plan lists changes that do, each fitting."""
    outcome = invoke("plan", "Llama-3.1-8B", "--task", "train", "--gpu", "24GiB", "--json")
    assert outcome.exit_code == 0, outcome.stderr
    data = json.loads(outcome.stdout)
    assert data["baseline"]["fits"] is False
    assert data["changes"]
    assert all(change["estimate"]["fits"] for change in data["changes"])


def test_plan_under_vllm_shows_what_each_change_buys_in_kv_capacity() -> None:
    """vLLM takes the same share of the GPU whatever the change, so the plan table adds each change's KV
    capacity: an fp8 KV cache holds twice the bf16 tokens (half the bytes per token, same pool up to block
    rounding), and the table's figures are the JSON's."""
    args = ("plan", "Llama-3.1-8B", "--runtime", "vllm", "--prompt-tokens", "4096", "--gpu", "H100-SXM-80GB")
    data = json.loads(invoke(*args, "--json").stdout)
    asked = data["baseline"]["capacity"]["tokens"]
    by_label = {c["label"]: c["estimate"]["capacity"]["tokens"] for c in data["changes"]}
    fp8_kv = by_label["fp8 KV cache (--kv-cache-dtype fp8)"]
    assert abs(fp8_kv - 2 * asked) <= 2 * 16        # one vLLM block (16 tokens) of rounding each way
    human = invoke(*args)
    assert human.exit_code == 0, human.stderr
    assert "KV capacity (tokens)" in human.stdout
    assert f"KV capacity as asked: {asked:,} tokens" in human.stdout
    assert f"{fp8_kv:,}" in human.stdout


@pytest.mark.parametrize("kind", ["models", "gpus", "quants"])
def test_catalog_runs_offline_with_huggingface_hub_broken(kind: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """`catalog KIND --json` works with huggingface_hub unimportable: the catalog never touches the Hub."""
    monkeypatch.setitem(sys.modules, "huggingface_hub", None)  # any import of it now raises ImportError
    outcome = invoke("catalog", kind, "--json")
    assert outcome.exit_code == 0, outcome.stderr
    data = json.loads(outcome.stdout)
    assert data["schema"] == f"memfit.catalog.{kind}/1"
    assert data[kind]


def test_catalog_gpus_human_output_has_units_in_headers() -> None:
    """The GPU table labels its memory columns with the unit."""
    outcome = invoke("catalog", "gpus")
    assert outcome.exit_code == 0
    assert "board memory (GiB)" in outcome.stdout
    assert "H100-SXM-80GB" in outcome.stdout


def test_core_parsers_reject_what_the_cli_rejects() -> None:
    """The CLI's --gpu-memory-utilization goes through the core check: 1.5 is refused with the field named."""
    outcome = invoke("estimate", "Llama-3.1-8B", "--runtime", "vllm", "--gpu-memory-utilization", "1.5")
    assert_one_error_line(outcome, 2, mentions="gpu_memory_utilization")
    with pytest.raises(InvalidWorkload, match="gpu_memory_utilization"):
        Inference(prompt_tokens=1, gpu_memory_utilization=__import__("fractions").Fraction(3, 2))


@without_cuda
def test_compare_without_a_cuda_gpu_exits_1() -> None:
    """`memfit compare` needs a GPU to measure on: one error line, exit 1, on this CPU-only machine."""
    outcome = invoke("compare", "Llama-3.2-1B", "--prompt-tokens", "16")
    assert_one_error_line(outcome, 1, mentions="")


def test_comparison_view_shows_signed_errors() -> None:
    """A comparison of an estimate with itself renders every figure with a +0.0% error and its unit."""
    from memfit.cli import render

    compare_module = pytest.importorskip("memfit.measure.compare")
    est = api.estimate("Llama-3.2-1B", Inference(prompt_tokens=512))
    text = render.to_text(*render.comparison_view(compare_module.comparison(est, {"analytic": est}), "GiB"))
    assert "estimate (GiB)" in text
    assert text.count("+0.0%") == 3 * (1 + len(est.phases))


@pytest.mark.parametrize(("runtime", "expected"), [("vllm", (1, 2, 1)), ("transformers", (1, 1, 2))])
def test_num_gpus_alone_follows_the_inference_runtime(runtime: str, expected: tuple[int, int, int]) -> None:
    """`--num-gpus 2` is tensor parallel under vLLM and a layer split (device_map) under transformers."""
    outcome = invoke("estimate", "Llama-3.1-8B", "--runtime", runtime, "--num-gpus", "2", "--json")
    assert outcome.exit_code == 0, outcome.stderr
    parallel = json.loads(outcome.stdout)["workload"]["parallel"]
    assert (parallel["dp"], parallel["tp"], parallel["pp"]) == expected


def test_version_prints_the_version() -> None:
    """`memfit --version` prints `memfit <version>` and exits 0."""
    from memfit._version import __version__

    outcome = invoke("--version")
    assert outcome.exit_code == 0
    assert outcome.stdout == f"memfit {__version__}\n"


FLAG_FOR_FIELD = {
    "checkpointing": "grad_checkpointing",
    "lora": None,
    "parallel": None,
    "prepare_kbit": "no_kbit_prep",
    "rank": "lora_rank",
    "alpha": "lora_alpha",
    "targets": "lora_targets",
    "dropout": "lora_dropout",
    "max_gpu_memory_bytes": "max_gpu_memory",
    "zero_config": "deepspeed",
}
"""Fields whose flag is spelled differently (the documented exceptions), or None for nested objects."""


def test_every_workload_field_has_a_flag() -> None:
    """Each field of Inference, Training, Lora and Parallelism is reachable from a kebab-case flag."""
    import dataclasses

    from memfit.cli.options import FLAG_NAMES
    from memfit.core.workload import Parallelism

    for cls in (Inference, Training, Lora, Parallelism):
        for field in dataclasses.fields(cls):
            flag = FLAG_FOR_FIELD.get(field.name, field.name)
            assert flag is None or flag in FLAG_NAMES, f"{cls.__name__}.{field.name} has no --{flag}"


def test_vllm_estimate_reports_kv_capacity_in_tokens() -> None:
    """A vLLM job on a GPU shows the KV cache capacity in tokens and in whole sequences of the job."""
    from memfit.core.inference import vllm_kv_capacity_tokens

    args = ["--runtime", "vllm", "--prompt-tokens", "4096", "--new-tokens", "512", "--batch-size", "64"]
    outcome = invoke("estimate", "Llama-3.1-8B", *args, "--gpu", "H100-SXM-80GB")
    assert outcome.exit_code == 0, outcome.stderr
    workload = Inference(
        prompt_tokens=4096, new_tokens=512, batch_size=64, runtime=Runtime.VLLM, kv_cache=KvCache.PAGED
    )
    tokens = vllm_kv_capacity_tokens(
        api.load_model("Llama-3.1-8B"), workload, gpu_usable_bytes=api.get_gpu("H100-SXM-80GB").usable_bytes
    )
    assert f"{tokens:,} tokens = {tokens // 4608:,} sequences of 4,608 tokens" in outcome.stdout


def test_plan_emit_prints_the_launch_line_and_refuses_another_runtime() -> None:
    """--emit llama.cpp after a llama.cpp plan prints llama-server flags; naming another runtime is one
    line, exit 2."""
    ok = invoke("plan", "Mixtral-8x7B-v0.1", "--runtime", "llama.cpp", "--quant", "gguf-Q4_K_M", "--gpu",
                "24GB", "--prompt-tokens", "4096", "--emit", "llama.cpp")
    assert ok.exit_code == 0, ok.stderr
    assert "llama-server -m Mixtral-8x7B-v0.1-Q4_K_M.gguf -c 4096" in ok.stdout
    bad = invoke("plan", "Llama-3.1-8B", "--gpu", "16GB", "--emit", "vllm")
    assert_one_error_line(bad, 2, mentions="--emit vllm needs --runtime vllm")
