"""`edgert export android`: the model with metadata in `assets/`, a Kotlin classifier generated from templates, and
the Gradle lines it needs."""

from __future__ import annotations

import hashlib
import keyword
import math
import os
import re
import shutil
import string
import tempfile
from dataclasses import dataclass, replace
from importlib import resources
from pathlib import Path

from edgert.errors import MetadataError, OutputExistsError
from edgert.files import check_writable_dir
from edgert.metadata.reader import decode_metadata
from edgert.metadata.records import ModelMetadata
from edgert.metadata.writer import MetadataSpec, build_metadata, detection_roles, embed, read_labels

# LiteRT's Android artifacts (Google Maven): 1.4.2 is the newest line with the Interpreter API, GpuDelegate,
# CompatibilityList and NnApiDelegate that the generated class uses.
LITERT_VERSION = "1.4.2"
ANDROID_DELEGATES = ("gpu", "nnapi")
_JAVA_KEYWORDS = frozenset("""abstract assert boolean break byte case catch char class const continue default do double
else enum extends final finally float for goto if implements import instanceof int interface long native new package
private protected public return short static strictfp super switch synchronized this throw throws transient try void
volatile while true false null""".split())
_KOTLIN_HARD_KEYWORDS = frozenset("""as break class continue do else false for fun if in interface is null object
package return super this throw true try typealias typeof val var when while""".split())
# How the generated code writes one normalised value into the input, and reads one score, per tensor type.
_PUT = {
    "float32": "input.putFloat(x)",
    "int8": "input.put((Math.round(x / INPUT_SCALE) + INPUT_ZERO_POINT).coerceIn(-128, 127).toByte())",
    "uint8": "input.put((Math.round(x / INPUT_SCALE) + INPUT_ZERO_POINT).coerceIn(0, 255).toByte())",
}
_READ = {
    "float32": "output.float",
    "int8": "(output.get().toInt() - OUTPUT_ZERO_POINT) * OUTPUT_SCALE",
    "uint8": "((output.get().toInt() and 0xFF) - OUTPUT_ZERO_POINT) * OUTPUT_SCALE",
}
_BYTES = {"float32": 4, "int8": 1, "uint8": 1}
# Segmentation compares scores as stored: dequantization keeps their order.
_READ_RAW = {
    "float32": "output.getFloat((pixel * NUM_CLASSES + c) * 4)",
    "int8": "output.get(pixel * NUM_CLASSES + c).toFloat()",
    "uint8": "(output.get(pixel * NUM_CLASSES + c).toInt() and 0xFF).toFloat()",
}
TASK_CLASSES = {"classification": "Classifier", "detection": "Detector", "segmentation": "Segmenter"}


def _sections(text: str) -> dict[str, str]:
    """A task part's sections: `//== NAME` lines start each one."""
    sections: dict[str, list[str]] = {}
    current = None
    for line in text.splitlines():
        if line.startswith("//== "):
            current = line[5:].strip()
            sections[current] = []
        elif current is not None:
            sections[current].append(line)
    return {name: "\n".join(lines).rstrip("\n") for name, lines in sections.items()}


