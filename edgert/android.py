"""`edgert export android`: the model with metadata in `assets/`, a Kotlin classifier generated from templates, and
the Gradle lines it needs."""

from __future__ import annotations

import hashlib
import keyword
import os
import re
import shutil
import string
import tempfile
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from edgert.errors import MetadataError, OutputExistsError
from edgert.metadata import MetadataSpec, ModelMetadata, build_metadata, decode_metadata, embed, read_labels

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


def class_name_for(model_path: str | os.PathLike) -> str:
    """`digits_int8.tflite` -> `DigitsInt8Classifier`."""
    words = re.findall(r"[A-Za-z0-9]+", Path(model_path).stem)
    name = "".join(w[:1].upper() + w[1:] for w in words) or "Model"
    if name[0].isdigit():
        name = "Model" + name
    return name + "Classifier"


def _kotlin_string(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"').replace("$", "\\$") + '"'


def _float(value: float) -> str:
    return f"{value:.9g}f" if "e" not in f"{value:.9g}" else f"{value:.9e}f"


def export_android(model_path: str | os.PathLike, package: str, out_dir: str | os.PathLike, *,
                   labels_path: str | os.PathLike | None = None, delegates: tuple[str, ...] = ("gpu",),
                   meta: MetadataSpec | None = None, force: bool = False) -> AndroidExport:
    """Write the Android module for a classifier: assets, Kotlin, Gradle snippet, README.

    The output folder is built beside its destination and moved into place at the end, so a failure leaves
    nothing behind (and, with `force`, the old folder is replaced only once the new one is complete).

    Raises:
        MetadataError: invalid package, delegate, task, labels or normalisation for this model.
        OutputExistsError: `out_dir` exists and `force` is false.
        ModelFormatError: not a valid model.
    """
    from edgert import __version__
    from edgert.flatbuffer import parse
    from edgert.info import describe, read_model_bytes

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
    labels = read_labels(labels_path) if labels_path else None
    meta = meta or MetadataSpec(name=model_path.stem)
    if meta.task != "classification":
        raise MetadataError(f"edgert export android generates classifiers; --task {meta.task} is not supported "
                            "yet (write its metadata with `edgert metadata write`)")
    if labels is not None:
        meta = MetadataSpec(**{**meta.__dict__, "labels": labels, "labels_file_name": Path(labels_path).name,
                               "labels_data": Path(labels_path).read_bytes()})

    data = read_model_bytes(model_path)
    info = describe(data, str(model_path), parse(data, str(model_path)))
    metadata_bytes, files = build_metadata(info, meta)  # checks task, labels and normalisation against the model
    spec_in, spec_out = info.inputs[0], info.outputs[0]
    for spec, what in ((spec_in, "input"), (spec_out, "output")):
        if spec.dtype not in _PUT:
            raise MetadataError(f"the model's {what} is {spec.dtype}; the generated classifier handles float32, "
                                "int8 and uint8")
    _, height, width, channels = spec_in.shape
    classes = spec_out.shape[-1]
    class_labels = meta.labels or tuple(str(i) for i in range(classes))
    with_metadata = embed(data, metadata_bytes, files)
    decoded = decode_metadata(with_metadata, model_path.name)
    norm = decoded.inputs[0]  # the Kotlin constants are the very normalisation the metadata records
    class_name = class_name_for(model_path)
    values = {
        "EDGERT_VERSION": __version__, "MODEL_FILE": model_path.name, "PACKAGE": package,
        "PACKAGE_PATH": package.replace(".", "/"), "MODEL_SHA256": hashlib.sha256(with_metadata).hexdigest()[:16],
        "MODEL_TITLE": meta.name, "CLASS_NAME": class_name, "NUM_CLASSES": str(classes),
        "INPUT_HEIGHT": str(height), "INPUT_WIDTH": str(width), "INPUT_CHANNELS": str(channels),
        "INPUT_DTYPE": spec_in.dtype, "OUTPUT_DTYPE": spec_out.dtype,
        "INPUT_MEAN": ", ".join(_float(v) for v in norm.mean), "INPUT_STD": ", ".join(_float(v) for v in norm.std),
        "INPUT_SCALE": f"{spec_in.scale[0]:.9g}" if spec_in.quantized else "0",
        "INPUT_ZERO_POINT": str(spec_in.zero_point[0]) if spec_in.quantized else "0",
        "OUTPUT_SCALE": f"{spec_out.scale[0]:.9g}" if spec_out.quantized else "0",
        "OUTPUT_ZERO_POINT": str(spec_out.zero_point[0]) if spec_out.quantized else "0",
        "RANGE_LOW": f"{meta.input_range[0]:g}", "RANGE_HIGH": f"{meta.input_range[1]:g}",
        "DELEGATE_ORDER": ", ".join(_kotlin_string(d) for d in delegates),
        "LABELS": ",\n".join(" " * 12 + _kotlin_string(label) for label in class_labels),
        "INPUT_BYTES": str(_BYTES[spec_in.dtype]), "OUTPUT_BYTES": str(_BYTES[spec_out.dtype]),
        "PUT_VALUE": _PUT[spec_in.dtype], "READ_SCORE": _READ[spec_out.dtype],
        "SCORE_KIND": "dequantized from " + spec_out.dtype if spec_out.quantized else "as the model outputs it",
        "LITERT_VERSION": LITERT_VERSION,
        "GPU_DEPENDENCY": (f'    implementation "com.google.ai.edge.litert:litert-gpu:{LITERT_VERSION}"\n'
                           if "gpu" in delegates else ""),
        "LABELS_NOTE": ", labels" if meta.labels else "",
        "DELEGATES_TEXT": ", ".join(delegates) if delegates else "(none)",
        "INPUT_DESCRIPTION": f"{height}x{width}x{channels} {spec_in.dtype}",
        "QUANT_NOTE": (f", then quantized with scale {spec_in.scale[0]:.6g} and zero point {spec_in.zero_point[0]}"
                       if spec_in.quantized else ""),
    }
    templates = resources.files("edgert") / "templates" / "android"
    rendered = {name: _KotlinTemplate((templates / name).read_text()).substitute(values)
                for name in ("Classifier.kt", "build.gradle.snippet", "README.md")}
    asset = Path("app/src/main/assets") / model_path.name
    kotlin = Path("app/src/main/java") / package.replace(".", "/") / f"{class_name}.kt"
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".part", dir=out.parent))
    try:
        for rel, content in ((asset, with_metadata), (kotlin, rendered["Classifier.kt"].encode()),
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
    return AndroidExport(str(out), str(asset), str(kotlin), "build.gradle.snippet", "README.md", class_name, decoded)
