"""The web server under load: uvicorn on 127.0.0.1, a bounded burst of concurrent requests, no errors.

`running_server` (also used by test_web_hardening.py) serves an app from a thread on a free port of
127.0.0.1 and stops it when the block ends. Only loopback traffic, bounded in count and time; the
1,000-request figures with latencies are benchmarks/web_load.py's job, not a timed test.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
from tests.helpers import requires_web

pytestmark = requires_web

REQUESTS = 200
"""Concurrent requests in the burst: enough to queue on the thread pool, few enough for 2 shared cores."""
STOP_WITHIN_S = 5.0


@contextlib.contextmanager
def running_server(app: Any) -> Iterator[str]:
    """Serve `app` with uvicorn from a thread on a free 127.0.0.1 port; yield its base URL; stop it.

    uvicorn leaves logging alone (`log_config=None`), so its records reach pytest's caplog.
    """
    import uvicorn

    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    config = uvicorn.Config(app, log_config=None, log_level="warning", access_log=False, lifespan="on",
                            timeout_graceful_shutdown=2)
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 10
        while not server.started:
            assert thread.is_alive(), "uvicorn stopped while starting"
            assert time.monotonic() < deadline, "uvicorn did not start within 10 s"
            time.sleep(0.02)
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(STOP_WITHIN_S)
        sock.close()
        assert not thread.is_alive(), f"uvicorn did not stop within {STOP_WITHIN_S} s"


def _requests() -> list[tuple[str, str, dict[str, Any] | None]]:
    """REQUESTS (method, path, body) over the estimate, params and catalog routes (one curve in 20)."""
    infer = {"task": "infer", "prompt_tokens": 4096, "new_tokens": 256}
    lora = {"task": "train", "seq_len": 2048, "method": "lora", "lora": {"rank": 16, "alpha": 32}}
    kinds: list[tuple[str, str, dict[str, Any] | None]] = [
        ("POST", "/api/estimate", {"model": "Llama-3.1-8B", "workload": infer, "gpu": "H100"}),
        ("POST", "/api/estimate", {"model": "Llama-3.2-1B", "workload": lora, "gpu": "24GiB"}),
        ("POST", "/api/estimate", {"model": "Llama-3.1-70B", "workload": lora, "num_gpus": 4}),
        ("GET", "/api/params?model=Llama-3.1-8B", None),
        ("GET", "/api/catalog/models", None),
        ("GET", "/api/catalog/gpus", None),
        ("GET", "/api/catalog/quants", None),
    ]
    curve = {"model": "Llama-3.1-8B", "workload": lora, "gpu": "H100", "axis": "batch",
             "values": [1, 2, 4, 8]}
    return [("POST", "/api/curve", curve) if i % 20 == 19 else kinds[i % len(kinds)] for i in range(REQUESTS)]


async def _burst(base: str, requests: list[tuple[str, str, dict[str, Any] | None]]) -> list[Any]:
    """Every request at once (one connection each); the responses, or the exceptions, in order."""
    import httpx

    limits = httpx.Limits(max_connections=len(requests), max_keepalive_connections=0)
    async with httpx.AsyncClient(base_url=base, timeout=60, limits=limits) as client:
        calls = [client.request(method, path, json=body) for method, path, body in requests]
        return await asyncio.gather(*calls, return_exceptions=True)


def test_a_burst_of_concurrent_requests_has_no_errors() -> None:
    """200 concurrent estimate/params/catalog/curve requests: all 200, each the same bytes as alone."""
    import httpx

    from memfit.web.app import create_app

    requests = _requests()
    with running_server(create_app()) as base:
        kinds = {(method, path, repr(body)): (method, path, body) for method, path, body in requests}
        alone = {key: httpx.request(m, base + p, json=b).text for key, (m, p, b) in kinds.items()}
        responses = asyncio.run(_burst(base, requests))
        stopping = time.monotonic()
    assert time.monotonic() - stopping < STOP_WITHIN_S
    failures = [r if isinstance(r, Exception) else (r.status_code, r.text[:200])
                for r in responses if isinstance(r, Exception) or r.status_code != 200]
    assert failures == []
    assert [r.text for r in responses] == [alone[(m, p, repr(b))] for m, p, b in requests]


def test_a_slow_hub_lookup_does_not_stall_other_requests(monkeypatch: pytest.MonkeyPatch) -> None:
    """While a Hub id's lookup hangs, catalog requests answer at once; the hung one gets 504 at its
    budget; once the lookup ends, the retry is answered from memory (one lookup in all)."""
    import httpx

    from memfit import api
    from memfit.web.app import create_app

    real_load = api.load_model
    release = threading.Event()
    calls: list[str] = []

    def slow_load(ref: str, **kwargs: Any) -> Any:
        if ref != "slow-org/slow-model":
            return real_load(ref, **kwargs)
        calls.append(ref)
        assert release.wait(30)
        return real_load("Llama-3.2-1B", **kwargs)

    monkeypatch.setattr(api, "load_model", slow_load)
    slow = {"model": "slow-org/slow-model", "workload": {"task": "infer", "prompt_tokens": 64}}
    fast = {"model": "Llama-3.2-1B", "workload": {"task": "infer", "prompt_tokens": 64}}

    async def meanwhile(base: str) -> tuple[Any, list[Any], bool]:
        async with httpx.AsyncClient(base_url=base, timeout=30) as client:
            hung = asyncio.ensure_future(client.post("/api/estimate", json=slow))
            while not calls:  # the lookup has started and holds a Hub thread
                await asyncio.sleep(0.01)
            others = []
            for _ in range(5):
                others.append(await client.post("/api/estimate", json=fast))
                others.append(await client.get("/api/catalog/gpus"))
            still_waiting = not hung.done()
            return await hung, others, still_waiting

    with running_server(create_app(budget_s=2.0)) as base:
        hung, others, still_waiting = asyncio.run(meanwhile(base))
        assert [r.status_code for r in others] == [200] * 10
        assert still_waiting  # all ten answered while the hung request was still within its budget
        assert hung.status_code == 504
        assert "retry" in hung.json()["error"]
        release.set()
        deadline = time.monotonic() + 10
        while (retry := httpx.post(base + "/api/estimate", json=slow, timeout=10)).status_code == 504:
            assert time.monotonic() < deadline
            time.sleep(0.05)
    assert retry.status_code == 200
    assert retry.json()["model"]["name"] == "Llama-3.2-1B"
    assert calls == ["slow-org/slow-model"]
