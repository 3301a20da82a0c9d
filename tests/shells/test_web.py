"""The web API (DESIGN §8): the same bytes as the CLI's --json; 422 names the field; 400 on errors."""

from __future__ import annotations

import sys
import warnings
from typing import Any

import pytest
from tests.helpers import requires_web

pytestmark = requires_web

with warnings.catch_warnings():
    # starlette deprecates running its TestClient on httpx (it wants httpx2); the client works the same
    warnings.simplefilter("ignore")
    fastapi_testclient = pytest.importorskip("fastapi.testclient")

from memfit.cli import run  # noqa: E402
from memfit.web.app import create_app  # noqa: E402

LORA = {"task": "train", "seq_len": 1024, "method": "lora", "lora": {"rank": 16, "alpha": 32}}
LORA_ARGS = ["--task", "train", "--method", "lora", "--seq-len", "1024", "--lora-rank", "16"]


@pytest.fixture(scope="module")
def client() -> Any:
    return fastapi_testclient.TestClient(create_app())


def cli_stdout(*args: str) -> str:
    """The CLI's stdout for `args` (exit 0 required)."""
    from typer.testing import CliRunner

    with CliRunner().isolation() as (out, err, _):
        code = run(list(args))
        sys.stdout.flush()
        assert code == 0, err.getvalue().decode()
        return out.getvalue().decode()


def test_estimate_equals_cli_json_byte_for_byte(client: Any) -> None:
    """POST /api/estimate returns exactly the bytes `memfit estimate --json` prints for the same job."""
    response = client.post("/api/estimate", json={"model": "Llama-3.1-8B", "workload": LORA, "gpu": "H100"})
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    assert response.text == cli_stdout("estimate", "Llama-3.1-8B", *LORA_ARGS, "--gpu", "H100", "--json")


def test_inference_estimate_equals_cli_json(client: Any) -> None:
    """An inference body with only prompt_tokens equals the CLI run with --prompt-tokens alone."""
    body = {"model": "Llama-3.2-1B", "workload": {"task": "infer", "prompt_tokens": 4096}}
    response = client.post("/api/estimate", json=body)
    assert response.status_code == 200, response.text
    assert response.text == cli_stdout("estimate", "Llama-3.2-1B", "--prompt-tokens", "4096", "--json")


def test_plan_equals_cli_json(client: Any) -> None:
    """POST /api/plan with maximize=batch equals `memfit plan --maximize batch --json`."""
    body = {"model": "Llama-3.1-8B", "workload": LORA, "gpu": "H100", "maximize": "batch"}
    response = client.post("/api/plan", json=body)
    assert response.status_code == 200, response.text
    expected = cli_stdout(
        "plan", "Llama-3.1-8B", *LORA_ARGS, "--gpu", "H100", "--maximize", "batch", "--json"
    )
    assert response.text == expected


def test_plan_gpu_counts_equals_cli_json(client: Any) -> None:
    """POST /api/plan with gpu_counts equals `memfit plan --gpu-counts 2,4 --json`."""
    body = {"model": "Llama-3.2-1B", "workload": {"task": "train", "seq_len": 512}, "gpu": "24GiB",
            "gpu_counts": [2, 4]}
    response = client.post("/api/plan", json=body)
    assert response.status_code == 200, response.text
    expected = cli_stdout("plan", "Llama-3.2-1B", "--task", "train", "--seq-len", "512", "--gpu", "24GiB",
                          "--gpu-counts", "2,4", "--json")
    assert response.text == expected


