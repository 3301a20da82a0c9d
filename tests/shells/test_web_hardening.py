"""The web API under hostile input: every client error is a 4xx with a JSON error, never a 500, and
nothing reaches the server log; a body over the limit is refused before it is read; Hub lookups are
remembered and bounded."""

from __future__ import annotations

import json
import logging
import socket
import threading
import time
import warnings
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from tests.helpers import requires_web
from tests.strategies import FUZZ_EXAMPLES

pytestmark = requires_web

with warnings.catch_warnings():
    warnings.simplefilter("ignore")  # starlette's TestClient on httpx: see test_web.py
    fastapi_testclient = pytest.importorskip("fastapi.testclient")

from tests.shells.test_web_load import running_server  # noqa: E402

from memfit.core.errors import ModelNotFound  # noqa: E402
from memfit.web import app as web  # noqa: E402

INFER = {"task": "infer", "prompt_tokens": 64}
JSON = {"Content-Type": "application/json"}
TOO_BIG = "numbers must be finite and at most 9,007,199,254,740,991 in magnitude"


@pytest.fixture(scope="module", autouse=True)
def offline() -> Any:
    """No test here reaches the network: a Hub id (a generated body may hold one) is looked up offline."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("HF_HUB_OFFLINE", "1")
        yield


@pytest.fixture(scope="module")
def client() -> Any:
    # raise_server_exceptions: any exception that would be a 500 fails the test loudly
    return fastapi_testclient.TestClient(web.create_app())


def _body(workload_text: str, **extra: str) -> bytes:
    more = "".join(f', "{key}": {value}' for key, value in extra.items())
    return f'{{"model": "Llama-3.2-1B", "workload": {workload_text}{more}}}'.encode()


@pytest.mark.parametrize(
    ("raw", "field", "message"),
    [
        (b"[" * 30_000 + b"]" * 30_000, "body", "nests deeper than 8 levels"),  # RecursionError in json
        (_body('{"task": "infer", "prompt_tokens": 8, "lora": ' + "[" * 9 + "]" * 9 + "}"),
         "workload.lora[0][0][0][0][0][0]", "nests deeper than 8 levels"),
        (_body('{"task": "infer", "prompt_tokens": ' + "9" * 5000 + "}"), "workload.prompt_tokens", TOO_BIG),
        (_body('{"task": "infer", "prompt_tokens": 9007199254740992}'), "workload.prompt_tokens", TOO_BIG),
        (_body('{"task": "infer", "prompt_tokens": -9007199254740992}'), "workload.prompt_tokens", TOO_BIG),
        (_body('{"task": "infer", "prompt_tokens": 1e400}'), "workload.prompt_tokens", TOO_BIG),
        (_body('{"task": "infer", "prompt_tokens": 1e300}'), "workload.prompt_tokens", TOO_BIG),
        (_body('{"task": "infer", "prompt_tokens": NaN}'), "workload.prompt_tokens", TOO_BIG),
        (_body('{"task": "infer", "prompt_tokens": -Infinity}'), "workload.prompt_tokens", TOO_BIG),
        (_body('{"task": "train", "seq_len": 8, "parallel": {"dp": 1e20}}'), "workload.parallel.dp", TOO_BIG),
        (_body('{"task": "infer", "prompt_tokens": 8}', num_gpus="1" + "0" * 30), "num_gpus", TOO_BIG),
        (b"\xff\xfe{}", "body", "not JSON"),
        (b"", "body", "not JSON"),
        (b'"a string"', "body", "must be a JSON object"),
        (b"[1, 2]", "body", "must be a JSON object"),
        (b"null", "body", "must be a JSON object"),
        (b'{"model": "' + b"x" * 5000 + b'", "workload": {}}', "model", "at most 200"),
        (_body(json.dumps(INFER), gpu='"' + "H" * 5000 + '"'), "gpu", "must be a string"),
        (_body("{}", engine='"' + "e" * 5000 + '"'), "engine", "is not served"),
    ],
)
def test_hostile_bodies_are_422_naming_the_field(client: Any, raw: bytes, field: str, message: str) -> None:
    """Deep nesting, numbers beyond 2**53 - 1 (or not finite), bytes that are not UTF-8 JSON, bodies that
    are not objects and over-long strings: each a 422 naming the field, with a short message."""
    response = client.post("/api/estimate", content=raw, headers=JSON)
    assert response.status_code == 422, response.text
    assert response.json()["field"] == field
    assert message in response.json()["error"]
    assert len(response.text) < 400  # a hostile value is never echoed whole


def test_numbers_at_the_limit_are_accepted(client: Any) -> None:
    """2**53 - 1 itself passes the reader; the core then judges it (too many tokens: a 4xx of its own)."""
    raw = _body('{"task": "infer", "prompt_tokens": 9007199254740991}')
    response = client.post("/api/estimate", content=raw, headers=JSON)
    assert response.status_code in (400, 422)
    assert "prompt_tokens" in response.json()["error"]
    assert TOO_BIG not in response.json()["error"]


def test_curve_values_beyond_the_limit_name_the_point(client: Any) -> None:
    """A curve value beyond the limit names its index: values[2]."""
    raw = _body(json.dumps(INFER), axis='"batch"', values="[1, 2, 1e17]")
    response = client.post("/api/curve", content=raw, headers=JSON)
    assert response.status_code == 422
    assert response.json()["field"] == "values[2]"


def test_a_body_over_the_limit_is_413(client: Any) -> None:
    """A body one byte over MAX_BODY_BYTES is a 413 (from its Content-Length) that says the limit."""
    raw = b'{"model": "' + b"x" * web.MAX_BODY_BYTES + b'"}'
    response = client.post("/api/estimate", content=raw, headers=JSON)
    assert response.status_code == 413
    assert "65,536 bytes" in response.json()["error"]


def test_a_chunked_body_over_the_limit_is_413(client: Any) -> None:
    """Without a Content-Length (chunked), reading stops at the limit: 413."""

    def chunks() -> Any:
        for _ in range(100):
            yield b" " * 4096

    response = client.post("/api/estimate", content=chunks(), headers=JSON)
    assert response.status_code == 413


@pytest.mark.parametrize(
    ("method", "path", "status", "field"),
    [
        ("GET", "/api/params", 422, "model"),
        ("GET", "/api/params?model=" + "m" * 300, 422, "model"),
        ("GET", "/api/params?model=../../etc/passwd", 422, "model"),
        ("GET", "/api/nothing-here", 404, None),
        ("DELETE", "/api/estimate", 405, None),
        ("GET", "/api/estimate", 405, None),
        ("GET", "/api/catalog/" + "k" * 300, 400, None),
        ("GET", "/docs", 404, None),
        ("GET", "/openapi.json", 404, None),
    ],
)
def test_every_client_error_is_a_json_4xx(client: Any, method: str, path: str, status: int,
                                          field: str | None) -> None:
    """Missing or bad query parameters, unknown routes and wrong methods: a 4xx with {"error": ...}."""
    response = client.request(method, path)
    assert response.status_code == status
    assert response.headers["content-type"] == "application/json"
    assert response.json()["error"]
    assert response.json().get("field") == field


JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner, max_size=4),
    max_leaves=20,
)
FIELDS = st.sampled_from(["model", "workload", "gpu", "num_gpus", "engine", "maximize", "axis", "values"])
WORKLOAD_KEYS = st.sampled_from(
    ["task", "prompt_tokens", "seq_len", "batch_size", "new_tokens", "quant", "runtime", "parallel", "lora",
     "method", "n_gpu_layers", "gpu_memory_utilization", "block_size", "kv_cache", "dtype"]
)


def _merged(base: Any, keys: Any, max_size: int) -> Any:
    """`base` dictionaries with up to `max_size` keys from `keys` set to arbitrary JSON values."""
    extra = st.dictionaries(keys, JSON_VALUES, max_size=max_size)
    return base.flatmap(lambda d: extra.map(lambda x: {**d, **x}))


WORKLOADS = _merged(
    st.fixed_dictionaries({"task": st.sampled_from(["infer", "train"]) | JSON_VALUES},
                          optional={"prompt_tokens": st.integers(1, 4096)}),
    WORKLOAD_KEYS, 3,
)
BODIES = _merged(
    st.fixed_dictionaries(
        {"model": st.sampled_from(["Llama-3.2-1B", "Mixtral-8x7B-v0.1"]) | JSON_VALUES,
         "workload": WORKLOADS},
        optional={"gpu": st.sampled_from(["H100", "24GiB"]) | JSON_VALUES},
    ),
    FIELDS, 2,
)


@settings(max_examples=FUZZ_EXAMPLES)
@given(path=st.sampled_from(["/api/estimate", "/api/plan", "/api/curve"]), body=BODIES)
def test_no_json_body_is_a_server_error(client: Any, path: str, body: Any) -> None:
    """Any JSON body on any POST route is 200 or a 4xx with {"error": ...}, never a 500."""
    response = client.post(path, content=json.dumps(body).encode(), headers=JSON)
    assert response.status_code == 200 or 400 <= response.status_code < 500, response.text
    if response.status_code != 200:
        assert response.json()["error"]


def _raw_exchange(base: str, head: bytes, body: bytes) -> bytes:
    """Send `head` and `body` on a raw socket to `base`; the bytes the server answers (up to 4 KiB)."""
    host, port = base.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        sock.sendall(head + body)
        return sock.recv(4096)


def test_a_huge_declared_body_is_refused_before_it_is_sent() -> None:
    """Content-Length: 100 MB with only 1 KiB sent: the server answers 413 at once and closes the
    connection; it never waits for (or reads) the other 99.99 MB."""
    with running_server(web.create_app()) as base:
        head = (b"POST /api/estimate HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                b"Content-Length: 100000000\r\n\r\n")
        started = time.monotonic()
        answer = _raw_exchange(base, head, b"{" + b" " * 1023)
        took = time.monotonic() - started
    assert answer.startswith(b"HTTP/1.1 413 ")
    assert b"connection: close" in answer.lower()
    assert took < 5  # not a read timeout: the refusal came before the body


def test_client_errors_leave_no_traceback_and_the_connection_serves_on(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Against a real uvicorn: hostile bodies get their 4xx, nothing at WARNING or above is logged, and
    the same keep-alive connection then answers a good request."""
    import httpx

    hostile = [b"[" * 30_000 + b"]" * 30_000, _body('{"task": "infer", "prompt_tokens": ' + "9" * 5000 + "}"),
               _body('{"task": "infer", "prompt_tokens": NaN}'), b"\xff", b"{}"]
    good = {"model": "Llama-3.2-1B", "workload": INFER}
    with caplog.at_level(logging.INFO), running_server(web.create_app()) as base, \
            httpx.Client(base_url=base, timeout=10) as http:
        statuses = [http.post("/api/estimate", content=raw, headers=JSON).status_code for raw in hostile]
        unknown = http.post("/api/estimate", json={"model": "No-Such-Model-7B", "workload": INFER})
        statuses.append(unknown.status_code)
        after = http.post("/api/estimate", json=good)
    assert statuses == [422, 422, 422, 422, 422, 400]
    assert after.status_code == 200
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING] == []
    assert not any(r.exc_info for r in caplog.records)


