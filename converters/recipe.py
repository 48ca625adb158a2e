"""Recipes: every conversion option set as frozen, validated data with a JSON round trip and named presets."""

from __future__ import annotations

import dataclasses
import enum
import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edgert.errors import InputDataError

RECIPE_VERSION = 1


class RecipeError(InputDataError):
    """A recipe whose options conflict, are out of range, or do not parse."""


class Quantization(str, enum.Enum):
    """The post-training step that produces the flatbuffer."""

    FLOAT32 = "float32"
    DYNAMIC = "dynamic"  # int8 weights, float activations
    FLOAT16 = "float16"  # float16 weights
    INT8 = "int8"  # full integer: int8 weights and activations, calibrated
    INT16X8 = "int16x8"  # int16 activations, int8 weights, calibrated
    EDGETPU = "edgetpu"  # full int8 with Edge TPU constraints, then edgetpu_compiler where present

    @property
    def suffix(self) -> str:
        return "" if self is Quantization.FLOAT32 else f"_{self.value}"

    @property
    def needs_calibration(self) -> bool:
        return self in (Quantization.INT8, Quantization.INT16X8, Quantization.EDGETPU)


class PruneSchedule(str, enum.Enum):
    POLYNOMIAL = "polynomial"  # PolynomialDecay from 0 to the target over fine-tuning
    CONSTANT = "constant"  # ConstantSparsity at the target from the first step


@dataclass(frozen=True)
class PruneConfig:
    """Magnitude pruning to `sparsity`; `structure` "M:N" for M-by-N sparsity; `policy` "xnnpack" or None."""

    sparsity: float
    schedule: PruneSchedule = PruneSchedule.POLYNOMIAL
    structure: str | None = None
    policy: str | None = None

    def __post_init__(self):
        if not isinstance(self.sparsity, (int, float)) or not 0 < self.sparsity < 1:
            raise RecipeError(f"--prune sparsity must be between 0 and 1 (exclusive), got {self.sparsity!r}")
        object.__setattr__(self, "schedule", _enum(PruneSchedule, self.schedule, "--prune-schedule"))
        if self.structure is not None:
            self.m_by_n  # validates
        if self.policy not in (None, "xnnpack"):
            raise RecipeError(f"--prune-policy must be 'xnnpack', got {self.policy!r}")

    @property
    def m_by_n(self) -> tuple[int, int] | None:
        """(M, N) for "M:N" sparsity: at least M zeros in every block of N consecutive weights."""
        if self.structure is None:
            return None
        match = re.fullmatch(r"\s*(\d+)\s*:\s*(\d+)\s*", str(self.structure))
        if not match or not 0 < int(match[1]) < int(match[2]):
            raise RecipeError(f"--prune-structure must be M:N with 0 < M < N (e.g. 2:4), got {self.structure!r}")
        return int(match[1]), int(match[2])


@dataclass(frozen=True)
class ChannelPruneConfig:
    """Structured pruning: remove `fraction` of the prunable channels and rebuild a smaller dense model
    (converters/channels.py). `criterion` "l2" (filter norms) or "bn" (BatchNorm scale); `policy` "uniform" (the
    same fraction in every group) or "global" (ranked together, at least `min_channels` kept per group); counts
    rounded to a multiple of `multiple` where a group has 32 channels or more."""

    fraction: float
    criterion: str = "l2"
    policy: str = "uniform"
    min_channels: int = 8
    multiple: int = 8

    def __post_init__(self):
        if not isinstance(self.fraction, (int, float)) or not 0 < self.fraction < 1:
            raise RecipeError(f"--prune-channels must be between 0 and 1 (exclusive), got {self.fraction!r}")
        if self.criterion not in ("l2", "bn"):
            raise RecipeError(f"--prune-channels-criterion must be l2 or bn, got {self.criterion!r}")
        if self.policy not in ("uniform", "global"):
            raise RecipeError(f"--prune-channels-policy must be uniform or global, got {self.policy!r}")
        for key in ("min_channels", "multiple"):
            value = getattr(self, key)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise RecipeError(f"--{key.replace('_', '-')} must be a positive whole number, got {value!r}")


