"""Class labels: from a file (one label per line, or `ID LABEL` lines as Coral's and TensorFlow's detection label
maps write them, with gaps) or from the labels the model's TFLite metadata packs."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping, Sequence

from edgert.errors import InputDataError

_NUMBERED = re.compile(r"^\s*(\d+)[\s:,]+(.*\S)\s*$")


@dataclass(frozen=True)
class Labels:
    """Class index -> label; an index without one is shown as its number."""

    names: Mapping[int, str]
    source: str = ""  # "metadata", the file's path, or "" (none: class numbers)
    numbered: bool = False  # read from `ID LABEL` lines (a label map may skip ids)

    def __call__(self, index: int) -> str:
        return self.names.get(int(index), str(int(index)))

    def __len__(self) -> int:
        return len(self.names)

    def check(self, classes: int | None, what: str = "the model's output") -> None:
        """A label for every class, and no label past the last class.

        Raises:
            InputDataError: a plain list whose length is not the number of classes, or an index beyond them.
        """
        if classes is None or not self.names or self.source == "metadata":
            return
        if not self.numbered and len(self.names) != classes:
            raise InputDataError(f"{self.source} has {len(self.names)} labels but {what} has {classes} classes; "
                                 "give one label per class, in the output's order")
        top = max(self.names)
        if top >= classes:
            raise InputDataError(f"{self.source} has a label for class {top} but {what} has {classes} classes "
                                 f"(0..{classes - 1}); give the label map this model was trained with")


def read_label_file(path: str | os.PathLike) -> Labels:
    """A label file: one label per line, in class order; or `ID LABEL` (or `ID: LABEL`) on every line.

    Raises:
        InputDataError: the file cannot be read, is not text, or has no labels.
    """
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8-sig")
    except FileNotFoundError:
        raise InputDataError(f"--labels {p}: no such file") from None
    except IsADirectoryError:
        raise InputDataError(f"--labels {p} is a folder; give a text file with one label per line") from None
    except UnicodeDecodeError:
        raise InputDataError(f"--labels {p} is not UTF-8 text; give a text file with one label per line") from None
    except OSError as exc:
        raise InputDataError(f"--labels {p} cannot be read ({exc.strerror or exc})") from None
    lines = [line.strip() for line in text.splitlines()]
    while lines and not lines[-1]:
        lines.pop()
    if not any(lines):
        raise InputDataError(f"--labels {p} has no labels; give one label per line")
    numbered = [_NUMBERED.match(line) for line in lines if line]
    if all(numbered) and len(numbered) > 1:
        return Labels({int(m.group(1)): m.group(2) for m in numbered}, str(p), numbered=True)
    return Labels(dict(enumerate(lines)), str(p))


def from_list(names: Sequence[str], source: str = "metadata") -> Labels:
    return Labels(dict(enumerate(names)), source)


NONE = Labels({}, "")
