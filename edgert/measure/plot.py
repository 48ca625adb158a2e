"""`edgert bench --plot`: the latency distribution and, where power was sampled, the power trace (matplotlib extra)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence

import numpy as np

from edgert.measure.bench import BenchResult
from edgert.errors import BenchError
from edgert.files import atomic_path, check_output_path

FORMATS = (".png", ".svg", ".pdf")


def check_plot_path(path: str | os.PathLike, force: bool = False) -> Path:
    """Refuse an unusable plot path before anything is measured.

    Raises:
        BenchError: not .png/.svg/.pdf, or matplotlib is missing. OutputExistsError: exists without `force`.
    """
    p = check_output_path(path, force=force)
    if p.suffix.lower() not in FORMATS:
        raise BenchError(f"--plot {p}: use a {', '.join(FORMATS)} path")
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        raise BenchError("--plot needs matplotlib: pip install 'edgert[plot]'") from None
    return p


def plot_results(results: Sequence[BenchResult], path: str | os.PathLike, force: bool = False) -> Path:
    """Draw every result's latency histogram and, for those with power, power over time with inferences marked;
    written atomically."""
    p = check_plot_path(path, force)
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    traced = [r for r in results if r.power.samples >= 2]
    fig, axes = plt.subplots(1 + len(traced), 1, figsize=(9, 3.2 * (1 + len(traced))), squeeze=False)
    ax = axes[0][0]
    high = max(float(np.percentile(r.latency.samples_ms, 99.5)) for r in results)
    low = min(r.latency.min_ms for r in results)
    bins = np.linspace(low, high if high > low else low + 1e-3, 60)
    for r in results:
        ax.hist(np.clip(r.latency.samples_ms, None, bins[-1]), bins=bins, histtype="step", linewidth=1.5,
                label=f"{r.label}: p50 {r.latency.p50_ms:.3f} ms, p99 {r.latency.p99_ms:.3f} ms")
    ax.set_xlabel("latency (ms)")
    ax.set_ylabel("runs")
    ax.set_title("latency distribution (values above p99.5 in the last bin)")
    ax.legend(fontsize=8)
    for row, r in enumerate(traced, start=1):
        ax = axes[row][0]
        trace = r.power
        t0 = trace.t_ns[0]
        seconds = (trace.t_ns - t0) / 1e9
        ax.plot(seconds, trace.power_mw, linewidth=0.8, label=trace.source)
        start, end = ((w - t0) / 1e9 for w in r.run_window_ns)
        ax.axvspan(start, end, alpha=0.12, color="tab:green", label="timed runs")
        if r.idle_window_ns:
            a, b = ((w - t0) / 1e9 for w in r.idle_window_ns)
            ax.axvspan(a, b, alpha=0.12, color="tab:gray", label="idle baseline")
        starts = (r.run_starts_ns - t0) / 1e9
        step = max(1, starts.size // 2000)  # a readable number of tick marks
        bottom = float(np.nanmin(trace.power_mw)) if trace.samples else 0.0
        ax.plot(starts[::step], np.full(starts[::step].size, bottom), "|", markersize=6, color="tab:red",
                label="inference starts" + (f" (1 in {step})" if step > 1 else ""))
        title = f"{r.label}: power"
        if r.energy is not None:
            title += f", {r.energy.energy_per_inference_mj:.3f} mJ/inference (idle subtracted)"
        ax.set_title(title)
        ax.set_xlabel("time (s)")
        ax.set_ylabel("power (mW)")
        ax.legend(fontsize=8, loc="upper right")
    fig.tight_layout()
    with atomic_path(p) as tmp:
        fig.savefig(tmp, format=p.suffix.lower().lstrip("."), dpi=110)
    plt.close(fig)
    return p
