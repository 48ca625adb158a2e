"""Magnitude pruning with tfmot: scheduled during fine-tuning, or one-shot with the masks really applied."""

from __future__ import annotations

import math

import numpy as np

from edgert.converters.data import LabelledData
from edgert.converters.recipe import PruneConfig, PruneSchedule, TrainConfig
from edgert.errors import ConversionError, brief

DEFAULT_LEARNING_RATE = 1e-3
VALIDATION_FRACTION = 0.1  # split off the training data when no --val-data is given ...
MIN_SPLIT = 2000  # ... and it is large enough to spare a tenth (digits' 1348 samples lost 0.2-0.4 points by it)


def default_epochs(sparsity: float) -> int:
    """Fine-tuning epochs when --epochs is not given: more for higher sparsity, which wins its accuracy back slowly.
    Digits at 75%, five seeds each: 8 epochs (the former default) lost up to 1.78 points, 16 up to 1.11, 20 up to
    0.89 and 24 up to 0.67."""
    return 12 if sparsity <= 0.5 else 24 if sparsity <= 0.8 else 32


def magnitude_mask(weights: np.ndarray, sparsity: float, m_by_n: tuple[int, int] | None) -> np.ndarray:
    """A 0/1 mask zeroing the smallest-magnitude weights.

    With `m_by_n` = (M, N), M of every N consecutive weights along the input-channel axis (the second-to-last
    axis of a Keras kernel, the last one of a TFLite weight) are zeroed, as sparse kernels expect.
    """
    magnitude = np.abs(weights)
    if m_by_n is None:
        k = int(round(sparsity * weights.size))
        mask = np.ones(weights.size, np.float32)
        mask[np.argsort(magnitude, axis=None, kind="stable")[:k]] = 0
        return mask.reshape(weights.shape)
    m, n = m_by_n
    moved = np.moveaxis(magnitude, -2, -1)  # input channels last
    full = moved.shape[-1] - moved.shape[-1] % n
    mask = np.ones_like(moved, dtype=np.float32)
    groups = moved[..., :full].reshape(*moved.shape[:-1], full // n, n)
    smallest = np.argsort(groups, axis=-1, kind="stable")[..., :m]
    group_mask = np.ones_like(groups, dtype=np.float32)
    np.put_along_axis(group_mask, smallest, 0, axis=-1)
    mask[..., :full] = group_mask.reshape(*moved.shape[:-1], full)
    return np.moveaxis(mask, -1, -2)


def _wrap(model, config: PruneConfig, schedule, notes: list[str]):
    import tensorflow_model_optimization as tfmot

    sk = tfmot.sparsity.keras
    kwargs = {"pruning_schedule": schedule}
    if config.m_by_n:
        kwargs["sparsity_m_by_n"] = config.m_by_n
    if config.policy != "xnnpack":
        from edgert.converters.training import wrap_supported_layers
        from tensorflow_model_optimization.python.core.sparsity.keras import prunable_layer, prune_registry

        def supported(layer):
            return (isinstance(layer, prunable_layer.PrunableLayer) or hasattr(layer, "get_prunable_weights")
                    or prune_registry.PruneRegistry.supports(layer))

        try:
            wrapped, left = wrap_supported_layers(model, supported, lambda layer: sk.prune_low_magnitude(
                layer, **kwargs), "pruned")
        except ValueError as exc:
            raise ConversionError(f"--prune: tfmot cannot prune this model: {brief(exc, 240)}") from None
        notes.extend(left)
        return wrapped
    try:
        return sk.prune_low_magnitude(model, pruning_policy=sk.PruneForLatencyOnXNNPack(), **kwargs)
    except ValueError as exc:
        reason = brief(exc, 200)
    # The model does not fit XNNPack's sparse inference as a whole; the 1x1 convolutions it can run sparse may
    # still be pruned one by one.
    from edgert.converters._tf import import_tf

    _, keras = import_tf()

    def one_by_one(layer):
        if isinstance(layer, keras.layers.Conv2D) and tuple(layer.kernel_size) == (1, 1) and layer.groups == 1:
            return sk.prune_low_magnitude(layer, **kwargs)
        return layer

    pointwise = [l.name for l in model.layers if isinstance(l, keras.layers.Conv2D)
                 and not isinstance(l, keras.layers.DepthwiseConv2D) and tuple(l.kernel_size) == (1, 1)]
    if not pointwise:
        raise ConversionError(f"--prune-policy xnnpack: the model does not fit XNNPack sparse inference ({reason}) "
                              "and has no 1x1 convolutions to prune instead; drop --prune-policy")
    notes.append(f"--prune-policy xnnpack: the whole model does not fit ({reason}); pruned its "
                 f"{len(pointwise)} 1x1 convolution(s) layer by layer instead")
    return keras.models.clone_model(model, clone_function=one_by_one)


def _split_validation(train: LabelledData, seed: int) -> tuple[LabelledData, LabelledData]:
    order = np.random.default_rng(seed).permutation(len(train))
    n_val = int(len(train) * VALIDATION_FRACTION)
    keep, held = np.sort(order[n_val:]), np.sort(order[:n_val])
    return (LabelledData(train.x[keep], train.y[keep], train.source, train.stored_dtype),
            LabelledData(train.x[held], train.y[held], train.source, train.stored_dtype))


def _hold_then_decay(keras, rate: float, hold_steps: int, total_steps: int):
    """The learning rate held while the masks grow, then a cosine decay to a tenth while the network recovers at
    full sparsity. (A cosine decay over the whole run starved the recovery: digits at 75%, 20 epochs, five seeds,
    worst drop 1.56 points against 0.89.)"""
    import tensorflow as tf

    decay = keras.optimizers.schedules.CosineDecay(rate, max(1, total_steps - hold_steps), alpha=0.1)

    class HoldThenDecay(keras.optimizers.schedules.LearningRateSchedule):
        def __call__(self, step):
            step = tf.cast(step, tf.float32)
            return tf.where(step < hold_steps, tf.constant(rate, tf.float32), decay(tf.maximum(step - hold_steps, 0.0)))

        def get_config(self):
            return {"rate": rate, "hold_steps": hold_steps, "total_steps": total_steps}

    return HoldThenDecay()


class _BestAtTargetSparsity:
    """Remembers the weights of the epoch with the lowest validation loss among those that end at the target
    sparsity (earlier epochs are less sparse: never chosen). The loss, not the accuracy: on a small validation
    slice the accuracy moves in steps of one sample, and choosing by it was the noisier of the two (digits, five
    seeds: worst drop 1.56 against 1.34 points)."""

    def __init__(self, keras, end_step: int, steps_per_epoch: int):
        self.weights, self.loss, self.accuracy, self.epoch = None, float("inf"), 0.0, 0
        outer = self

        class Callback(keras.callbacks.Callback):
            def on_epoch_end(self, epoch, logs=None):
                logs = logs or {}
                loss = float(logs.get("val_loss", float("inf")))
                if (epoch + 1) * steps_per_epoch >= end_step and loss < outer.loss:
                    outer.weights, outer.loss, outer.epoch = self.model.get_weights(), loss, epoch + 1
                    outer.accuracy = float(logs.get("val_accuracy", 0.0))

        self.callback = Callback()


def prune(model, config: PruneConfig, train: LabelledData | None, val: LabelledData | None,
          training: TrainConfig, probabilities: bool, seed: int = 0) -> tuple[object, list[str]]:
    """Prune `model`; returns the stripped model (plain layers, zeros in the weights) and notes for the report.

    With training data, sparsity rises to the target over the first 70% of the fine-tuning (PolynomialDecay) at a
    constant learning rate, which then decays (cosine) while the network recovers at full sparsity; with validation
    data (given, or a seeded tenth of training sets of 2000 samples or more) the epoch with the lowest validation loss
    at full sparsity is kept."""
    import tensorflow_model_optimization as tfmot

    from edgert.converters.training import compile_for_labels, fit

    sk = tfmot.sparsity.keras
    notes: list[str] = []
    if train is None:
        schedule = sk.ConstantSparsity(config.sparsity, begin_step=0, frequency=1)
        wrapped = _wrap(model, config, schedule, notes)
        # One-shot: no training data, so compute the masks directly and write them into the weights; a
        # ConstantSparsity schedule alone would leave them empty until two training steps ran.
        for layer in wrapped.layers:
            for weight, mask, _threshold in getattr(layer, "pruning_vars", ()):
                m = magnitude_mask(weight.numpy(), config.sparsity, config.m_by_n)
                mask.assign(m.astype(mask.dtype.as_numpy_dtype))
                weight.assign(weight.numpy() * m)
        notes.append("no training data: one-shot magnitude pruning without fine-tuning (accuracy may drop; "
                     "give --train-data to fine-tune)")
    else:
        epochs = training.epochs or default_epochs(config.sparsity)
        if val is None and len(train) >= MIN_SPLIT:
            train, val = _split_validation(train, seed)
            notes.append(f"kept {len(val)} training samples apart to validate the fine-tuning (no --val-data)")
        steps_per_epoch = math.ceil(len(train) / training.batch_size)
        total = steps_per_epoch * epochs
        if config.schedule is PruneSchedule.POLYNOMIAL:
            frequency = max(1, steps_per_epoch // 4)
            end_step = max(frequency, (int(total * 0.7) // frequency) * frequency)
            schedule = sk.PolynomialDecay(0.0, config.sparsity, begin_step=0, end_step=end_step, frequency=frequency)
        else:
            end_step = 1
            schedule = sk.ConstantSparsity(config.sparsity, begin_step=0, frequency=1)
        wrapped = _wrap(model, config, schedule, notes)
        from edgert.converters._tf import import_tf

        _, keras = import_tf()
        compile_for_labels(wrapped, probabilities, _hold_then_decay(
            keras, training.learning_rate or DEFAULT_LEARNING_RATE, end_step, total))
        best = _BestAtTargetSparsity(keras, end_step, steps_per_epoch) if val is not None else None
        callbacks = [sk.UpdatePruningStep()] + ([best.callback] if best else [])
        fit(wrapped, train, val, epochs, training.batch_size, callbacks, desc="pruning")
        if best is not None and best.weights is not None:
            wrapped.set_weights(best.weights)
            notes.append(f"kept the fine-tuning's best epoch at full sparsity: epoch {best.epoch} of {epochs} "
                         f"(validation loss {best.loss:.4f}, accuracy {best.accuracy:.2%})")
    return sk.strip_pruning(wrapped), notes
