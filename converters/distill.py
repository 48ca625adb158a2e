"""Knowledge distillation: train a smaller student on hard labels and the teacher's softened outputs."""

from __future__ import annotations

import numpy as np

from edgert.converters.data import LabelledData
from edgert.converters.recipe import DistillConfig, TrainConfig
from edgert.errors import InputDataError

DEFAULT_EPOCHS = 15
DEFAULT_LEARNING_RATE = 3e-3


def distill(student, teacher, config: DistillConfig, train: LabelledData, training: TrainConfig,
            student_probabilities: bool, teacher_probabilities: bool, seed: int = 0) -> tuple[object, list[str]]:
    """Train `student` in place with loss alpha * CE(labels) + (1 - alpha) * T^2 * KL(teacher_T || student_T).

    Models that end in a softmax are handled through log-probabilities, which give the same softened
    distribution as their logits would.
    """
    from edgert.converters._tf import import_tf

    tf, keras = import_tf()
    s_shape, t_shape = tuple(student.output_shape[1:]), tuple(teacher.output_shape[1:])
    if s_shape != t_shape:
        raise InputDataError(f"--distill-from: the teacher outputs shape {t_shape}, the student {s_shape}; "
                             "they must predict the same classes")
    if tuple(student.input_shape[1:]) != tuple(teacher.input_shape[1:]):
        raise InputDataError(f"--distill-from: the teacher takes inputs {teacher.input_shape[1:]}, the student "
                             f"{student.input_shape[1:]}; they must take the same inputs")

    def logits(outputs, probabilities):
        return tf.math.log(tf.clip_by_value(outputs, 1e-7, 1.0)) if probabilities else outputs

    T, alpha = float(config.temperature), float(config.alpha)
    optimizer = keras.optimizers.Adam(training.learning_rate or DEFAULT_LEARNING_RATE)
    hard_loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    soft_loss = keras.losses.KLDivergence()

    @tf.function
    def step(x, y):
        teacher_logits = logits(teacher(x, training=False), teacher_probabilities)
        with tf.GradientTape() as tape:
            student_logits = logits(student(x, training=True), student_probabilities)
            loss = alpha * hard_loss(y, student_logits) + (1 - alpha) * T * T * soft_loss(
                tf.nn.softmax(teacher_logits / T), tf.nn.softmax(student_logits / T))
        grads = tape.gradient(loss, student.trainable_variables)
        optimizer.apply_gradients(zip(grads, student.trainable_variables))
        return loss

    from edgert.converters.training import progress_bar, terminal
    from edgert.runtime.native import native_log_captured

    rng = np.random.default_rng(seed)
    batch = training.batch_size
    epochs = training.epochs or DEFAULT_EPOCHS
    with terminal() as term, native_log_captured(), progress_bar(epochs * -(-len(train) // batch), "distilling",
                                                                 file=term) as bar:
        for _epoch in range(epochs):
            order = rng.permutation(len(train))
            for start in range(0, len(order), batch):
                idx = order[start:start + batch]
                bar.set_postfix(loss=f"{float(step(tf.constant(train.x[idx]), tf.constant(train.y[idx]))):.4f}",
                                refresh=False)
                bar.update(1)
    notes = [f"distilled from {config.teacher} ({teacher.count_params()} parameters) into "
             f"{student.count_params()} parameters, T={T:g}, alpha={alpha:g}"]
    return student, notes
