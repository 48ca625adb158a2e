"""Quantization-aware training: supported layers get fake-quant, the rest stay float and are reported."""

from __future__ import annotations

from edgert.converters.data import LabelledData
from edgert.converters.recipe import TrainConfig

DEFAULT_EPOCHS = 3
DEFAULT_LEARNING_RATE = 1e-4


def quantize_for_training(model, scheme: str = "default"):
    """Annotate the layers tfmot's 8-bit registry supports and apply QAT with the given scheme.

    Args:
        scheme: "default", "prune" (sparsity-preserving PQAT) or "cluster" / "cluster_prune" (CQAT).

    Returns:
        (qat_model, quantized_layer_names, float_layer_names)
    """
    import tensorflow_model_optimization as tfmot
    from tensorflow_model_optimization.python.core.quantization.keras.default_8bit import (
        default_8bit_quantize_registry,
    )

    from edgert.converters._tf import import_tf

    _, keras = import_tf()
    qk = tfmot.quantization.keras
    registry = default_8bit_quantize_registry.Default8BitQuantizeRegistry()
    quantized, kept_float = [], []

    def annotate(layer):
        fresh = layer.__class__.from_config(layer.get_config())
        if isinstance(layer, keras.layers.InputLayer):
            return fresh
        if registry.supports(layer):
            quantized.append(layer.name)
            return qk.quantize_annotate_layer(fresh)
        kept_float.append(f"{layer.name} ({layer.__class__.__name__})")
        return fresh

    annotated = keras.models.clone_model(model, clone_function=annotate)
    annotated.set_weights(model.get_weights())
    combine = tfmot.experimental.combine
    schemes = {
        "default": lambda: None,  # quantize_apply's own default 8-bit scheme
        "prune": combine.Default8BitPrunePreserveQuantizeScheme,
        "cluster": lambda: combine.Default8BitClusterPreserveQuantizeScheme(preserve_sparsity=False),
        "cluster_prune": lambda: combine.Default8BitClusterPreserveQuantizeScheme(preserve_sparsity=True),
    }
    chosen = schemes[scheme]()
    with qk.quantize_scope():
        qat_model = qk.quantize_apply(annotated) if chosen is None else qk.quantize_apply(annotated, chosen)
    return qat_model, quantized, kept_float


def qat(model, train: LabelledData, val: LabelledData | None, training: TrainConfig, probabilities: bool,
        scheme: str = "default"):
    """Fine-tune with fake quantization; returns (qat_model, quantized layers, float layers, notes)."""
    from edgert.converters.training import compile_for_labels, fit

    qat_model, quantized, kept_float = quantize_for_training(model, scheme)
    compile_for_labels(qat_model, probabilities, training.learning_rate or DEFAULT_LEARNING_RATE)
    fit(qat_model, train, val, training.epochs or DEFAULT_EPOCHS, training.batch_size, desc="QAT")
    notes = []
    if scheme != "default":
        notes.append({"prune": "PQAT: sparsity preserved", "cluster": "CQAT: clusters preserved",
                      "cluster_prune": "PCQAT: sparsity and clusters preserved"}[scheme])
    if kept_float:
        notes.append(f"QAT left {len(kept_float)} layer(s) in float (no 8-bit QAT support): {', '.join(kept_float)}")
    return qat_model, quantized, kept_float, notes
