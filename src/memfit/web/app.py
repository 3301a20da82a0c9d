"""The local web app (extra [web]): a FastAPI JSON API over the public API, and one static page.

Routes: `POST /api/estimate`, `/api/plan`, `/api/curve`; `GET /api/params`, `/api/catalog/models`,
`/api/catalog/gpus`, `/api/catalog/quants`; `GET /` serves `static/index.html`. Responses are the same
text the CLI prints with `--json` (`memfit.api.dumps`), byte for byte.

Bodies are decoded by the core's own codec (`workload_from_dict`), so there is no second schema: a body
that does not decode is a 422 naming the field; a `MemfitError` while estimating is a 400 `{"error": ...}`.
In server mode local file paths are refused as models (catalog names and Hub ids only), and the trace
engine is off unless the app is created with `allow_trace=True` (`memfit serve --allow-trace`).
"""

from __future__ import annotations

import dataclasses
import importlib.resources
from typing import Any

from fastapi import FastAPI, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import HTMLResponse, JSONResponse, Response

from memfit import api
from memfit._version import __version__
from memfit.core.errors import InvalidWorkload, MemfitError
from memfit.core.plan import num_gpus_split
from memfit.core.result import Estimate, Gpu, workload_from_dict

MAX_CURVE_POINTS = 64
"""Points one /api/curve request may ask for (each is one analytic estimate, about a millisecond)."""
ENGINES_IN_SERVER = ("analytic", "trace")


class BodyError(Exception):
    """A request body that does not decode: answered 422 with the field named."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field


def _json(data: Any) -> Response:
    return Response(content=api.dumps(data), media_type="application/json")


def _looks_like_path(ref: str) -> bool:
    return (
        ref.startswith((".", "/", "~"))
        or "\\" in ref
        or ref.count("/") > 1
        or ref.endswith((".json", ".gguf", ".safetensors"))
        or ":" in ref
    )


def _model(body: dict[str, Any]) -> Any:
    """The body's model loaded as a catalog name or Hub id, never from a local path (server mode)."""
    return api.load_model(_model_ref(body), local_paths=False)