def _task_values(meta: MetadataSpec, info) -> dict[str, str]:
    """The numbers the task's part needs, checked against the model's outputs."""
    outputs = info.outputs
    if meta.task == "classification":
        out = outputs[0]
        _check_dtype(out, "output")
        classes = out.shape[-1]
        return {"NUM_CLASSES": str(classes), "OUTPUT_DTYPE": out.dtype, "OUTPUT_BYTES": str(_BYTES[out.dtype]),
                "OUTPUT_SCALE": f"{out.scale[0]:.9g}" if out.quantized else "0",
                "OUTPUT_ZERO_POINT": str(out.zero_point[0]) if out.quantized else "0",
                "READ_SCORE": _READ[out.dtype],
                "SCORE_KIND": "dequantized from " + out.dtype if out.quantized else "as the model outputs it",
                "RUN_MODEL": _run_one(info), "OUTPUT_NAME": _kotlin_string(out.name),
                "_labels": meta.labels or tuple(str(i) for i in range(classes))}
    if meta.task == "detection":
        roles = detection_roles(outputs, info.path)
        if any(o.dtype != "float32" for o in outputs):
            raise MetadataError("a detector's four outputs (SSD post-processing) are float32; this model has "
                                f"{', '.join(o.dtype for o in outputs)}")
        if not meta.labels:
            raise MetadataError("a detector needs --labels: its class outputs are indices into the label file")
        boxes, _, _, count = (outputs[i] for i in roles)
        named = bool(info.signature)
        keys = [_kotlin_string(outputs[i].name) if named else str(i) for i in roles]
        return {"NUM_CLASSES": str(len(meta.labels)), "MAX_DETECTIONS": str(boxes.shape[1]),
                "COUNT_BYTES": str(4 * max(1, math.prod(count.shape))), "BOXES_OUTPUT": keys[0],
                "CLASSES_OUTPUT": keys[1], "SCORES_OUTPUT": keys[2], "COUNT_OUTPUT": keys[3],
                "OUTPUT_KEY": "String" if named else "Int",
                "RUN_MODEL": ("interpreter.runSignature(mapOf<String, Any>(INPUT_NAME to input),\n"
                              if named else "interpreter.runForMultipleInputsOutputs(arrayOf<Any>(input),\n"),
                "_labels": meta.labels}
    out = outputs[0]
    _check_dtype(out, "output")
    classes = out.shape[-1]
    return {"NUM_CLASSES": str(classes), "OUTPUT_HEIGHT": str(out.shape[1]), "OUTPUT_WIDTH": str(out.shape[2]),
            "OUTPUT_DTYPE": out.dtype, "OUTPUT_BYTES": str(_BYTES[out.dtype]), "READ_RAW": _READ_RAW[out.dtype],
            "RUN_MODEL": _run_one(info), "OUTPUT_NAME": _kotlin_string(out.name),
            "_labels": meta.labels or tuple(str(i) for i in range(classes))}


def _run_one(info) -> str:
    """The Kotlin that runs a one-output model: by the signature's names where the file has a signature (LiteRT's
    `runSignature`), else by position."""
    if info.signature:
        return ("interpreter.runSignature(mapOf<String, Any>(INPUT_NAME to input), "
                "mapOf<String, Any>(OUTPUT_NAME to output))")
    return "interpreter.run(input, output)"


def _check_dtype(spec, what: str) -> None:
    if spec.dtype not in _PUT:
        raise MetadataError(f"the model's {what} is {spec.dtype}; the generated class handles float32, int8 and "
                            "uint8")


class _KotlinTemplate(string.Template):
    delimiter = "%%"  # `$` is Kotlin's own string template


@dataclass(frozen=True)
class AndroidExport:
    """What `export_android` wrote (paths relative to `out_dir`)."""

    out_dir: str
    model_asset: str
    kotlin_source: str
    gradle_snippet: str
    readme: str
    class_name: str
    metadata: ModelMetadata
    task: str = "classification"

    @property
    def call(self) -> str:
        """The generated class's main call, for a one-line hint."""
        return {"classification": "classify", "detection": "detect", "segmentation": "segment"}[self.task] + \
            "(bitmap)"

    def to_dict(self) -> dict:
        return {"out_dir": self.out_dir, "model_asset": self.model_asset, "kotlin_source": self.kotlin_source,
                "gradle_snippet": self.gradle_snippet, "readme": self.readme, "class_name": self.class_name,
                "task": self.task, "call": self.call, "metadata": self.metadata.to_dict()}