@dataclass(frozen=True)
class ClusterConfig:
    clusters: int

    def __post_init__(self):
        if not isinstance(self.clusters, int) or isinstance(self.clusters, bool) or self.clusters < 2:
            raise RecipeError(f"--cluster needs at least 2 clusters, got {self.clusters!r}")


@dataclass(frozen=True)
class DistillConfig:
    teacher: str
    temperature: float = 4.0
    alpha: float = 0.1  # weight of the hard-label loss; 1 - alpha goes to matching the teacher

    def __post_init__(self):
        if not self.teacher:
            raise RecipeError("--distill-from needs the teacher model's path")
        if not self.temperature > 0:
            raise RecipeError(f"--distill-temperature must be positive, got {self.temperature!r}")
        if not 0 <= self.alpha <= 1:
            raise RecipeError(f"--distill-alpha must be between 0 and 1, got {self.alpha!r}")


@dataclass(frozen=True)
class TrainConfig:
    """Fine-tuning settings; None means the stage's own default."""

    epochs: int | None = None
    batch_size: int = 32
    learning_rate: float | None = None

    def __post_init__(self):
        if self.epochs is not None and (not isinstance(self.epochs, int) or self.epochs < 1):
            raise RecipeError(f"--epochs must be a positive integer, got {self.epochs!r}")
        if not isinstance(self.batch_size, int) or self.batch_size < 1:
            raise RecipeError(f"--batch-size must be a positive integer, got {self.batch_size!r}")
        if self.learning_rate is not None and not self.learning_rate > 0:
            raise RecipeError(f"--learning-rate must be positive, got {self.learning_rate!r}")


