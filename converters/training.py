"""Fine-tuning helpers shared by the stages: the loss that fits the model's outputs, and per-layer weight facts."""

from __future__ import annotations

import contextlib
import gzip
import os
import tempfile
import warnings
from dataclasses import dataclass

import numpy as np

from edgert.converters.data import LabelledData


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and TensorFlow (tf_keras and Keras 3 alike) and make TensorFlow's ops deterministic, so
    that training stages give the same weights on every run. Op determinism stays on for the rest of the process
    (TensorFlow has no way back); it costs some speed on GPUs, nothing measurable on these CPU kernels."""
    import sys

    from edgert.converters._tf import import_tf

    tf, keras = import_tf()
    keras.utils.set_random_seed(seed)
    if "keras" in sys.modules:
        sys.modules["keras"].utils.set_random_seed(seed)
    tf.config.experimental.enable_op_determinism()


def outputs_are_probabilities(model, x: np.ndarray) -> bool:
    """True when the model already ends in a softmax (rows in [0, 1] summing to 1), so losses take no logits. A model
    with several outputs (a list or a dict) is not a classifier: False."""
    p = model(x[:16], training=False)
    if isinstance(p, (dict, list, tuple)):
        return False
    p = np.asarray(p)
    return bool(np.all(p >= -1e-6) and np.all(p <= 1 + 1e-6) and np.allclose(p.sum(axis=-1), 1, atol=1e-3))


def compile_for_labels(model, probabilities: bool, learning_rate) -> None:
    """Adam on sparse categorical cross-entropy; `learning_rate` is a number or a Keras schedule."""
    from edgert.converters._tf import import_tf

    _, keras = import_tf()
    model.compile(optimizer=keras.optimizers.Adam(learning_rate),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=not probabilities),
                  metrics=["accuracy"])


def fit(model, train: LabelledData, val: LabelledData | None, epochs: int, batch_size: int, callbacks=(),
        desc: str = "fine-tuning"):
    """`model.fit` with a progress bar on the terminal and TensorFlow's native log lines kept off it."""
    from edgert.runtime.native import native_log_captured

    steps = -(-len(train) // batch_size)
    with terminal() as term, native_log_captured():
        model.fit(train.x, train.y, epochs=epochs, batch_size=batch_size, verbose=0,
                  callbacks=[*callbacks, progress_callback(desc, epochs, steps, file=term)],
                  validation_data=(val.x, val.y) if val is not None else None)


@contextlib.contextmanager
def terminal():
    """A file on the terminal's own descriptor, for progress bars drawn while fd 2 is being captured."""
    stream = os.fdopen(os.dup(2), "w")
    try:
        yield stream
    finally:
        stream.close()


def wrap_supported_layers(model, supported, wrap, what: str) -> tuple[object, list[str]]:
    """Clone `model` with `wrap(layer)` for every layer `supported(layer)` says tfmot handles.

    tfmot refuses a whole model for one layer it has no rule for (an application's `LayerScale`, a `Normalization`,
    a Keras 3 operation); here such a layer is kept as it is instead, and the ones that hold weights are named in the
    returned notes (`what` says what they missed: "pruned", "clustered").
    """
    from edgert.converters._tf import import_tf

    _, keras = import_tf()
    left: list[str] = []

    def clone(layer):
        if supported(layer):
            return wrap(layer)
        if layer.weights:
            left.append(f"{layer.name} ({type(layer).__name__})")
        return layer

    wrapped = keras.models.clone_model(model, clone_function=clone)
    notes = []
    if left:
        shown = ", ".join(left[:6]) + (f" and {len(left) - 6} more" if len(left) > 6 else "")
        notes.append(f"tfmot has no rule for {len(left)} layer(s) with weights, which were not {what}: {shown}")
    return wrapped, notes


def keras_accuracy(model, data: LabelledData) -> float:
    from edgert.runtime.native import native_log_captured

    with native_log_captured():  # predict's tf.data pipeline logs a harmless attribute mismatch (E0000 ...)
        return float((np.asarray(model.predict(data.x, verbose=0)).argmax(axis=1) == data.y).mean())


def kernels(model) -> dict[str, np.ndarray]:
    """The main weight tensor (kernel) of each Conv/Dense-like layer, by layer name."""
    out = {}
    for layer in model.layers:
        for w in layer.weights:
            short = w.name.split("/")[-1].split(":")[0]
            if short in ("kernel", "depthwise_kernel"):
                out[layer.name] = w.numpy()
                break
    return out


def sparsity_by_layer(model) -> dict[str, float]:
    return {name: round(float((k == 0).mean()), 4) for name, k in kernels(model).items()}


def clusters_by_layer(model) -> dict[str, int]:
    return {name: int(np.unique(k).size) for name, k in kernels(model).items()}


@dataclass(frozen=True)
class SizeFacts:
    params: int
    size_bytes: int
    gzip_bytes: int


def keras_size(model) -> SizeFacts:
    """Size of the model's weights as saved (.h5) and gzip-compressed: what pruning and clustering buy on disk."""
    fd, path = tempfile.mkstemp(suffix=".weights.h5")
    os.close(fd)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            model.save_weights(path)
        data = open(path, "rb").read()
    finally:
        os.unlink(path)
    return SizeFacts(int(model.count_params()), len(data), len(gzip.compress(data, 6)))


def progress_bar(total: int, desc: str, file=None):
    """A tqdm bar on the terminal (silent when stderr is not one, as in CI or when piped)."""
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, unit="step", leave=False, disable=None, file=file, dynamic_ncols=True)


def progress_callback(desc: str, epochs: int, steps_per_epoch: int, file=None):
    """A Keras callback driving one tqdm bar over all of a fit's steps (Keras' own bar stays off: verbose=0)."""
    from edgert.converters._tf import import_tf

    _, keras = import_tf()

    class Progress(keras.callbacks.Callback):
        def on_train_begin(self, logs=None):
            self.bar = progress_bar(epochs * steps_per_epoch, desc, file=file)

        def on_train_batch_end(self, batch, logs=None):
            self.bar.update(1)
            if logs and "loss" in logs:
                self.bar.set_postfix(loss=f"{float(logs['loss']):.4f}", refresh=False)

        def on_train_end(self, logs=None):
            self.bar.close()

    return Progress()
