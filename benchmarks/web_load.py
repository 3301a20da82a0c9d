"""Web load: `memfit serve` on 127.0.0.1 under concurrent bursts → results/web-load-<date>.{csv,md}.

    python benchmarks/web_load.py                  # 1,000 concurrent requests per burst
    python benchmarks/web_load.py --requests 200   # a smaller burst

The server is the real thing: `python -m memfit serve` in a subprocess (HF_HUB_OFFLINE=1, so nothing
leaves the machine), on a free port of 127.0.0.1. Each burst opens one connection per request and sends
them all at once with httpx; latency is from sending a request to its whole answer. Target: no errors
(every answer 200 or, for the hostile cases, the 4xx expected). Also measured: the server's RSS before
and after, and what a 100 MB declared body costs it (it is refused with 413 before it is read). Client
and server share the machine's cores, so the latencies include the client's own work.
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import datetime
import importlib.metadata
import os
import platform
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).resolve().parent / "results"
REPO = Path(__file__).resolve().parent.parent

INFER = {"task": "infer", "prompt_tokens": 4096, "new_tokens": 256}
LORA = {"task": "train", "seq_len": 2048, "method": "lora", "lora": {"rank": 16, "alpha": 32}}
Request = tuple[str, str, "dict[str, Any] | bytes | None", int]
"""(method, path, JSON body or raw bytes, expected status)."""

MIXED: list[Request] = [
    ("POST", "/api/estimate", {"model": "Llama-3.1-8B", "workload": INFER, "gpu": "H100"}, 200),
    ("POST", "/api/estimate", {"model": "Llama-3.2-1B", "workload": LORA, "gpu": "24GiB"}, 200),
    ("POST", "/api/estimate", {"model": "Llama-3.1-70B", "workload": LORA, "num_gpus": 4}, 200),
    ("GET", "/api/params?model=Llama-3.1-8B", None, 200),
    ("GET", "/api/catalog/models", None, 200),
    ("GET", "/api/catalog/gpus", None, 200),
    ("GET", "/api/catalog/quants", None, 200),
    ("POST", "/api/curve", {"model": "Llama-3.1-8B", "workload": LORA, "gpu": "H100", "axis": "batch",
                            "values": [1, 2, 4, 8, 16, 32, 64, 128, 256]}, 200),
]
HOSTILE: list[Request] = [
    ("POST", "/api/estimate", b"[" * 30_000 + b"]" * 30_000, 422),
    ("POST", "/api/estimate", b'{"model": "Llama-3.2-1B", "workload": {"task": "infer", "prompt_tokens": '
     + b"9" * 4000 + b"}}", 422),
    ("POST", "/api/estimate",
     b'{"model": "Llama-3.2-1B", "workload": {"task": "infer", "prompt_tokens": NaN}}', 422),
    ("POST", "/api/estimate", {"model": "No-Such-Model-7B", "workload": INFER}, 400),
    ("POST", "/api/estimate",
     {"model": "Llama-3.2-1B", "workload": {"task": "infer", "prompt_tokens": 0}}, 422),
]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _rss_mib(pid: int) -> float:
    """Resident memory of process `pid` (Linux /proc), MiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def start_server() -> tuple[subprocess.Popen[bytes], str]:
    """`memfit serve` on a free 127.0.0.1 port, ready to answer."""
    import httpx

    port = _free_port()
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    server = subprocess.Popen(
        [sys.executable, "-m", "memfit", "serve", "--host", "127.0.0.1", "--port", str(port)],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise SystemExit(f"memfit serve exited: {server.stderr.read().decode() if server.stderr else ''}")
        try:
            httpx.get(base + "/api/catalog/gpus", timeout=1)
            return server, base
        except httpx.TransportError:
            time.sleep(0.1)
    server.kill()
    raise SystemExit("memfit serve did not answer within 30 s")


async def _one(client: Any, request: Request) -> tuple[float, int | str]:
    method, path, body, _ = request
    start = time.perf_counter()
    try:
        if isinstance(body, bytes):
            response = await client.request(method, path, content=body,
                                            headers={"Content-Type": "application/json"})
        else:
            response = await client.request(method, path, json=body)
        await response.aread()
        return (time.perf_counter() - start) * 1e3, response.status_code
    except Exception as err:  # a transport error is a result here: counted, not raised
        return (time.perf_counter() - start) * 1e3, type(err).__name__


async def burst(base: str, requests: list[Request]) -> tuple[list[tuple[float, int | str]], float]:
    """All `requests` at once, one connection each: (latency ms, status or error name) and wall seconds."""
    import httpx

    limits = httpx.Limits(max_connections=len(requests), max_keepalive_connections=0)
    async with httpx.AsyncClient(base_url=base, timeout=120, limits=limits) as client:
        start = time.perf_counter()
        results = await asyncio.gather(*(_one(client, r) for r in requests))
        return list(results), time.perf_counter() - start


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))]


