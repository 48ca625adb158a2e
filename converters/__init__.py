"""Keras -> TFLite conversion. TensorFlow is imported lazily, inside the functions that need it."""

from edgert.converters.calibration import load_calibration_data
from edgert.converters.conversion import ConversionInterrupted, convert, default_output_path
from edgert.converters.recipe import (
    PRESETS,
    ClusterConfig,
    ConvertRecipe,
    DistillConfig,
    PruneConfig,
    PruneSchedule,
    Quantization,
    RecipeError,
    TrainConfig,
    preset,
    recipe_from_options,
)
from edgert.converters.results import ConversionResult, StageReport
from edgert.converters.sources import InputShape, SourceModel, open_model

__all__ = ["PRESETS", "ClusterConfig", "ConversionInterrupted", "ConversionResult", "ConvertRecipe", "DistillConfig", "InputShape",
           "PruneConfig", "PruneSchedule", "Quantization", "RecipeError", "SourceModel", "StageReport",
           "TrainConfig", "convert", "default_output_path", "load_calibration_data", "open_model", "preset",
           "recipe_from_options"]