@dataclass(frozen=True)
class ConvertRecipe:
    """Everything one conversion does, in stage order: channel pruning, distill, prune, cluster, QAT, then
    post-training."""

    quantization: Quantization = Quantization.FLOAT32
    prune: PruneConfig | None = None
    cluster: ClusterConfig | None = None
    distill: DistillConfig | None = None
    qat: bool = False
    float_io: bool = False
    calibration_samples: int = 200
    train: TrainConfig = field(default_factory=TrainConfig)
    # Full int8 with these operators (their output tensor names) left in float: selective quantization.
    keep_float: tuple[str, ...] = ()
    # Full int8 with these operators' activations in int16 (ai-edge-quantizer, the litert-torch route's quantizer).
    int16: tuple[str, ...] = ()
    # Seeds Python, NumPy and TensorFlow, with TensorFlow's op determinism, for every stage that trains: the same
    # recipe, data and seed give the same .tflite, byte for byte (on the same machine and versions).
    seed: int = 0
    # Structured pruning, the first stage: a smaller dense model, then fine-tuned by distillation from the
    # original when there is training data.
    prune_channels: ChannelPruneConfig | None = None

    def __post_init__(self):
        object.__setattr__(self, "quantization", _enum(Quantization, self.quantization, "quantization"))
        for key in ("keep_float", "int16"):
            if isinstance(getattr(self, key), list):
                object.__setattr__(self, key, tuple(getattr(self, key)))
            if not all(isinstance(n, str) and n for n in getattr(self, key)):
                raise RecipeError(f"recipe key '{key}' must list operator output tensor names")
        if self.int16 and (self.quantization is not Quantization.INT8 or self.qat):
            raise RecipeError("int16 (operators with int16 activations) applies to post-training --int8 only")
        q = self.quantization
        if self.keep_float and (q not in (Quantization.INT8, Quantization.EDGETPU) or self.qat):
            raise RecipeError("keep_float applies to post-training --int8 and --edgetpu only")
        if self.qat and q not in (Quantization.INT8, Quantization.EDGETPU, Quantization.DYNAMIC):
            raise RecipeError(f"--qat trains for int8 and cannot be combined with --{q.value}; "
                              "use --qat alone (full int8) or drop it")
        if self.float_io and q not in (Quantization.INT8, Quantization.INT16X8):
            raise RecipeError(f"--float-io applies to --int8 and --int16x8 models, not {q.value}")
        if not isinstance(self.calibration_samples, int) or self.calibration_samples < 1:
            raise RecipeError(f"--calibration-samples must be at least 1, got {self.calibration_samples!r}")
        if not isinstance(self.seed, int) or isinstance(self.seed, bool) or not 0 <= self.seed < 2**32:
            raise RecipeError(f"--seed must be a whole number from 0 to 2**32 - 1, got {self.seed!r}")

    @property
    def needs_training_data(self) -> list[str]:
        """The stages that cannot run without training data."""
        return [option for option, used in (("--distill-from", self.distill), ("--qat", self.qat)) if used]

    @property
    def name(self) -> str:
        """A name that decodes, like the presets: prune75_qat_int8."""
        parts = []
        if self.prune_channels:
            parts.append(f"channels{round(self.prune_channels.fraction * 100)}")
        if self.distill:
            parts.append("distill")
        if self.prune:
            parts.append(f"prune{round(self.prune.sparsity * 100)}"
                         + (f"_{self.prune.structure.replace(':', 'of')}" if self.prune.structure else ""))
        if self.cluster:
            parts.append(f"cluster{self.cluster.clusters}")
        if self.qat:
            parts.append("qat")
        parts.append(self.quantization.value)
        if self.keep_float:
            parts.append(f"keepfloat{len(self.keep_float)}")
        if self.int16:
            parts.append(f"int16x{len(self.int16)}")
        return "_".join(parts)

    def to_dict(self) -> dict[str, Any]:
        def plain(value):
            if isinstance(value, enum.Enum):
                return value.value
            if dataclasses.is_dataclass(value):
                return {f.name: plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
            if isinstance(value, tuple):
                return list(value)
            return value

        return {"edgert_recipe": RECIPE_VERSION, "name": self.name, **plain(self)}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ConvertRecipe:
        """Build a recipe from `to_dict` output; unknown keys and wrong types are errors that name the key."""
        if not isinstance(data, dict):
            raise RecipeError("a recipe must be a JSON object")
        data = dict(data)
        data.pop("edgert_recipe", None)
        data.pop("name", None)
        # Older recipes said "mode" for the post-training step.
        if "mode" in data and "quantization" not in data:
            data["quantization"] = data.pop("mode")
        nested = {"prune": PruneConfig, "cluster": ClusterConfig, "distill": DistillConfig, "train": TrainConfig,
                  "prune_channels": ChannelPruneConfig}
        kwargs = _check_keys(cls, data, "recipe")
        for key, sub in nested.items():
            if kwargs.get(key) is not None:
                if not isinstance(kwargs[key], dict):
                    raise RecipeError(f"recipe key '{key}' must be an object, got {type(kwargs[key]).__name__}")
                kwargs[key] = sub(**_check_keys(sub, kwargs[key], key))
        for key, kind in (("qat", bool), ("float_io", bool), ("calibration_samples", int), ("seed", int)):
            if key in kwargs and not isinstance(kwargs[key], kind):
                raise RecipeError(f"recipe key '{key}' must be {kind.__name__}, got {kwargs[key]!r}")
        try:
            return cls(**kwargs)
        except TypeError as exc:
            raise RecipeError(f"recipe: {exc}") from None

    def save(self, path: str | os.PathLike) -> None:
        from edgert.files import write_bytes_atomic

        write_bytes_atomic(path, (json.dumps(self.to_dict(), indent=2) + "\n").encode())

    @classmethod
    def load(cls, path: str | os.PathLike) -> ConvertRecipe:
        p = Path(path)
        if not p.is_file():
            raise RecipeError(f"recipe {p}: no such file")
        try:
            data = json.loads(p.read_text())
        except (ValueError, UnicodeDecodeError) as exc:
            raise RecipeError(f"recipe {p} is not valid JSON ({exc})") from None
        return cls.from_dict(data)


def _enum(kind, value, option):
    try:
        return kind(value)
    except ValueError:
        choices = ", ".join(k.value for k in kind)
        raise RecipeError(f"{option} must be one of {choices}, got {value!r}") from None


def _check_keys(cls, data: dict, where: str) -> dict:
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - known)
    if unknown:
        raise RecipeError(f"{where}: unknown key(s) {', '.join(unknown)}; known keys are {', '.join(sorted(known))}")
    return dict(data)


