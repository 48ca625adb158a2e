"""The one place TensorFlow and tf_keras are imported, with Keras 2 selected before TensorFlow loads."""

from __future__ import annotations

import os
import sys

from edgert.errors import ConversionError
from edgert.runtime.native import native_log_captured


CONVERT_EXTRA = "conversion needs the [convert] extra: pip install 'edgert[convert]'"


def missing_extra(exc: ImportError) -> ConversionError:
    """The one line for a converter dependency that is not installed (a runtime-only install)."""
    return ConversionError(f"{CONVERT_EXTRA} ({exc.name or 'a module'} is not installed)")


def import_tf():
    """Return `(tensorflow, tf_keras)`, making `tf.keras` the Keras 2 API that tfmot and the converter need.

    Raises:
        ConversionError: TensorFlow is not installed, or was already imported in this process with Keras 3.
    """
    if "tensorflow" not in sys.modules:
        os.environ["TF_USE_LEGACY_KERAS"] = "1"
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    elif os.environ.get("TF_USE_LEGACY_KERAS") != "1":
        raise ConversionError(
            "TensorFlow was imported before edgert.converters without TF_USE_LEGACY_KERAS=1; "
            "import edgert.converters first or set TF_USE_LEGACY_KERAS=1 before importing TensorFlow")
    try:
        with native_log_captured():
            import tensorflow as tf
            import tf_keras

            tf.config.list_physical_devices()  # device discovery logs its CUDA probe here, not mid-conversion
    except ImportError as exc:
        raise missing_extra(exc) from None
    tf.get_logger().setLevel("ERROR")
    return tf, tf_keras


def import_keras3():
    """Return Keras 3 (`keras`) running on the TensorFlow backend, beside tf_keras in the same process.

    Keras 3 reads the backend once, at import: `KERAS_BACKEND` is set to `tensorflow` before it loads, whatever the
    user's `~/.keras/keras.json` says (a model saved under JAX or PyTorch loads and converts the same way).

    Raises:
        ConversionError: Keras 3 is not installed, or was already imported here with another backend.
    """
    import_tf()
    if "keras" not in sys.modules:
        os.environ["KERAS_BACKEND"] = "tensorflow"
    try:
        with native_log_captured():
            import keras
    except ImportError as exc:
        raise missing_extra(exc) from None
    if not keras.__version__.startswith("3."):
        raise ConversionError(f"Keras 3 models need keras 3; keras {keras.__version__} is installed: run "
                              "`pip install 'edgert[convert]'`")
    if keras.backend.backend() != "tensorflow":
        raise ConversionError(f"Keras was imported with the {keras.backend.backend()} backend before edgert; "
                              "converting needs the tensorflow backend: set KERAS_BACKEND=tensorflow")
    return keras
