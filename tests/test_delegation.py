"""Loading with delegates: fallback with reasons, --strict, the DelegationReport, external libraries, the CLI."""

from __future__ import annotations

import json
import shutil
import subprocess

import numpy as np
import pytest
from click.testing import CliRunner

import edgert
from edgert import delegates as registry
from edgert.cli import cli
from edgert.runtime.delegation import _gpu_log, parse_request
from edgert.errors import DelegateError, DelegateUnavailableError

# A minimal TFLite external delegate: its Prepare takes no operators, so TFLite runs everything itself. The
# TfLiteDelegate struct is only ever read by the runtime, so a zeroed block larger than any version of it is safe.
DELEGATE_C = r"""
#include <string.h>
typedef struct TfLiteDelegate TfLiteDelegate;
typedef int (*Prepare)(void* context, TfLiteDelegate* delegate);
static int prepare(void* context, TfLiteDelegate* delegate) { return 0; }
static union { void* align; unsigned char bytes[512]; } storage;
void* tflite_plugin_create_delegate(char** keys, char** values, int n, void (*report_error)(const char*)) {
  for (int i = 0; i < n; i++) {
    if (strcmp(keys[i], "fail") == 0) { report_error(values[i]); return 0; }
  }
  memset(&storage, 0, sizeof storage);
  ((Prepare*)&storage)[1] = prepare;  /* field 2 of TfLiteDelegate, after void* data_ */
  return &storage;
}
void tflite_plugin_destroy_delegate(void* delegate) {}
"""


def _build(tmp_path_factory, name: str, source: str):
    compiler = shutil.which("gcc") or shutil.which("cc")
    if compiler is None:
        pytest.skip("no C compiler to build a test delegate library")
    folder = tmp_path_factory.mktemp("libs")
    (folder / f"{name}.c").write_text(source)
    out = folder / f"lib{name}.so"
    subprocess.run([compiler, "-shared", "-fPIC", "-O1", "-o", str(out), str(folder / f"{name}.c")], check=True)
    return out


@pytest.fixture(scope="module")
def delegate_lib(tmp_path_factory):
    return _build(tmp_path_factory, "passdelegate", DELEGATE_C)


@pytest.fixture(scope="module")
def not_a_delegate_lib(tmp_path_factory):
    return _build(tmp_path_factory, "plain", "int answer(void) { return 42; }\n")


def test_default_is_xnnpack_with_a_counted_report(int8_tflite):
    report = edgert.load(int8_tflite).delegation
    assert report.used == "xnnpack" and report.requested == ("xnnpack",)
    assert report.delegated_ops is not None and 0 < report.delegated_ops <= report.total_ops
    assert report.partitions >= 1 and not report.skipped and not report.fallback
    assert report.delegated_ops + len(report.cpu_ops) == report.total_ops


def test_mixed_model_names_the_cpu_operators(mixed_tflite):
    report = edgert.load(mixed_tflite).delegation
    assert {c.split("#")[0] for c in report.cpu_ops} == {"CUMSUM", "ARG_MAX", "CAST"}
    assert report.partitions == 2  # CONV_2D, then RESHAPE/FULLY_CONNECTED/TANH
    assert "on the CPU: " in report.describe()


def test_unusable_delegate_falls_back_with_its_reason(float_tflite, digits):
    model = edgert.load(float_tflite, delegate="nnapi")
    report = model.delegation
    if registry.get("nnapi").usable_here().usable:
        pytest.skip("this machine has NNAPI")
    assert report.used == "xnnpack" and report.fallback
    assert report.skipped[0].name == "nnapi" and "android" in report.skipped[0].reason
    assert "FALLBACK" in report.describe()
    assert model.run(digits.x_test[:2])[0].shape == (2, 10)


def test_priority_order_records_every_skip(float_tflite):
    report = edgert.load(float_tflite, delegate="edgetpu,nnapi,xnnpack").delegation
    if report.used != "xnnpack":
        pytest.skip("an accelerator is attached here")
    assert [s.name for s in report.skipped] == ["edgetpu", "nnapi"]
    assert not report.fallback  # xnnpack was asked for, so this is the plan, not a fallback


