"""The local web app (extra [web]): a FastAPI JSON API over the public API, and one static page.

Routes: `POST /api/estimate`, `/api/plan`, `/api/curve`; `GET /api/params`, `/api/catalog/models`,
`/api/catalog/gpus`, `/api/catalog/quants`; `GET /` serves `static/index.html`. Responses are the same
text the CLI prints with `--json` (`memfit.api.dumps`), byte for byte.

Bodies are decoded by the core's own codec (`workload_from_dict`), so there is no second schema: a body
that does not decode is a 422 naming the field; a `MemfitError` while estimating is a 400 `{"error": ...}`.
In server mode local file paths are refused as models (catalog names and Hub ids only), and the trace
engine is off unless the app is created with `allow_trace=True` (`memfit serve --allow-trace`).

Hostile input and load. Every client error is a 4xx with a JSON `{"error": ...}` body and nothing in the
server log:
- a body over `MAX_BODY_BYTES` is refused (413) from its Content-Length, or as soon as a chunked body
  passes the limit, never read whole; nesting deeper than `MAX_JSON_DEPTH`, a number beyond
  `MAX_JSON_NUMBER`, NaN or Infinity is a 422 naming the field;
- the event loop only reads, parses and checks bodies. Estimates, plans, curves and parameter counts run
  in worker threads; models that are not in the bundled catalog (Hub ids, which may reach the network)
  are looked up in their own small thread pool (`ModelResolver`), one lookup per reference at a time,
  remembered (bounded), so a slow Hub never holds up a catalog request;
- each request has a time budget (`REQUEST_BUDGET_S`): past it the answer is 504 (the work goes on in the
  background and a Hub lookup's result is kept for the retry); more Hub lookups waiting than
  `HUB_MAX_PENDING` is 503 with Retry-After.
"""

from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import contextlib
import importlib.resources
import json
import math
import threading
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import anyio
import anyio.to_thread
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException

from memfit import api
from memfit._version import __version__
from memfit.core.errors import InvalidWorkload, MemfitError
from memfit.core.limits import shown
from memfit.core.plan import with_num_gpus
from memfit.core.result import Estimate, Gpu, KvCapacity, workload_from_dict
from memfit.core.spec import ModelSpec

MAX_CURVE_POINTS = 64
"""Points one /api/curve request may ask for (each is one analytic estimate, about a millisecond)."""
MAX_PLAN_GPU_COUNTS = 8
"""GPU counts one /api/plan strategy search may try (each is about 30 analytic estimates)."""
ENGINES_IN_SERVER = ("analytic", "trace")

MAX_BODY_BYTES = 64 * 1024
"""Largest request body the server reads (bytes); a larger one is a 413 before it is read. The page's
bodies are under 2 KiB, a 64-point curve included."""
MAX_JSON_DEPTH = 8
"""Deepest nesting of objects and lists in a body; the deepest field, `workload.lora.targets`, is at 4."""
MAX_JSON_NUMBER = 2**53 - 1
"""Largest magnitude of a number in a body: JavaScript's Number.MAX_SAFE_INTEGER, the largest integer the
page can send exactly; far above any token count, batch size or byte count memfit is asked about."""
MAX_TEXT_CHARS = 200
"""Longest model reference or GPU name: a Hub id is at most 96 characters on each side of its slash."""
REQUEST_BUDGET_S = 20.0
"""Seconds one request may take, Hub lookup included, before it is answered 504 (the trace engine,
when allowed, keeps only its own timeout, MEMFIT_TRACE_TIMEOUT)."""
HUB_WORKERS = 4
"""Threads that resolve models outside the catalog (Hub ids: config and safetensors headers)."""
HUB_MAX_PENDING = 16
"""Distinct references being looked up or waiting for a Hub thread; one more is a 503."""
MODEL_CACHE_SIZE = 32
"""Models resolved outside the catalog that the server remembers (least recently used leave first)."""
HUB_ERROR_TTL_S = 60.0
"""Seconds a failed lookup (404, gated, Hub unreachable) is answered from memory before it is retried."""
TRACE_SLOTS = 2
"""Trace runs at once (each a subprocess of ~0.4 GiB RAM); more wait for a slot within their budget."""


