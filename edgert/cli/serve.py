"""`edgert serve`: the Open Inference Protocol server (edgert.serve)."""

from __future__ import annotations

from pathlib import Path

import click

from edgert.cli._common import delegate_options, examples, fail_cleanly
from edgert.errors import InputDataError


def _priorities(_ctx, _param, values: tuple[str, ...]) -> dict[str, int]:
    out = {}
    for value in values:
        name, sep, weight = value.partition("=")
        if not sep or not weight.isdigit() or int(weight) < 1:
            raise click.BadParameter(f"{value!r} is not NAME=WEIGHT with a whole WEIGHT of 1 or more")
        out[name] = int(weight)
    return out


def _token(path: Path | None) -> str | None:
    if path is None:
        return None
    try:
        token = path.read_text().strip()
    except (OSError, UnicodeDecodeError) as exc:
        raise InputDataError(f"--token-file {path}: cannot read it ({getattr(exc, 'strerror', None) or exc})") \
            from None
    if len(token) < 16 or any(c.isspace() for c in token):
        raise InputDataError(f"--token-file {path}: the token must be one line of 16 or more characters without "
                             "spaces (e.g. python3 -c 'import secrets; print(secrets.token_urlsafe())')")
    return token


@click.command(epilog=examples(
    "edgert serve digits_int8.tflite",
    "edgert serve --repository ~/edgert --port 8000 --max-batch 8 --priority camera=3",
    "edgert serve det=detector_edgetpu.tflite --delegate edgetpu,xnnpack --token-file token.txt"))
@click.argument("models", nargs=-1, metavar="[MODEL | NAME=MODEL]...")
@click.option("--repository", type=click.Path(path_type=Path), metavar="DIR",
              help="Serve every model in DIR: NAME.tflite files and deployed NAME/current folders (the layout "
                   "edgert deploy makes); new versions are picked up while serving.")
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on (0.0.0.0: every one).")
@click.option("--port", type=click.IntRange(0, 65535), default=8000, show_default=True)
@click.option("--threads", type=click.IntRange(min=1), default=None,
              help="CPU threads per interpreter (default: the interpreter's own, one with LiteRT).")
@click.option("--instances", type=click.IntRange(min=1), default=1, show_default=True,
              help="Interpreters per CPU model, run side by side (each with --threads): more throughput for "
                   "several clients on a multi-core board. Accelerators run one.")
@click.option("--max-queue", type=click.IntRange(min=1), default=64, show_default=True,
              help="Requests waiting per model; more are answered 503 with Retry-After.")
@click.option("--max-batch", type=click.IntRange(min=1), default=1, show_default=True,
              help="Stack waiting requests into one invoke of up to N rows (models with a dynamic batch).")
@click.option("--batch-timeout-ms", type=click.FloatRange(min=0), default=2.0, show_default=True,
              help="How long the first request of a batch waits for others.")
@click.option("--priority", "priorities", multiple=True, metavar="NAME=WEIGHT", callback=_priorities,
              help="Weighted round-robin share of a model on its accelerator (repeatable; default 1).")
@click.option("--token-file", type=click.Path(path_type=Path), help="Require 'Authorization: Bearer TOKEN'.")
@click.option("--tls-cert", type=click.Path(path_type=Path), help="Serve HTTPS with this certificate (PEM).")
@click.option("--tls-key", type=click.Path(path_type=Path), help="The certificate's private key (PEM).")
@click.option("--max-body", type=click.IntRange(min=1024), default=64 << 20, show_default=True, metavar="BYTES",
              help="Largest request body; bigger ones are answered 413.")
@click.option("--grace", type=click.FloatRange(min=0), default=10.0, show_default=True,
              help="Seconds SIGTERM waits for requests in flight.")
@click.option("--poll", type=click.FloatRange(min=0), default=1.0, show_default=True,
              help="Seconds between checks for new versions in the repository (0: never).")
@click.option("--power", default="auto", show_default=True, metavar="auto|none|NAME[,NAME...]",
              help="Power sensor for /metrics' power and energy per inference (`edgert sensors` lists them).")
@click.option("--access-log/--no-access-log", default=True, show_default=True,
              help="One JSON line per inference request on stderr.")
@delegate_options
@fail_cleanly
def serve(models, repository, host, port, threads, instances, max_queue, max_batch, batch_timeout_ms, priorities,
          token_file, tls_cert, tls_key, max_body, grace, poll, power, access_log, delegate, delegate_lib,
          delegate_options, strict):
    """Serve models over the Open Inference Protocol (KServe v2 / Triton HTTP), one executor per accelerator."""
    import logging
    import sys

    from edgert.serve import ServeConfig
    from edgert.serve import serve as run_server
    from edgert.serve.repository import parse_model_args

    if not models and repository is None:
        raise InputDataError("name models to serve (MODEL or NAME=MODEL) or a --repository folder")
    if (tls_cert is None) != (tls_key is None):
        raise InputDataError("--tls-cert and --tls-key go together")
    for path in (tls_cert, tls_key):
        if path is not None and not path.is_file():
            raise InputDataError(f"{path}: no such file")
    config = ServeConfig(
        models=parse_model_args(models), repository=repository, host=host, port=port, delegate=delegate,
        delegate_options=tuple(delegate_options), delegate_lib=str(delegate_lib) if delegate_lib else None,
        strict=strict, threads=threads, instances=instances, max_queue=max_queue, max_batch=max_batch,
        batch_timeout_ms=batch_timeout_ms, priorities=priorities, token=_token(token_file), tls_cert=tls_cert,
        tls_key=tls_key, max_body=max_body, grace=grace, poll=poll, power=power)
    for name in priorities:
        if name not in config.models and repository is None:
            raise InputDataError(f"--priority {name}: no model of that name is served")
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(message)s"))
    for name, level in (("edgert.serve", logging.INFO),
                        ("edgert.serve.access", logging.INFO if access_log else logging.WARNING)):
        logger = logging.getLogger(name)
        logger.setLevel(level)
        if name == "edgert.serve":
            logger.addHandler(handler)
    logging.getLogger("uvicorn.error").setLevel(logging.CRITICAL)  # its bind error is ours, on one line

    def banner(server):
        scheme = "https" if tls_cert else "http"
        for entry in server.repository.entries.values():
            state = (f"version {entry.version}, {entry.model.delegation.describe()}" if entry.ready
                     else f"not ready: {entry.error}")
            click.echo(f"{entry.name}: {state}")
        click.echo(f"metrics: /metrics; {server.power_note}")
        click.echo(f"serving on {scheme}://{host}:{port}/v2 (Ctrl-C or SIGTERM stops, waiting up to {grace:g} s)")

    try:
        run_server(config, ready=banner)
    except OSError as exc:
        raise InputDataError(str(exc)) from None
    click.echo("stopped")
