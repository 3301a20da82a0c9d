"""The page in headless Chromium: the form, URL state, results, errors and a narrow screen.

The memfit app is served from a thread (127.0.0.1) under a test-only wrapper that adds `/harness`: a page
of the same origin that loads the real page in iframes, fills its form as a user would (change events,
submit), waits for each run and writes what it saw as JSON into `<pre id="report">`. Chromium prints the
harness DOM (`--dump-dom`, virtual time) and the test reads the report back. Skipped where
/usr/bin/chromium is missing (`apt-get install chromium`); no Python dependency is added.
"""

from __future__ import annotations

import html
import json
import os
import re
import subprocess
import tempfile
from pathlib import Path
from typing import Any

import pytest
from tests.helpers import requires_web

CHROMIUM = Path(os.environ.get("MEMFIT_CHROMIUM", "/usr/bin/chromium"))

pytestmark = [
    requires_web,
    pytest.mark.skipif(not CHROMIUM.exists(), reason=f"needs headless Chromium at {CHROMIUM}"),
]

HARNESS = Path(__file__).with_name("test_web_page_harness.html")
"""Loads the real page in iframes, acts on its form and reports what it saw (JSON in `<pre id="report">`)."""


@pytest.fixture(scope="module")
def report() -> dict[str, Any]:
    """Run the harness once in headless Chromium; the JSON it reports."""
    from starlette.applications import Starlette
    from starlette.responses import HTMLResponse
    from starlette.routing import Mount, Route
    from tests.shells.test_web_load import running_server

    from memfit.web.app import create_app

    async def harness(request: Any) -> HTMLResponse:
        return HTMLResponse(HARNESS.read_text(encoding="utf-8"))

    wrapper = Starlette(routes=[Route("/harness", harness), Mount("/", app=create_app())])
    with tempfile.TemporaryDirectory() as profile, running_server(wrapper) as base:
        command = [
            str(CHROMIUM), "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
            "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-extensions",
            f"--user-data-dir={profile}", "--window-size=1600,1200", "--virtual-time-budget=60000",
            "--dump-dom", f"{base}/harness",
        ]
        done = subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)
    found = re.search(r'<pre id="report">(.*?)</pre>', done.stdout, re.S)
    assert found, f"no report from Chromium (exit {done.returncode}): {done.stderr[-2000:]}"
    data: dict[str, Any] = json.loads(html.unescape(found.group(1)))
    assert "failure" not in data, data["failure"]
    return data


def _estimate(body: dict[str, Any]) -> dict[str, Any]:
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from fastapi.testclient import TestClient

    from memfit.web.app import create_app

    response = TestClient(create_app()).post("/api/estimate", json=body)
    assert response.status_code == 200, response.text
    result: dict[str, Any] = response.json()
    return result


def _gib(nbytes: int) -> str:
    return f"{nbytes / 2**30:.2f} GiB"


def test_a_shared_url_fills_the_form_and_runs(report: dict[str, Any]) -> None:
    """?task=train&seq_len=4096&method=full&gpu=RTX-4090&dp=2&zero=3 fills those fields (the alias picks
    the catalog GPU) and runs that job: the summary shows the API's own peak for the body it sent."""
    opened = report["opened"]
    assert opened["state"] == "done"
    assert opened["values"] == {
        "task": "train", "seq_len": "4096", "gpu": "RTX-4090-24GB", "gpu_size": "24GiB", "zero": "3",
        "dp": "2", "runtime": "transformers", "i_quant": "none",
    }
    request = opened["request"]
    assert request["gpu"] == "RTX-4090-24GB"
    assert request["workload"]["seq_len"] == 4096
    assert request["workload"]["method"] == "full"
    assert request["workload"]["parallel"] == {"dp": 2, "zero": "3"}
    expected = _estimate(request)
    assert _gib(expected["peak"]["device_bytes"]) + " on device" in opened["summary"]
    assert ("does not fit" in opened["summary"]) == (expected["fits"] is False)
    assert opened["bars"] >= 4  # one bar segment at least per training phase
    assert opened["curves"] >= 2
    assert opened["plan_hidden"] == (expected["fits"] is not False)