class RequestError(Exception):
    """A request answered with a 4xx or 5xx JSON error that is not a MemfitError (those are 400)."""

    status = 422

    def __init__(
        self, message: str, *, field: str | None = None, status: int | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.field = field
        self.status = status or self.status
        self.headers = headers

    def content(self) -> dict[str, Any]:
        return {"error": str(self), "field": self.field} if self.field else {"error": str(self)}


class BodyError(RequestError):
    """A request body that does not decode: answered 422 with the field named."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message, field=field, status=422)


def _json(data: Any) -> Response:
    return Response(content=api.dumps(data), media_type="application/json")


# --- reading a body --------------------------------------------------------------------------------


class _Refused:
    """A number the JSON reader would not take (beyond MAX_JSON_NUMBER, NaN, Infinity); the check that
    follows parsing names its field."""

    __slots__ = ("text",)

    def __init__(self, text: str) -> None:
        self.text = text


def _parse_int(text: str) -> int | _Refused:
    if len(text.lstrip("-")) > len(str(MAX_JSON_NUMBER)):  # never convert a thousand-digit literal
        return _Refused(text)
    value = int(text)
    return value if abs(value) <= MAX_JSON_NUMBER else _Refused(text)


def _parse_float(text: str) -> float | _Refused:
    value = float(text)  # "1e400" is inf
    return value if math.isfinite(value) and abs(value) <= MAX_JSON_NUMBER else _Refused(text)


def _parse_constant(text: str) -> _Refused:
    return _Refused(text)  # NaN, Infinity, -Infinity: not JSON


def parse_body(raw: bytes) -> dict[str, Any]:
    """The JSON object in `raw`, checked for depth and number size (BodyError naming the field)."""
    try:
        text = raw.decode("utf-8")
        data = json.loads(
            text, parse_int=_parse_int, parse_float=_parse_float, parse_constant=_parse_constant
        )
    except RecursionError as err:
        raise BodyError("body", f"the request body nests deeper than {MAX_JSON_DEPTH} levels") from err
    except ValueError as err:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
        raise BodyError("body", "the request body is not JSON") from err
    _check_tree(data)
    return _object(data)


def _check_tree(data: Any) -> None:
    """Walk the parsed body (no recursion): depth at most MAX_JSON_DEPTH, every number in range."""
    stack: list[tuple[Any, str, int]] = [(data, "", 1)]
    while stack:
        value, path, depth = stack.pop()
        if isinstance(value, _Refused):
            raise BodyError(
                path or "body",
                f"{path or 'body'}={value.text[:40]} is out of range: numbers must be finite and at most "
                f"{MAX_JSON_NUMBER:,} in magnitude",
            )
        if not isinstance(value, (dict, list)):
            continue
        if depth > MAX_JSON_DEPTH:
            raise BodyError(path or "body", f"the request body nests deeper than {MAX_JSON_DEPTH} levels")
        if isinstance(value, dict):
            stack.extend((item, f"{path}.{key}" if path else key, depth + 1) for key, item in value.items())
        else:
            stack.extend((item, f"{path}[{i}]", depth + 1) for i, item in enumerate(value))


async def _read_body(request: Request) -> bytes:
    """The request body, refused (413) as soon as it is known to pass MAX_BODY_BYTES."""
    declared = request.headers.get("content-length")
    if declared is not None and (
        not declared.isdigit() or len(declared) > 12 or int(declared) > MAX_BODY_BYTES
    ):
        raise _too_large(declared)
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > MAX_BODY_BYTES:
            raise _too_large(f"more than {size}")
        chunks.append(chunk)
    return b"".join(chunks)


def _too_large(size: str) -> RequestError:
    return RequestError(
        f"the request body ({size[:20]} bytes) is larger than the {MAX_BODY_BYTES:,} bytes this server reads",
        status=413, headers={"Connection": "close"},
    )


async def _body(request: Request) -> dict[str, Any]:
    """The request's JSON object (413 when too large; BodyError when it is not a JSON object)."""
    return parse_body(await _read_body(request))


# --- checking a body -------------------------------------------------------------------------------


def _looks_like_path(ref: str) -> bool:
    return (
        ref.startswith((".", "/", "~"))
        or "\\" in ref
        or ref.count("/") > 1
        or ref.endswith((".json", ".gguf", ".safetensors"))
        or ":" in ref
    )


def _model_ref(body: dict[str, Any]) -> str:
    """The body's model: a catalog name or a Hub id; anything shaped like a local path is refused."""
    ref = body.get("model")
    if not isinstance(ref, str) or not ref.strip():
        raise BodyError("model", "model must be a catalog name or a Hub id like org/name")
    ref = ref.strip()
    if len(ref) > MAX_TEXT_CHARS:
        raise BodyError("model", f"model has {len(ref)} characters; a Hub id has at most {MAX_TEXT_CHARS}")
    if _looks_like_path(ref):
        raise BodyError(
            "model",
            f"model={shown(ref)}: local paths are refused by the server; "
            "give a catalog name or a Hub id like org/name",
        )
    return ref


def _object(body: Any) -> dict[str, Any]:
    if not isinstance(body, dict):
        raise BodyError("body", "the request body must be a JSON object")
    return body


def _check_keys(body: dict[str, Any], allowed: tuple[str, ...]) -> None:
    unknown = sorted(set(body) - set(allowed))
    if unknown:
        names = ", ".join(shown(key).strip("'\"") for key in unknown[:5])
        raise BodyError(unknown[0][:60], f"unknown field(s) {names}; allowed: {', '.join(allowed)}")


def _workload(body: dict[str, Any]) -> Any:
    data = body.get("workload")
    if not isinstance(data, dict):
        raise BodyError(
            "workload", 'workload must be an object such as {"task": "infer", "prompt_tokens": 4096}'
        )
    try:
        workload = workload_from_dict(data)
    except InvalidWorkload as err:
        raise BodyError(f"workload.{_field_of(str(err))}", str(err)) from err
    return _spread(workload, body.get("num_gpus"))


def _spread(workload: Any, num_gpus: Any) -> Any:
    """`num_gpus` as the CLI's --num-gpus (core.plan.with_num_gpus)."""
    try:
        return with_num_gpus(workload, num_gpus)
    except InvalidWorkload as err:
        raise BodyError("num_gpus", str(err)) from err


def _field_of(message: str) -> str:
    """The field a decoding message names: 'Inference.batch_size=0 ...' → 'batch_size'."""
    if "unknown field(s) " in message:
        return message.split("unknown field(s) ", 1)[1].split(",", 1)[0].strip()
    head = message.split("=", 1)[0].split(":", 1)[0].split(" ", 1)[0]
    return head.rsplit(".", 1)[-1] or "workload"


def _gpu(body: dict[str, Any], *, required: bool) -> Gpu | None:
    name = body.get("gpu")
    if name is None or name == "":
        if required:
            raise BodyError("gpu", "gpu is required: a catalog GPU name or a size such as 24GiB")
        return None
    if not isinstance(name, str) or len(name) > MAX_TEXT_CHARS:
        raise BodyError("gpu", "gpu must be a string: a catalog GPU name or a size such as 24GiB")
    return api.get_gpu(name)


def _int_list(body: dict[str, Any], field: str) -> list[int]:
    values = body.get(field)
    if not isinstance(values, list) or not values:
        raise BodyError(field, f"{field} must be a non-empty list of integers")
    if len(values) > MAX_CURVE_POINTS:
        raise BodyError(field, f"{field} has {len(values)} points; at most {MAX_CURVE_POINTS}")
    if not all(isinstance(v, int) and not isinstance(v, bool) and v >= 1 for v in values):
        raise BodyError(field, f"{field} must hold integers of at least 1")
    return values


# --- resolving models and running work off the event loop -----------------------------------------


class ModelResolver:
    """Model references → ModelSpec for the server, so that no lookup holds up another request.

    Catalog names and repo ids resolve at once (bundled, offline, cached by `memfit.sources.catalog`).
    Anything else (a Hub id, which may reach the network, or an unknown name) is loaded by `api.load_model`
    in a pool of HUB_WORKERS threads: one lookup per reference at a time (later requests for it wait for the
    same one), the last MODEL_CACHE_SIZE answers remembered, a failure for HUB_ERROR_TTL_S seconds.
    """

    def __init__(self, *, clock: Callable[[], float] = time.monotonic) -> None:
        self._catalog = frozenset(
            str(key).lower() for entry in api.catalog_models()
            for key in (entry.get("name"), entry.get("repo_id"), *entry.get("aliases", ())) if key
        )
        self._clock = clock
        self._lock = threading.Lock()
        self._known: collections.OrderedDict[str, tuple[float, ModelSpec | MemfitError]] = (
            collections.OrderedDict()
        )
        self._pending: dict[str, concurrent.futures.Future[ModelSpec]] = {}
        self._pool = concurrent.futures.ThreadPoolExecutor(HUB_WORKERS, thread_name_prefix="memfit-hub")

    async def resolve(self, ref: str, deadline: float) -> ModelSpec:
        """The model `ref` names; RequestError 504 past `deadline`, 503 when too many lookups wait."""
        if ref.lower() in self._catalog:
            return api.load_model(ref, local_paths=False)
        lookup = self._lookup(ref)
        if lookup.done():
            return lookup.result()
        waited = asyncio.wrap_future(lookup)
        # a waiter that gives up leaves the lookup running; retrieve its outcome so none goes unread
        waited.add_done_callback(lambda future: future.cancelled() or future.exception())
        done, _ = await asyncio.wait({waited}, timeout=max(deadline - time.monotonic(), 0.0))
        if not done:
            raise RequestError(
                f"looking up {ref} took longer than this request's budget; it goes on in the background "
                "and its answer is kept: retry in a moment", status=504,
            )
        return waited.result()

    def _lookup(self, ref: str) -> concurrent.futures.Future[ModelSpec]:
        """A future for `ref`: already settled from memory, the lookup in flight, or a new one."""
        with self._lock:
            known = self._known.get(ref)
            if known is not None and known[0] > self._clock():
                self._known.move_to_end(ref)
                settled: concurrent.futures.Future[ModelSpec] = concurrent.futures.Future()
                outcome = known[1]
                if isinstance(outcome, MemfitError):
                    settled.set_exception(type(outcome)(*outcome.args))
                else:
                    settled.set_result(outcome)
                return settled
            pending = self._pending.get(ref)
            if pending is not None:
                return pending
            if len(self._pending) >= HUB_MAX_PENDING:
                raise RequestError(
                    f"{len(self._pending)} model lookups are already waiting for the Hub; retry in a moment",
                    status=503, headers={"Retry-After": "5"},
                )
            future = self._pool.submit(self._load, ref)
            self._pending[ref] = future
            return future

    def _load(self, ref: str) -> ModelSpec:
        """Runs in a Hub thread: load, remember the answer (or the MemfitError), drop the pending entry."""
        try:
            spec = api.load_model(ref, local_paths=False)
        except MemfitError as err:
            self._remember(ref, err, self._clock() + HUB_ERROR_TTL_S)
            raise
        except BaseException:
            with self._lock:
                self._pending.pop(ref, None)
            raise
        self._remember(ref, spec, math.inf)
        return spec

    def _remember(self, ref: str, outcome: ModelSpec | MemfitError, until: float) -> None:
        with self._lock:
            self._pending.pop(ref, None)
            self._known[ref] = (until, outcome)
            self._known.move_to_end(ref)
            while len(self._known) > MODEL_CACHE_SIZE:
                self._known.popitem(last=False)

    def close(self) -> None:
        """Stop taking lookups; threads still looking finish in the background."""
        self._pool.shutdown(wait=False, cancel_futures=True)


async def _off_loop(
    func: Callable[..., Response], *args: Any, deadline: float, limiter: anyio.CapacityLimiter | None = None
) -> Response:
    """`func(*args)` in a worker thread; 504 past `deadline` (the thread finishes in the background)."""
    with anyio.move_on_after(max(deadline - time.monotonic(), 0.0)):
        return await anyio.to_thread.run_sync(func, *args, abandon_on_cancel=True, limiter=limiter)
    raise RequestError(
        "the request took longer than this server's time budget; try a smaller job", status=504
    )


# --- the app -------------------------------------------------------------------------------------------


def create_app(*, allow_trace: bool = False, budget_s: float = REQUEST_BUDGET_S) -> FastAPI:
    """The FastAPI app; `allow_trace` turns on the trace engine (seconds and ~0.4 GiB RAM per request);
    `budget_s` is each request's time budget (REQUEST_BUDGET_S)."""
    resolver = ModelResolver()

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        yield
        resolver.close()

    app = FastAPI(title="memfit", version=__version__, docs_url=None, redoc_url=None, openapi_url=None,
                  lifespan=lifespan)
    app.state.resolver = resolver
    trace_slots = anyio.CapacityLimiter(TRACE_SLOTS)
    rendered: dict[str, str] = {}  # the page and the catalog listings: bundled, rendered once

    def deadline() -> float:
        return time.monotonic() + budget_s

    @app.exception_handler(RequestError)
    async def _request_error(request: Request, err: RequestError) -> JSONResponse:
        return JSONResponse(status_code=err.status, content=err.content(), headers=err.headers)

    @app.exception_handler(MemfitError)
    async def _memfit_error(request: Request, err: MemfitError) -> JSONResponse:
        return JSONResponse(status_code=400, content={"error": str(err)})

    @app.exception_handler(RequestValidationError)
    async def _query_error(request: Request, err: RequestValidationError) -> JSONResponse:
        first = err.errors()[0] if err.errors() else {}
        field = str(first.get("loc", ("", "query"))[-1])
        return JSONResponse(status_code=422, content={"error": f"{field}: {first.get('msg', 'invalid')}",
                                                      "field": field})

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, err: StarletteHTTPException) -> JSONResponse:
        return JSONResponse(
            status_code=err.status_code, content={"error": str(err.detail)}, headers=err.headers
        )

    @app.get("/", response_class=HTMLResponse)
    async def index() -> HTMLResponse:
        if "/" not in rendered:
            page = importlib.resources.files("memfit.web").joinpath("static", "index.html")
            rendered["/"] = page.read_text(encoding="utf-8")
        return HTMLResponse(rendered["/"])

    @app.post("/api/estimate")
    async def estimate(request: Request) -> Response:
        """`memfit estimate --json` for the body's model, workload, GPU and engine."""
        until = deadline()
        body = await _body(request)
        _check_keys(body, ("model", "workload", "gpu", "num_gpus", "engine"))
        engine = body.get("engine") or "analytic"
        if engine not in ENGINES_IN_SERVER:
            raise BodyError("engine", f"engine={shown(engine)} is not served; use analytic or trace")
        if engine == "trace" and not allow_trace:
            raise MemfitError(
                "the trace engine is off in this server; start it with memfit serve --allow-trace"
            )
        ref, workload, gpu = _model_ref(body), _workload(body), _gpu(body, required=False)
        spec = await resolver.resolve(ref, until)
        if engine == "trace":  # the trace enforces its own timeout (MEMFIT_TRACE_TIMEOUT)
            return await _off_loop(
                _estimate, spec, workload, gpu, engine, deadline=math.inf, limiter=trace_slots
            )
        return await _off_loop(_estimate, spec, workload, gpu, engine, deadline=until)

    @app.post("/api/plan")
    async def plan(request: Request) -> Response:
        """`memfit plan --json`, with maximize "batch", "context" or null, and optional gpu_counts (training:
        the multi-GPU strategy search, as --gpu-counts)."""
        until = deadline()
        body = await _body(request)
        _check_keys(body, ("model", "workload", "gpu", "num_gpus", "maximize", "gpu_counts"))
        counts = tuple(_int_list(body, "gpu_counts")) if body.get("gpu_counts") is not None else ()
        if len(counts) > MAX_PLAN_GPU_COUNTS:
            raise BodyError("gpu_counts", f"gpu_counts has {len(counts)} entries; at most "
                            f"{MAX_PLAN_GPU_COUNTS}")
        maximize = body.get("maximize")
        if maximize not in (None, "batch", "context"):
            raise BodyError(
                "maximize", f"maximize={shown(maximize)} is not valid; use batch, context or null"
            )
        ref, workload, gpu = _model_ref(body), _workload(body), _gpu(body, required=True)
        spec = await resolver.resolve(ref, until)
        return await _off_loop(_plan, spec, workload, gpu, maximize, counts, deadline=until)

    @app.post("/api/curve")
    async def curve(request: Request) -> Response:
        """Peaks over `values` of the batch size or the context length (`memfit.curve/1`)."""
        until = deadline()
        body = await _body(request)
        _check_keys(body, ("model", "workload", "gpu", "num_gpus", "axis", "values"))
        axis = body.get("axis")
        if axis not in ("batch", "context"):
            raise BodyError("axis", f"axis={shown(axis)} is not valid; use batch or context")
        ref, workload, gpu = _model_ref(body), _workload(body), _gpu(body, required=False)
        values = _int_list(body, "values")
        spec = await resolver.resolve(ref, until)
        return await _off_loop(_curve_response, spec, workload, gpu, axis, values, deadline=until)

    @app.get("/api/params")
    async def params(model: str) -> Response:
        """`memfit params --json`."""
        until = deadline()
        spec = await resolver.resolve(_model_ref({"model": model}), until)
        return await _off_loop(_params, spec, deadline=until)

    @app.get("/api/catalog/{kind}")
    async def catalog(kind: str) -> Response:
        """`memfit catalog KIND --json` (bundled data: rendered once)."""
        key = kind.strip().lower()
        if key not in rendered:
            rendered[key] = api.dumps(api.catalog_report(key))  # InvalidWorkload (400) for an unknown kind
        return Response(content=rendered[key], media_type="application/json")

    return app


