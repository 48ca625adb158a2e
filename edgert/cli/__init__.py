"""The `edgert` command: a thin layer over the library that only parses options and formats results.

Each command lives in a module of this package, imported only when that command runs (a Raspberry Pi pays for
`edgert run`, not for the converter's and the server's options). Errors are one line, usage errors included.
"""

from __future__ import annotations

import importlib
import sys

import click

# name -> (module in edgert.cli, attribute, the summary `edgert --help` shows without importing the module)
COMMANDS = {
    "convert": ("convert", "convert", "Convert a Keras model to TFLite: quantize, prune, QAT, ..."),
    "optimize": ("optimize", "optimize", "Search recipes for the smallest model within an accuracy budget."),
    "inspect": ("runtime", "inspect", "Describe a .tflite model: tensors, operators, delegation."),
    "run": ("runtime", "run", "Run a .tflite model once, on a file's inputs or seeded ones."),
    "check": ("runtime", "check", "Which operators each delegate accepts, from the file alone."),
    "delegates": ("runtime", "delegates", "List the delegate plugins, usable here or not, and why."),
    "bench": ("bench", "bench", "Latency, memory, temperature and energy per inference."),
    "sensors": ("bench", "sensors", "List the power sensor plugins and what each finds here."),
    "devices": ("board", "devices", "Board profiles: list them, show one, detect this board."),
    "bundle": ("board", "bundle", "Pack a model and the runtime into one runnable file."),
    "deploy": ("board", "deploy", "Deploy a model to a board over SSH, or roll it back."),
    "fleet": ("fleet", "fleet", "Many boards via Ansible: rollout in waves, status, rollback."),
    "metadata": ("android", "metadata", "Write or read TFLite Metadata: labels, normalisation, task."),
    "export": ("android", "export", "Export a model for an app: Android (Kotlin and Gradle)."),
    "serve": ("serve", "serve", "Serve models over HTTP (KServe v2 / Triton protocol)."),
}
# Summaries fit an 80-column terminal beside the command names, so none is cut or wrapped.


def _version_message() -> str:
    from edgert import __version__
    from edgert.runtime.backend import get_backend
    from edgert.errors import EdgertError

    try:
        backend = str(get_backend())
    except EdgertError as exc:
        backend = f"none ({exc})"
    return f"edgert {__version__} (interpreter backend: {backend}, Python {sys.version.split()[0]})"


def _print_version(ctx, _param, value):
    if value and not ctx.resilient_parsing:
        click.echo(_version_message())
        ctx.exit()


class _Edgert(click.Group):
    """Commands loaded on demand, a listing that imports nothing, and every error on one line."""

    def list_commands(self, ctx) -> list[str]:
        return list(COMMANDS)

    def get_command(self, ctx, name: str):
        if name not in COMMANDS:
            return None
        module, attribute, _ = COMMANDS[name]
        return getattr(importlib.import_module(f"{__name__}.{module}"), attribute)

    def format_commands(self, ctx, formatter) -> None:
        with formatter.section("Commands"):
            formatter.write_dl([(name, summary) for name, (_, _, summary) in COMMANDS.items()])

    def main(self, args=None, prog_name=None, complete_var=None, standalone_mode=True, **extra):
        if not standalone_mode:
            return super().main(args, prog_name, complete_var, standalone_mode, **extra)
        try:
            code = super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        except click.UsageError as exc:  # click's own: usage, a hint and the error on four lines; here one
            where = exc.ctx.command_path if exc.ctx is not None else (prog_name or "edgert")
            click.echo(f"Error: {exc.format_message()} (`{where} --help` lists the options)", err=True)
            sys.exit(exc.exit_code)
        except click.ClickException as exc:
            exc.show()
            sys.exit(exc.exit_code)
        except click.exceptions.Abort:
            click.echo("Aborted!", err=True)
            sys.exit(1)
        except (KeyboardInterrupt, EOFError):
            click.echo("interrupted", err=True)
            sys.exit(130)
        sys.exit(code if isinstance(code, int) else 0)


@click.group(cls=_Edgert, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--version", is_flag=True, expose_value=False, is_eager=True, callback=_print_version,
              help="Show the version and the interpreter backend, then exit.")
def cli():
    """edgert: convert Keras models to TFLite and run them on edge devices."""


def _terminated(signum, _frame):
    # SIGTERM (a supervisor stopping us) unwinds like Ctrl-C: temporary outputs are removed, `bench` prints what
    # finished, and nothing half-written is left behind.
    raise KeyboardInterrupt


def main() -> None:
    import signal

    signal.signal(signal.SIGTERM, _terminated)
    cli(prog_name="edgert")


__all__ = ["COMMANDS", "cli", "main"]