@pytest.mark.parametrize(
    ("path", "args"),
    [
        ("/api/params?model=Llama-3.1-8B", ["params", "Llama-3.1-8B", "--json"]),
        ("/api/catalog/models", ["catalog", "models", "--json"]),
        ("/api/catalog/gpus", ["catalog", "gpus", "--json"]),
        ("/api/catalog/quants", ["catalog", "quants", "--json"]),
    ],
)
def test_get_routes_equal_cli_json(client: Any, path: str, args: list[str]) -> None:
    """Every GET route returns the CLI's --json bytes for the same question."""
    response = client.get(path)
    assert response.status_code == 200
    assert response.text == cli_stdout(*args)


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"model": "Llama-3.1-8B", "workload": {"task": "train", "seq_len": 0}}, "workload.seq_len"),
        (
            {"model": "Llama-3.1-8B", "workload": {"task": "infer", "prompt_tokens": "many"}},
            "workload.prompt_tokens",
        ),
        (
            {"model": "Llama-3.1-8B", "workload": {"task": "infer", "prompt_tokens": 8, "colour": 1}},
            "workload.colour",
        ),
        ({"model": "Llama-3.1-8B"}, "workload"),
        ({"workload": {"task": "infer", "prompt_tokens": 8}}, "model"),
        ({"model": "Llama-3.1-8B", "workload": {"task": "infer", "prompt_tokens": 8}, "speed": 1}, "speed"),
        ({"model": "/etc/passwd", "workload": {"task": "infer", "prompt_tokens": 8}}, "model"),
        ({"model": "./my-model/config.json", "workload": {"task": "infer", "prompt_tokens": 8}}, "model"),
    ],
)
def test_bad_bodies_are_422_naming_the_field(client: Any, body: dict[str, Any], field: str) -> None:
    """A body that does not decode (or a local path as model) is a 422 whose `field` names the culprit."""
    response = client.post("/api/estimate", json=body)
    assert response.status_code == 422
    assert response.json()["field"] == field


def test_memfit_errors_are_400_with_the_message(client: Any) -> None:
    """An unknown model is a MemfitError: 400 with {"error": message}."""
    body = {"model": "No-Such-Model-7B", "workload": {"task": "infer", "prompt_tokens": 8}}
    response = client.post("/api/estimate", json=body)
    assert response.status_code == 400
    assert "No-Such-Model-7B" in response.json()["error"]


def test_trace_is_off_unless_allowed(client: Any) -> None:
    """engine=trace is refused (400) by a server started without --allow-trace."""
    body = {"model": "Llama-3.2-1B", "workload": {"task": "infer", "prompt_tokens": 8}, "engine": "trace"}
    response = client.post("/api/estimate", json=body)
    assert response.status_code == 400
    assert "--allow-trace" in response.json()["error"]


def test_plan_needs_a_gpu(client: Any) -> None:
    """POST /api/plan without a gpu is a 422 naming `gpu`."""
    response = client.post("/api/plan", json={"model": "Llama-3.1-8B", "workload": LORA})
    assert response.status_code == 422
    assert response.json()["field"] == "gpu"


def test_curve_over_batch_sizes_never_shrinks(client: Any) -> None:
    """/api/curve returns one point per batch size; the peak never shrinks as the batch grows."""
    values = [1, 2, 4, 8]
    body = {"model": "Llama-3.1-8B", "workload": LORA, "gpu": "H100", "axis": "batch", "values": values}
    response = client.post("/api/curve", json=body)
    assert response.status_code == 200
    data = response.json()
    assert data["schema"] == "memfit.curve/1"
    assert [p["value"] for p in data["points"]] == values
    peaks = [p["peak"]["device_bytes"] for p in data["points"]]
    assert peaks == sorted(peaks)
    assert data["gpu"]["usable_bytes"] == 85_017_493_504


def test_curve_context_beyond_the_model_reports_the_error(client: Any) -> None:
    """A context longer than max_position_embeddings is a point with an error, not a failed request."""
    body = {
        "model": "Llama-3.2-1B",
        "workload": {"task": "infer", "prompt_tokens": 8},
        "axis": "context",
        "values": [1024, 1 << 20],
    }
    data = client.post("/api/curve", json=body).json()
    assert "peak" in data["points"][0]
    assert "error" in data["points"][1]


