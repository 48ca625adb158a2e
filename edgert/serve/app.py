"""The HTTP side of `edgert serve`: Open Inference Protocol routes on Starlette, served by uvicorn.

No traceback reaches a client: every failure is a status and a JSON `{"error": "..."}` naming what to fix, as
Triton answers, so that tritonclient raises it as an InferenceServerException with that message.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import json
import logging
import time
from concurrent.futures import CancelledError
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from starlette.applications import Starlette
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from edgert import __version__
from edgert.errors import EdgertError, InputDataError
from edgert.serve.metrics import Metrics
from edgert.serve.protocol import (DATATYPES, HEADER_LENGTH, BodyTooLarge, InferRequest, ProtocolError, datatype,
                                   decode_infer, decompress, encode_infer)
from edgert.serve.repository import Repository, Watcher
from edgert.serve.scheduler import DeadlineExceeded, Job, Overloaded, Scheduler, Stopped

log = logging.getLogger("edgert.serve")
access = logging.getLogger("edgert.serve.access")

EXTENSIONS = ("binary_tensor_data", "model_repository", "schedule_policy")


@dataclass
class ServeConfig:
    """What `edgert serve` is asked to do (the CLI's options, one to one)."""

    models: dict[str, Path] = field(default_factory=dict)  # by name; see repository.parse_model_args
    repository: Path | None = None
    host: str = "127.0.0.1"
    port: int = 8000
    delegate: str | None = None
    delegate_options: tuple[str, ...] = ()
    delegate_lib: str | None = None
    strict: bool = False
    threads: int | None = None
    instances: int = 1  # interpreters per CPU model, run side by side (accelerators always run one)
    max_queue: int = 64
    max_batch: int = 1
    batch_timeout_ms: float = 2.0
    priorities: dict[str, int] = field(default_factory=dict)
    token: str | None = None  # Bearer token; None: no authentication
    tls_cert: Path | None = None
    tls_key: Path | None = None
    max_body: int = 64 << 20
    grace: float = 10.0
    poll: float = 1.0  # seconds between checks of the repository for new versions; 0: never
    power: str | None = "auto"  # the power sensor for /metrics: "auto", "none" or sensor names (edgert sensors)


class Server:
    """The models, their scheduler and metrics: what the routes call into."""

    def __init__(self, config: ServeConfig):
        from edgert.runtime.delegation import parse_request
        from edgert.serve.repository import model_loader, scan

        self.config = config
        sources = dict(scan(config.repository)) if config.repository else {}
        sources.update(config.models)
        request = parse_request(config.delegate, config.delegate_options, config.delegate_lib, config.strict)
        self.metrics = Metrics()
        self.repository = Repository(sources, model_loader(request, config.threads), folder=config.repository)
        self.scheduler = Scheduler(self.repository, max_queue=config.max_queue, max_batch=config.max_batch,
                                   batch_timeout=config.batch_timeout_ms / 1e3, priorities=config.priorities,
                                   metrics=self.metrics, instances=config.instances)
        self.repository.copies = self.scheduler.copies
        self.repository.listeners.append(self.scheduler.route)
        self.watcher = Watcher(self.repository, config.poll)
        self.power = None
        self.power_note = ""
        self.started = False

    def start(self) -> None:
        if not self.started:
            from edgert.serve.energy import PowerMeter

            self.repository.load_all()
            self.watcher.start()
            self.power, self.power_note = PowerMeter.open(self.config.power, self.metrics,
                                                          lambda: self.scheduler.inferences)
            if self.power is not None:
                self.power.start()
            self.started = True

    def stop(self) -> None:
        self.watcher.stop()
        self.scheduler.stop(self.config.grace)
        if self.power is not None:
            self.power.stop()


def _error(status: int, message: str, headers: dict | None = None) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status, headers=headers)


def _tensor_meta(spec, quantized_as_float: bool = True) -> dict:
    storage = np.dtype(spec.dtype)
    shown = np.float32 if (spec.quantized and quantized_as_float) else storage
    return {"name": spec.name, "datatype": datatype(shown), "shape": list(spec.shape_signature or spec.shape)}


