"""Running a measurement in a fresh process of its own (spawned, never forked), with its progress lines, its result
or its error brought back, and Ctrl-C or SIGTERM passed on so it stops and reports what it finished."""

from __future__ import annotations

import os
import signal
from typing import Any, Callable

from edgert.errors import BenchError, EdgertError


def _child(target: Callable, args: tuple, kwargs: dict, conn) -> None:
    def terminated(_signum, _frame):
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, terminated)
    # the parent passes Ctrl-C on as SIGINT: honour it even when this process inherited SIGINT ignored (a
    # background job of a non-interactive shell)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        result = target(*args, **kwargs, progress=lambda line: conn.send(("progress", line)))
        conn.send(("result", result))
    except EdgertError as exc:
        conn.send(("error", exc))
    except KeyboardInterrupt:
        conn.send(("interrupted", None))
    except BaseException as exc:  # a bug: its words come back as one line, not a traceback in a child
        conn.send(("error", BenchError(f"the measuring process failed: {type(exc).__name__}: {exc}")))
    finally:
        conn.close()


def run_isolated(target: Callable, args: tuple, kwargs: dict, progress: Callable[[str], None] | None = None) -> Any:
    """`target(*args, **kwargs, progress=...)` in a fresh process; its return value, or its EdgertError raised here.

    Ctrl-C or SIGTERM here is passed on as SIGINT, so the measurement ends its timed loop early and its partial
    result still comes back; when nothing finished, KeyboardInterrupt is raised here.
    """
    import multiprocessing

    context = multiprocessing.get_context("spawn")
    receive, send = context.Pipe(duplex=False)
    process = context.Process(target=_child, args=(target, args, kwargs, send), name="edgert-isolated", daemon=True)
    process.start()
    send.close()
    interrupted = False
    try:
        while True:
            try:
                kind, value = receive.recv()
            except KeyboardInterrupt:
                interrupted = True
                if process.is_alive():
                    os.kill(process.pid, signal.SIGINT)
                continue
            except EOFError:
                process.join()
                raise BenchError(f"the measuring process ended without a result (exit code {process.exitcode})") \
                    from None
            if kind == "progress":
                if progress is not None:
                    progress(value)
                continue
            break
    finally:
        process.join(timeout=30)
        if process.is_alive():
            process.kill()
    if kind == "error":
        raise value
    if kind == "interrupted" or (value is None and interrupted):
        raise KeyboardInterrupt
    return value
