#!/usr/bin/env python3
"""Plots for `kvlb lc-experiments`: reads the CSV files it wrote to DIR and writes PNGs
next to them.

usage: scripts/plot_lc.py DIR
"""

import csv
import os
import sys
from collections import defaultdict

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def read(path):
    if not os.path.exists(path):
        return []
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def num(x):
    try:
        return float(x)
    except (TypeError, ValueError):
        return float("nan")


def save(fig, out, name):
    path = os.path.join(out, name)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    print("wrote", path)


def algo_order(names):
    pref = [
        "lossy/tight",
        "lossy/classic",
        "lossy-decayed",
        "space-saving",
        "datasketches",
        "heavykeeper",
    ]
    return sorted(set(names), key=lambda n: (pref.index(n) if n in pref else len(pref), n))


def plot_thresholds(out):
    rows = read(os.path.join(out, "thresholds.csv"))
    if not rows:
        return
    keys = max(int(r["keys"]) for r in rows)
    rows = [r for r in rows if int(r["keys"]) == keys]
    alphas = [num(r["alpha"]) for r in rows]
    fig, ax = plt.subplots(figsize=(6, 4))
    for col, label in [
        ("hot_s0.2", "seed s = 0.2"),
        ("hot_n4", "4 backends, s = 1/16"),
        ("hot_n10", "10 backends, s = 1/40"),
        ("hot_n32", "32 backends, s = 1/128"),
    ]:
        ax.plot(alphas, [int(r[col]) for r in rows], marker="o", label=label)
    ax.set_xlabel("Zipf α")
    ax.set_ylabel("keys at or above s")
    ax.set_title(f"Hot keys per support ({keys} keys)")
    ax.legend()
    ax.grid(alpha=0.3)
    save(fig, out, "thresholds.png")


def plot_sweep(out):
    rows = read(os.path.join(out, "sweep.csv"))
    if not rows:
        return
    max_len = max(int(r["len"]) for r in rows)
    max_keys = max(int(r["keys"]) for r in rows)
    main = [
        r
        for r in rows
        if int(r["len"]) == max_len and int(r["keys"]) == max_keys and r["cluster"] == "n=10"
    ]
    algos = algo_order(r["algo"] for r in main)
    alphas = sorted({num(r["alpha"]) for r in main})
    by = {(r["algo"], num(r["alpha"])): r for r in main}

    # Row 1: kvlb's default support (10 backends); row 2: the smallest support swept
    # (32 backends), where the classic rule's looser test shows.
    small = min(num(r["support"]) for r in rows)
    panels = [("n=10", main, "s = 1/40 (10 backends)")]
    low = [r for r in rows if int(r["len"]) == max_len and int(r["keys"]) == max_keys and num(r["support"]) == small]
    if low and small < 0.025:
        panels.append(("low", low, f"s = {small:.4f} (32 backends)"))
    fig, axes = plt.subplots(len(panels), 2, figsize=(11, 4 * len(panels)), sharey=True, squeeze=False)
    width = 0.8 / max(1, len(algos))
    for row, (_, sel, title) in enumerate(panels):
        bys = {(r["algo"], num(r["alpha"])): r for r in sel}
        for ax, metric in zip(axes[row], ["precision", "recall"]):
            for i, a in enumerate(algos):
                xs = [j + i * width for j in range(len(alphas))]
                ys = [num(bys[(a, al)][metric]) if (a, al) in bys else 0 for al in alphas]
                ax.bar(xs, ys, width, label=a)
            ax.set_xticks([j + 0.4 - width / 2 for j in range(len(alphas))])
            ax.set_xticklabels([str(a) for a in alphas])
            ax.set_xlabel("Zipf α")
            ax.set_title(f"{metric}, {title}")
            ax.set_ylim(0, 1.05)
            ax.grid(axis="y", alpha=0.3)
    axes[0][0].legend(fontsize=7, loc="lower left")
    fig.suptitle(f"Precision / recall, N = {max_len}, {max_keys} keys")
    save(fig, out, "precision_recall.png")

    fig, axes = plt.subplots(1, 3, figsize=(14, 4))
    for a in algos:
        pts = [(al, by[(a, al)]) for al in alphas if (a, al) in by]
        axes[0].plot([p[0] for p in pts], [num(p[1]["entries_peak"]) for p in pts], marker="o", label=a)
        axes[1].plot([p[0] for p in pts], [num(p[1]["bytes"]) / 1024 for p in pts], marker="o", label=a)
        axes[2].plot([p[0] for p in pts], [num(p[1]["mups_wall"]) for p in pts], marker="o", label=a)
    axes[0].set_ylabel("peak entries")
    axes[0].set_yscale("log")
    axes[1].set_ylabel("KiB held")
    axes[2].set_ylabel("M updates/s (wall)")
    for ax in axes:
        ax.set_xlabel("Zipf α")
        ax.grid(alpha=0.3)
    axes[2].legend(fontsize=7)
    fig.suptitle(f"Memory and speed, N = {max_len}, {max_keys} keys, s = 1/40")
    save(fig, out, "memory_speed.png")

    # Memory against the support (cluster size) at the largest N / key count.
    sup = [r for r in rows if int(r["len"]) == max_len and int(r["keys"]) == max_keys]
    fig, ax = plt.subplots(figsize=(6, 4))
    for a in algos:
        pts = sorted(
            {(num(r["support"]), num(r["entries_peak"])) for r in sup if r["algo"] == a and num(r["alpha"]) == 0.99}
        )
        if pts:
            ax.plot([1 / p[0] for p in pts], [p[1] for p in pts], marker="o", label=a)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("1/s (= 4 × backends)")
    ax.set_ylabel("peak entries")
    ax.set_title("Memory vs support, Zipf 0.99")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    save(fig, out, "memory_vs_support.png")


