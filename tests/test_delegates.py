"""The delegate registry (entry points, third-party plugins, EDGERT_DELEGATES) and the built-in plugins' tables."""

from __future__ import annotations

import sys
import textwrap

import pytest

import edgert
from edgert import delegates as registry
from edgert.delegates.base import current_platform
from edgert.delegates.edgetpu import attached_devices, parse_device
from edgert.errors import DelegateError

BUILT_INS = {"xnnpack", "gpu", "nnapi", "edgetpu", "external"}


@pytest.fixture
def fresh_registry(monkeypatch):
    registry.reset()
    yield
    registry.reset()


def test_built_ins_come_from_the_entry_point_group():
    from importlib.metadata import entry_points

    names = {ep.name for ep in entry_points(group=registry.ENTRY_POINT_GROUP)}
    assert BUILT_INS <= names
    assert BUILT_INS <= set(registry.plugins())
    assert type(registry.get("gpu")).__module__ == "edgert.delegates.gpu"


def test_aliases_and_unknown_names_suggest_the_closest():
    assert registry.get("coral").name == "edgetpu"
    assert registry.get("CPU").name == "xnnpack"
    with pytest.raises(DelegateError, match="did you mean 'edgetpu'"):
        registry.get("edgetpus")
    with pytest.raises(DelegateError, match="did you mean 'gpu'"):
        registry.get("gpuu")


def test_environment_variable_restricts_what_loads(fresh_registry, monkeypatch):
    monkeypatch.setenv("EDGERT_DELEGATES", "xnnpack, gpu")
    assert set(registry.plugins()) == {"xnnpack", "gpu"}
    with pytest.raises(DelegateError, match="unknown delegate 'nnapi'"):
        registry.get("nnapi")


@pytest.fixture
def third_party(tmp_path, monkeypatch, fresh_registry):
    """An outside package, installed the way pip would leave it: a module plus a dist-info with entry points."""
    (tmp_path / "acme_delegate.py").write_text(textwrap.dedent('''
        from edgert.plugin_api import Binding, DelegatePlugin, Probe

        class AcmeReference(DelegatePlugin):
            """TFLite's reference kernels, no XNNPACK: a stand-in for a vendor's accelerator."""
            name = "acme"
            summary = "Acme reference kernels"
            options = {"level": "how hard to try"}

            def probe(self):
                return Probe(True, library="acme 1.0")

            def bind(self, model, options, threads):
                return Binding("interpreter", default_delegates=False, detail=f"level={options.get('level', 1)}")
    '''))
    info = tmp_path / "acme_delegate-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: acme-delegate\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text(
        "[edgert.delegates]\nacme = acme_delegate:AcmeReference\nbroken = acme_delegate:DoesNotExist\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    yield
    sys.modules.pop("acme_delegate", None)


def test_a_third_party_package_adds_a_delegate(third_party, float_tflite, digits):
    plugins = registry.plugins()
    assert "acme" in plugins and BUILT_INS <= set(plugins)
    broken = plugins["broken"].usable_here()
    assert not broken.usable and "DoesNotExist" in broken.reason
    model = edgert.load(float_tflite, delegate="acme", delegate_options=["level=3"])
    report = model.delegation
    assert (report.used, report.detail, report.delegated_ops) == ("acme", "level=3", 0)
    assert len(report.cpu_ops) == report.total_ops and report.xnnpack_ops == 0  # reference kernels only
    reference = edgert.load(float_tflite).run(digits.x_test[:1])[0]
    assert abs(model.run(digits.x_test[:1])[0] - reference).max() < 1e-5


def test_platform_and_probes_name_their_reason():
    here = current_platform()
    nnapi = registry.get("nnapi").usable_here()
    if here.os != "android":
        assert not nnapi.usable and "android" in nnapi.reason
    assert registry.get("xnnpack").usable_here().usable
    edgetpu = registry.get("edgetpu").usable_here()
    if not edgetpu.usable:
        assert "libedgetpu" in edgetpu.reason or "no Edge TPU attached" in edgetpu.reason


@pytest.mark.parametrize("spec", ["", "usb", "usb:0", "pci", "pci:1", ":0"])
def test_edgetpu_device_strings(spec):
    assert parse_device(spec) == spec


@pytest.mark.parametrize("spec", ["usb:", "usb:x", "wifi", "pci:0:1"])
def test_edgetpu_bad_device_strings(spec):
    with pytest.raises(DelegateError, match="usb, usb:N, pci, pci:N"):
        parse_device(spec)


def test_edgetpu_detection_reads_usb_ids_and_apex_nodes(tmp_path, monkeypatch):
    monkeypatch.setenv("EDGERT_SYSFS_ROOT", str(tmp_path))
    for name, vendor, product in (("1-1", "1a6e", "089a"), ("1-2", "18d1", "9302"), ("1-3", "046d", "c52b")):
        dev = tmp_path / "sys/bus/usb/devices" / name
        dev.mkdir(parents=True)
        (dev / "idVendor").write_text(vendor + "\n")
        (dev / "idProduct").write_text(product + "\n")
    (tmp_path / "dev").mkdir()
    (tmp_path / "dev/apex_0").write_text("")
    found = attached_devices()
    assert found == ["usb (1a6e:089a at 1-1)", "usb (18d1:9302 at 1-2)", "pci (apex_0)"]


def test_uncompiled_model_is_told_to_run_convert_edgetpu(int8_tflite):
    (result,) = edgert.check(int8_tflite, "edgetpu")
    assert "edgert convert MODEL --edgetpu" in result.note
    assert result.accepted == len(result.verdicts)  # every int8 digits operator maps, once compiled


def test_check_tables_name_operator_and_reason(mixed_tflite):
    results = {r.delegate: r for r in edgert.check(mixed_tflite)}
    assert set(results) == {"xnnpack", "gpu", "nnapi", "edgetpu"}
    gpu = {v.opcode: v.reason for v in results["gpu"].rejected}
    assert set(gpu) == {"ARG_MAX", "CAST"}
    assert "int64" in gpu["CAST"]
    assert {v.opcode for v in results["xnnpack"].rejected} == {"CUMSUM", "ARG_MAX", "CAST"}
    assert "float32" in results["edgetpu"].rejected[0].reason  # the Edge TPU takes 8-bit models only
    assert results["xnnpack"].source.startswith("tensorflow/lite/delegates/xnnpack")


@pytest.mark.parametrize("fixture", ["float_tflite", "int8_tflite", "mixed_tflite", "two_input_tflite"])
def test_xnnpack_preflight_matches_what_xnnpack_really_took(fixture, request):
    path = request.getfixturevalue(fixture)
    (predicted,) = edgert.check(path, "xnnpack")
    report = edgert.load(path).delegation
    assert {v.label for v in predicted.rejected} == set(report.cpu_ops), report.describe()


def test_the_builtin_table_is_what_pyproject_registers():
    """`get` loads a built-in without scanning entry points; the table it uses must be pyproject.toml's."""
    import tomllib
    from pathlib import Path

    from edgert.delegates import BUILTINS

    project = tomllib.loads((Path(__file__).parent.parent / "pyproject.toml").read_text())
    assert project["project"]["entry-points"]["edgert.delegates"] == BUILTINS