def test_hub_failures_are_remembered_for_a_while(monkeypatch: pytest.MonkeyPatch) -> None:
    """A Hub id that failed is answered from memory (same 400) until HUB_ERROR_TTL_S has passed."""
    from memfit import api

    calls: list[str] = []

    def missing(ref: str, **kwargs: Any) -> Any:
        calls.append(ref)
        raise ModelNotFound(f"no Hub repo {ref}")

    monkeypatch.setattr(api, "load_model", missing)
    now = [1000.0]
    resolver = web.ModelResolver(clock=lambda: now[0])
    for _ in range(3):
        with pytest.raises(ModelNotFound, match="no Hub repo gone/model"):
            resolver._lookup("gone/model").result(timeout=10)
    assert calls == ["gone/model"]
    now[0] += web.HUB_ERROR_TTL_S + 1
    with pytest.raises(ModelNotFound):
        resolver._lookup("gone/model").result(timeout=10)
    assert calls == ["gone/model", "gone/model"]
    resolver.close()


def test_resolved_models_are_kept_up_to_the_cache_size(monkeypatch: pytest.MonkeyPatch) -> None:
    """Resolved Hub models stay in memory, the least recently used leaving past MODEL_CACHE_SIZE."""
    from memfit import api

    spec = api.load_model("Llama-3.2-1B")
    calls: list[str] = []

    def load(ref: str, **kwargs: Any) -> Any:
        calls.append(ref)
        return spec

    monkeypatch.setattr(api, "load_model", load)
    monkeypatch.setattr(web, "MODEL_CACHE_SIZE", 2)
    resolver = web.ModelResolver()
    for ref in ["a/one", "b/two", "a/one", "c/three", "a/one", "b/two"]:
        assert resolver._lookup(ref).result(timeout=10) is spec
    # a/one stays (used again before c/three came); b/two had left and is loaded again
    assert calls == ["a/one", "b/two", "c/three", "b/two"]
    resolver.close()


def test_too_many_waiting_hub_lookups_is_503(monkeypatch: pytest.MonkeyPatch) -> None:
    """Past HUB_MAX_PENDING distinct lookups in flight, another is a 503 with Retry-After; a second
    request for a reference already being looked up joins it instead."""
    from memfit import api

    release = threading.Event()
    monkeypatch.setattr(api, "load_model", lambda ref, **kwargs: release.wait(10) and None)
    monkeypatch.setattr(web, "HUB_MAX_PENDING", 1)
    resolver = web.ModelResolver()
    first = resolver._lookup("slow/one")
    assert resolver._lookup("slow/one") is first
    with pytest.raises(web.RequestError) as refused:
        resolver._lookup("slow/two")
    assert refused.value.status == 503
    assert refused.value.headers == {"Retry-After": "5"}
    release.set()
    first.result(timeout=10)
    resolver.close()