def test_the_url_follows_the_form(report: dict[str, Any]) -> None:
    """After the form is changed to vLLM with AWQ weights on a custom 48GiB GPU, the address bar (and the
    share link) hold exactly the changed fields; the request carries the vLLM settings."""
    vllm = report["vllm"]
    assert vllm["state"] == "done"
    query = dict(pair.split("=", 1) for pair in vllm["search"].lstrip("?").split("&"))
    assert query == {
        "gpu": "custom", "gpu_size": "48GiB", "runtime": "vllm", "i_quant": "awq-4bit-g128",
        "gpu_memory_utilization": "0.8", "tp": "2", "seq_len": "4096", "method": "full", "zero": "3",
    }
    assert vllm["share"] == vllm["search"]
    workload = vllm["request"]["workload"]
    assert vllm["request"]["gpu"] == "48GiB"
    assert workload["runtime"] == "vllm"
    assert workload["quant"] == "awq-4bit-g128"
    assert workload["gpu_memory_utilization"] == "0.8"
    assert workload["parallel"] == {"tp": 2}
    assert "zero" not in workload["parallel"]  # training-only fields stay out of an inference request
    assert _gib(_estimate(vllm["request"])["peak"]["device_bytes"]) in vllm["summary"]


def test_vllm_on_a_gpu_draws_the_concurrency_chart(report: dict[str, Any]) -> None:
    """vLLM on a GPU shows the concurrency chart, one dot per context point with a capacity; a training job
    and llama.cpp (no KV capacity) hide it."""
    assert report["vllm"]["concurrency_hidden"] is False
    assert report["vllm"]["concurrency_points"] >= 2
    assert report["opened"]["concurrency_hidden"] is True
    assert report["llamacpp"]["concurrency_hidden"] is True


def test_a_shared_url_reruns_the_same_request(report: dict[str, Any]) -> None:
    """Opening the address the vLLM run left sends the very same request again."""
    assert report["reopened"]["state"] == "done"
    assert report["reopened"]["request"] == report["vllm"]["request"]
    assert report["reopened"]["summary"] == report["vllm"]["summary"]


def test_weight_formats_come_from_the_catalog_per_runtime(report: dict[str, Any]) -> None:
    """The weights list is /api/catalog/quants filtered by runtime: vLLM has AWQ and no GGUF; llama.cpp
    has GGUF types; llama.cpp shows its GPU-layers field and vLLM its utilization and block size."""
    from memfit import api

    catalog = api.catalog_report("quants")["quants"]
    for case, runtime in (("vllm", "vllm"), ("llamacpp", "llama.cpp")):
        names = (q["name"] for q in catalog if runtime in q["runtimes"] and q["name"] != "none")
        wanted = ["none", *dict.fromkeys(names)]
        assert report[case]["quants"] == wanted
    assert "gguf-Q4_K_M" not in report["vllm"]["quants"]
    assert "gguf-Q4_K_M" in report["llamacpp"]["quants"]
    assert report["vllm"]["shown"] == {
        "n_gpu_layers": False, "gpu_memory_utilization": True, "block_size": True, "zero": False,
        "device_map": True, "gpu_size": True, "v_cache_dtype": False, "kv_cache": False,
    }
    assert report["llamacpp"]["shown"]["n_gpu_layers"]
    assert report["llamacpp"]["shown"]["v_cache_dtype"]
    assert not report["llamacpp"]["shown"]["gpu_memory_utilization"]
    assert report["llamacpp"]["request"]["workload"]["n_gpu_layers"] == 20
    assert report["llamacpp"]["request"]["workload"]["quant"] == "gguf-Q4_K_M"
    assert report["llamacpp"]["state"] == "done"


def test_an_error_clears_the_previous_result(report: dict[str, Any]) -> None:
    """prompt_tokens=0 after a good run: the error names the field, and no bar, curve, plan or assumption
    of the previous job is left on the page."""
    error = report["error"]
    assert error["state"] == "error"
    assert error["summary"].startswith("error: ")
    assert "prompt_tokens" in error["summary"]
    assert (error["bars"], error["curves"], error["assumptions"], error["plan_hidden"]) == (0, 0, 0, True)


def test_a_narrow_screen_has_no_overlap_and_no_sideways_scroll(report: dict[str, Any]) -> None:
    """At 360 px wide (and at 1200) no two chart labels overlap, no form label overlaps a control, and the
    page is no wider than the screen."""
    assert report["narrow"]["state"] == "done"
    for layout in (report["narrow_layout"], report["wide_layout"]):
        assert layout["found"] == []
        assert layout["scroll_width"] <= layout["client_width"]

