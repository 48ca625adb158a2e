"""Start-up time, as fresh processes (what a user waits for on every command, seconds on a Raspberry Pi).

Two comparisons, each interleaved (anchor, contender, anchor, ...) over `--rounds` runs, medians:
- `import edgert` against `import ai_edge_litert.interpreter` (target <= 1.2x);
- `edgert run model.tflite --input x.npy` against a bare script that loads the interpreter, sets the input, invokes
  once and prints the output (target <= 1.3x), on the int8 digits CNN.
Both sides run as on a board that installed the wheel: edgert is built into a wheel and installed into a folder of
its own beside this venv's site-packages, and both run with `python -S` (no site processing). This venv's editable
install would otherwise load pathlib and its finder into every process, the anchor's too, which hides what edgert
itself imports.
Run: `python benchmarks/startup.py [--rounds 20]`.
"""

from __future__ import annotations

import argparse
import os
import statistics
import shutil
import subprocess
import sys
import sysconfig
import time
from pathlib import Path

import numpy as np

WORK = Path("build/bench")
BARE = """
import sys
import numpy as np
from ai_edge_litert.interpreter import Interpreter
it = Interpreter(model_path=sys.argv[1])
it.allocate_tensors()
detail = it.get_input_details()[0]
x = np.load(sys.argv[2])
scale, zero = detail["quantization"]
it.set_tensor(detail["index"], np.clip(np.round(x / scale + zero), -128, 127).astype(np.int8))
it.invoke()
out = it.get_output_details()[0]
print(it.get_tensor(out["index"]))
"""


def prepare() -> tuple[Path, Path]:
    model, x = WORK / "digits_int8.tflite", WORK / "digits_sample.npy"
    WORK.mkdir(parents=True, exist_ok=True)
    if not model.exists() or not x.exists():
        from edgert.converters import convert
        from edgert.converters.digits import digits_split, train_digits_cnn

        split = digits_split()
        train_digits_cnn(split).save(WORK / "digits.h5")
        np.save(WORK / "digits_calibration.npy", split.x_train[:200])
        convert(WORK / "digits.h5", model, int8=True, calibration_data=WORK / "digits_calibration.npy", force=True)
        np.save(x, split.x_test[:1])
    return model, x


REPO = Path(__file__).resolve().parent.parent
SITE = WORK / "site"
# As installed: pip compiles every module to bytecode (and PYTHONDONTWRITEBYTECODE is dropped, so the untimed first
# runs write any .pyc the install did not); edgert from its wheel, then the venv's packages.
ENV = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
ENV["PYTHONPATH"] = os.pathsep.join([str(SITE.resolve()), sysconfig.get_paths()["purelib"]])


def install_wheel() -> None:
    """edgert as a wheel, installed without dependencies into build/bench/site (what pip puts on a board)."""
    shutil.rmtree(SITE, ignore_errors=True)
    wheels = WORK / "wheel"
    shutil.rmtree(wheels, ignore_errors=True)
    pip = [sys.executable, "-m", "pip", "-q", "--disable-pip-version-check"]
    left = [REPO / "build" / "lib", *(REPO / "build").glob("bdist.*")]  # setuptools' build folders, if not there yet
    left = [p for p in left if not p.exists()]
    try:
        subprocess.run([*pip, "wheel", "--no-deps", "--no-build-isolation", "-w", str(wheels), str(REPO)], check=True)
    finally:
        for path in left:
            shutil.rmtree(path, ignore_errors=True)
    (wheel,) = wheels.glob("edgert-*.whl")
    subprocess.run([*pip, "install", "--no-deps", "--target", str(SITE), str(wheel)], check=True)


def timed(cmd: list[str]) -> float:
    started = time.perf_counter()
    subprocess.run(cmd, check=True, capture_output=True, env=ENV, cwd=WORK)  # not the checkout: its edgert/ would shadow
    return time.perf_counter() - started


def compare(title: str, anchor: tuple[str, list[str]], contender: tuple[str, list[str]], rounds: int,
            target: float) -> None:
    times: dict[str, list[float]] = {anchor[0]: [], contender[0]: []}
    for cmd in (anchor[1], contender[1]):  # one untimed run each: the page cache holds both afterwards
        timed(cmd)
    for _ in range(rounds):
        for name, cmd in (anchor, contender):
            times[name].append(timed(cmd))
    base = statistics.median(times[anchor[0]])
    print(f"\n{title} ({rounds} interleaved process runs each)")
    print(f"{'contender':<44} {'median ms':>10} {'p10 ms':>8} {'p90 ms':>8} {'ratio':>7}")
    for name, values in times.items():
        deciles = statistics.quantiles(values, n=10)
        print(f"{name:<44} {statistics.median(values) * 1000:>10.1f} {deciles[0] * 1000:>8.1f} "
              f"{deciles[-1] * 1000:>8.1f} {statistics.median(values) / base:>7.3f}")
    ratio = statistics.median(times[contender[0]]) / base
    print(f"target <= {target}: {'met' if ratio <= target else 'MISSED'} ({ratio:.3f})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=20)
    args = parser.parse_args()
    model, x = (p.resolve() for p in prepare())
    install_wheel()
    py = [sys.executable, "-S"]
    compare("import time", ("import ai_edge_litert.interpreter (anchor)", [*py, "-c", "import ai_edge_litert.interpreter"]),
            ("import edgert", [*py, "-c", "import edgert"]), args.rounds, 1.2)
    console_script = "import sys\nfrom edgert.cli import main\nsys.argv[0] = 'edgert'\nsys.exit(main())"  # pip's, as written
    compare("one inference from the command line",
            ("bare interpreter script (anchor)", [*py, "-c", BARE, str(model), str(x)]),
            ("edgert run MODEL --input x.npy", [*py, "-c", console_script, "run", str(model), "--input", str(x)]),
            args.rounds, 1.3)


if __name__ == "__main__":
    main()
