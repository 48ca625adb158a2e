"""How representative one pruning run is: prune 75% + int8 with the default fine-tuning on digits, once per seed,
every accuracy drop reported (held-out digits, through the edgert runtime). Target: the worst drop <= 2 points.
Run: `python benchmarks/prune_seeds.py [--seeds 5] [--preset prune75_int8]`.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import time
from pathlib import Path

import numpy as np

WORK = Path("build/bench/prune_seeds")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--preset", default="prune75_int8")
    args = parser.parse_args()
    from edgert.converters import convert, preset
    from edgert.converters.digits import digits_split, train_digits_cnn

    WORK.mkdir(parents=True, exist_ok=True)
    split = digits_split()
    model = WORK / "digits.h5"
    if not model.exists():
        train_digits_cnn(split).save(model)
    np.savez(WORK / "train.npz", x=split.x_train, y=split.y_train)
    np.savez(WORK / "test.npz", x=split.x_test, y=split.y_test)
    print(f"{args.preset} on digits with the default fine-tuning, {args.seeds} seeds")
    print(f"{'seed':>4} {'float':>8} {'tflite':>8} {'drop':>6} {'seconds':>8}  sha256")
    drops = []
    for seed in range(args.seeds):
        started = time.perf_counter()
        result = convert(model, WORK / f"seed{seed}.tflite", recipe=dataclasses.replace(preset(args.preset), seed=seed),
                         train_data=WORK / "train.npz", eval_data=WORK / "test.npz", force=True)
        drops.append(result.accuracy_drop)
        digest = hashlib.sha256(Path(result.output_path).read_bytes()).hexdigest()[:12]
        print(f"{seed:>4} {result.accuracy_source:>8.2%} {result.accuracy_tflite:>8.2%} {result.accuracy_drop:>6.2f} "
              f"{time.perf_counter() - started:>8.1f}  {digest}", flush=True)
    worst = max(drops)
    print(f"drops {', '.join(f'{d:.2f}' for d in drops)}; worst {worst:.2f} points, spread {worst - min(drops):.2f}")
    print(f"target worst drop <= 2 points: {'met' if worst <= 2 else 'MISSED'}")


if __name__ == "__main__":
    main()
