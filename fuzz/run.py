"""`make fuzz`: run the model-loading fuzz target for a total time, restarting it after each finding.

Seeds are the real models under build/ (float, int8, with unsupported and custom operators); libFuzzer grows the
corpus in build/fuzz/corpus. Findings land in fuzz/crashers/, which tests/test_fuzz_regressions.py replays: every
file there must give a clean EdgertError. libFuzzer's -fork mode does not work with atheris, hence this loop.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).parent
CORPUS = Path("build/fuzz/corpus")
CRASHERS = HERE / "crashers"
SCRATCH = "/dev/shm" if os.path.isdir("/dev/shm") else None  # the input being run is written here each time


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=int, default=600, help="total fuzzing time")
    args = parser.parse_args()
    CORPUS.mkdir(parents=True, exist_ok=True)
    CRASHERS.mkdir(exist_ok=True)
    for seed in sorted(Path("build").rglob("*.tflite")):
        if CORPUS not in seed.parents:
            shutil.copy(seed, CORPUS / seed.name)
    if not any(CORPUS.iterdir()):
        sys.exit("no seed models under build/: run `make demo` (or `make bench`) first")
    before = set(CRASHERS.iterdir())
    deadline = time.monotonic() + args.seconds
    runs = 0
    while (left := int(deadline - time.monotonic())) > 0:
        runs += 1
        with tempfile.TemporaryDirectory(prefix="edgert-fuzz-", dir=SCRATCH) as scratch:
            command = [sys.executable, str(HERE / "fuzz_model.py"), str(CORPUS), f"-max_total_time={left}",
                       f"-artifact_prefix={CRASHERS}/", "-rss_limit_mb=4096", "-timeout=20", "-print_final_stats=1"]
            try:
                done = subprocess.run(command, capture_output=True, text=True, timeout=left + 60,
                                      env={**os.environ, "EDGERT_FUZZ_SCRATCH": scratch})
            except subprocess.TimeoutExpired:
                # A crash inside native code can deadlock libFuzzer's own handler, so its -timeout never fires:
                # keep the input being run (the target writes it before loading) as a hang finding.
                last = Path(scratch) / "input.tflite"
                name = f"hang-{hashlib.sha1(last.read_bytes()).hexdigest()}" if last.exists() else None
                if name:
                    shutil.copy(last, CRASHERS / name)
                print(f"run {runs}: hung past its time limit; kept {name or 'nothing'}", flush=True)
                continue
        stats = [line for line in done.stderr.splitlines() if line.startswith(("stat::number_of_executed_units",
                                                                             "Test unit written"))]
        print(f"run {runs}: exit {done.returncode}; " + "; ".join(stats), flush=True)
        if done.returncode == 0:
            break
    found = sorted(set(CRASHERS.iterdir()) - before)
    print(f"{args.seconds} s, {runs} run(s), corpus {len(list(CORPUS.iterdir()))} inputs, "
          f"{len(found)} new finding(s): " + (", ".join(p.name for p in found) or "none"))


if __name__ == "__main__":
    main()