def check_package(name: str) -> str:
    """A valid Java/Kotlin package name (`com.example.app`).

    Raises:
        MetadataError: not one, with the part that is wrong.
    """
    parts = name.split(".")
    for part in parts:
        if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", part or ""):
            raise MetadataError(f"--package {name!r} is not a Java package name: {part!r} must start with a letter "
                                "or '_' and hold only letters, digits and '_' (e.g. com.example.app)")
        if part in _JAVA_KEYWORDS or part in _KOTLIN_HARD_KEYWORDS or keyword.iskeyword(part):
            raise MetadataError(f"--package {name!r}: {part!r} is a reserved word; choose another segment")
    return name


def class_name_for(model_path: str | os.PathLike, suffix: str = "Classifier") -> str:
    """`digits_int8.tflite` -> `DigitsInt8Classifier` (or `...Detector`, `...Segmenter`)."""
    words = re.findall(r"[A-Za-z0-9]+", Path(model_path).stem)
    name = "".join(w[:1].upper() + w[1:] for w in words) or "Model"
    if name[0].isdigit():
        name = "Model" + name
    return name + suffix


def _kotlin_string(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"').replace("$", "\\$") + '"'


def _float(value: float) -> str:
    return f"{value:.9g}f" if "e" not in f"{value:.9g}" else f"{value:.9e}f"


def export_android(model_path: str | os.PathLike, package: str, out_dir: str | os.PathLike, *,
                   labels_path: str | os.PathLike | None = None, delegates: tuple[str, ...] = ("gpu",),
                   meta: MetadataSpec | None = None, force: bool = False) -> AndroidExport:
    """Write the Android module for a classifier, detector or segmenter (`meta.task`): assets, Kotlin, Gradle
    snippet, README.

    The output folder is built beside its destination and moved into place at the end, so a failure leaves
    nothing behind (and, with `force`, the old folder is replaced only once the new one is complete).

    Raises:
        MetadataError: invalid package, delegate, task, labels or normalisation for this model.
        OutputExistsError: `out_dir` exists and `force` is false.
        ModelFormatError: not a valid model.
    """
    from edgert import __version__
    from edgert.tflite.flatbuffer import parse
    from edgert.tflite.info import describe, read_model_bytes

    check_package(package)
    model_path = Path(model_path)
    unknown = [d for d in delegates if d not in ANDROID_DELEGATES]
    if unknown:
        raise MetadataError(f"--delegate {','.join(unknown)}: the Android export knows {', '.join(ANDROID_DELEGATES)}"
                            " (the CPU is always the last resort)")
    out = Path(out_dir)
    if out.exists() and not force:
        raise OutputExistsError(f"{out} exists; pass --force to replace it or choose another -o folder")
    if not out.parent.is_dir():
        raise OutputExistsError(f"the folder {out.parent} does not exist; create it or choose another -o")
    check_writable_dir(out.parent)
    labels = read_labels(labels_path) if labels_path else None
    meta = meta or MetadataSpec(name=model_path.stem)
    if meta.task not in TASK_CLASSES:
        raise MetadataError(f"edgert export android generates classifiers, detectors and segmenters; --task "
                            f"{meta.task} has no generated class (write its metadata with `edgert metadata write`)")
    if labels is not None:
        meta = replace(meta, labels=labels, labels_file_name=Path(labels_path).name,
                       labels_data=Path(labels_path).read_bytes())

    data = read_model_bytes(model_path)
    info = describe(data, str(model_path), parse(data, str(model_path)))
    metadata_bytes, files = build_metadata(info, meta)  # checks task, labels and normalisation against the model
    spec_in = info.inputs[0]
    _check_dtype(spec_in, "input")
    _, height, width, channels = spec_in.shape
    task_values = _task_values(meta, info)
    with_metadata = embed(data, metadata_bytes, files)
    decoded = decode_metadata(with_metadata, model_path.name)
    norm = decoded.inputs[0]  # the Kotlin constants are the very normalisation the metadata records
    class_name = class_name_for(model_path, TASK_CLASSES[meta.task])
    values = {
        "EDGERT_VERSION": __version__, "MODEL_FILE": model_path.name, "PACKAGE": package,
        "PACKAGE_PATH": package.replace(".", "/"), "MODEL_SHA256": hashlib.sha256(with_metadata).hexdigest()[:16],
        "MODEL_TITLE": meta.name, "CLASS_NAME": class_name,
        "INPUT_HEIGHT": str(height), "INPUT_WIDTH": str(width), "INPUT_CHANNELS": str(channels),
        "INPUT_DTYPE": spec_in.dtype, "INPUT_NAME": _kotlin_string(spec_in.name),
        "INPUT_MEAN": ", ".join(_float(v) for v in norm.mean), "INPUT_STD": ", ".join(_float(v) for v in norm.std),
        "INPUT_SCALE": f"{spec_in.scale[0]:.9g}" if spec_in.quantized else "0",
        "INPUT_ZERO_POINT": str(spec_in.zero_point[0]) if spec_in.quantized else "0",
        "RANGE_LOW": f"{meta.input_range[0]:g}", "RANGE_HIGH": f"{meta.input_range[1]:g}",
        "DELEGATE_ORDER": ", ".join(_kotlin_string(d) for d in delegates),
        "INPUT_BYTES": str(_BYTES[spec_in.dtype]), "PUT_VALUE": _PUT[spec_in.dtype],
        "LITERT_VERSION": LITERT_VERSION,
        "GPU_DEPENDENCY": (f'    implementation "com.google.ai.edge.litert:litert-gpu:{LITERT_VERSION}"\n'
                           if "gpu" in delegates else ""),
        "LABELS_NOTE": ", labels" if meta.labels else "",
        "DELEGATES_TEXT": ", ".join(delegates) if delegates else "(none)",
        "INPUT_DESCRIPTION": f"{height}x{width}x{channels} {spec_in.dtype}",
        "QUANT_NOTE": (f", then quantized with scale {spec_in.scale[0]:.6g} and zero point {spec_in.zero_point[0]}"
                       if spec_in.quantized else ""),
        **task_values,
    }
    values["LABELS"] = ",\n".join(" " * 12 + _kotlin_string(label) for label in task_values["_labels"])
    del values["_labels"]
    templates = resources.files("edgert.android") / "templates"
    parts = _sections((templates / f"{meta.task}.kt.part").read_text())
    for section, text in parts.items():  # the task's own pieces, rendered with the model's numbers first
        values[section] = _KotlinTemplate(text).substitute(values)
    values["TASK_SUMMARY"] = values.pop("SUMMARY")
    rendered = {"Model.kt": _KotlinTemplate((templates / "Model.kt").read_text()).substitute(values)}
    for name in ("build.gradle.snippet", "README.md"):
        rendered[name] = _KotlinTemplate((templates / name).read_text()).substitute(values)
    asset = Path("app/src/main/assets") / model_path.name
    kotlin = Path("app/src/main/java") / package.replace(".", "/") / f"{class_name}.kt"
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".part", dir=out.parent))
    try:
        for rel, content in ((asset, with_metadata), (kotlin, rendered["Model.kt"].encode()),
                             (Path("build.gradle.snippet"), rendered["build.gradle.snippet"].encode()),
                             (Path("README.md"), rendered["README.md"].encode())):
            (tmp / rel).parent.mkdir(parents=True, exist_ok=True)
            (tmp / rel).write_bytes(content)
        os.chmod(tmp, 0o755)
        if out.exists():  # --force: swap only now that the new folder is complete
            old = out.with_name(f".{out.name}.old-{os.getpid()}")
            os.replace(out, old)
            os.replace(tmp, out)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return AndroidExport(str(out), str(asset), str(kotlin), "build.gradle.snippet", "README.md", class_name, decoded,
                         meta.task)
