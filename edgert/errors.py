"""Domain errors: each carries a one-line message that says what went wrong and what to do."""

from __future__ import annotations


class EdgertError(Exception):
    """Base class of every error edgert raises on purpose; the CLI prints its message as one line."""


class ModelFormatError(EdgertError):
    """The file is not a model edgert can read (missing, truncated, corrupt or of another format)."""


class UnsupportedOperatorError(EdgertError):
    """The model uses operators the interpreter does not know (custom ops without a registration)."""

    def __init__(self, message: str, operators: tuple[str, ...] = ()):
        super().__init__(message)
        self.operators = operators


class InputDataError(EdgertError):
    """Input or calibration data does not fit the model (shape, dtype, count, file format)."""


class OutputExistsError(EdgertError):
    """An output path exists already and overwriting was not asked for."""


class OutputNotWritableError(EdgertError):
    """An output cannot be written where it was asked for: a read-only filesystem, no permission, a full disk."""


class ConversionError(EdgertError):
    """A Keras model could not be converted to TFLite."""


class BackendUnavailableError(EdgertError):
    """No TFLite interpreter package is installed."""


class InferenceError(EdgertError):
    """The interpreter failed while running the model."""


class DelegateError(EdgertError):
    """A delegate was asked for wrongly: unknown name, malformed option, a library that is not a delegate."""


class DelegateUnavailableError(DelegateError):
    """No requested delegate could take the model (each one's reason is in the message), or `strict` refused a
    fallback or operators left on the CPU."""

    def __init__(self, message: str, reasons: tuple[tuple[str, str], ...] = ()):
        super().__init__(message)
        self.reasons = reasons


class SensorError(EdgertError):
    """A power, thermal or frequency sensor could not be found or read (missing, unreadable, garbage, failed)."""


class BenchError(EdgertError):
    """A benchmark was asked for wrongly (run count, duration, rate) or could not run."""


class DeviceProfileError(EdgertError):
    """A device profile is unknown or its file is invalid."""


class BundleError(EdgertError):
    """A deploy bundle could not be made, or one on disk is damaged (a checksum or the manifest)."""


class DeployError(EdgertError):
    """Deploying to, running on or rolling back a board over SSH failed; the message names the step and the fix."""


class FleetError(EdgertError):
    """A fleet command cannot start or finish: no Ansible, a bad inventory, no hosts; boards' own failures are rows
    of the report, not this."""


class MetadataError(EdgertError):
    """TFLite metadata does not fit the model (task, labels, normalisation), or an Android export was asked for
    wrongly (package name, task, output folder)."""


def brief(text: object, limit: int = 300) -> str:
    """`text` (or an exception's message) as one line of at most `limit` characters, cut only between words.

    Whitespace is collapsed; quoted configurations (`{...}` blobs of a serialized layer or model, which can run to
    pages) are replaced by `{...}` first, so the message keeps its meaning; what is still too long ends in `...`
    after the last whole word that fits.
    """
    line = " ".join(str(text).split()) or type(text).__name__
    if len(line) > limit:
        line = _drop_quoted_configs(line)
    if len(line) <= limit:
        return line
    cut = line[:max(1, limit - 4)]
    space = cut.rfind(" ")
    if space > limit // 2:
        cut = cut[:space]
    return cut.rstrip(" ,;:(") + " ..."


def _drop_quoted_configs(line: str, keep: int = 40) -> str:
    """Replace every balanced `{...}` longer than `keep` characters with `{...}`."""
    out, depth, start = [], 0, 0
    pieces_from = 0
    for i, ch in enumerate(line):
        if ch == "{":
            if depth == 0:
                start = i
            depth += 1
        elif ch == "}" and depth:
            depth -= 1
            if depth == 0 and i - start > keep:
                out.append(line[pieces_from:start] + "{...}")
                pieces_from = i + 1
    out.append(line[pieces_from:])
    return "".join(out)
