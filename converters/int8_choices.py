"""The choices a conversion makes about integer quantization, measured rather than assumed: which quantizer writes
an onnx source's int8 (ai-edge-quantizer's or TensorFlow's, whichever agrees better with the source), whether full
int8 keeps a detector's detections or dynamic range is written instead, and which operators at the end of a
mixed-range output (YOLO's boxes in pixels beside scores) stay in float. A part of `conversion._Run`."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from edgert.converters.measure import interleaved_p50
from edgert.converters.recipe import ConvertRecipe, Quantization
from edgert.errors import brief
from edgert.tflite.info import describe


class Int8Choices:
    """`_Run`'s integer-quantization choices (it supplies `opened`, `mode`, `recipe`, `notes`, `step`, `fallback`
    and the conversion steps these call)."""

    def _two_quantizers(self) -> bool:
        """Whether both ai-edge-quantizer and TensorFlow's converter quantize this model (`Opened.quantizes_twice`)."""
        return self.opened.quantizes_twice(self.mode, self.recipe.float_io, self.recipe.int16)

    def _better_quantizer(self, tf, source, model, reference_name, calibration, data, flatbuffer, unnamed,
                          agreement, tmp, notes_before):
        """The onnx route's integer model from TensorFlow's converter as well, measured on the same samples; the one
        that agrees better with the source is kept (written to `tmp`). Neither wins everywhere: TensorFlow's wrote
        ResNet-18 with an operator the interpreter refuses and loses YOLO boxes, ai-edge-quantizer gives PaddleOCR's
        classifier a worse cosine. Better: no warning, then more detections kept, then the worse output's mean
        cosine. Returns (flatbuffer, unnamed flatbuffer, agreement)."""
        self.step = f"converting to TFLite ({self.mode.value}) with TensorFlow's quantizer too"
        first_notes, self.notes[notes_before:] = self.notes[notes_before:], []
        try:
            other_unnamed = self._to_flatbuffer(tf, source, model, self.mode, self.recipe, calibration, self.notes,
                                                tensorflow_int=True)
            other = self._named(other_unnamed, source, model)
            describe(other, str(tmp))
            tmp.write_bytes(other)
            other_agreement = self._agreement(tf, tmp, source, model, reference_name, calibration, data)
        except Exception as exc:  # noqa: BLE001 - a second opinion that fails leaves the first as it was
            why = brief(str(exc).split(": ", 1)[-1], 160)
            self.notes[notes_before:] = first_notes + [
                f"{self.mode.value} by ai-edge-quantizer (TensorFlow's converter failed: {why})"]
            tmp.write_bytes(flatbuffer)
            return flatbuffer, unnamed, agreement

        def score(a):
            d = a.detections
            kept = min(d.recall, d.precision) if d is not None and d.reference > 0 else 1.0
            return (not a.warning, round(kept, 3), min((o.cosine for o in a.outputs), default=1.0))

        def measure(a):  # what decided, in the order `score` weighs it
            d = a.detections
            warned = "warned, " if a.warning else ""
            if d is not None and d.reference > 0:
                return f"{warned}{d.matched} of {d.reference} detections kept, {d.found} found"
            return f"{warned}cosine {min((o.cosine for o in a.outputs), default=1.0):.4f}"

        if score(other_agreement) > score(agreement):
            self.quantizer = "tensorflow"
            self.notes.append(f"{self.mode.value} by TensorFlow's converter: it agrees better with the source than "
                              f"ai-edge-quantizer ({measure(other_agreement)}, against {measure(agreement)})")
            return other, other_unnamed, other_agreement
        self.notes[notes_before:] = first_notes + [
            f"{self.mode.value} by ai-edge-quantizer: it agrees better with the source than TensorFlow's converter "
            f"({measure(agreement)}, against {measure(other_agreement)})"]
        tmp.write_bytes(flatbuffer)
        return flatbuffer, unnamed, agreement

    def _detections_lost(self, agreement) -> bool:
        from edgert.converters.agreement import MIN_DETECTION_AGREEMENT

        d = agreement.detections if agreement is not None else None
        return (self.mode in (Quantization.INT8, Quantization.EDGETPU) and d is not None and d.reference > 0
                and min(d.recall, d.precision) < MIN_DETECTION_AGREEMENT)

    def _dynamic_fallback(self, tf, source, model, reference_name, calibration, data, int8_model, int8_agreement,
                          tmp):
        """Full int8 lost a detector's detections: measure dynamic range (int8 weights, float activations) on the
        same samples, and the speed of each against float32. Where dynamic range keeps them and the user allows it
        (not --no-fallback, not --edgetpu, whose accelerator needs integer activations), it is written instead;
        otherwise the warning names it with its cost. Returns (flatbuffer, agreement)."""
        import dataclasses
        import tempfile

        from edgert.converters.agreement import MIN_DETECTION_AGREEMENT

        lost = int8_agreement.detections
        self.step = "measuring dynamic range, which keeps the activations in float"
        plain = dataclasses.replace(self.recipe, quantization=Quantization.DYNAMIC, keep_float=(), float_io=False)
        dynamic = self._named(self._to_flatbuffer(tf, source, model, Quantization.DYNAMIC, plain, None, []),
                              source, model)
        floating = self._named(self._to_flatbuffer(tf, source, model, Quantization.FLOAT32, ConvertRecipe(), None,
                                                   []), source, model)
        with tempfile.TemporaryDirectory(prefix="edgert-fallback-") as folder:
            paths = {"float32": Path(folder) / "float32.tflite", "dynamic": Path(folder) / "dynamic.tflite"}
            paths["float32"].write_bytes(floating)
            paths["dynamic"].write_bytes(dynamic)
            saved_mode, self.mode = self.mode, Quantization.DYNAMIC
            try:
                other = self._agreement(tf, paths["dynamic"], source, model, reference_name, calibration, data)
            finally:
                self.mode = saved_mode
            p50 = interleaved_p50({**paths, "int8": tmp})
        kept = other.detections
        speeds = (f"p50 here (1 thread): float32 {p50['float32']:.3f} ms, full int8 {p50['int8']:.3f} ms "
                  f"({p50['int8'] / p50['float32']:.2f}x), dynamic range {p50['dynamic']:.3f} ms "
                  f"({p50['dynamic'] / p50['float32']:.2f}x)")
        dynamic_ok = kept is not None and min(kept.recall, kept.precision) >= MIN_DETECTION_AGREEMENT
        if dynamic_ok and self.fallback and self.mode is Quantization.INT8:
            self.notes.append(f"full int8 kept {lost.matched} of {lost.reference} detections (recall "
                              f"{lost.recall:.2f}, precision {lost.precision:.2f}); dynamic range (int8 weights, float "
                              f"activations) keeps {kept.matched} of {kept.reference}, so that is the model written: "
                              f"{speeds}; --no-fallback keeps full int8")
            self.fallback_from = self.mode
            self.mode = Quantization.DYNAMIC
            self.recipe = plain
            tmp.write_bytes(dynamic)
            return dynamic, other
        offer = (f"; dynamic range (--dynamic: int8 weights, float activations) keeps {kept.matched} of "
                 f"{kept.reference} ({speeds})" if kept is not None else "")
        why = ("the Edge TPU needs integer activations" if self.mode is Quantization.EDGETPU
               else "--no-fallback" if dynamic_ok else "it does not keep them either")
        return int8_model, dataclasses.replace(int8_agreement, warning=int8_agreement.warning + offer
                                               + f"; full int8 was kept ({why})")

    def _keep_mixed_range_tail(self, tf, source, model, calibration):
        """Where an output mixes ranges one int8 scale cannot hold (boxes in pixels beside scores, as YOLO exports
        end), the recipe with the operators that join them kept in float (see `detectors`); the recipe as it was
        otherwise. The float model is converted once more to find them."""
        import dataclasses

        from edgert.converters import detectors

        self.step = "looking for outputs whose ranges one int8 scale cannot hold"
        samples = [a[:16] for a in calibration]
        mixed = detectors.mixed_range_outputs(
            {k: np.asarray(v) for k, v in self._reference(tf, source, model)(samples).items()})
        if not mixed:
            return self.recipe
        float_model = self._to_flatbuffer(tf, source, model, Quantization.FLOAT32, ConvertRecipe(), None, [])
        named = self._named(float_model, source, model)
        tail = detectors.float_tail(named, {s.name: a[:8] for s, a in zip(source.inputs, calibration)},
                                    list(mixed))
        if not tail:
            return self.recipe
        for name, found in mixed.items():
            self.notes.append(f"{found.describe(name)}; kept in float from where the ranges join to the output "
                              f"({len(tail)} operator(s): {', '.join(tail[:4])}{' ...' if len(tail) > 4 else ''}), "
                              "the rest int8, inputs and outputs float")
        self.recipe = dataclasses.replace(self.recipe, keep_float=tuple(dict.fromkeys(self.recipe.keep_float
                                                                                      + tuple(tail))))
        return self.recipe
