"""A zoo of real architectures, not downloads: `keras.applications` models with random weights (weights=None), saved
the three ways users save them today (tf_keras `.h5`, Keras 3 `.h5`, Keras 3 `.keras`), for the conversion tests and
`make zoo` (benchmarks/zoo.py).

Models end in logits (a softmax over random weights saturates and would hide differences) and get random batch
normalisation statistics, seeded, so that a misplaced weight changes the outputs. Inputs are images in 0..255 run
through each application's own `preprocess_input`, as a user would feed them.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np


@dataclass(frozen=True)
class Architecture:
    name: str
    size: int  # input height and width: small, above the application's minimum
    module: str  # keras.applications.<module> (preprocess_input); the same name in tf_keras


ARCHITECTURES = {a.name: a for a in (
    Architecture("MobileNet", 64, "mobilenet"),
    Architecture("MobileNetV2", 64, "mobilenet_v2"),
    Architecture("MobileNetV3Small", 64, "mobilenet_v3"),
    Architecture("MobileNetV3Large", 64, "mobilenet_v3"),
    Architecture("EfficientNetB0", 64, "efficientnet"),
    Architecture("EfficientNetV2B0", 64, "efficientnet_v2"),
    Architecture("ResNet50", 64, "resnet50"),
    Architecture("ResNet50V2", 64, "resnet_v2"),
    Architecture("DenseNet121", 64, "densenet"),
    Architecture("InceptionV3", 96, "inception_v3"),  # 96 px: a 3x3 SAME average pool over a 1x1 map
    Architecture("Xception", 71, "xception"),
    Architecture("NASNetMobile", 64, "nasnet"),
    Architecture("ConvNeXtTiny", 64, "convnext"),
    Architecture("RegNetX002", 64, "regnet"),
    Architecture("VGG16", 64, "vgg16"),
)}
# The list the tests run (the full list is `make zoo`).
CI_ARCHITECTURES = ("MobileNetV2", "MobileNetV3Small", "EfficientNetB0", "ResNet50", "ConvNeXtTiny")
FORMATS = ("tf_keras.h5", "keras3.h5", "keras3.keras")
SAMPLES = 8
# Architectures Keras 3 does not have, with the reason, per format.
NOT_IN_KERAS3 = {"RegNetX002": "Keras 3.15 has no RegNet application, and cannot read tf_keras's RegNet .h5 "
                               "(its TFOpLambda layers do not exist in Keras 3)"}


def skip_reason(arch: str, fmt: str) -> str | None:
    return NOT_IN_KERAS3.get(arch) if fmt.startswith("keras3") else None


def _randomize_batch_norm(layers, seed: int) -> None:
    """Random statistics and scales, by each variable's own name (a BatchNormalization with scale=False, as
    InceptionV3's, has no gamma)."""
    rng = np.random.default_rng(seed)
    for layer in layers:
        if type(layer).__name__ != "BatchNormalization":
            continue
        new = []
        for variable, value in zip(layer.weights, layer.get_weights()):
            role = variable.name.split("/")[-1].split(":")[0]
            if role in ("gamma", "moving_variance"):
                new.append(rng.uniform(0.5, 1.5, value.shape).astype(value.dtype))
            else:  # beta, moving_mean
                new.append(rng.normal(0.0, 0.1, value.shape).astype(value.dtype))
        layer.set_weights(new)


def build(arch: str, fmt: str, directory: str | os.PathLike, seed: int = 0) -> Path:
    """Build `arch` with the Keras `fmt` names and save it in `directory` (once: an existing file is reused).

    What the model computes on `images(arch, SAMPLES)` before it is saved goes beside it (`expected_outputs`): the
    reference for the `.tflite`, independent of how anything loads the file."""
    from edgert.converters._tf import import_keras3, import_tf

    a = ARCHITECTURES[arch]
    path = Path(directory) / f"{arch}.{fmt}"
    if path.exists():
        return path
    if skip_reason(arch, fmt):
        raise ValueError(skip_reason(arch, fmt))
    _, tf_keras = import_tf()
    keras = tf_keras if fmt.startswith("tf_keras") else import_keras3()
    tf_keras.utils.set_random_seed(seed)
    keras.utils.set_random_seed(seed)
    model = getattr(keras.applications, arch)(weights=None, input_shape=(a.size, a.size, 3),
                                              classifier_activation=None)
    layers = model._flatten_layers() if hasattr(model, "_flatten_layers") else model.layers
    _randomize_batch_norm(list(layers), seed)
    import warnings

    np.save(f"{path}.expected.npy", np.asarray(model(images(arch, SAMPLES), training=False), dtype=np.float32))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model.save(str(path))
    return path


def expected_outputs(path: Path) -> np.ndarray:
    return np.load(f"{path}.expected.npy")


def images(arch: str, count: int, seed: int = 0) -> np.ndarray:
    """`count` images in 0..255, preprocessed as the application expects (float32)."""
    from edgert.converters._tf import import_keras3

    keras = import_keras3()
    a = ARCHITECTURES[arch]
    rng = np.random.default_rng(seed)
    raw = rng.uniform(0, 255, (count, a.size, a.size, 3)).astype(np.float32)
    if a.module == "regnet":  # not in Keras 3; RegNet rescales inside the model
        return raw
    preprocess = getattr(keras.applications, a.module).preprocess_input
    return np.asarray(preprocess(raw.copy()), dtype=np.float32)