def plot_drift(out):
    rows = read(os.path.join(out, "drift.csv"))
    if not rows:
        return
    alphas = sorted({num(r["alpha"]) for r in rows})
    fig, axes = plt.subplots(2, len(alphas), figsize=(6 * len(alphas), 7), squeeze=False)
    for j, al in enumerate(alphas):
        sel = [r for r in rows if num(r["alpha"]) == al]
        algos = algo_order(r["algo"] for r in sel)
        tmax = max(num(r["t_epochs"]) for r in sel)
        change = (int(tmax) // 2) + 0.5
        for a in algos:
            pts = [(num(r["t_epochs"]), num(r["recall"]), num(r["precision"])) for r in sel if r["algo"] == a]
            axes[0][j].plot([p[0] for p in pts], [p[1] for p in pts], label=a)
            axes[1][j].plot([p[0] for p in pts], [p[2] for p in pts], label=a)
        for i, metric in enumerate(["recall", "precision"]):
            ax = axes[i][j]
            ax.axvline(change, color="grey", linestyle="--", linewidth=1)
            ax.set_ylim(-0.05, 1.05)
            ax.set_ylabel(metric)
            ax.set_xlabel("time (epochs)")
            ax.grid(alpha=0.3)
            ax.set_title(f"Zipf {al}: {metric} vs the last epoch's hot set")
        axes[0][j].legend(fontsize=7, loc="lower left")
    save(fig, out, "drift.png")


def plot_weighted(out):
    rows = read(os.path.join(out, "weighted.csv"))
    if not rows:
        return
    alphas = sorted({num(r["alpha"]) for r in rows})
    algos = []
    for r in rows:
        if r["algo"] not in algos:
            algos.append(r["algo"])
    by = {(r["algo"], num(r["alpha"])): r for r in rows}
    fig, axes = plt.subplots(1, 2, figsize=(11, 4), sharey=True)
    width = 0.8 / max(1, len(algos))
    for ax, metric in zip(axes, ["precision", "recall"]):
        for i, a in enumerate(algos):
            xs = [j + i * width for j in range(len(alphas))]
            ys = [num(by[(a, al)][metric]) if (a, al) in by else 0 for al in alphas]
            ax.bar(xs, ys, width, label=a)
        ax.set_xticks([j + 0.4 - width / 2 for j in range(len(alphas))])
        ax.set_xticklabels([str(a) for a in alphas])
        ax.set_xlabel("Zipf α")
        ax.set_title(metric + " (hot = 1/40 of the bytes)")
        ax.set_ylim(0, 1.05)
        ax.grid(axis="y", alpha=0.3)
    axes[1].legend(fontsize=7, loc="lower right")
    save(fig, out, "weighted.png")


def plot_bench(out):
    rows = read(os.path.join(out, "bench.csv"))
    if not rows:
        return
    by = defaultdict(lambda: {"wall": [], "cpu": []})
    names = []
    for r in rows:
        if r["name"] not in names:
            names.append(r["name"])
        by[r["name"]]["wall"].append(num(r["mups_wall"]))
        c = num(r["mups_cpu"])
        if c == c:
            by[r["name"]]["cpu"].append(c)

    def median(v):
        v = sorted(x for x in v if x == x)
        if not v:
            return float("nan")
        m = len(v) // 2
        return v[m] if len(v) % 2 else (v[m - 1] + v[m]) / 2

    names = [n for n in names if n != "lossy/heat-query"]
    fig, ax = plt.subplots(figsize=(9, 4))
    xs = range(len(names))
    ax.bar([x - 0.2 for x in xs], [median(by[n]["wall"]) for n in names], 0.4, label="wall clock")
    ax.bar([x + 0.2 for x in xs], [median(by[n]["cpu"]) for n in names], 0.4, label="thread CPU time")
    ax.set_xticks(list(xs))
    ax.set_xticklabels(names, rotation=20, ha="right", fontsize=8)
    ax.set_ylabel("M updates/s (median of rounds)")
    ax.set_title("Update rate, Zipf 1.0, 10^6 keys, same run")
    ax.grid(axis="y", alpha=0.3)
    ax.legend()
    save(fig, out, "bench.png")


def main():
    if len(sys.argv) != 2:
        print(__doc__, file=sys.stderr)
        sys.exit(2)
    out = sys.argv[1]
    plot_thresholds(out)
    plot_sweep(out)
    plot_drift(out)
    plot_weighted(out)
    plot_bench(out)


if __name__ == "__main__":
    main()
