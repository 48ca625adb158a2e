"""The recipe's training stages on a Keras model, in order (distill, prune, cluster, QAT; channel pruning), each
recorded with its time and effect, and the float model made sparse only where that is faster. A part of
`conversion._Run`."""

from __future__ import annotations

import time
from pathlib import Path

from edgert.converters.measure import interleaved_p50
from edgert.converters.recipe import Quantization
from edgert.converters.results import StageReport
from edgert.errors import InputDataError, brief


class Stages:
    """`_Run`'s training stages (it supplies `recipe`, `paths`, `stages`, `notes`, `step` and the conversion steps
    these call)."""

    def _rebuild(self, model, custom):
        """tfmot needs tf_keras: the Keras 3 model is rebuilt there and checked against itself."""
        from edgert.converters.keras3 import rebuild_in_tf_keras

        self.step = "rebuilding the Keras 3 model in tf_keras"
        t0 = time.perf_counter()
        rebuilt, report = rebuild_in_tf_keras(model, custom)
        self._stage("rebuild", time.perf_counter() - t0, rebuilt, notes=(report.describe(),))
        return rebuilt

    def _stage(self, name, seconds, model, *, quantized=(), kept_float=(), notes=(), clusters=False):
        from edgert.converters.training import clusters_by_layer, keras_size, sparsity_by_layer

        size = keras_size(model)
        self.stages.append(StageReport(
            name, seconds, size.params, size.size_bytes, size.gzip_bytes, sparsity_by_layer(model),
            clusters_by_layer(model) if clusters else {}, tuple(quantized), tuple(kept_float), tuple(notes)))
        self.notes.extend(notes)

    def _run_stages(self, model, data, probabilities, tf):
        recipe, train, val = self.recipe, data.get("train"), data.get("val")
        if recipe.prune_channels:
            model = self._prune_channels(model, train, probabilities)
        if recipe.distill:
            from edgert.converters.distill import distill
            from edgert.converters.sources import open_model as open_teacher
            from edgert.converters.training import outputs_are_probabilities

            self.step = "distilling"
            t0 = time.perf_counter()
            teacher = open_teacher(recipe.distill.teacher, self.custom_objects, self.trust_model).keras_model
            if teacher is None:
                raise InputDataError("--distill-from needs a Keras model (.h5 or .keras) as the teacher")
            model, notes = distill(model, teacher, recipe.distill, train, recipe.train, probabilities,
                                   outputs_are_probabilities(teacher, train.x), recipe.seed)
            self._stage("distill", time.perf_counter() - t0, model, notes=notes)
        if recipe.prune:
            from edgert.converters.prune import prune

            self.step = "pruning"
            t0 = time.perf_counter()
            model, notes = prune(model, recipe.prune, train, val, recipe.train, probabilities, recipe.seed)
            self._stage("prune", time.perf_counter() - t0, model, notes=notes)
        if recipe.cluster:
            from edgert.converters.cluster import cluster

            self.step = "clustering"
            t0 = time.perf_counter()
            model, notes = cluster(model, recipe.cluster, train, val, recipe.train, probabilities,
                                   preserve_sparsity=recipe.prune is not None)
            self._stage("cluster", time.perf_counter() - t0, model, notes=notes, clusters=True)
        if recipe.qat:
            from edgert.converters.qat import qat

            scheme = ("cluster_prune" if recipe.cluster and recipe.prune else "cluster" if recipe.cluster
                      else "prune" if recipe.prune else "default")
            self.step = "training for quantization (QAT)"
            t0 = time.perf_counter()
            model, quantized, kept_float, notes = qat(model, train, val, recipe.train, probabilities, scheme)
            self._stage("qat", time.perf_counter() - t0, model, quantized=quantized, kept_float=kept_float,
                        notes=notes, clusters=recipe.cluster is not None)
        return model

    def _sparse_if_faster(self, tf, source, model, dense: bytes) -> bytes:
        """A pruned float model, converted again with TFLite's sparse encoding (EXPERIMENTAL_SPARSITY), which
        XNNPACK can run as sparse inference where the weights fit its pattern: kept only when it measures faster
        here (p50 of single-thread runs, interleaved), and the note says which was kept and why."""
        import tempfile

        from edgert.converters.tflite import converter_for
        from edgert.runtime.native import native_log_captured

        self.step = "measuring the sparse encoding (XNNPACK sparse inference)"
        converter = converter_for(tf, source, model)
        converter.optimizations = [tf.lite.Optimize.EXPERIMENTAL_SPARSITY]
        try:
            with native_log_captured():
                sparse = converter.convert()
        except Exception as exc:  # noqa: BLE001 - the dense model stands; say why there is no sparse one
            self.notes.append(f"sparse encoding: the converter refused it ({brief(exc, 120)}); kept the dense model")
            return dense
        with tempfile.TemporaryDirectory(prefix="edgert-sparse-") as folder:
            timings = {}
            for label, data in (("dense", dense), ("sparse", sparse)):
                path = Path(folder) / f"{label}.tflite"
                path.write_bytes(data)
                timings[label] = path
            p50 = interleaved_p50(timings)
        ratio = p50["sparse"] / p50["dense"]
        keep = ratio < 0.95
        self.notes.append(f"sparse encoding (XNNPACK sparse inference): {p50['sparse']:.3f} vs {p50['dense']:.3f} ms "
                          f"p50 dense, {ratio:.2f}x; kept the {'sparse' if keep else 'dense'} model"
                          + ("" if keep else " (not faster here)"))
        return sparse if keep else dense

    def _channel_latency(self, tf, source, calibration, pruned: bytes) -> None:
        """The unpruned model converted the same way, and both timed here: the latency the channels saved."""
        import dataclasses
        import tempfile

        from edgert.converters.tflite import converter_for, to_tflite

        self.step = "measuring the unpruned model's latency"
        recipe = dataclasses.replace(self.recipe, prune_channels=None)
        converter = converter_for(tf, source, self.unpruned, batch=1 if self.mode is Quantization.EDGETPU else None)
        unpruned = to_tflite(tf, converter, self.mode, recipe, calibration, str(self.model_path), [])
        with tempfile.TemporaryDirectory(prefix="edgert-channels-") as folder:
            paths = {"before": Path(folder) / "before.tflite", "after": Path(folder) / "after.tflite"}
            paths["before"].write_bytes(unpruned)
            paths["after"].write_bytes(pruned)
            p50 = interleaved_p50(paths)
        report = self.channel_report
        report.latency_before_ms, report.latency_after_ms = p50["before"], p50["after"]
        self.notes.append(f"channels: p50 {p50['before']:.3f} -> {p50['after']:.3f} ms here (single thread, "
                          f"{p50['after'] / p50['before']:.2f}x)")

    def _prune_channels(self, model, train, probabilities):
        from edgert.converters.channels import prune_channels

        recipe = self.recipe
        self.step = "pruning channels"
        t0 = time.perf_counter()
        pruned, report = prune_channels(model, recipe.prune_channels, self._custom)
        self.channel_report, self.unpruned = report, model
        notes = [f"channels: {report.pruned_groups} of {report.groups} channel groups pruned; MACs "
                 f"{report.macs_ratio:.2f}x, parameters {report.params_ratio:.2f}x of the original"]
        if report.kept:
            notes.append("channels kept at " + "; ".join(f"{k} ({v})" for k, v in list(report.kept.items())[:5])
                         + (f" and {len(report.kept) - 5} more" if len(report.kept) > 5 else ""))
        if train is not None and recipe.distill is None:
            # recovery: distillation from the unpruned model, the strongest teacher there is for it
            from edgert.converters.distill import distill
            from edgert.converters.recipe import DistillConfig

            self.step = "fine-tuning the pruned channels (distilling from the original)"
            pruned, more = distill(pruned, model, DistillConfig("the original model"), train, recipe.train,
                                   probabilities, probabilities, recipe.seed)
            notes.extend(more)
        elif train is None:
            notes.append("no --train-data: the pruned model was not fine-tuned, so expect an accuracy drop")
        self._stage("channels", time.perf_counter() - t0, pruned, notes=notes)
        return pruned