def _config_tensor(spec, batched: bool) -> dict:
    """One input or output in Triton's model-config schema: `data_type` (TYPE_FP32, ...) and `dims`, without the
    batch dimension when the model batches (Triton's `max_batch_size` > 0), else the exact shape."""
    shown = _tensor_meta(spec)
    kserve = shown["datatype"]
    dims = list(spec.shape_signature or spec.shape)[1:] if batched else list(spec.shape)
    return {"name": spec.name, "data_type": "TYPE_STRING" if kserve == "BYTES" else f"TYPE_{kserve}", "dims": dims}


def bind_inputs(model, request: InferRequest) -> tuple[list[np.ndarray], int]:
    """The request's tensors in model order, checked against the model's names, shapes and datatypes, and in the
    types the model stores.

    Quantized inputs take FP32 (quantized here, exactly as `edgert run` quantizes) or the model's own integer type
    (passed as stored). Returns the arrays and the batch size.

    Raises:
        InputDataError: a tensor that does not fit, named.
    """
    specs = model.inputs
    names = [s.name for s in specs]
    given = request.inputs
    if any(n not in given for n in names):  # tensor names are aliases of the signature's names
        aliases = {s.tensor_name: s.name for s in specs if s.tensor_name not in names}
        given = {aliases.get(n, n): a for n, a in request.inputs.items()}
        if len(given) != len(request.inputs):
            raise InputDataError(f"an input is given both by name and by tensor name; the model's inputs are {names}")
    unknown = [n for n in given if n not in names]
    missing = [n for n in names if n not in given]
    if unknown or missing:
        raise InputDataError(f"unknown input(s) {unknown or 'none'}, missing {missing or 'none'}; the model's inputs "
                             f"are {names}")
    arrays, rows = [], None
    for spec in specs:
        a = given[spec.name]
        storage = np.dtype(spec.dtype)
        advertised = np.dtype(np.float32) if spec.quantized else storage
        if a.dtype not in (advertised, storage):
            also = f" or {datatype(storage)}, its stored type" if storage != advertised else ""
            raise InputDataError(f"input '{spec.name}' is {datatype(a.dtype)}; send {datatype(advertised)}{also}")
        signature = spec.shape_signature or spec.shape
        if a.ndim != len(signature) or any(want not in (-1, got) for want, got in zip(signature, a.shape)):
            raise InputDataError(f"input '{spec.name}' has shape {list(a.shape)}; the model takes "
                                 f"{list(signature)} (-1: any size)")
        n = a.shape[0] if a.ndim else 1
        if rows is not None and n != rows:
            raise InputDataError(f"input '{spec.name}' has {n} rows where the others have {rows}")
        rows = n
        arrays.append(a)
    # One type per input (the stored one), so that requests batched together stack without casting, and the
    # quantizing is done here, while the executor runs the previous request.
    return model.quantize_inputs(arrays), rows or 1


class _Auth:
    """Bearer-token authentication in front of every route but liveness (pure ASGI: no per-request overhead)."""

    def __init__(self, app, token: str):
        self.app, self.expected = app, f"Bearer {token}".encode()

    async def __call__(self, scope, receive, send):
        if scope["type"] == "http" and scope["path"] != "/v2/health/live":  # liveness tells nothing; probes lack tokens
            given = dict(scope["headers"]).get(b"authorization", b"")
            if not hmac.compare_digest(given, self.expected):
                response = _error(401, "this server needs 'Authorization: Bearer TOKEN' (the token in its "
                                       "--token-file)", {"WWW-Authenticate": "Bearer"})
                await response(scope, receive, send)
                return
        await self.app(scope, receive, send)


async def _read_body(request: Request, limit: int) -> bytes:
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise BodyTooLarge(limit)
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise BodyTooLarge(limit)
        chunks.append(chunk)
    return b"".join(chunks)


