"""The contract for plugin authors, in one module: what a delegate plugin (entry point group `edgert.delegates`)
and a power sensor plugin (`edgert.power_sensors`) subclass, return and read. Import from here, not from the
parser or the registries, whose insides may move:

    from edgert.plugin_api import Binding, DelegatePlugin, OpTable, Probe       # a delegate
    from edgert.plugin_api import PowerSensor, PowerSource, Reading             # a power sensor

The model records a delegate's `check_operator` reads (`FlatModel`, `SubgraphInfo`, `OperatorInfo`) come from the
parser's records module, and the errors plugins raise from `edgert.errors`."""

from edgert.delegates.base import (
    Binding,
    DelegatePlugin,
    OpTable,
    OpVerdict,
    Platform,
    activation,
    current_platform,
    dynamic_tensor,
    is_constant,
    parse_bool,
    parse_choice,
    runtime_inputs,
    tensor_types,
)
from edgert.devices.sensors import PowerSensor, PowerSource, Reading
from edgert.errors import DelegateError, DelegateUnavailableError, SensorError
from edgert.tflite.records import ACTIVATIONS, FlatModel, OperatorInfo, SubgraphInfo, TensorInfo
from edgert.runtime.plugins import Probe

__all__ = ["ACTIVATIONS", "Binding", "DelegateError", "DelegatePlugin", "DelegateUnavailableError", "FlatModel",
           "OpTable", "OpVerdict", "OperatorInfo", "Platform", "PowerSensor", "PowerSource", "Probe", "Reading",
           "SensorError", "SubgraphInfo", "TensorInfo", "activation", "current_platform", "dynamic_tensor",
           "is_constant", "parse_bool", "parse_choice", "runtime_inputs", "tensor_types"]
