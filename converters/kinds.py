"""One interface over what a conversion starts from: a Keras model (`.h5`, `.keras`), a SavedModel directory, a
PyTorch module (`FILE.py:FACTORY`) or an ONNX file. `conversion.py` asks these objects and never which kind it has.

- `Kind`, before anything loads: what the path is, and the cheap checks that refuse what that kind cannot do.
- `Opened` (in `sources`), once loaded: the model as TensorFlow's converter sees it (`source`: names, input shapes), the reference
  the agreement runs (`reference`), its layout lines and route, and how it becomes a TFLite model (`convert` where a
  route converts itself; else TensorFlow's converter, with `converted_names` and `calibration_keys`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from edgert.converters.recipe import Quantization
from edgert.converters.sources import Opened
from edgert.errors import InputDataError

KERAS, TORCH, ONNX_FILE = "keras", "torch", "onnx"


@dataclass(frozen=True)
class Kind:
    """What a model path is, before anything loads."""

    name: str  # KERAS (a Keras file or a SavedModel), TORCH or ONNX_FILE
    path: Path
    factory: str | None = None  # the function in FILE.py that returns the module

    def check(self, *, trust_model: bool, foreign_options: bool, keras_options: bool, stages: bool,
              training_data: bool) -> None:
        """The cheap refusals: options and stages this kind cannot take, and (for a Keras file) its format, writer
        and stored code.

        Raises:
            InputDataError, ModelFormatError: one line each.
        """
        if self.name == KERAS:
            if foreign_options:
                raise InputDataError("--route, --layout, --input-shape and --weights are for PyTorch modules "
                                     "(FILE.py:FACTORY) and .onnx files")
            from edgert.converters.sources import check_source

            check_source(self.path, trust_model)
            return
        if keras_options:
            raise InputDataError("--custom-objects and --signature are for Keras models and SavedModels")
        if stages or training_data:
            raise InputDataError("pruning, clustering, distillation, QAT and --train/--val/--eval-data need a Keras "
                                 "model; a PyTorch or ONNX source supports post-training quantization only")

    def open(self, *, options, mode: Quantization, float_io: bool, custom_objects, trust_model: bool, signature,
             workdir: Callable[[], Path], notes: list[str]) -> Opened:
        """Load the source (a route's work in `workdir()`, made only for a foreign source).

        Raises:
            InputDataError, ModelFormatError, ConversionError: one line each.
        """
        if self.name == KERAS:
            from edgert.converters.sources import open_model

            return Opened(open_model(self.path, custom_objects, trust_model, signature))
        from edgert.converters.foreign import ForeignOptions, open_foreign

        return open_foreign(self.name, self.path, self.factory, options or ForeignOptions(), mode, float_io,
                            trust_model, workdir(), notes)


def kind_of(model_path) -> Kind:
    """`onnx` for an `.onnx`, `torch` for `FILE.py:FACTORY`, else `keras` (a Keras file or a SavedModel).

    Raises:
        InputDataError: a `.py` path without a factory.
    """
    text = str(model_path)
    if text.lower().endswith(".onnx"):
        return Kind(ONNX_FILE, Path(text))
    match = re.fullmatch(r"(.+\.py):([A-Za-z_]\w*)", text)
    if match:
        return Kind(TORCH, Path(match.group(1)), match.group(2))
    if text.endswith(".py") or re.fullmatch(r".+\.py:.*", text):
        raise InputDataError(f"{text}: give a PyTorch module as FILE.py:FACTORY, a function in FILE.py that "
                             "returns it")
    return Kind(KERAS, Path(text))