def _estimate(spec: ModelSpec, workload: Any, gpu: Gpu | None, engine: str) -> Response:
    return _json(api.estimate(spec, workload, gpu=gpu, engine=engine).to_dict())


def _plan(spec: ModelSpec, workload: Any, gpu: Gpu, maximize: str | None,
          gpu_counts: tuple[int, ...] = ()) -> Response:
    return _json(api.plan(spec, workload, gpu=gpu, maximize=maximize, gpu_counts=gpu_counts).to_dict())


def _params(spec: ModelSpec) -> Response:
    return _json(api.params_report(spec))


def _curve_response(
    spec: ModelSpec, workload: Any, gpu: Gpu | None, axis: str, values: list[int]
) -> Response:
    return _json(_curve(spec, workload, gpu, axis, values))


def _capacity_point(capacity: KvCapacity) -> dict[str, Any]:
    """A curve point's KV capacity (vLLM): tokens, sequence tokens, and the maximum concurrency as
    `Estimate.to_dict` writes it (capacity tokens over one sequence's tokens, 2 places)."""
    return {"tokens": capacity.tokens, "sequence_tokens": capacity.sequence_tokens,
            "max_concurrency": round(float(capacity.max_concurrency), 2)}


def _curve(spec: Any, workload: Any, gpu: Gpu | None, axis: str, values: list[int]) -> dict[str, Any]:
    """Peaks over batch sizes or context lengths (`memfit.curve/1`); a point that cannot run has its error;
    with a KV capacity (vLLM on a GPU) each point carries it (`capacity`)."""
    from memfit.core.plan import with_batch_size, with_context

    points: list[dict[str, Any]] = []
    for value in values:
        try:
            varied = with_batch_size(workload, value) if axis == "batch" else with_context(workload, value)
            est: Estimate = api.estimate(spec, varied, gpu=gpu)
        except InvalidWorkload as err:
            points.append({"value": value, "error": str(err)})
            continue
        peak = est.peak
        point: dict[str, Any] = {
            "value": value,
            "peak": {
                "phase": str(peak.phase),
                "allocated_bytes": peak.allocated_bytes,
                "reserved_bytes": peak.reserved_bytes,
                "device_bytes": peak.device_bytes,
            },
            "fits": est.fits,
        }
        if est.capacity is not None:  # vLLM on a GPU: the page's concurrency chart
            point["capacity"] = _capacity_point(est.capacity)
        points.append(point)
    return {
        "schema": "memfit.curve/1",
        "model": spec.name,
        "axis": axis,
        "field": "batch_size"
        if axis == "batch"
        else ("seq_len" if hasattr(workload, "seq_len") else "prompt_tokens"),
        "gpu": None
        if gpu is None
        else {"name": gpu.name, "memory_bytes": gpu.memory_bytes, "usable_bytes": gpu.usable_bytes},
        "points": points,
    }
