"""The runtime must start without TensorFlow: checked in a fresh interpreter."""

import subprocess
import sys

HEAVY = ("tensorflow", "tf_keras", "keras", "tensorflow_model_optimization")


def _loaded_after(code: str) -> list[str]:
    probe = f"{code}\nimport sys\nprint(sorted({{m.split('.')[0] for m in sys.modules}} & set({HEAVY!r})))"
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    return eval(out.stdout.strip().splitlines()[-1])


def test_import_edgert_loads_no_tensorflow():
    assert _loaded_after("import edgert") == []


def test_loading_and_running_a_model_loads_no_tensorflow(int8_tflite):
    code = (f"import numpy as np, edgert\nm = edgert.load({str(int8_tflite)!r})\n"
            "m.run(np.zeros(m.inputs[0].shape, np.float32))\nedgert.inspect_model(m.path)")
    assert _loaded_after(code) == []


def test_cli_module_loads_no_tensorflow():
    assert _loaded_after("import edgert.cli") == []


def test_no_generic_top_level_packages_installed(tmp_path):
    # Run from an empty directory so the checkout itself is not on sys.path.
    code = "import importlib.util as u; print([n for n in ('converters','delegates','devices') if u.find_spec(n)])"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=tmp_path)
    assert out.stdout.strip() == "[]"
    code = "import edgert.converters, edgert.delegates, edgert.devices; print('ok')"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=tmp_path)
    assert out.stdout.strip() == "ok"


def _modules_after(code: str, prefixes: tuple[str, ...]) -> list[str]:
    probe = f"{code}\nimport sys\nprint(sorted(m for m in sys.modules if m.startswith({prefixes!r})))"
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    return eval(out.stdout.strip().splitlines()[-1])


def test_import_edgert_loads_only_what_it_must():
    """Public names load their modules on first use (PEP 562): start-up on a board pays for nothing unused."""
    assert _modules_after("import edgert", ("edgert", "numpy")) == ["edgert", "edgert.errors"]
    code = "import edgert\nprint(edgert.load, edgert.LatencyStats, edgert.backend)"
    assert {"edgert.model", "edgert.benchmark", "edgert.backend"} <= set(_modules_after(code, ("edgert",)))


def test_running_a_model_skips_the_benchmark_power_code_and_package_metadata(int8_tflite):
    code = ("import sys\nfrom edgert.cli import main\nsys.argv = ['edgert', 'run', " + repr(str(int8_tflite)) + "]\n"
            "try:\n    main()\nexcept SystemExit:\n    pass")
    loaded = _modules_after(code, ("edgert.benchmark", "edgert.power", "edgert.devices", "importlib.metadata",
                                   "edgert.delegates.gpu"))
    assert loaded == [], loaded