def test_strict_refuses_fallback_and_cpu_operators(float_tflite, mixed_tflite):
    if not registry.get("nnapi").usable_here().usable:
        with pytest.raises(DelegateUnavailableError, match="nnapi: nnapi works on android") as info:
            edgert.load(float_tflite, delegate="nnapi,xnnpack", strict=True)
        assert info.value.reasons[0][0] == "nnapi"
    with pytest.raises(DelegateUnavailableError, match="left operator\\(s\\) on the CPU: .*CUMSUM"):
        edgert.load(mixed_tflite, strict=True)
    assert edgert.load(float_tflite, strict=True).delegation.fully_delegated


def test_auto_tries_accelerators_then_cpu(float_tflite, tmp_path, monkeypatch):
    monkeypatch.setenv("EDGERT_SYSFS_ROOT", str(tmp_path))  # a board no profile knows: the built-in order
    monkeypatch.setenv("EDGERT_MACHINE", "riscv64")
    report = edgert.load(float_tflite, delegate="auto").delegation
    assert report.requested[-1] == "xnnpack" and report.requested[0] == "edgetpu"
    assert report.used in report.requested
    # With --strict, auto does not count skipped accelerators as a fallback (none was asked for by name).
    edgert.load(float_tflite, delegate="auto", strict=report.fully_delegated)


def test_gpu_without_a_gpu_says_why(float_tflite):
    probe = registry.get("gpu").usable_here()
    report = edgert.load(float_tflite, delegate="gpu").delegation
    if report.used == "gpu":
        pytest.skip("a GPU works here (see benchmarks/gpu_delegate.py for the real-GPU record)")
    assert report.fallback and report.skipped[0].name == "gpu"
    if not probe.usable:
        assert report.skipped[0].reason.startswith(probe.reason[:40])


def test_gpu_refusals_are_read_from_litert_log():
    lines = [
        "INFO: [environment.cc:36] Creating LiteRT environment with options",
        "ERROR: Following operations are not supported by GPU delegate:",
        "ARG_MAX: Tensor type(INT64) is not supported. lambda_1",
        "CAST: Not supported Cast case. Input type: INT64 and output type: FLOAT32",
        "5 operations will run on the GPU, and the remaining 2 operations will run on the CPU.",
        "INFO: x: not a refusal",
    ]
    delegated, refused = _gpu_log(lines)
    assert delegated == 5
    assert [op for op, _ in refused] == ["ARG_MAX", "CAST"]


def test_xnnpack_fp16_runs_through_litert_compiled_model(float_tflite, digits):
    reference = edgert.load(float_tflite).run(digits.x_test[:1])[0]
    model = edgert.load(float_tflite, delegate_options=["fp16=true", "threads=2"])
    assert model.delegation.engine == "compiled_model" and "fp16" in model.delegation.detail
    got = model.run(digits.x_test[:1])[0]
    assert got.shape == reference.shape and np.abs(got - reference).max() < 2e-2
    assert np.argmax(got) == np.argmax(reference)
    with pytest.raises(edgert.InputDataError, match="keeps the shapes"):
        model.run(digits.x_test[:3])


def test_external_delegate_library_end_to_end(delegate_lib, float_tflite, digits):
    model = edgert.load(float_tflite, delegate_lib=str(delegate_lib), delegate_options=["mode=quiet"])
    report = model.delegation
    assert report.used == "external" and str(delegate_lib) in report.detail and "mode=quiet" in report.detail
    assert report.delegated_ops == 0 and len(report.cpu_ops) == report.total_ops
    assert report.xnnpack_ops > 0  # what the library left, TFLite's XNNPACK took
    reference = edgert.load(float_tflite).run(digits.x_test[:1])[0]
    assert np.allclose(model.run(digits.x_test[:1])[0], reference, atol=1e-5)
    with pytest.raises(DelegateUnavailableError, match="left operator"):
        edgert.load(float_tflite, delegate_lib=str(delegate_lib), strict=True)


def test_delegate_that_fails_at_init_is_reported_and_skipped(delegate_lib, float_tflite):
    report = edgert.load(float_tflite, delegate="external,xnnpack", delegate_lib=str(delegate_lib),
                         delegate_options=["external.fail=no accelerator on bus 3"]).delegation
    assert report.used == "xnnpack"
    assert "failed to create its delegate: no accelerator on bus 3" in report.skipped[0].reason
    with pytest.raises(DelegateUnavailableError, match="no accelerator on bus 3"):
        edgert.load(float_tflite, delegate_lib=str(delegate_lib), delegate_options=["fail=no accelerator on bus 3"],
                    strict=True)


