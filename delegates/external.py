"""Any TFLite external delegate library (`tflite_plugin_create_delegate`), given with `--delegate-lib`."""

from __future__ import annotations

from typing import Mapping

from edgert.delegates.base import Binding, DelegatePlugin, Probe
from edgert.delegates.library import check_library_file, load_external
from edgert.errors import DelegateError
from edgert.tflite.records import FlatModel, OperatorInfo, SubgraphInfo


class ExternalDelegate(DelegatePlugin):
    name = "external"
    summary = "a TFLite external delegate library: --delegate-lib PATH [--delegate-option key=value]"
    options = {"library": "path of the delegate library (--delegate-lib)"}
    accepts_any_option = True  # every other key=value goes to the library's create function as given
    source = "the library itself decides; edgert cannot know its operator support in advance"

    def probe(self) -> Probe:
        return Probe(True, "usable with --delegate-lib PATH")

    def bind(self, model: FlatModel, options: Mapping[str, str], threads: int | None) -> Binding:
        library = options.get("library")
        if not library:
            raise DelegateError("the external delegate needs its library: --delegate-lib PATH.so")
        check_library_file(library)
        native = {k: v for k, v in options.items() if k != "library"}
        delegate = load_external(library, native, self.name)
        detail = library + "".join(f" {k}={v}" for k, v in native.items())
        return Binding("interpreter", delegates=(delegate,), detail=detail, threads=threads)

    def check_operator(self, graph: SubgraphInfo, op: OperatorInfo) -> str | None:
        return "unknown: an external library decides at load time"
