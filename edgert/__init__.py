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
    "BenchResult": "edgert.benchmark", "EnergyStats": "edgert.benchmark", "LatencyStats": "edgert.benchmark",
    "bench": "edgert.benchmark", "DelegateCheck": "edgert.preflight", "DelegationReport": "edgert.delegation",
    "check": "edgert.preflight", "ModelInfo": "edgert.info", "TensorSpec": "edgert.info",
    "inspect_model": "edgert.info", "Model": "edgert.model", "load": "edgert.model", "PowerTrace": "edgert.power_sampling",
}


def __getattr__(name: str):
    import importlib

    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name]), name)
    else:
        try:  # a submodule: edgert.backend, edgert.metadata, ...
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