def test_libraries_that_are_not_delegates(not_a_delegate_lib, float_tflite, tmp_path):
    with pytest.raises(DelegateError, match="lacks tflite_plugin_create_delegate"):
        edgert.load(float_tflite, delegate_lib=str(not_a_delegate_lib))
    text = tmp_path / "fake.so"
    text.write_text("not a library")
    with pytest.raises(DelegateError, match="is not a shared library"):
        edgert.load(float_tflite, delegate_lib=str(text))
    with pytest.raises(DelegateError, match="does not exist"):
        edgert.load(float_tflite, delegate_lib=str(tmp_path / "missing.so"))


@pytest.mark.parametrize("kwargs, message", [
    ({"delegate": "gpu", "delegate_options": ["precision"]}, "is not key=value"),
    ({"delegate": "gpu", "delegate_options": ["precision=fp8"]}, "precision='fp8' is not one of fp16, fp32"),
    ({"delegate": "gpu", "delegate_options": ["colour=red"]}, "has an option 'colour'"),
    ({"delegate": "xnnpack", "delegate_options": ["threads=many"]}, "not a whole number"),
    ({"delegate": "xnnpack", "delegate_options": ["fp16=maybe"]}, "is not a boolean"),
    ({"delegate": "gpu,,xnnpack"}, "empty name"),
    ({"delegate": "xnnpack:usb"}, "takes no device string"),
    ({"delegate": "edgetpu:wifi", "strict": True}, "usb, usb:N"),
])
def test_bad_delegate_options_are_one_line_errors(float_tflite, kwargs, message):
    with pytest.raises(DelegateError, match=message):
        edgert.load(float_tflite, **kwargs)


def test_options_go_to_the_delegates_that_declare_them():
    request = parse_request("gpu,xnnpack", ["threads=2", "gpu.precision=fp32"])
    assert request.names == ("gpu", "xnnpack")
    assert request.options == {"xnnpack": {"threads": "2"}, "gpu": {"precision": "fp32"}}
    assert parse_request("edgetpu:usb:0").options == {"edgetpu": {"device": "usb:0"}}


# -- CLI -------------------------------------------------------------------------------------------------------


def test_cli_delegates_lists_every_plugin_with_its_state():
    result = CliRunner().invoke(cli, ["delegates", "--json"])
    assert result.exit_code == 0, result.output
    rows = {r["name"]: r for r in json.loads(result.output)["delegates"]}
    assert {"xnnpack", "gpu", "nnapi", "edgetpu", "external"} <= set(rows)
    assert rows["xnnpack"]["usable"] is True
    assert all(r["usable"] or r["reason"] for r in rows.values())
    text = CliRunner().invoke(cli, ["delegates"]).output
    assert "xnnpack    usable" in text


def test_cli_check_exit_codes(mixed_tflite, float_tflite):
    runner = CliRunner()
    result = runner.invoke(cli, ["check", str(mixed_tflite), "--delegate", "gpu", "--strict"])
    assert result.exit_code == 1 and "ARG_MAX#" in result.output and "gpu_compatibility.cc" in result.output
    assert runner.invoke(cli, ["check", str(float_tflite), "--delegate", "xnnpack", "--strict"]).exit_code == 0
    data = json.loads(runner.invoke(cli, ["check", str(mixed_tflite), "--json"]).output)
    assert [d["delegate"] for d in data["delegates"]] == ["xnnpack", "gpu", "nnapi", "edgetpu"]
    bad = runner.invoke(cli, ["check", str(mixed_tflite), "--delegate", "gpx"])
    assert bad.exit_code == 1 and bad.output.startswith("Error: unknown delegate 'gpx'; did you mean 'gpu'?")


def test_cli_run_and_inspect_print_the_report(float_tflite, digits, tmp_path, delegate_lib):
    x = tmp_path / "x.npy"
    np.save(x, digits.x_test[:1])
    runner = CliRunner()
    result = runner.invoke(cli, ["run", str(float_tflite), "-i", str(x), "--delegate", "nnapi,xnnpack"])
    assert result.exit_code == 0, result.output
    assert "delegation: xnnpack (" in result.output
    result = runner.invoke(cli, ["inspect", str(float_tflite), "--delegate-lib", str(delegate_lib), "--json"])
    assert json.loads(result.output)["delegation"]["used"] == "external"
    result = runner.invoke(cli, ["run", str(float_tflite), "-i", str(x), "--delegate-option", "nope"])
    assert result.exit_code == 1 and len(result.output.strip().splitlines()) == 1
    result = runner.invoke(cli, ["inspect", str(float_tflite), "--delegate", "nnapi", "--strict"])
    if not registry.get("nnapi").usable_here().usable:
        assert result.exit_code == 1 and result.output.startswith("Error: no requested delegate could run")


