"""What `convert` returns and saves as `<output>.report.json`: the result and its per-stage reports."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

from edgert.converters.agreement import Agreement
from edgert.converters.recipe import ConvertRecipe, Quantization
from edgert.tflite.info import TensorSpec


@dataclass(frozen=True)
class StageReport:
    """The model after one stage: size, weights and what the stage did."""

    stage: str
    seconds: float
    params: int
    size_bytes: int
    gzip_bytes: int
    sparsity: dict[str, float] = field(default_factory=dict)  # fraction of zero weights per layer
    clusters: dict[str, int] = field(default_factory=dict)  # distinct weight values per clustered layer
    quantized_layers: tuple[str, ...] = ()
    float_layers: tuple[str, ...] = ()
    notes: tuple[str, ...] = ()

    def to_dict(self) -> dict:
        return {**dataclasses.asdict(self), "seconds": round(self.seconds, 3)}


@dataclass(frozen=True)
class ConversionResult:
    """What `convert` produced, with the per-stage report that is also saved as `<output>.report.json`."""

    source_path: str
    output_path: str
    mode: Quantization
    source_size_bytes: int
    output_size_bytes: int
    output_gzip_bytes: int
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    calibration_samples: int
    duration_s: float
    recipe: ConvertRecipe
    stages: tuple[StageReport, ...] = ()
    accuracy_source: float | None = None
    accuracy_tflite: float | None = None
    eval_samples: int = 0
    edgetpu_output: str | None = None
    notes: tuple[str, ...] = ()
    source_format: str = ""  # what wrote the model, read from the file: "Keras 3.15.1 .keras", "SavedModel"
    agreement: Agreement | None = None  # the .tflite against the model it was converted from
    warnings: tuple[str, ...] = ()
    channels: object | None = None  # the ChannelPruneReport of --prune-channels: per layer and for the model
    route: str | None = None  # a PyTorch or ONNX source's route: "litert-torch" or "onnx"
    layout: tuple[str, ...] = ()  # such a source's inputs and outputs: the .tflite's shape, and the source's
    mode_requested: Quantization | None = None  # the mode asked for, where another kept the detections (`convert`)
    layer_errors: tuple = ()  # with `explain`: explain.LayerError per quantized operator, worst first

    @property
    def size_ratio(self) -> float:
        """Source size divided by output size (4.0 means four times smaller)."""
        return self.source_size_bytes / self.output_size_bytes

    @property
    def accuracy_drop(self) -> float | None:
        """Accuracy points lost from the original model to the final .tflite (positive means worse)."""
        if self.accuracy_source is None or self.accuracy_tflite is None:
            return None
        return (self.accuracy_source - self.accuracy_tflite) * 100

    @property
    def recipe_path(self) -> str:
        return self.output_path + ".recipe.json"

    @property
    def report_path(self) -> str:
        return self.output_path + ".report.json"

    def to_dict(self) -> dict:
        return {
            "source_path": self.source_path, "output_path": self.output_path, "mode": self.mode.value,
            "source_size_bytes": self.source_size_bytes, "output_size_bytes": self.output_size_bytes,
            "output_gzip_bytes": self.output_gzip_bytes, "size_ratio": round(self.size_ratio, 3),
            "inputs": [s.to_dict() for s in self.inputs], "outputs": [s.to_dict() for s in self.outputs],
            "calibration_samples": self.calibration_samples, "duration_s": round(self.duration_s, 3),
            "recipe": self.recipe.to_dict(), "stages": [s.to_dict() for s in self.stages],
            "accuracy_source": self.accuracy_source, "accuracy_tflite": self.accuracy_tflite,
            "accuracy_drop_points": None if self.accuracy_drop is None else round(self.accuracy_drop, 3),
            "eval_samples": self.eval_samples, "edgetpu_output": self.edgetpu_output, "notes": list(self.notes),
            "source_format": self.source_format,
            "agreement": None if self.agreement is None else self.agreement.to_dict(),
            "warnings": list(self.warnings), "recipe_path": self.recipe_path, "report_path": self.report_path,
            "channels": None if self.channels is None else self.channels.to_dict(),
            "route": self.route, "layout": list(self.layout),
            "mode_requested": None if self.mode_requested is None else self.mode_requested.value,
            "layer_errors": [e.to_dict() for e in self.layer_errors],
        }
