"""`edgert.check`: which operators each delegate will take, read from the model file alone (no hardware)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence


@dataclass(frozen=True)
class DelegateCheck:
    """One delegate's pre-flight verdicts on a model, read from the flatbuffer alone."""

    delegate: str
    verdicts: tuple
    note: str = ""
    source: str = ""

    @property
    def accepted(self) -> int:
        return sum(v.accepted for v in self.verdicts)

    @property
    def rejected(self) -> tuple:
        return tuple(v for v in self.verdicts if not v.accepted)

    @property
    def clean(self) -> bool:
        return not self.note and not self.rejected

    def to_dict(self) -> dict:
        return {"delegate": self.delegate, "accepted": self.accepted, "total": len(self.verdicts),
                "note": self.note, "source": self.source, "operators": [v.to_dict() for v in self.verdicts]}


CHECKABLE = ("xnnpack", "gpu", "nnapi", "edgetpu")


def check(path, delegates: Sequence[str] | str = "all") -> tuple[DelegateCheck, ...]:
    """Pre-flight compatibility of a `.tflite` with each delegate, without loading it or touching hardware.

    Raises:
        ModelFormatError: the file is not a valid model. DelegateError: unknown delegate name.
    """
    from edgert import delegates as registry
    from edgert.tflite.flatbuffer import parse
    from edgert.tflite.info import read_model_bytes

    names = delegates.split(",") if isinstance(delegates, str) else list(delegates)
    if [n.strip().lower() for n in names] == ["all"]:
        names = [n for n in CHECKABLE if n in registry.plugins()]
    flat = parse(read_model_bytes(path), str(path))
    results = []
    for name in names:
        plugin = registry.get(name.strip())
        results.append(DelegateCheck(plugin.name, plugin.check(flat), plugin.check_model(flat) or "", plugin.source))
    return tuple(results)