def _row(case: str, requests: list[Request], results: list[tuple[float, int | str]], wall: float,
         rss: tuple[float, float]) -> dict[str, Any]:
    latencies = [ms for ms, _ in results]
    errors = sum(1 for (_, got), r in zip(results, requests, strict=True) if got != r[3])
    return {
        "benchmark": "burst",
        "case": case,
        "n": len(results),
        "errors": errors,
        "p50_ms": round(statistics.median(latencies), 1),
        "p90_ms": round(_percentile(latencies, 0.90), 1),
        "p99_ms": round(_percentile(latencies, 0.99), 1),
        "max_ms": round(max(latencies), 1),
        "wall_s": round(wall, 2),
        "requests_per_s": round(len(results) / wall, 1),
        "rss_before_mib": round(rss[0], 1),
        "rss_after_mib": round(rss[1], 1),
        "meets_target": errors == 0,
    }


def run_bursts(server: subprocess.Popen[bytes], base: str, count: int) -> list[dict[str, Any]]:
    """Warm every route once, then one burst per case of `count` requests."""
    cases = {
        "mixed: estimate, params, catalog, curve": [MIXED[i % len(MIXED)] for i in range(count)],
        "estimate only (3 jobs)": [MIXED[i % 3] for i in range(count)],
        "hostile bodies (4xx expected)": [HOSTILE[i % len(HOSTILE)] for i in range(count)],
    }
    asyncio.run(burst(base, MIXED + HOSTILE))
    rows = []
    for case, requests in cases.items():
        before = _rss_mib(server.pid)
        results, wall = asyncio.run(burst(base, requests))
        rows.append(_row(case, requests, results, wall, (before, _rss_mib(server.pid))))
        print(f"{case:<42} n {len(results)}  errors {rows[-1]['errors']}  p50 {rows[-1]['p50_ms']} ms  "
              f"p99 {rows[-1]['p99_ms']} ms  {rows[-1]['requests_per_s']} req/s")
    return rows


def huge_body(server: subprocess.Popen[bytes], base: str) -> dict[str, Any]:
    """A request declaring a 100 MB body (1 KiB of it sent): the server's answer, its time and RSS delta."""
    host, port = base.removeprefix("http://").split(":")
    before = _rss_mib(server.pid)
    head = (b"POST /api/estimate HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
            b"Content-Length: 100000000\r\n\r\n")
    start = time.perf_counter()
    with socket.create_connection((host, int(port)), timeout=30) as sock:
        sock.sendall(head + b"{" + b" " * 1023)
        answer = sock.recv(4096)
    took = (time.perf_counter() - start) * 1e3
    status = answer.split(b" ", 2)[1].decode() if answer.startswith(b"HTTP/") else "no answer"
    after = _rss_mib(server.pid)
    print(f"100 MB declared body: {status} in {took:.1f} ms, RSS {before:.1f} -> {after:.1f} MiB")
    return {
        "benchmark": "huge_body", "case": "Content-Length 100,000,000 (1 KiB sent)", "n": 1,
        "errors": 0 if status == "413" else 1, "p50_ms": round(took, 1), "p90_ms": round(took, 1),
        "p99_ms": round(took, 1), "max_ms": round(took, 1), "wall_s": round(took / 1e3, 3),
        "requests_per_s": None, "rss_before_mib": round(before, 1), "rss_after_mib": round(after, 1),
        "meets_target": status == "413",
    }


