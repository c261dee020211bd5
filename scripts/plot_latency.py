#!/usr/bin/env python3
"""Plots a kvbench latency sweep: offered load vs p50/p99/p99.9 latency.

usage: plot_latency.py SWEEP.csv OUT.png [--title TITLE]

SWEEP.csv is what scripts/latency-sweep.sh writes (columns offered, achieved, p50_us,
p90_us, p99_us, p999_us, max_us, timeouts, errors, late_fraction, kept_up). Points where
kvbench fell behind its own schedule (kept_up = 0) are drawn hollow: their latency includes
kvbench's delay, not only the server's.
"""

import argparse
import csv
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("csv")
    ap.add_argument("png")
    ap.add_argument("--title", default="kvbench latency sweep")
    args = ap.parse_args()

    with open(args.csv) as f:
        rows = list(csv.DictReader(f))
    if not rows:
        sys.exit(f"{args.csv}: no data")
    rows.sort(key=lambda r: float(r["offered"]))
    offered = [float(r["offered"]) / 1000 for r in rows]
    achieved = [float(r["achieved"]) / 1000 for r in rows]
    kept = [r.get("kept_up", "1") == "1" for r in rows]

    fig, (ax, ax2) = plt.subplots(
        2, 1, figsize=(8, 7), sharex=True, gridspec_kw={"height_ratios": [3, 1]}
    )
    for col, label, color in [
        ("p50_us", "p50", "tab:blue"),
        ("p99_us", "p99", "tab:orange"),
        ("p999_us", "p99.9", "tab:red"),
    ]:
        ys = [float(r[col]) for r in rows]
        ax.plot(offered, ys, "-", color=color, label=label)
        ax.scatter(
            offered,
            ys,
            s=28,
            edgecolors=color,
            facecolors=[color if k else "none" for k in kept],
            zorder=3,
        )
    ax.set_yscale("log")
    ax.set_ylabel("latency from intended send (µs)")
    ax.set_title(args.title)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(title="hollow: kvbench behind schedule" if not all(kept) else None)

    ax2.plot(offered, offered, ":", color="grey", label="offered")
    ax2.plot(offered, achieved, "o-", color="tab:green", label="achieved")
    ax2.set_xlabel("offered load (k requests/s)")
    ax2.set_ylabel("k requests/s")
    ax2.grid(True, alpha=0.3)
    ax2.legend()
    fig.tight_layout()
    fig.savefig(args.png, dpi=120)


if __name__ == "__main__":
    main()