PRESETS: dict[str, ConvertRecipe] = {
    "float32": ConvertRecipe(),
    "dynamic": ConvertRecipe(Quantization.DYNAMIC),
    "float16": ConvertRecipe(Quantization.FLOAT16),
    "int8": ConvertRecipe(Quantization.INT8),
    "int16x8": ConvertRecipe(Quantization.INT16X8),
    "edgetpu": ConvertRecipe(Quantization.EDGETPU),
    "prune50_int8": ConvertRecipe(Quantization.INT8, prune=PruneConfig(0.5)),
    "prune75_int8": ConvertRecipe(Quantization.INT8, prune=PruneConfig(0.75)),
    "prune50_2of4_int8": ConvertRecipe(Quantization.INT8, prune=PruneConfig(0.5, structure="2:4")),
    "qat_int8": ConvertRecipe(Quantization.INT8, qat=True),
    "prune75_qat_int8": ConvertRecipe(Quantization.INT8, prune=PruneConfig(0.75), qat=True),
    "cluster16_int8": ConvertRecipe(Quantization.INT8, cluster=ClusterConfig(16)),
    "prune50_cluster16_qat_int8": ConvertRecipe(
        Quantization.INT8, prune=PruneConfig(0.5), cluster=ClusterConfig(16), qat=True),
    "channels25_int8": ConvertRecipe(Quantization.INT8, prune_channels=ChannelPruneConfig(0.25)),
    "channels50_int8": ConvertRecipe(Quantization.INT8, prune_channels=ChannelPruneConfig(0.5)),
    "channels75_int8": ConvertRecipe(Quantization.INT8, prune_channels=ChannelPruneConfig(0.75)),
}


def preset(name: str) -> ConvertRecipe:
    try:
        return PRESETS[name]
    except KeyError:
        raise RecipeError(f"unknown preset {name!r}; presets: {', '.join(PRESETS)}") from None


def recipe_from_options(*, int8=False, dynamic=False, float16=False, int16x8=False, edgetpu=False,
                        prune=None, prune_schedule=None, prune_structure=None,
                        prune_policy=None, cluster=None, distill_from=None, distill_temperature=4.0,
                        distill_alpha=0.1, qat=False, float_io=False, calibration_samples=200, epochs=None,
                        batch_size=32, learning_rate=None, seed=0, prune_channels=None,
                        prune_channels_criterion=None, prune_channels_policy=None, min_channels=None,
                        channel_multiple=None, keep_float=(), int16=()) -> ConvertRecipe:
    """The recipe that command-line style options describe; conflicting options are named in the error."""
    chosen = [name for name, on in (("--dynamic", dynamic), ("--float16", float16), ("--int8", int8),
                                    ("--int16x8", int16x8), ("--edgetpu", edgetpu)) if on]
    if len(chosen) > 1:
        raise RecipeError(f"{' and '.join(chosen)} conflict: choose one post-training quantization")
    if chosen:
        quantization = Quantization(chosen[0].lstrip("-"))
    else:
        quantization = Quantization.INT8 if qat else Quantization.FLOAT32
    if prune is None and any(v is not None for v in (prune_schedule, prune_structure, prune_policy)):
        raise RecipeError("--prune-schedule, --prune-structure and --prune-policy need --prune SPARSITY")
    channel_options = {"criterion": prune_channels_criterion, "policy": prune_channels_policy,
                       "min_channels": min_channels, "multiple": channel_multiple}
    if prune_channels is None and any(v is not None for v in channel_options.values()):
        raise RecipeError("--prune-channels-criterion, --prune-channels-policy, --min-channels and "
                          "--channel-multiple need --prune-channels FRACTION")
    return ConvertRecipe(
        prune_channels=ChannelPruneConfig(prune_channels, **{k: v for k, v in channel_options.items()
                                                              if v is not None})
        if prune_channels is not None else None,
        quantization=quantization,
        prune=PruneConfig(prune, PruneSchedule(prune_schedule or "polynomial"), prune_structure, prune_policy)
        if prune is not None else None,
        cluster=ClusterConfig(cluster) if cluster is not None else None,
        distill=DistillConfig(str(distill_from), distill_temperature, distill_alpha) if distill_from else None,
        qat=qat, float_io=float_io, calibration_samples=calibration_samples,
        train=TrainConfig(epochs, batch_size, learning_rate), seed=seed,
        keep_float=tuple(n.strip() for v in keep_float for n in v.split(",") if n.strip()),
        int16=tuple(n.strip() for v in int16 for n in v.split(",") if n.strip()))
