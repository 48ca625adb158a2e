"""Keras -> TFLite conversion. TensorFlow is imported lazily, inside the functions that need it."""

from edgert.converters.calibration import load_calibration_data
from edgert.converters.conversion import ConversionResult, QuantMode, convert, default_output_path
from edgert.converters.sources import InputShape, SourceModel, open_model

__all__ = ["ConversionResult", "InputShape", "QuantMode", "SourceModel", "convert", "default_output_path",
           "load_calibration_data", "open_model"]
