"""`edgert serve`: one process owns the accelerator and serves every app on the board.

The Open Inference Protocol (KServe v2, as Triton speaks it) over HTTP, so existing clients (tritonclient, KServe's)
work unchanged; a model repository that `edgert deploy` fills; one executor per accelerator with bounded per-model
queues, weighted round-robin, deadlines and dynamic batching; Prometheus metrics and a JSON access log.

    from edgert.serve import ServeConfig, serve
    serve(ServeConfig(models={"digits": Path("digits_int8.tflite")}, port=8000))

Needs the `[serve]` extra (uvicorn, starlette, prometheus-client).
"""

from __future__ import annotations

import logging

from edgert.errors import InputDataError


def _require() -> None:
    try:
        import prometheus_client  # noqa: F401
        import starlette  # noqa: F401
        import uvicorn  # noqa: F401
    except ImportError as exc:
        raise InputDataError(f"edgert serve needs the [serve] extra ({exc.name} is missing): "
                             "pip install 'edgert[serve]'") from None


_require()

from edgert.serve.app import ServeConfig, Server, bind_inputs, create_app  # noqa: E402

log = logging.getLogger("edgert.serve")


def serve(config: ServeConfig, *, ready=None) -> Server:
    """Load the models and serve them until SIGTERM or SIGINT, which drain in-flight requests (up to
    `config.grace` seconds) and return.

    Args:
        ready: called with the Server once its socket listens (tests and the CLI's banner use it).

    Raises:
        InputDataError / ModelFormatError: a bad option or model (before anything listens).
        OSError: the port cannot be bound (in use, not permitted).
    """
    import uvicorn

    from edgert.errors import EdgertError

    from edgert.serve.repository import resolve

    _keep_freed_memory()
    for path in config.models.values():
        resolve(path)  # a named model that is not there is an error now, not a 503 later
    server = Server(config)
    server.start()  # load before binding: a bad model is an error now, not a 503 later
    app = create_app(config, server)
    uv_config = uvicorn.Config(
        app, host=config.host, port=config.port, log_level="warning", access_log=False, lifespan="on",
        timeout_graceful_shutdown=config.grace, ssl_certfile=str(config.tls_cert) if config.tls_cert else None,
        ssl_keyfile=str(config.tls_key) if config.tls_key else None, server_header=False)
    uv = _Uvicorn(uv_config, server, ready)
    try:
        uv.run()
    except EdgertError:
        raise
    if uv.bind_error:
        raise OSError(uv.bind_error)
    return server


def _keep_freed_memory() -> None:
    """Have glibc keep 16 MiB of freed memory at the top of the heap for reuse, instead of handing it back to the
    kernel after each request and faulting it back in on the next.

    An image request is large (a 224x224x3 float32 tensor is 600 KB) and passes through several buffers: the
    socket reads, the body, the quantized input. Measured on the 2-core test VM with four MobileNetV2 clients: the
    event loop's CPU per request fell from 0.67 to 0.53 ms and throughput rose from 276 to 292 requests/s. Without
    glibc (musl, macOS) there is no mallopt, and nothing changes.
    """
    import ctypes

    M_TOP_PAD = -2
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return
    mallopt(M_TOP_PAD, 16 << 20)


class _Uvicorn:
    """uvicorn.Server with a callback once it listens, and a bind failure as an error (uvicorn exits the process)."""

    def __new__(cls, config, server, ready):
        import contextlib
        import signal
        import threading

        import uvicorn

        class _Server(uvicorn.Server):
            bind_error: str | None = None

            async def startup(self, sockets=None):
                await super().startup(sockets)
                if self.started and ready is not None:
                    ready(server)

            @contextlib.contextmanager
            def capture_signals(self):
                """SIGTERM and SIGINT stop the server gracefully, and that is a clean exit: uvicorn's own re-raises
                the signal afterwards, which would end the process as killed."""
                if threading.current_thread() is not threading.main_thread():
                    yield
                    return
                original = {sig: signal.signal(sig, self.handle_exit) for sig in (signal.SIGINT, signal.SIGTERM)}
                try:
                    yield
                finally:
                    for sig, handler in original.items():
                        signal.signal(sig, handler)

            def run(self, sockets=None):
                try:
                    return super().run(sockets)
                except SystemExit:  # uvicorn exits 1 when it cannot bind; say why instead
                    self.bind_error = (f"cannot listen on {config.host}:{config.port} (in use, or not "
                                       "permitted); choose another --port")

        return _Server(config)


__all__ = ["ServeConfig", "Server", "bind_inputs", "create_app", "serve"]
