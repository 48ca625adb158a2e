"""What the command modules share: one-line errors, formatting, the delegate options, loading a model."""

from __future__ import annotations

import functools

import click

from edgert.errors import EdgertError


def fail_cleanly(f):
    """Turn library errors into one-line `Error: ...` messages with a non-zero exit code."""

    @functools.wraps(f)
    def wrapper(*args, **kwargs):
        try:
            return f(*args, **kwargs)
        except EdgertError as exc:
            raise click.ClickException(str(exc)) from None

    return wrapper


def examples(*commands: str) -> str:
    """A command's epilog: two or three examples, kept as written by click's help formatter."""
    return "\b\nExamples:\n" + "\n".join(f"  {c}" for c in commands)


def echo_json(value, indent: int | None = None, default=None) -> None:
    """Print `value` as JSON, every command's `--json` (json is imported here: a plain `edgert run` does not pay for
    it). `default` as json.dumps takes it."""
    import json

    click.echo(json.dumps(value, indent=indent, default=default))


def kib(n: int) -> str:
    return f"{n / 1024:.1f} KiB" if n < 1024 * 1024 else f"{n / 1024 / 1024:.2f} MiB"


def fmt(value, spec: str = ".2f", missing: str = "-") -> str:
    """`value` formatted, `missing` for None; a value that rounds to zero never shows as -0."""
    if value is None:
        return missing
    text = format(value, spec)
    try:
        return text[1:] if text.startswith("-") and float(text) == 0 else text
    except ValueError:  # a spec that does not print a plain number
        return text


def spec_rows(specs) -> list[str]:
    """A table of inputs or outputs by name; a tensor name that differs from the signature name follows as its
    alias."""
    rows = [f"  {'#':>2}  {'name':<34} {'shape':<18} {'dtype':<8} quantization"]
    for i, s in enumerate(specs):
        rows.append(f"  {i:>2}  {s.name:<34} {str(s.shape):<18} {s.dtype:<8} {s.describe_quantization()}"
                    + (f"  (tensor {s.tensor_name})" if s.tensor_name != s.name else ""))
    return rows


def parse_range(_ctx, _param, value: str | None) -> tuple[float, float] | None:
    if value is None:
        return None
    try:
        low, high = (float(v) for v in value.split(","))
    except ValueError:
        raise click.BadParameter(f"{value!r} is not LOW,HIGH (e.g. 0,1 or -1,1)") from None
    if not low < high:
        raise click.BadParameter(f"LOW must be below HIGH, got {value}")
    return low, high


def delegate_options(f):
    """The options every command that loads a model shares: --delegate, --delegate-lib, --delegate-option, --strict."""
    f = click.option("--strict", is_flag=True,
                     help="Fail instead of falling back, or when any operator would stay on the CPU.")(f)
    f = click.option("--delegate-option", "delegate_options", multiple=True, metavar="KEY=VALUE",
                     help="Delegate option (repeatable); NAME.KEY=VALUE targets one delegate.")(f)
    f = click.option("--delegate-lib", type=click.Path(), metavar="PATH",
                     help="A TFLite external delegate library (implies --delegate external).")(f)
    f = click.option("--delegate", envvar="EDGERT_DELEGATE", metavar="NAME[,NAME...]",
                     help="Delegates in priority order: xnnpack (default), gpu, nnapi, edgetpu[:usb:0], external, "
                          "or auto.")(f)
    return f


def load_model(model, threads, delegate, delegate_lib, delegate_options, strict):
    import edgert

    return edgert.load(model, threads=threads, delegate=delegate, delegate_options=delegate_options,
                       delegate_lib=str(delegate_lib) if delegate_lib else None, strict=strict)
