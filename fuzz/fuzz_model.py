"""Coverage-guided fuzz target (atheris/libFuzzer) over model loading: `edgert.load` and `edgert inspect`.

Every input must either load and run, or be refused with an `EdgertError`; any other exception, or a crash in the
native interpreter behind the verifier, is a finding that libFuzzer saves under fuzz/crashers/. Run it with
`make fuzz FUZZ_SECONDS=600` (seeds: the real models under build/, copied into build/fuzz/corpus).
"""

from __future__ import annotations

import os
import sys
import tempfile

import atheris

# A board-sized limit on declared tensors (the machine's memory is the default): inputs declaring more are refused
# cleanly instead of exhausting libFuzzer's -rss_limit_mb. The regression tests replay OOM findings with it.
os.environ.setdefault("EDGERT_MAX_TENSOR_BYTES", str(1 << 30))

with atheris.instrument_imports(include=["edgert"]):
    import edgert
    from edgert.errors import EdgertError
    from edgert.runtime.arrays import random_inputs
    from edgert.tflite.flatbuffer import parse
    from edgert.tflite.info import describe

# fuzz/run.py gives each run a scratch folder it removes afterwards; after a hang, the file there is the input.
_DIR = os.environ.get("EDGERT_FUZZ_SCRATCH") or tempfile.mkdtemp(
    prefix="edgert-fuzz-", dir="/dev/shm" if os.path.isdir("/dev/shm") else None)
_FILE = os.path.join(_DIR, "input.tflite")


def TestOneInput(data: bytes) -> None:
    try:
        describe(data, "fuzz", parse(data, "fuzz"))  # what `edgert inspect` reads
    except EdgertError:
        return
    with open(_FILE, "wb") as f:
        f.write(data)
    try:
        model = edgert.load(_FILE, threads=1)
    except EdgertError:
        return
    try:
        model.run([random_inputs([s])[0] for s in model.inputs])
    except EdgertError:
        pass


def main() -> None:
    atheris.Setup(sys.argv, TestOneInput)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