def test_curve_over_context_carries_vllm_capacity(client: Any) -> None:
    """vLLM on a GPU: each context point carries the estimate's KV capacity and its maximum concurrency."""
    workload = {"task": "infer", "prompt_tokens": 4096, "new_tokens": 256, "runtime": "vllm"}
    values = [1024, 4096, 16384]
    body = {"model": "Llama-3.1-8B", "workload": workload, "gpu": "H100-SXM-80GB", "axis": "context",
            "values": values}
    points = client.post("/api/curve", json=body).json()["points"]
    for point, prompt in zip(points, values, strict=True):
        capacity = point["capacity"]
        # one request = prompt + 256 new tokens in whole 16-token blocks: 1280, 4352, 16640
        assert capacity["sequence_tokens"] == -(-(prompt + 256) // 16) * 16
        assert capacity["max_concurrency"] == round(capacity["tokens"] / capacity["sequence_tokens"], 2)
        single = {**body, "workload": {**workload, "prompt_tokens": prompt}}
        single.pop("axis"), single.pop("values")
        assert capacity["tokens"] == client.post("/api/estimate", json=single).json()["capacity"]["tokens"]
    concurrency = [p["capacity"]["max_concurrency"] for p in points]
    assert concurrency == sorted(concurrency, reverse=True)


def test_curve_without_a_preallocating_runtime_has_no_capacity(client: Any) -> None:
    """transformers (no KV preallocation): curve points carry no capacity, so the page hides the chart."""
    body = {"model": "Llama-3.2-1B", "workload": {"task": "infer", "prompt_tokens": 8}, "gpu": "H100",
            "axis": "context", "values": [1024]}
    assert "capacity" not in client.post("/api/curve", json=body).json()["points"][0]


def test_index_page_is_self_contained(client: Any) -> None:
    """GET / serves the page: inline script and SVG, no external script, stylesheet or CDN."""
    response = client.get("/")
    assert response.status_code == 200
    page = response.text
    assert "<script>" in page
    assert "createElementNS" in page
    assert "<script src" not in page
    assert "<link" not in page
    assert "https://" not in page


def test_a_body_that_is_not_json_is_422(client: Any) -> None:
    """A body that is not JSON at all is a 422 naming `body`."""
    headers = {"Content-Type": "application/json"}
    response = client.post("/api/estimate", content=b"{not json", headers=headers)
    assert response.status_code == 422
    assert response.json()["field"] == "body"


def test_num_gpus_equals_the_cli_flag(client: Any) -> None:
    """`num_gpus` in a body is the CLI's --num-gpus: vLLM on 2 GPUs is tensor parallel, same bytes."""
    workload = {"task": "infer", "prompt_tokens": 4096, "runtime": "vllm", "kv_cache": "paged"}
    body = {"model": "Llama-3.1-8B", "workload": workload, "gpu": "H100", "num_gpus": 2}
    response = client.post("/api/estimate", json=body)
    assert response.status_code == 200, response.text
    assert response.json()["workload"]["parallel"]["tp"] == 2
    args = ["--prompt-tokens", "4096", "--runtime", "vllm", "--num-gpus", "2", "--gpu", "H100", "--json"]
    assert response.text == cli_stdout("estimate", "Llama-3.1-8B", *args)


def test_num_gpus_must_match_explicit_degrees(client: Any) -> None:
    """num_gpus beside explicit parallel degrees must equal their product (422 naming num_gpus)."""
    workload = {"task": "train", "seq_len": 512, "parallel": {"dp": 2}}
    body = {"model": "Llama-3.2-1B", "workload": workload, "num_gpus": 4}
    response = client.post("/api/estimate", json=body)
    assert response.status_code == 422
    assert response.json()["field"] == "num_gpus"


def test_images_estimate_equals_cli_json(client: Any) -> None:
    """A body with images and image_size [h, w] equals the CLI run with --images and --image-size."""
    body = {"model": "gemma-3-4b-it",
            "workload": {"task": "infer", "prompt_tokens": 128, "images": 2, "image_size": [1080, 1920]}}
    response = client.post("/api/estimate", json=body)
    assert response.status_code == 200, response.text
    assert response.text == cli_stdout("estimate", "gemma-3-4b-it", "--prompt-tokens", "128", "--images", "2",
                                       "--image-size", "1080x1920", "--json")