# -- crash isolation: libraries are tried in a child process first -------------------------------------------

CRASH_C = r"""
#include <signal.h>
void* tflite_plugin_create_delegate(char** keys, char** values, int n, void (*report_error)(const char*)) {
  raise(SIGSEGV);
  return 0;
}
void tflite_plugin_destroy_delegate(void* delegate) {}
"""

HANG_C = r"""
#include <unistd.h>
void* tflite_plugin_create_delegate(char** keys, char** values, int n, void (*report_error)(const char*)) {
  for (;;) pause();
}
void tflite_plugin_destroy_delegate(void* delegate) {}
"""

CRASH_AT_LOAD_C = r"""
#include <stdlib.h>
__attribute__((constructor)) static void boom(void) { abort(); }
void* tflite_plugin_create_delegate(char** k, char** v, int n, void (*e)(const char*)) { return 0; }
void tflite_plugin_destroy_delegate(void* d) {}
"""


@pytest.fixture(scope="module")
def crashing_lib(tmp_path_factory):
    return _build(tmp_path_factory, "crashdelegate", CRASH_C)


def test_a_delegate_that_segfaults_is_skipped_and_we_live(float_tflite, crashing_lib, digits):
    model = edgert.load(float_tflite, delegate_lib=str(crashing_lib))
    report = model.delegation
    assert report.fallback and report.used == "xnnpack"
    (skipped,) = report.skipped
    assert "crashed while loading (SIGSEGV)" in skipped.reason and str(crashing_lib) in skipped.reason
    assert model.run(digits.x_test[:1])[0].shape == (1, 10)  # this process carried on
    with pytest.raises(DelegateUnavailableError, match=r"crashed while loading \(SIGSEGV\)"):
        edgert.load(float_tflite, delegate_lib=str(crashing_lib), strict=True)


def test_crash_at_dlopen_and_hang_are_reported(float_tflite, tmp_path_factory, monkeypatch):
    at_load = _build(tmp_path_factory, "crashatload", CRASH_AT_LOAD_C)
    skipped = edgert.load(float_tflite, delegate_lib=str(at_load)).delegation.skipped[0]
    assert "crashed while loading (SIGABRT)" in skipped.reason
    monkeypatch.setattr("edgert.delegates.library.PROBE_TIMEOUT_S", 1.0)
    hang = _build(tmp_path_factory, "hangdelegate", HANG_C)
    skipped = edgert.load(float_tflite, delegate_lib=str(hang)).delegation.skipped[0]
    assert "hung while loading (no answer in 1 s" in skipped.reason


def test_probe_results_are_cached_per_path_and_mtime(float_tflite, crashing_lib, delegate_lib, monkeypatch):
    import os

    from edgert.delegates import library

    runs = []
    real = library._run_child
    monkeypatch.setattr(library, "_run_child", lambda *a: runs.append(a[0]) or real(*a))
    for _ in range(2):
        edgert.load(float_tflite, delegate_lib=str(crashing_lib))
        edgert.load(float_tflite, delegate_lib=str(delegate_lib))
    assert runs == [str(crashing_lib), str(delegate_lib)]  # once each
    library._memory_cache.clear()  # a new process: the cache on disk answers
    edgert.load(float_tflite, delegate_lib=str(crashing_lib))
    assert len(runs) == 2 and library._cache_file().exists()
    st = os.stat(crashing_lib)
    os.utime(crashing_lib, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))  # a rebuilt library is probed again
    edgert.load(float_tflite, delegate_lib=str(crashing_lib))
    assert runs[-1] == str(crashing_lib) and len(runs) == 3
    # Failing to create may depend on attached devices: never cached.
    edgert.load(float_tflite, delegate_lib=str(delegate_lib), delegate_options=["fail=no device"])
    edgert.load(float_tflite, delegate_lib=str(delegate_lib), delegate_options=["fail=no device"])
    assert len(runs) == 5
