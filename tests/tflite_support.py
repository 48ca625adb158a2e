"""tflite-support 0.4.4 in a virtual environment of its own (build/tflite-support-venv): the independent reader
and writer of TFLite metadata. It pins protobuf<4, so it cannot live beside TensorFlow 2.21 in the project's venv.
Made once, reused; the tests that need it are skipped with the reason when it cannot be installed here."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

VENV = Path(__file__).resolve().parent.parent / "build" / "tflite-support-venv"
PYTHON = VENV / "bin" / "python"
_CHECK = "from tflite_support import metadata"


def ensure() -> str | None:
    """Make the environment if needed; returns why it cannot be used, or None."""
    if PYTHON.exists() and _works():
        return None
    try:
        subprocess.run([sys.executable, "-m", "venv", "--clear", str(VENV)], check=True, capture_output=True,
                       timeout=120)
        done = subprocess.run([str(PYTHON), "-m", "pip", "install", "-q", "tflite-support==0.4.4"],
                              capture_output=True, text=True, timeout=600)
    except (subprocess.SubprocessError, OSError) as exc:
        return f"cannot make a venv for tflite-support: {exc}"
    if done.returncode != 0:
        return f"cannot install tflite-support 0.4.4: {done.stderr.strip().splitlines()[-1:]}"
    if not _works():
        why = subprocess.run([str(PYTHON), "-c", _CHECK], capture_output=True, text=True).stderr.strip()
        return f"tflite-support does not import here ({why.splitlines()[-1] if why else '?'}; it needs libusb-1.0)"
    return None


def _works() -> bool:
    return subprocess.run([str(PYTHON), "-c", _CHECK], capture_output=True).returncode == 0


def run(code: str, *args: str) -> dict:
    """Run `code` with tflite-support; it prints one JSON value, which is returned."""
    done = subprocess.run([str(PYTHON), "-c", code, *args], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


DISPLAY = """
import json, sys
from tflite_support import metadata
from tensorflow_lite_support.metadata.cc.python import _pywrap_metadata_version as version
d = metadata.MetadataDisplayer.with_model_file(sys.argv[1])
files = d.get_packed_associated_file_list()
print(json.dumps({"metadata": json.loads(d.get_metadata_json()), "files": files,
                  "file_bytes": {f: list(d.get_associated_file_buffer(f)) for f in files},
                  "min_version": version.GetMinimumMetadataParserVersion(bytes(d.get_metadata_buffer()))}))
"""

WRITE_CLASSIFIER = """
import json, sys
from tflite_support.metadata_writers import image_classifier, writer_utils
model, labels, out = sys.argv[1:4]
writer = image_classifier.MetadataWriter.create_for_inference(
    writer_utils.load_file(model), [float(sys.argv[4])], [float(sys.argv[5])], [labels])
writer_utils.save_file(writer.populate(), out)
print(json.dumps(True))
"""
