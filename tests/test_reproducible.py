"""Training stages are reproducible: the same recipe, data and seed give the same .tflite, byte for byte, in separate
processes and when the recipe is replayed; pruning's default fine-tuning keeps one run representative."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from edgert.converters import convert, preset

EDGERT = str(Path(sys.executable).parent / "edgert")


def sha(path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def train_npz(tmp_path_factory, digits):
    path = tmp_path_factory.mktemp("data") / "train.npz"
    np.savez(path, x=digits.x_train, y=digits.y_train)
    return path


@pytest.mark.slow
@pytest.mark.heavy  # two fresh TensorFlow processes (the in-process tests beside it are in make test)
def test_the_same_seed_gives_the_same_bytes_in_separate_processes(h5_path, train_npz, tmp_path):
    def run(out, *extra):
        done = subprocess.run([EDGERT, "convert", str(h5_path), "--prune", "0.5", "--qat", "--epochs", "2",
                               "--train-data", str(train_npz), "-o", str(out), *extra], capture_output=True, text=True)
        assert done.returncode == 0, done.stderr[-1500:]
        return out

    first, second = run(tmp_path / "a.tflite"), run(tmp_path / "b.tflite")
    assert sha(first) == sha(second)
    recipe = json.loads(Path(f"{first}.recipe.json").read_text())
    assert recipe["seed"] == 0
    replayed = tmp_path / "replayed.tflite"
    done = subprocess.run([EDGERT, "convert", str(h5_path), "--recipe", f"{first}.recipe.json", "--train-data",
                           str(train_npz), "-o", str(replayed)], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-1500:]
    assert sha(replayed) == sha(first)
    other = run(tmp_path / "c.tflite", "--seed", "7")
    assert sha(other) != sha(first) and json.loads(Path(f"{other}.recipe.json").read_text())["seed"] == 7


@pytest.mark.slow
def test_prune75_int8_with_defaults_stays_within_two_points(h5_path, train_npz, tmp_path, digits):
    np.savez(tmp_path / "test.npz", x=digits.x_test, y=digits.y_test)
    result = convert(h5_path, tmp_path / "p.tflite", recipe=preset("prune75_int8"), train_data=train_npz,
                     eval_data=tmp_path / "test.npz")
    assert result.accuracy_drop <= 2.0, result.accuracy_drop
    prune = next(s for s in result.stages if s.stage == "prune")
    assert max(prune.sparsity.values()) == pytest.approx(0.75, abs=0.01)
    assert not any("apart" in n for n in result.notes)  # 1348 samples: too few to spare a validation tenth
    # With validation data, the epoch with the lowest validation loss at full sparsity is the one kept.
    np.savez(tmp_path / "val.npz", x=digits.x_train[:200], y=digits.y_train[:200])
    result = convert(h5_path, tmp_path / "v.tflite", recipe=preset("prune75_int8"), train_data=train_npz,
                     val_data=tmp_path / "val.npz", eval_data=tmp_path / "test.npz")
    kept = [n for n in result.notes if "kept the fine-tuning's best epoch at full sparsity" in n]
    assert kept and " of 24 " in kept[0] and result.accuracy_drop <= 2.0


def test_the_seed_is_validated_and_recorded():
    from edgert.converters import ConvertRecipe, RecipeError

    assert ConvertRecipe.from_dict({"quantization": "int8"}).seed == 0  # recipes from before the seed
    assert ConvertRecipe.from_dict(ConvertRecipe(seed=12).to_dict()).seed == 12
    with pytest.raises(RecipeError, match="--seed must be a whole number"):
        ConvertRecipe(seed=-1)
    with pytest.raises(RecipeError, match="recipe key 'seed' must be int"):
        ConvertRecipe.from_dict({"seed": "zero"})
