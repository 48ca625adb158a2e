"""`edgert optimize`: search conversion recipes for the smallest (or fastest, or most frugal) model within an
accuracy budget, measured through the edgert runtime, with a Pareto front, a resumable record and parallel workers.

Candidates run in levels, cheapest first: post-training modes (dynamic, float16, int8), int8 with the most
quantization-sensitive layers kept in float (only when int8 misses the budget), pruning with int8, then QAT and
pruning with QAT. The search stops escalating once a candidate meets the accuracy budget and a level no longer
improves the objective, or when the time budget runs out. Converting and evaluating a candidate is one function,
`run_candidate`, which local worker processes and Ray tasks both call; latency is measured afterwards, one model at
a time, so candidates never compete for the cores while being timed.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Callable

from edgert.converters.recipe import ChannelPruneConfig, ConvertRecipe, PruneConfig, Quantization
from edgert.errors import ConversionError, EdgertError, InputDataError, OutputExistsError
from edgert.files import check_output_path, make_output_dir, shown, write_bytes_atomic

RECORD_VERSION = 1
OBJECTIVES = ("size", "latency", "energy")
# Fine-tuning after pruning, unless --epochs says otherwise: more than a one-off `convert --prune` (8), because the
# search pushes sparsity to where the last points of accuracy are won back slowly (digits: 75% sparse int8 is
# 0.9 to 1.1 points down after 8 epochs, 0.2 after 20).
PRUNE_EPOCHS = 20


def _levels(selective: tuple[tuple[str, ...], ...] = (),
            objective: str = "size") -> list[tuple[str, list[ConvertRecipe]]]:
    int8 = Quantization.INT8
    levels = [("post-training", [ConvertRecipe(Quantization.DYNAMIC), ConvertRecipe(Quantization.FLOAT16),
                                 ConvertRecipe(int8)])]
    if selective:
        levels.append(("int8, sensitive layers in float", [ConvertRecipe(int8, keep_float=names)
                                                           for names in selective]))
    if objective in ("latency", "energy"):  # fewer channels is less work; zeros stored dense are not
        levels.append(("channel pruning + int8", [ConvertRecipe(int8, prune_channels=ChannelPruneConfig(f))
                                                  for f in (0.25, 0.5, 0.75)]))
    levels.append(("pruning + int8", [ConvertRecipe(int8, prune=PruneConfig(s)) for s in (0.5, 0.75, 0.8, 0.85, 0.9)]))
    levels.append(("QAT", [ConvertRecipe(int8, qat=True), ConvertRecipe(int8, prune=PruneConfig(0.75), qat=True)]))
    return levels


@dataclass(frozen=True)
class Candidate:
    """One recipe tried: what it produced and how it measured. `error` is set when it could not be made."""

    name: str
    recipe: dict
    level: str
    path: str | None = None
    sha256: str | None = None
    accuracy: float | None = None
    accuracy_drop: float | None = None  # points below the float .tflite
    size_bytes: int | None = None
    gzip_bytes: int | None = None
    latency_p50_ms: float | None = None
    latency_p90_ms: float | None = None
    energy_mj: float | None = None
    measured_on: str | None = None
    kept_float: tuple[str, ...] = ()
    seconds: float = 0.0
    error: str | None = None
    pareto: bool = False
    feasible: bool = False

    def metric(self, objective: str) -> float | None:
        return {"size": self.gzip_bytes, "latency": self.latency_p50_ms, "energy": self.energy_mj}[objective]

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> Candidate:
        fields = {k: v for k, v in data.items() if k in cls.__dataclass_fields__}
        fields["kept_float"] = tuple(fields.get("kept_float", ()))
        return cls(**fields)


@dataclass(frozen=True)
class OptimizeResult:
    """The search: the float reference, every candidate, the Pareto front and the chosen model."""

    model: str
    objective: str
    max_drop: float
    float_candidate: Candidate
    candidates: tuple[Candidate, ...]
    chosen: Candidate | None
    chosen_path: str | None
    record_path: str
    stopped_because: str
    reused: tuple[str, ...] = ()
    notes: tuple[str, ...] = ()

    @property
    def pareto(self) -> tuple[Candidate, ...]:
        return tuple(c for c in self.candidates if c.pareto)

    def to_dict(self) -> dict:
        return {"edgert_optimize": RECORD_VERSION, "model": self.model, "objective": self.objective,
                "max_drop": self.max_drop, "float": self.float_candidate.to_dict(),
                "candidates": [c.to_dict() for c in self.candidates],
                "chosen": self.chosen.name if self.chosen else None, "chosen_path": self.chosen_path,
                "stopped_because": self.stopped_because, "reused": list(self.reused), "notes": list(self.notes)}


def run_candidate(task: dict) -> dict:
    """Convert one recipe and measure its accuracy through the edgert runtime. Runs in a worker process or a Ray
    task: plain dicts in and out, errors returned rather than raised.

    `task`: model, recipe (dict), output, train, eval, calibration (paths or None), image_range, level.
    """
    from edgert.converters import convert
    from edgert.converters._tf import import_tf
    from edgert.runtime.native import native_log_captured

    recipe = ConvertRecipe.from_dict(task["recipe"])
    started = time.perf_counter()
    _, keras = import_tf()
    keras.utils.set_random_seed(task.get("seed", 0))  # the same recipe trains the same way in any worker
    record = {"name": recipe.name, "recipe": recipe.to_dict(), "level": task["level"]}
    try:
        with native_log_captured():  # TensorFlow's native lines would land between the parent's progress lines
            result = convert(task["model"], task["output"], recipe=recipe, train_data=task.get("train"),
                             eval_data=task["eval"], calibration_data=task.get("calibration"),
                             image_range=tuple(task["image_range"]) if task.get("image_range") else None,
                             force=True, custom_objects=task.get("custom_objects"),
                             trust_model=task.get("trust_model", False))
    except EdgertError as exc:
        return {**record, "error": str(exc), "seconds": time.perf_counter() - started}
    data = Path(result.output_path).read_bytes()
    kept = tuple(name for stage in result.stages for name in stage.float_layers) + tuple(recipe.keep_float)
    return {**record, "path": result.output_path, "sha256": hashlib.sha256(data).hexdigest(),
            "accuracy": result.accuracy_tflite, "size_bytes": result.output_size_bytes,
            "gzip_bytes": result.output_gzip_bytes, "kept_float": kept, "seconds": time.perf_counter() - started}


class _LocalPool:
    """Worker processes (spawned: TensorFlow does not survive fork) that run candidates in parallel."""

    def __init__(self, workers: int):
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor

        self.pool = ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context("spawn"))

    def map(self, tasks: list[dict]):
        from concurrent.futures.process import BrokenProcessPool

        futures = [self.pool.submit(run_candidate, t) for t in tasks]
        for future in futures:
            try:
                yield future.result()
            except BrokenProcessPool:
                raise ConversionError(
                    "a worker process ended abruptly (out of memory, or killed); a script that calls optimize() "
                    "must do so under `if __name__ == \"__main__\":`, since workers are spawned and import it"
                ) from None

    def close(self):
        self.pool.shutdown(wait=False, cancel_futures=True)


class _RayPool:
    """Candidates as Ray tasks on an existing cluster (`--ray ADDRESS`, or `local` for a local instance)."""

    def __init__(self, address: str):
        try:
            import ray
        except ImportError:
            raise InputDataError("--ray needs Ray: pip install 'edgert[ray]'") from None
        self.ray = ray
        if not ray.is_initialized():
            ray.init(address=None if address == "local" else address, ignore_reinit_error=True,
                     log_to_driver=False)
        self.remote = ray.remote(run_candidate)

    def map(self, tasks: list[dict]):
        refs = [self.remote.remote(t) for t in tasks]
        for ref in refs:
            yield self.ray.get(ref)

    def close(self):
        pass


def _measure(candidate: Candidate, *, to: str | None, device: str | None, allow_local: bool, notes: list[str],
             runs: int) -> Candidate:
    """Latency (and energy where a sensor exists) of one candidate: on the board with `to`, else here."""
    import edgert

    if to:
        from edgert.deploy import deploy
        from edgert.errors import DeployError

        try:
            done = deploy(candidate.path, to, device, name=f"optimize-{candidate.name}",
                          bench_args=("--runs", str(runs), "--idle-seconds", "0"))
            latency = done.bench["latency"]
            energy = (done.bench.get("energy") or {}).get("energy_per_inference_mj")
            return replace(candidate, latency_p50_ms=latency["p50_ms"], latency_p90_ms=latency["p90_ms"],
                            energy_mj=energy, measured_on=str(done.target))
        except DeployError as exc:
            if not allow_local:
                raise
            note = f"measured here, not on {to}: {exc}"
            if note not in notes:
                notes.append(note)
    result = edgert.bench(candidate.path, runs=runs, warmup=10, idle_s=0.0)
    energy = result.energy.energy_per_inference_mj if result.energy else None
    return replace(candidate, latency_p50_ms=result.latency.p50_ms, latency_p90_ms=result.latency.p90_ms,
                    energy_mj=energy, measured_on="this machine")


def mark_pareto(candidates: list[Candidate], objective: str, max_drop: float, float_accuracy: float,
                min_accuracy: float | None) -> list[Candidate]:
    """Flag feasibility (within the accuracy budget) and the Pareto front over (accuracy up, objective down)."""
    out = []
    ok = [c for c in candidates if c.error is None and c.metric(objective) is not None and c.accuracy is not None]
    for c in candidates:
        if c not in ok:
            out.append(replace(c, pareto=False, feasible=False))
            continue
        dominated = any(o is not c and o.accuracy >= c.accuracy and o.metric(objective) <= c.metric(objective)
                        and (o.accuracy > c.accuracy or o.metric(objective) < c.metric(objective)) for o in ok)
        feasible = (float_accuracy - c.accuracy) * 100 <= max_drop + 1e-9 and (
            min_accuracy is None or c.accuracy * 100 >= min_accuracy - 1e-9)
        out.append(replace(c, pareto=not dominated, feasible=feasible))
    return out


def _choose(candidates: list[Candidate], objective: str) -> Candidate | None:
    feasible = [c for c in candidates if c.feasible]
    return min(feasible, key=lambda c: (c.metric(objective), -c.accuracy, c.name), default=None)


def sensitive_layers(model_path: str, calibration, limit: int = 3, scores: dict | None = None,
                     custom_objects: dict | None = None, trust_model: bool = False) -> list[str]:
    """The int8 model's operators ranked by quantization error (RMSE over the scale, from TFLite's quantization
    debugger), most sensitive first: the ones to keep in float when full int8 loses too much accuracy."""
    from edgert.converters._tf import import_tf
    from edgert.converters.sources import open_model
    from edgert.runtime.native import native_log_captured

    from edgert.converters.tflite import converter_for

    tf, _ = import_tf()
    source = open_model(model_path, custom_objects, trust_model)
    converter = converter_for(tf, source, source.keras_model)
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    samples = calibration[0][:64]

    def dataset():
        for i in range(len(samples)):
            yield [samples[i:i + 1]]

    converter.representative_dataset = dataset
    with native_log_captured():
        debugger = tf.lite.experimental.QuantizationDebugger(converter=converter, debug_dataset=dataset)
        debugger.run()
    import csv
    import io

    dump = io.StringIO()
    debugger.layer_statistics_dump(dump)  # one row per quantized operator, with its scale and output tensor name
    scored = []
    for row in csv.DictReader(io.StringIO(dump.getvalue())):
        try:
            mse, scale = float(row["mean_squared_error"]), float(row["scale"])
        except (KeyError, TypeError, ValueError):
            continue
        if scale > 0 and row.get("tensor_name"):
            scored.append(((mse ** 0.5) / scale, row["tensor_name"]))
    ranked = sorted(scored, reverse=True)[:limit]
    if scores is not None:
        scores.update({name: score for score, name in ranked})
    return [name for _, name in ranked]


def optimize(model: str | os.PathLike, *, train_data: str | os.PathLike, eval_data: str | os.PathLike,
             calibration_data: str | os.PathLike | None = None, out_dir: str | os.PathLike | None = None,
             max_drop: float = 1.0, min_accuracy: float | None = None, objective: str = "size",
             budget_minutes: float | None = None, device: str | None = None, to: str | None = None,
             allow_local: bool = False, workers: int | None = None, ray_address: str | None = None,
             resume: str | os.PathLike | None = None, epochs: int | None = None, bench_runs: int = 200,
             image_range: tuple[float, float] | None = None, force: bool = False,
             custom_objects: str | os.PathLike | None = None, trust_model: bool = False,
             progress: Callable[[str], None] = lambda _m: None) -> OptimizeResult:
    """Search recipes for `model` (a Keras `.h5`/`.keras`) and write the chosen `.tflite`, every candidate and
    `optimize.json` (rewritten after each candidate, so `resume` picks up where a killed run stopped).

    `custom_objects` and `trust_model` are passed to every conversion (see `convert`).

    Raises:
        InputDataError: bad arguments, eval labels that do not match the model, a constraint the float model
            already misses, a budget too small for one candidate, `energy` without a power sensor.
        DeployError: the board cannot be reached (without `allow_local`).
        OutputExistsError: the output folder holds another run and neither `resume` nor `force` was given.
    """
    from edgert.converters.recipe import TrainConfig

    if objective not in OBJECTIVES:
        raise InputDataError(f"--objective {objective!r} is not one of {', '.join(OBJECTIVES)}")
    if not max_drop >= 0:
        raise InputDataError(f"--max-drop must be 0 or more points, got {max_drop}")
    if budget_minutes is not None and not budget_minutes > 0:
        raise InputDataError(f"--budget-minutes must be positive, got {budget_minutes}")
    if workers is not None and workers < 1:
        raise InputDataError(f"--workers must be at least 1, got {workers}")
    model = Path(model)
    if not model.exists():
        raise InputDataError(f"{model} does not exist")
    from edgert.converters._tf import import_tf
    from edgert.converters.sources import check_source

    check_source(model, trust_model)  # a .tflite, a damaged file or stored code: said before anything starts
    import_tf()  # and a runtime-only install says which extra it needs
    if objective == "energy" and not to:
        from edgert.devices import sensors

        if sensors.select("auto").source is None:
            raise InputDataError("--objective energy needs a power sensor and none was found here (`edgert sensors` "
                                 "says why); use --objective latency or size, or measure on a board with --to")

    record_path, candidates_dir, chosen_target = output_layout(model, out_dir, resume)
    previous: dict[str, Candidate] = {}
    model_sha = hashlib.sha256(model.read_bytes()).hexdigest() if model.is_file() else None
    if resume:
        previous = _load_resume(Path(resume), model_sha)
    elif record_path.exists() and not force:
        raise OutputExistsError(f"{record_path} exists from an earlier run; pass --resume {shown(record_path)} to "
                                "continue it or --force to start again")
    if out_dir is not None and Path(out_dir).suffix == ".tflite" and not resume:
        check_output_path(chosen_target, force=force)  # the chosen model's own path: before any work
    make_output_dir(candidates_dir)
    started = time.monotonic()
    deadline = started + budget_minutes * 60 if budget_minutes else None
    notes: list[str] = []
    reused: list[str] = []

    def task(recipe: ConvertRecipe, level: str) -> dict:
        return {"model": str(model), "recipe": recipe.to_dict(), "level": level,
                "output": str(candidates_dir / f"{recipe.name}.tflite"), "train": str(train_data),
                "eval": str(eval_data), "calibration": str(calibration_data) if calibration_data else None,
                "image_range": list(image_range) if image_range else None, "seed": 0,
                "custom_objects": str(custom_objects) if custom_objects else None, "trust_model": trust_model}

    def finish(record: dict) -> Candidate:
        c = Candidate.from_dict(record)
        if c.error is None and c.accuracy is not None and float_c is not None:
            c = replace(c, accuracy_drop=round((float_c.accuracy - c.accuracy) * 100, 4))
        return c

    def save(candidates, chosen=None, stopped="running"):
        data = {"edgert_optimize": RECORD_VERSION, "model": str(model), "model_sha256": model_sha,
                "objective": objective, "max_drop": max_drop, "min_accuracy": min_accuracy,
                "float": float_c.to_dict() if float_c else None,
                "candidates": [c.to_dict() for c in candidates], "chosen": chosen.name if chosen else None,
                "stopped_because": stopped, "notes": notes}
        write_bytes_atomic(record_path, (json.dumps(data, indent=2) + "\n").encode())

    # The float reference: converted like any candidate, and it sets the accuracy every drop is counted from.
    float_c = None
    recipe = ConvertRecipe()
    if "float32" in previous:
        float_c = previous["float32"]
        reused.append("float32")
    else:
        progress("float reference: converting and evaluating")
        float_c = finish(run_candidate(task(recipe, "reference")))
        if float_c.error:
            raise InputDataError(f"the float model could not be converted or evaluated: {float_c.error}")
    float_c = replace(float_c, accuracy_drop=0.0)
    if min_accuracy is not None and float_c.accuracy * 100 < min_accuracy:
        raise InputDataError(f"even the float model reaches only {float_c.accuracy:.2%} on the eval data, below "
                             f"--min-accuracy {min_accuracy:g}%; lower the constraint or improve the model")
    if deadline is not None and time.monotonic() > deadline and "float32" not in reused:
        raise InputDataError(f"--budget-minutes {budget_minutes:g} is too small for even one candidate: the float "
                             f"reference alone took {float_c.seconds:.0f} s")
    float_c = _measure(float_c, to=to, device=device, allow_local=allow_local, notes=notes, runs=bench_runs) \
        if float_c.latency_p50_ms is None else float_c
    candidates: list[Candidate] = []
    save(candidates)

    pool = _RayPool(ray_address) if ray_address else _LocalPool(workers or min(2, os.cpu_count() or 1))
    stopped = "every level was tried"
    best_before = None
    try:
        level_list = _levels(objective=objective)
        index = 0
        while index < len(level_list):
            level, recipes = level_list[index]
            index += 1
            recipes = [ConvertRecipe(**{**r.__dict__, "train": TrainConfig(
                epochs=epochs or (PRUNE_EPOCHS if r.prune else None))}) for r in recipes]
            todo = [r for r in recipes if r.name not in previous]
            for r in recipes:
                if r.name in previous and r.name not in [c.name for c in candidates]:
                    candidates.append(previous[r.name])
                    reused.append(r.name)
            if deadline is not None and todo:
                spent = [c.seconds for c in candidates if c.level == level] or [float_c.seconds]
                if time.monotonic() + min(spent) > deadline:
                    stopped = f"the time budget ({budget_minutes:g} min) ran out before {level}"
                    break
            if todo:
                progress(f"{level}: {', '.join(r.name for r in todo)}")
            for record in pool.map([task(r, level) for r in todo]):
                c = finish(record)
                if c.error is None:
                    c = _measure(c, to=to, device=device, allow_local=allow_local, notes=notes, runs=bench_runs)
                candidates.append(c)
                progress(f"  {c.name}: " + (f"error: {c.error}" if c.error else
                                            f"accuracy {c.accuracy:.2%}, {c.gzip_bytes} B gzipped, "
                                            f"p50 {c.latency_p50_ms:.3f} ms"))
                candidates = mark_pareto(candidates, objective, max_drop, float_c.accuracy, min_accuracy)
                save(candidates)
            candidates = mark_pareto(candidates, objective, max_drop, float_c.accuracy, min_accuracy)
            best = _choose(candidates, objective)
            int8 = next((c for c in candidates if c.name == "int8"), None)
            if level == "post-training" and int8 is not None and not int8.feasible and int8.error is None:
                scores: dict[str, float] = {}
                custom = custom_objects  # open_model imports a file with the Keras that wrote the model
                names = sensitive_layers(str(model), _calibration(model, calibration_data, train_data, image_range,
                                                                  custom, trust_model),
                                         scores=scores, custom_objects=custom, trust_model=trust_model)
                if names:
                    why = ", ".join(f"{n} ({scores[n]:.3g})" for n in names)
                    notes.append(f"full int8 lost {int8.accuracy_drop:.2f} points (more than {max_drop:g}); the "
                                 f"operators most sensitive to quantization, by RMSE/scale, were tried in float: {why}")
                    progress(f"int8 loses {int8.accuracy_drop:.2f} points: trying {', '.join(names)} in float")
                    level_list = _levels(tuple(tuple(names[:k]) for k in range(1, len(names) + 1)), objective)
                    index = 1
            if best is not None and best_before is not None and best.metric(objective) >= best_before.metric(objective):
                stopped = f"the {objective} stopped improving ({level} found nothing better than {best.name})"
                break
            if best is not None:
                best_before = best
    finally:
        pool.close()
    candidates = mark_pareto(candidates, objective, max_drop, float_c.accuracy, min_accuracy)
    chosen = _choose(candidates, objective)
    chosen_path = None
    if chosen is not None:
        for side in (".recipe.json", ".report.json", ""):  # the model last: a set is whole or the model absent
            if Path(chosen.path + side).exists():
                write_bytes_atomic(str(chosen_target) + side, Path(chosen.path + side).read_bytes())
        chosen_path = str(chosen_target)
    else:
        notes.append(f"no candidate stays within {max_drop:g} points of the float model's {float_c.accuracy:.2%}")
    save(candidates, chosen, stopped)
    result = OptimizeResult(str(model), objective, max_drop, float_c, tuple(candidates), chosen, chosen_path,
                            str(record_path), stopped, tuple(reused), tuple(notes))
    return result


def output_layout(model: Path, out: str | os.PathLike | None, resume) -> tuple[Path, Path, Path]:
    """(record, candidates folder, chosen model) for `-o`: a `.tflite` path is where the chosen model goes, with its
    record `<path>.optimize.json` and the candidates in `<path>.candidates/` beside it; a folder (default
    `<stem>_optimize`) holds `optimize.json`, `candidates/` and `<stem>_optimized.tflite`. `--resume` takes the
    layout of the record it names."""
    if resume:
        record = Path(resume)
        if record.name.endswith(".tflite.optimize.json"):
            chosen = record.with_name(record.name[:-len(".optimize.json")])
            return record, Path(f"{chosen}.candidates"), chosen
        return record, record.parent / "candidates", record.parent / f"{model.stem}_optimized.tflite"
    target = Path(out) if out else model.with_name(f"{model.stem}_optimize")
    if target.suffix == ".tflite":
        return Path(f"{target}.optimize.json"), Path(f"{target}.candidates"), target
    return target / "optimize.json", target / "candidates", target / f"{model.stem}_optimized.tflite"


def _calibration(model, calibration_data, train_data, image_range, custom_objects=None, trust_model=False):
    from edgert.converters.calibration import load_calibration_data
    from edgert.converters.data import load_labelled_data
    from edgert.converters.sources import open_model

    from edgert.converters.ranges import declared_range

    source = open_model(model, custom_objects, trust_model)
    declared = declared_range(source.keras_model)
    image_range = image_range or (declared.value_range if declared else None)
    if calibration_data:
        return load_calibration_data(calibration_data, source.inputs, 64, image_range)
    shape = source.keras_model.output_shape
    data = load_labelled_data(train_data, source.inputs[0], int(shape[1]), "--train-data", image_range)
    return [data.x[:64]]


def _load_resume(path: Path, model_sha: str | None) -> dict[str, Candidate]:
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise InputDataError(f"--resume {path}: no such file") from None
    except (ValueError, UnicodeDecodeError):
        raise InputDataError(f"--resume {path} is not an optimize.json (not JSON)") from None
    if not isinstance(data, dict) or data.get("edgert_optimize") != RECORD_VERSION:
        raise InputDataError(f"--resume {path} is not an optimize.json written by this edgert")
    if model_sha and data.get("model_sha256") != model_sha:
        raise InputDataError(f"--resume {path} was made for another model (or the model changed); start a new run")
    found = {}
    for record in ([data["float"]] if data.get("float") else []) + data.get("candidates", []):
        c = Candidate.from_dict(record)
        usable = c.error is None and c.path and Path(c.path).is_file() and \
            hashlib.sha256(Path(c.path).read_bytes()).hexdigest() == c.sha256
        if usable or c.error is not None:
            found[c.name] = c
    return found


def format_table(result: OptimizeResult) -> list[str]:
    """The candidates as rows, Pareto front marked with `*`, the chosen one with `>`."""
    rows = [f"  {'':2}{'candidate':<28} {'accuracy':>9} {'drop':>6} {'size':>9} {'gzip':>9} {'x gzip':>7} "
            f"{'p50 ms':>8} {'mJ':>7}"]
    reference = result.float_candidate.gzip_bytes
    for c in (result.float_candidate,) + result.candidates:
        mark = (">" if result.chosen and c.name == result.chosen.name else " ") + ("*" if c.pareto else " ")
        if c.error:
            rows.append(f"  {mark}{c.name:<28} error: {c.error[:80]}")
            continue
        ratio = f"{reference / c.gzip_bytes:.1f}" if c.gzip_bytes else "-"
        energy = f"{c.energy_mj:.3f}" if c.energy_mj is not None else "-"
        rows.append(f"  {mark}{c.name:<28} {c.accuracy:>9.2%} {c.accuracy_drop or 0:>6.2f} "
                    f"{c.size_bytes / 1024:>8.1f}K {c.gzip_bytes / 1024:>8.1f}K {ratio:>7} "
                    f"{c.latency_p50_ms:>8.3f} {energy:>7}")
    return rows


def plot_pareto(result: OptimizeResult, path: str | os.PathLike, force: bool = False) -> Path:
    """Accuracy against latency, point area by gzip size, the Pareto front joined; written atomically."""
    from edgert.files import atomic_path
    from edgert.measure.plot import check_plot_path

    p = check_plot_path(path, force)
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    points = [c for c in (result.float_candidate,) + result.candidates if c.error is None]
    fig, ax = plt.subplots(figsize=(7, 5))
    largest = max(c.gzip_bytes for c in points)
    for c in points:
        ax.scatter(c.latency_p50_ms, c.accuracy * 100, s=40 + 400 * c.gzip_bytes / largest, alpha=0.6,
                   color="tab:red" if result.chosen and c.name == result.chosen.name else "tab:blue")
        ax.annotate(c.name, (c.latency_p50_ms, c.accuracy * 100), fontsize=7, xytext=(4, 4),
                    textcoords="offset points")
    front = sorted((c for c in result.candidates if c.pareto), key=lambda c: c.latency_p50_ms)
    if front:
        ax.plot([c.latency_p50_ms for c in front], [c.accuracy * 100 for c in front], "--", color="gray")
    ax.axhline((result.float_candidate.accuracy * 100) - result.max_drop, color="tab:orange", lw=0.8,
               label=f"float - {result.max_drop:g} points")
    ax.set_xlabel("p50 latency (ms)")
    ax.set_ylabel("accuracy (%)")
    ax.set_title(f"{Path(result.model).name}: candidates (area = gzip size)")
    ax.legend(loc="lower right")
    with atomic_path(p) as tmp:
        fig.savefig(tmp, format=p.suffix.lstrip("."), dpi=120, bbox_inches="tight")
    plt.close(fig)
    return p
