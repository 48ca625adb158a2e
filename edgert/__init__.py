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
    FleetError,
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

# The public names below load their modules on first use (PEP 562): `import edgert` costs only this file and
# errors.py, and a command that only runs a model never imports the benchmark or power code.
_LAZY = {
    "BenchResult": "edgert.measure.bench", "EnergyStats": "edgert.measure.bench",
    "LatencyStats": "edgert.measure.bench", "bench": "edgert.measure.bench",
    "PowerTrace": "edgert.measure.power_sampling",
    "DelegateCheck": "edgert.runtime.preflight", "check": "edgert.runtime.preflight",
    "DelegationReport": "edgert.runtime.delegation", "Model": "edgert.runtime.model", "load": "edgert.runtime.model",
    "ModelInfo": "edgert.tflite.info", "TensorSpec": "edgert.tflite.info", "inspect_model": "edgert.tflite.info",
}


def __getattr__(name: str):
    import importlib

    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name]), name)
    else:
        try:  # a subpackage: edgert.runtime, edgert.metadata, ...
            value = importlib.import_module(f"{__name__}.{name}")
        except ModuleNotFoundError as exc:
            if exc.name != f"{__name__}.{name}":
                raise
            raise AttributeError(f"module 'edgert' has no attribute {name!r}") from None
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))


__version__ = "0.1.0"

__all__ = [
    "BackendUnavailableError", "BenchError", "BenchResult", "BundleError", "ConversionError", "DelegateCheck",
    "DelegateError", "DelegateUnavailableError", "DelegationReport", "DeployError", "DeviceProfileError", "FleetError",
    "EdgertError", "EnergyStats", "InferenceError", "InputDataError", "LatencyStats", "MetadataError", "Model",
    "ModelFormatError", "ModelInfo", "OutputExistsError", "OutputNotWritableError", "PowerTrace", "SensorError",
    "TensorSpec", "UnsupportedOperatorError", "bench", "check", "inspect_model", "load", "__version__",
]