def machine() -> dict[str, str]:
    """What the numbers were measured on."""
    versions = {}
    for package in ("memfit", "fastapi", "starlette", "uvicorn", "anyio", "httpx"):
        try:
            versions[package] = importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            versions[package] = "not installed"
    commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO, capture_output=True, text=True,
                            check=False)
    return {
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "commit": commit.stdout.strip() or "unknown",
        "cpu_count": str(os.cpu_count()),
        "load_average_1min_at_start": f"{os.getloadavg()[0]:.2f}" if hasattr(os, "getloadavg") else "n/a",
        "platform": platform.platform(),
        "python": platform.python_version(),
        **{f"version_{k}": v for k, v in versions.items()},
    }


FIELDS = ["benchmark", "case", "n", "errors", "p50_ms", "p90_ms", "p99_ms", "max_ms", "wall_s",
          "requests_per_s", "rss_before_mib", "rss_after_mib", "meets_target"]


def write(rows: list[dict[str, Any]], info: dict[str, str]) -> tuple[Path, Path]:
    RESULTS.mkdir(parents=True, exist_ok=True)
    day = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d")
    csv_path, md_path = RESULTS / f"web-load-{day}.csv", RESULTS / f"web-load-{day}.md"
    with csv_path.open("w", newline="", encoding="utf-8") as handle:
        handle.write("".join(f"# {k}: {v}\n" for k, v in info.items()))
        writer = csv.DictWriter(handle, fieldnames=FIELDS)
        writer.writeheader()
        writer.writerows(rows)
    lines = [
        "# memfit web load benchmark",
        "",
        *(f"- {k}: {v}" for k, v in info.items()),
        "",
        "| benchmark | case | n | errors | p50 | p90 | p99 | max | wall | req/s | server RSS (MiB) | meets |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['benchmark']} | {r['case']} | {r['n']} | {r['errors']} | {r['p50_ms']} ms | "
            f"{r['p90_ms']} ms | "
            f"{r['p99_ms']} ms | {r['max_ms']} ms | {r['wall_s']} s | {r['requests_per_s'] or '-'} | "
            f"{r['rss_before_mib']} → {r['rss_after_mib']} | {'yes' if r['meets_target'] else '**no**'} |"
        )
    lines += [
        "",
        "`memfit serve` (uvicorn, one process) on 127.0.0.1; each burst sends all n requests at once, one",
        "connection each, from one httpx client process on the same machine. Latency: from sending a request",
        "to its whole answer. Target: 0 errors (an error is a transport failure or a status other than the",
        "expected one: 200, or the 4xx of each hostile body). Hostile bodies: 30,000-deep nesting, a",
        "4,000-digit number, NaN, an unknown model, prompt_tokens=0. huge_body: a request declaring",
        "100,000,000 bytes is answered 413 before its body is read; RSS before → after.",
        "",
    ]
    md_path.write_text("\n".join(lines), encoding="utf-8")
    return csv_path, md_path


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--requests", type=int, default=1000, help="requests per burst (default 1000)")
    args = parser.parse_args()
    if not 1 <= args.requests <= 5000:
        raise SystemExit("--requests must be between 1 and 5000")
    info = machine()
    server, base = start_server()
    try:
        rows = run_bursts(server, base, args.requests)
        rows.append(huge_body(server, base))
    finally:
        server.terminate()
        server.wait(10)
    csv_path, md_path = write(rows, info)
    print(f"wrote {csv_path.relative_to(REPO)} and {md_path.relative_to(REPO)}")


if __name__ == "__main__":
    main()
