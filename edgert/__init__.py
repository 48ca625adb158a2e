"""edgert: run TFLite models on edge devices; convert Keras models with `edgert.converters`.

This package is the runtime: it imports no TensorFlow, so it starts fast on a Raspberry Pi.
"""

from edgert.errors import (
    BackendUnavailableError,
    BenchError,
    BundleError,
    ConversionError,
    DelegateError,
    DelegateUnavailableError,
    DeployError,
    DeviceProfileError,
    EdgertError,
    InferenceError,
    InputDataError,
    MetadataError,
    ModelFormatError,
    OutputExistsError,
    OutputNotWritableError,
    SensorError,
    UnsupportedOperatorError,
)
from edgert.benchmark import BenchResult, EnergyStats, LatencyStats, bench
from edgert.delegation import DelegateCheck, DelegationReport, check
from edgert.info import ModelInfo, TensorSpec, inspect_model
from edgert.model import Model, load
from edgert.power import PowerTrace

__version__ = "0.1.0"

__all__ = [
    "BackendUnavailableError", "BenchError", "BenchResult", "BundleError", "ConversionError", "DelegateCheck",
    "DelegateError", "DelegateUnavailableError", "DelegationReport", "DeployError", "DeviceProfileError",
    "EdgertError", "EnergyStats", "InferenceError", "InputDataError", "LatencyStats", "MetadataError", "Model",
    "ModelFormatError", "ModelInfo", "OutputExistsError", "OutputNotWritableError", "PowerTrace", "SensorError", "TensorSpec",
    "UnsupportedOperatorError", "bench", "check", "inspect_model", "load", "__version__",
]
