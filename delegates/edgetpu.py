"""The Coral Edge TPU through libedgetpu, for models compiled by `edgetpu_compiler`."""

from __future__ import annotations

import os
import re
from typing import Mapping

from edgert.devices import sysfs
from edgert.delegates.base import Binding, DelegatePlugin, OpTable, Probe, current_platform
from edgert.delegates.library import load_external, probe_in_child
from edgert.errors import DelegateError, DelegateUnavailableError
from edgert.tflite.records import FlatModel, OperatorInfo, SubgraphInfo

# One place for the platform -> library table (pycoral/utils/edgetpu.py uses the same names).
LIBRARIES = {"linux": "libedgetpu.so.1", "darwin": "libedgetpu.1.dylib", "windows": "edgetpu.dll"}
CUSTOM_OP = "edgetpu-custom-op"
# Coral USB Accelerator: before its firmware is loaded, then after.
USB_IDS = (("1a6e", "089a"), ("18d1", "9302"))
_DEVICE = re.compile(r"^(?:(usb|pci)(?::(\d+))?|:(\d+))?$")

# coral.ai/docs/edgetpu/models-intro, "Supported operations": what edgetpu_compiler can map (8-bit only).
_TYPES = frozenset({"int8", "uint8", "int32"})
TABLE = OpTable({op: _TYPES for op in (
    "ADD", "AVERAGE_POOL_2D", "CONCATENATION", "CONV_2D", "DEPTHWISE_CONV_2D", "EXPAND_DIMS", "FULLY_CONNECTED",
    "GATHER", "L2_NORMALIZATION", "LOGISTIC", "MAX_POOL_2D", "MAXIMUM", "MEAN", "MINIMUM", "MUL", "PACK", "PAD",
    "PRELU", "QUANTIZE", "DEQUANTIZE", "REDUCE_MAX", "REDUCE_MIN", "RELU", "RELU6", "RELU_N1_TO_1", "RESHAPE",
    "RESIZE_BILINEAR", "RESIZE_NEAREST_NEIGHBOR", "RSQRT", "SLICE", "SOFTMAX", "SPACE_TO_DEPTH", "SPLIT",
    "SQUARED_DIFFERENCE", "SQUEEZE", "STRIDED_SLICE", "SUB", "SUM", "TANH", "TRANSPOSE_CONV", "UNPACK")})


def parse_device(spec: str) -> str:
    """Check an Edge TPU device string (`usb`, `usb:0`, `pci`, `pci:0`, `:0`, or empty for the first found).

    Raises:
        DelegateError: the grammar is not followed.
    """
    if not _DEVICE.match(spec):
        raise DelegateError(f"edgetpu device {spec!r} is not one of usb, usb:N, pci, pci:N, :N "
                            "(e.g. --delegate edgetpu:usb:0)")
    return spec


def attached_devices() -> list[str]:
    """Edge TPUs visible here: Coral USB Accelerators by USB id under sysfs, PCIe/M.2 ones as /dev/apex_N."""
    found = []
    for dev in sysfs.glob("/sys/bus/usb/devices/*"):
        ids = tuple((sysfs.read_text(os.path.join(dev, f), "") or "").lower() for f in ("idVendor", "idProduct"))
        if ids in USB_IDS:
            found.append(f"usb ({ids[0]}:{ids[1]} at {os.path.basename(dev)})")
    found += [f"pci ({os.path.basename(p)})" for p in sysfs.glob("/dev/apex_*")]
    return found


def is_compiled(model: FlatModel) -> bool:
    return any(op.custom and op.opcode == CUSTOM_OP for g in model.subgraphs for op in g.operators)


class EdgeTpuDelegate(DelegatePlugin):
    name = "edgetpu"
    aliases = ("coral", "tpu")
    platforms = tuple(LIBRARIES)
    summary = "Coral Edge TPU (USB Accelerator, Dev Board, M.2/PCIe) through libedgetpu"
    options = {"device": "usb, usb:N, pci, pci:N or :N (default: the first Edge TPU found); "
                         "also written --delegate edgetpu:usb:0"}
    source = "coral.ai/docs/edgetpu/models-intro (Supported operations)"

    @staticmethod
    def library() -> str:
        os_name = current_platform().os
        if os_name not in LIBRARIES:
            raise DelegateUnavailableError(f"libedgetpu is not built for {current_platform()}")
        return LIBRARIES[os_name]

    def probe(self) -> Probe:
        try:
            library = self.library()
            probe_in_child(library, create=False)  # a library that crashes at load takes down a child, not us
        except DelegateUnavailableError as exc:
            return Probe(False, f"{exc} (install libedgetpu1-std from Coral's package repository)")
        devices = attached_devices()
        if not devices:
            return Probe(False, "no Edge TPU attached (no USB device 1a6e:089a or 18d1:9302, no /dev/apex_*)",
                         library)
        return Probe(True, "found " + ", ".join(devices), library)

    def check_model(self, model: FlatModel) -> str | None:
        if not is_compiled(model):
            return ("the model is not compiled for the Edge TPU (no edgetpu-custom-op); "
                    "run `edgert convert MODEL --edgetpu` on an x86-64 host with edgetpu_compiler")
        return None

    def validate(self, options: Mapping[str, str]) -> None:
        parse_device(options.get("device", ""))

    def bind(self, model: FlatModel, options: Mapping[str, str], threads: int | None) -> Binding:
        device = parse_device(options.get("device", ""))
        not_compiled = self.check_model(model)
        if not_compiled:
            raise DelegateUnavailableError(not_compiled)
        library = self.library()
        delegate = load_external(library, {"device": device} if device else {}, self.name)
        return Binding("interpreter", delegates=(delegate,), detail=f"{library} device={device or 'first found'}",
                       threads=threads)

    def check_operator(self, graph: SubgraphInfo, op: OperatorInfo) -> str | None:
        if op.custom and op.opcode == CUSTOM_OP:
            return None
        return TABLE.reason(graph, op, "the Edge TPU", static_shapes=True)