def create_app(config: ServeConfig, server: Server | None = None) -> Starlette:
    """The ASGI application. `server` may be given already started (the CLI loads models before binding)."""
    server = server or Server(config)
    repo, scheduler, metrics = server.repository, server.scheduler, server.metrics

    async def server_metadata(_request):
        return JSONResponse({"name": "edgert", "version": __version__, "extensions": list(EXTENSIONS)})

    async def live(_request):
        return Response(status_code=200)

    async def ready(_request):
        entries = [e for e in repo.entries.values() if e.loaded]
        ok = bool(entries) and all(e.ready for e in entries)
        return Response(status_code=200 if ok else 503)

    def _entry(request):
        name = request.path_params["name"]
        entry = repo.get(name)
        if entry is None:
            known = ", ".join(sorted(repo.entries)) or "none"
            return None, _error(404, f"unknown model '{name}'; this server has: {known}")
        version = request.path_params.get("version")
        if version is not None and entry.version is not None and version != entry.version:
            return None, _error(404, f"model '{name}' version {version} is not served (serving {entry.version})")
        return entry, None

    def _ready_entry(request):
        entry, error = _entry(request)
        if error is None and not entry.ready:
            error = _error(503, f"model '{entry.name}' is not ready: {entry.error}")
        return entry, error

    async def model_metadata(request):
        entry, error = _ready_entry(request)
        if error:
            return error
        model = entry.model
        return JSONResponse({"name": entry.name, "versions": [entry.version], "platform": "tensorflow_lite",
                             "inputs": [_tensor_meta(s) for s in model.inputs],
                             "outputs": [_tensor_meta(s) for s in model.outputs]})

    async def model_ready(request):
        entry, error = _entry(request)
        if error:
            return error
        return Response(status_code=200 if entry.ready else 503)

    async def model_config(request):
        entry, error = _ready_entry(request)
        if error:
            return error
        model = entry.model
        # Triton's schema: a model whose batch dimension is dynamic batches (max_batch_size > 0, dims without it);
        # one with a fixed shape does not (max_batch_size 0, its exact dims), so Triton's tools need no --shape.
        batchable = all(s.shape_signature[:1] == (-1,) for s in model.inputs + model.outputs)
        return JSONResponse({
            "name": entry.name, "platform": "tensorflow_lite", "backend": "edgert",
            "max_batch_size": max(config.max_batch, 1) if batchable else 0,
            **({"dynamic_batching": {"max_queue_delay_microseconds": int(config.batch_timeout_ms * 1e3)}}
               if batchable and config.max_batch > 1 else {}),
            "input": [_config_tensor(s, batchable) for s in model.inputs],
            "output": [_config_tensor(s, batchable) for s in model.outputs],
            "parameters": {"delegate": model.delegation.used, "delegation": model.delegation.describe(),
                           "path": model.path, "stale": entry.stale}})

    async def infer(request: Request):
        arrived = time.monotonic()
        name = request.path_params["name"]
        entry, error = _entry(request)
        if error:
            metrics.requests.labels(name if entry else "", "404").inc()
            return error
        job = None
        status, response = 200, None
        try:
            response, job = await _infer(request, entry, arrived)
        except ClientDisconnect:
            status = 499  # nginx's "client closed request": nothing to answer
            response = Response(status_code=499)
        except BodyTooLarge as exc:
            status, response = 413, _error(413, str(exc))
        except (ProtocolError, InputDataError) as exc:
            status, response = 400, _error(400, str(exc))
        except Overloaded as exc:
            status, response = 503, _error(503, str(exc), {"Retry-After": str(exc.retry_after)})
        except DeadlineExceeded as exc:
            status, response = 504, _error(504, str(exc))
        except Stopped as exc:
            status, response = 503, _error(503, str(exc), {"Retry-After": "1"})
        except _NotReady as exc:
            status, response = 503, _error(503, str(exc))
        except EdgertError as exc:
            status, response = 500, _error(500, str(exc))
        except Exception as exc:  # noqa: BLE001 - the client gets a line, the log gets the traceback
            log.exception("%s: request failed", name)
            status, response = 500, _error(500, f"internal error ({type(exc).__name__}); see the server's log")
        if response is not None and status == 200:
            status = response.status_code
        seconds = time.monotonic() - arrived
        metrics.requests.labels(name, str(status)).inc()
        metrics.request_latency.labels(name).observe(seconds)
        if job is not None and status == 200:
            metrics.queue_wait.labels(name).observe(job.queue_s)
            metrics.compute.labels(name).observe(job.compute_s)
        if access.isEnabledFor(logging.INFO):
            access.info(json.dumps({
                "time": round(time.time(), 3), "client": f"{request.client.host}" if request.client else None,
                "method": "POST", "path": request.url.path, "model": name, "status": status,
                "ms": round(seconds * 1e3, 3), "queue_ms": round(job.queue_s * 1e3, 3) if job else None,
                "compute_ms": round(job.compute_s * 1e3, 3) if job else None,
                "batch": job.batch if job else None, "version": job.version if job else None}))
        return response

    async def _infer(request: Request, entry, arrived: float):
        if not entry.ready:
            raise _NotReady(f"model '{entry.name}' is not ready: {entry.error}")
        scheduler.admit(entry.name)
        body = await _read_body(request, config.max_body)
        body = decompress(body, request.headers.get("content-encoding"), config.max_body)
        header = request.headers.get(HEADER_LENGTH)
        if len(body) > 1 << 18 and header is None:  # a big JSON body: parse it off the event loop
            decoded = await asyncio.get_running_loop().run_in_executor(None, decode_infer, body, header)
        else:
            decoded = decode_infer(body, header)
        loaded = entry.current  # the version the request is checked against is the one it runs on
        if loaded is None:
            raise _NotReady(f"model '{entry.name}' is not ready: {entry.error}")
        model = loaded.replicas[0]
        out_names = [s.name for s in model.outputs]
        aliases = {s.tensor_name: s.name for s in model.outputs if s.tensor_name not in out_names}
        wrong = [n for n in decoded.outputs if n not in out_names and n not in aliases]
        if wrong:
            raise InputDataError(f"unknown output(s) {wrong}; the model's outputs are {out_names}")
        arrays, rows = bind_inputs(model, decoded)
        deadline = arrived + decoded.timeout_us / 1e6 if decoded.timeout_us is not None else None
        job = Job(entry.name, arrays, rows, deadline, loaded)
        future = scheduler.submit(entry.name, job)
        try:
            outputs = await asyncio.wrap_future(future)
        except CancelledError:
            raise Stopped("the request was cancelled") from None
        body, json_size = encode_infer(entry.name, job.version, decoded, out_names, outputs, aliases)
        headers = {"Content-Type": "application/octet-stream" if json_size is not None else "application/json"}
        if json_size is not None:
            headers["Inference-Header-Content-Length"] = str(json_size)
        return Response(body, headers=headers), job

    async def repository_index(_request):
        return JSONResponse(repo.index())

    async def load(request):
        name = request.path_params["name"]
        try:
            entry = await asyncio.get_running_loop().run_in_executor(None, lambda: repo.reload(name, explicit=True))
        except KeyError:
            return _error(404, f"no model '{name}' in this server's models or repository")
        if not entry.ready:
            return _error(400, f"failed to load '{name}': {entry.error}")
        return Response(status_code=200)

    async def unload(request):
        name = request.path_params["name"]
        try:
            repo.unload(name)
        except KeyError:
            return _error(404, f"no model '{name}' is served")
        return Response(status_code=200)

    async def prometheus(_request):
        for name in list(repo.entries):
            metrics.queue_depth.labels(name).set(scheduler.depth(name))
        return Response(metrics.render(), media_type=metrics.content_type)

    async def not_found(request, _exc=None):
        return _error(404, f"no route {request.method} {request.url.path}; see /v2 for the protocol")

    routes = [
        Route("/v2", server_metadata), Route("/v2/health/live", live), Route("/v2/health/ready", ready),
        Route("/v2/models/{name}", model_metadata), Route("/v2/models/{name}/versions/{version}", model_metadata),
        Route("/v2/models/{name}/ready", model_ready),
        Route("/v2/models/{name}/versions/{version}/ready", model_ready),
        Route("/v2/models/{name}/config", model_config),
        Route("/v2/models/{name}/infer", infer, methods=["POST"]),
        Route("/v2/models/{name}/versions/{version}/infer", infer, methods=["POST"]),
        Route("/v2/repository/index", repository_index, methods=["POST", "GET"]),
        Route("/v2/repository/models/{name}/load", load, methods=["POST"]),
        Route("/v2/repository/models/{name}/unload", unload, methods=["POST"]),
        Route("/metrics", prometheus),
    ]

    async def method_not_allowed(request, _exc=None):
        return _error(405, f"{request.method} is not allowed on {request.url.path}")

    @contextlib.asynccontextmanager
    async def lifespan(_app):
        server.start()
        try:
            yield
        finally:
            server.stop()

    app = Starlette(routes=routes, lifespan=lifespan,
                    exception_handlers={404: not_found, 405: method_not_allowed,
                                        Exception: _internal_error})
    app.state.server = server
    if config.token:
        return _Auth(app, config.token)
    return app


async def _internal_error(_request, exc):
    log.error("unhandled: %s", exc, exc_info=exc)
    return _error(500, f"internal error ({type(exc).__name__}); see the server's log")


class _NotReady(Exception):
    pass


__all__ = ["DATATYPES", "ServeConfig", "Server", "bind_inputs", "create_app"]
