"""edgert: run TFLite models on edge devices; convert Keras models with `edgert.converters`.

This package is the runtime: it imports no TensorFlow, so it starts fast on a Raspberry Pi.
"""

from edgert.errors import (
    BackendUnavailableError,
    ConversionError,
    DelegateError,
    DelegateUnavailableError,
    EdgertError,
    InferenceError,
    InputDataError,
    ModelFormatError,
    OutputExistsError,
    UnsupportedOperatorError,
)
from edgert.delegation import DelegateCheck, DelegationReport, check
from edgert.info import ModelInfo, TensorSpec, inspect_model
from edgert.model import Model, load

__version__ = "0.1.0"

__all__ = [
    "BackendUnavailableError", "ConversionError", "DelegateCheck", "DelegateError", "DelegateUnavailableError",
    "DelegationReport", "EdgertError", "InferenceError", "InputDataError", "Model",
    "ModelFormatError", "ModelInfo", "OutputExistsError", "TensorSpec", "UnsupportedOperatorError", "__version__",
    "check", "inspect_model",
    "load",
]
