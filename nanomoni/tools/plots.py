"""PNG plots of a bench result (matplotlib, Agg backend).

Each PNG carries the numbers it plots as a `nanomoni` text chunk (JSON), so a
reader can check the picture against the result file.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # after choosing the backend


def _save(figure: Any, path: Path, plotted: dict[str, Any]) -> None:
    figure.tight_layout()
    figure.savefig(path, format="png", dpi=100, metadata={"nanomoni": json.dumps(plotted)})
    plt.close(figure)


def run_conditions(result: dict[str, Any]) -> str:
    """What a figure was measured under, for every plot's title."""
    setup = result["config"]
    return (
        f"{result['store']} store, {setup['workers']} worker(s), "
        f"{setup['concurrency']} in flight, {setup['payments']:,} payments per mode"
    )


def _bars(path: Path, title: str, ylabel: str, values: dict[str, float]) -> None:
    figure, axes = plt.subplots(figsize=(8, 4.5))
    labels = list(values)
    bars = axes.bar(labels, [values[label] for label in labels], color="tab:blue")
    axes.bar_label(bars, labels=[f"{values[label]:,.3g}" for label in labels])
    axes.set_title(title)
    axes.set_ylabel(ylabel)
    axes.tick_params(axis="x", labelrotation=20)
    _save(figure, path, values)


def write_plots(result: dict[str, Any], out: Path) -> list[Path]:
    """throughput.png, latency.png and (when CPU was measured) cpu.png."""
    runs = result["runs"]
    paths = []

    throughput = {run["label"]: run["throughput_per_s"] for run in runs}
    paths.append(out / "throughput.png")
    conditions = run_conditions(result)
    _bars(paths[-1], f"Accepted payments per second\n{conditions}", "payments/s", throughput)

    figure, axes = plt.subplots(figsize=(8, 4.5))
    plotted: dict[str, Any] = {}
    for run in runs:
        histogram = run["latency_histogram"]
        edges, counts = histogram["edges_ms"], histogram["counts"]
        if sum(counts):
            axes.stairs(counts, edges, label=run["label"])
        plotted[run["label"]] = {"edges_ms": edges, "counts": counts}
    axes.set_xscale("log")
    axes.set_xlabel("latency (ms, log scale)")
    axes.set_ylabel("payments")
    axes.set_title(f"Payment latency distribution\n{conditions}")
    axes.legend(fontsize="small")
    paths.append(out / "latency.png")
    _save(figure, paths[-1], plotted)

    # CPU per payment: one group of bars per mode, one bar per measured process.
    cpu: dict[str, dict[str, float]] = {}
    for part in ("vendor", "redis"):
        values = {
            run["label"]: run[f"{part}_cpu_us_per_payment"]
            for run in runs
            if run.get(f"{part}_cpu_us_per_payment") is not None
        }
        if values:
            cpu[part] = values
    if cpu:
        figure, axes = plt.subplots(figsize=(8, 4.5))
        labels = [run["label"] for run in runs]
        width = 0.8 / len(cpu)
        for offset, (part, values) in enumerate(cpu.items()):
            xs = [j + offset * width for j, label in enumerate(labels) if label in values]
            bars = axes.bar(xs, [values[label] for label in labels if label in values], width,
                            label=part)  # fmt: skip
            axes.bar_label(bars, fmt="%.1f", fontsize="small")
        axes.set_xticks([j + width * (len(cpu) - 1) / 2 for j in range(len(labels))], labels)
        axes.tick_params(axis="x", labelrotation=20)
        axes.set_ylabel("µs CPU / accepted payment")
        axes.set_title(f"CPU per accepted payment\n{conditions}")
        axes.legend()
        paths.append(out / "cpu.png")
        _save(figure, paths[-1], cpu)
    return paths