def _model_ref(body: dict[str, Any]) -> str:
    """The body's model: a catalog name or a Hub id; anything shaped like a local path is refused."""
    ref = body.get("model")
    if not isinstance(ref, str) or not ref.strip():
        raise BodyError("model", "model must be a catalog name or a Hub id like org/name")
    ref = ref.strip()
    if _looks_like_path(ref):
        raise BodyError(
            "model",
            f"model={ref!r}: local paths are refused by the server; "
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
        raise BodyError(unknown[0], f"unknown field(s) {', '.join(unknown)}; allowed: {', '.join(allowed)}")


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
    """`num_gpus` as the CLI's --num-gpus: alone it follows the runtime; with parallel degrees set, it must
    equal their product."""
    if num_gpus is None:
        return workload
    if isinstance(num_gpus, bool) or not isinstance(num_gpus, int) or num_gpus < 1:
        raise BodyError("num_gpus", f"num_gpus={num_gpus!r} must be an integer of at least 1")
    par = workload.parallel
    if par.dp * par.tp * par.pp != 1:
        if par.dp * par.tp * par.pp != num_gpus:
            raise BodyError("num_gpus", f"num_gpus={num_gpus} must equal dp × tp × pp = {par.num_gpus}")
        return workload
    try:
        return dataclasses.replace(
            workload, parallel=dataclasses.replace(par, **num_gpus_split(num_gpus, workload))
        )
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
    if not isinstance(name, str):
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


def create_app(*, allow_trace: bool = False) -> FastAPI:
    """The FastAPI app; `allow_trace` turns on the trace engine (seconds and ~0.4 GiB RAM per request)."""
    app = FastAPI(title="memfit", version=__version__, docs_url=None, redoc_url=None)

    @app.exception_handler(BodyError)
    async def _body_error(request: Request, err: BodyError) -> JSONResponse:
        return JSONResponse(status_code=422, content={"error": str(err), "field": err.field})

    @app.exception_handler(MemfitError)
    async def _memfit_error(request: Request, err: MemfitError) -> JSONResponse:
        return JSONResponse(status_code=400, content={"error": str(err)})

    @app.get("/", response_class=HTMLResponse)
    def index() -> HTMLResponse:
        page = importlib.resources.files("memfit.web").joinpath("static", "index.html")
        return HTMLResponse(page.read_text(encoding="utf-8"))

    @app.post("/api/estimate")
    async def estimate(request: Request) -> Response:
        return await run_in_threadpool(_estimate, await _body(request), allow_trace)

    @app.post("/api/plan")
    async def plan(request: Request) -> Response:
        return await run_in_threadpool(_plan, await _body(request))

    @app.post("/api/curve")
    async def curve(request: Request) -> Response:
        return await run_in_threadpool(_curve_response, await _body(request))

    @app.get("/api/params")
    def params(model: str) -> Response:
        return _json(api.params_report(_model({"model": model})))

    @app.get("/api/catalog/{kind}")
    def catalog(kind: str) -> Response:
        return _json(api.catalog_report(kind))

    return app


async def _body(request: Request) -> dict[str, Any]:
    """The request's JSON object (BodyError when it is not JSON or not an object)."""
    try:
        data = await request.json()
    except ValueError as err:
        raise BodyError("body", "the request body is not JSON") from err
    return _object(data)


def _estimate(body: dict[str, Any], allow_trace: bool) -> Response:
    """POST /api/estimate: `memfit estimate --json` for the body's model, workload, GPU and engine."""
    _check_keys(body, ("model", "workload", "gpu", "num_gpus", "engine"))
    engine = str(body.get("engine") or "analytic")
    if engine not in ENGINES_IN_SERVER:
        raise BodyError("engine", f"engine={engine!r} is not served; use analytic or trace")
    if engine == "trace" and not allow_trace:
        raise MemfitError("the trace engine is off in this server; start it with memfit serve --allow-trace")
    spec, workload, gpu = _model(body), _workload(body), _gpu(body, required=False)
    return _json(api.estimate(spec, workload, gpu=gpu, engine=engine).to_dict())


def _plan(body: dict[str, Any]) -> Response:
    """POST /api/plan: `memfit plan --json`, with maximize "batch", "context" or null."""
    _check_keys(body, ("model", "workload", "gpu", "num_gpus", "maximize"))
    maximize = body.get("maximize")
    if maximize not in (None, "batch", "context"):
        raise BodyError("maximize", f"maximize={maximize!r} is not valid; use batch, context or null")
    spec, workload, gpu = _model(body), _workload(body), _gpu(body, required=True)
    return _json(api.plan(spec, workload, gpu=gpu or "", maximize=maximize).to_dict())


def _curve_response(body: dict[str, Any]) -> Response:
    """POST /api/curve: peaks over `values` of the batch size or the context length."""
    _check_keys(body, ("model", "workload", "gpu", "num_gpus", "axis", "values"))
    axis = body.get("axis")
    if axis not in ("batch", "context"):
        raise BodyError("axis", f"axis={axis!r} is not valid; use batch or context")
    spec, workload, gpu = _model(body), _workload(body), _gpu(body, required=False)
    return _json(_curve(spec, workload, gpu, axis, _int_list(body, "values")))


def _curve(spec: Any, workload: Any, gpu: Gpu | None, axis: str, values: list[int]) -> dict[str, Any]:
    """Peaks over batch sizes or context lengths (`memfit.curve/1`); a point that cannot run has its error."""
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
        points.append(
            {
                "value": value,
                "peak": {
                    "phase": str(peak.phase),
                    "allocated_bytes": peak.allocated_bytes,
                    "reserved_bytes": peak.reserved_bytes,
                    "device_bytes": peak.device_bytes,
                },
                "fits": est.fits,
            }
        )
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
