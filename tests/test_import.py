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
    code = "import edgert\nprint(edgert.load, edgert.LatencyStats, edgert.runtime)"
    assert {"edgert.runtime.model", "edgert.measure.bench", "edgert.runtime.backend"} <= set(_modules_after(code, ("edgert",)))


def test_running_a_model_skips_the_benchmark_power_code_and_package_metadata(int8_tflite):
    code = ("import sys\nfrom edgert.cli import main\nsys.argv = ['edgert', 'run', " + repr(str(int8_tflite)) + "]\n"
            "try:\n    main()\nexcept SystemExit:\n    pass")
    loaded = _modules_after(code, ("edgert.measure.bench", "edgert.measure.power_sampling", "edgert.devices", "importlib.metadata",
                                   "edgert.delegates.gpu"))
    assert loaded == [], loaded


# -- the import graph: no circles, nothing pointing up ---------------------------------------------------------

def _import_graph() -> dict[str, set[str]]:
    """Every module of the installed layout (edgert, and the folders installed under it) -> the edgert modules it
    imports, at the top or inside a function alike (a deferred import is still a dependency)."""
    import ast
    from pathlib import Path

    repo = Path(__file__).resolve().parent.parent
    roots = {"edgert": repo / "edgert", "edgert.converters": repo / "converters",
             "edgert.delegates": repo / "delegates", "edgert.devices": repo / "devices"}
    modules = {}
    for package, root in roots.items():
        for path in root.rglob("*.py"):
            if {"templates", "collections"} & set(path.relative_to(root).parts):
                continue  # Android templates and the Ansible collection are data, run elsewhere
            parts = [p for p in path.relative_to(root).with_suffix("").parts if p != "__init__"]
            modules[".".join([package, *parts])] = path

    def resolve(name: str) -> str | None:
        while name and name not in modules:
            name = name.rpartition(".")[0]
        return name or None

    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        found: set[str | None] = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                found.update(resolve(a.name) for a in node.names)
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                found.update(f"{node.module}.{a.name}" if f"{node.module}.{a.name}" in modules else
                             resolve(node.module) for a in node.names)
        graph[name] = {d for d in found if d and d != name and not name.startswith(d + ".")}
    return graph


def test_no_module_imports_itself_round_a_circle():
    graph = _import_graph()
    assert "edgert.tflite.flatbuffer" in graph and "edgert.metadata.writer" in graph
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    circles = []

    def visit(v: str) -> None:  # Tarjan's strongly connected components
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                circles.append(sorted(component))

    sys.setrecursionlimit(max(sys.getrecursionlimit(), 10000))
    for v in graph:
        if v not in index:
            visit(v)
    assert circles == []


# The layers, lowest first: a module imports only from its own layer or one below (README, Layout). A module's layer
# is that of the longest prefix that names it.
LAYERS = (
    ("edgert.errors", "edgert.files"),
    ("edgert.tflite",),                                          # the file, read without an interpreter
    ("edgert.runtime.backend", "edgert.runtime.plugins", "edgert.runtime.native", "edgert.devices.sysfs"),
    ("edgert.delegates", "edgert.devices", "edgert.metadata.records", "edgert.metadata._schema",
     "edgert.metadata.reader", "edgert.metadata"),               # the plugin folders; metadata as it is read
    ("edgert.runtime",),                                         # load, delegate, run
    ("edgert.measure", "edgert.plugin_api"),
    ("edgert.tasks",),
    ("edgert.metadata.writer", "edgert.android"),
    ("edgert.deploy",),
    ("edgert.serve", "edgert.fleet", "edgert.converters"),
    ("edgert.cli", "edgert.bundled", "edgert.__main__", "edgert"),  # the entry points and the package's face
)


def _layer(module: str) -> int:
    best = max((p for layer in LAYERS for p in layer if module == p or module.startswith(p + ".")), key=len)
    return next(i for i, layer in enumerate(LAYERS) if best in layer)


def test_nothing_imports_upward():
    """Every module imports from its own layer or below, and only the command line reaches the converters."""
    graph = _import_graph()
    upward = sorted((m, d) for m, deps in graph.items() for d in deps if _layer(d) > _layer(m))
    assert upward == []
    converters = sorted((m, d) for m, deps in graph.items() for d in deps
                        if d.startswith("edgert.converters") and not m.startswith(("edgert.converters", "edgert.cli")))
    assert converters == []
    assert {_layer(m) for m in graph} == set(range(len(LAYERS)))  # every layer holds a module


def test_the_layer_test_sees_an_upward_import():
    """The test above can fail: the parser importing the runtime is caught."""
    graph = _import_graph()
    graph["edgert.tflite.info"] = graph["edgert.tflite.info"] | {"edgert.runtime.model"}
    assert any(_layer(d) > _layer(m) for m, deps in graph.items() for d in deps)
