#!/usr/bin/env python3
"""Turns a scripts/demo.sh output folder into report.md, report.json and PNG plots.

Reads, per phase folder: kvbench.json (kvbench's summary, with the servers' own counter
differences in server_stats[]), servers.csv (each memcached server's cmd_get/cmd_set per
second), kvbench.csv (throughput and latency per second) and kvlb.jsonl (kvlb's stats,
one JSON object per second).

Load balance is judged by the servers' own counters (cmd_get + cmd_set), never by kvlb's
or kvbench's claims.
"""
import argparse
import csv
import json
import os
import sys
from collections import defaultdict

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

WORKLOADS = [
    ("zipf0.99", "Zipf 0.99"),
    ("zipf1.2", "Zipf 1.2"),
    ("shift", "Zipf 0.99, hot set moves half-way"),
]
OFF, ON = "#9e9e9e", "#1f77b4"


def load_phase(d):
    ph = {"dir": d}
    with open(os.path.join(d, "kvbench.json")) as f:
        ph["kb"] = json.load(f)
    ph["servers"] = defaultdict(dict)  # second -> server -> load
    p = os.path.join(d, "servers.csv")
    if os.path.exists(p):
        with open(p) as f:
            for row in csv.DictReader(f):
                sec = int(float(row["second"]))
                load = int(row["cmd_get"]) + int(row.get("cmd_set", 0) or 0)
                ph["servers"][sec][row["server"]] = load
    ph["series"] = []
    p = os.path.join(d, "kvbench.csv")
    if os.path.exists(p):
        with open(p) as f:
            ph["series"] = [r for r in csv.DictReader(f)]
    ph["kvlb"] = []
    p = os.path.join(d, "kvlb.jsonl")
    if os.path.exists(p):
        with open(p) as f:
            ph["kvlb"] = [json.loads(line) for line in f if line.strip()]
    return ph


def server_loads(ph):
    """Per-server requests over the whole measured run, from the servers' own stats."""
    out = []
    for s in ph["kb"].get("server_stats", []):
        out.append((s["server"], s.get("cmd_get", 0) + s.get("cmd_set", 0)))
    return out


def imbalance(loads):
    vals = [v for v in loads if v is not None]
    if not vals or sum(vals) == 0:
        return float("nan")
    return max(vals) / (sum(vals) / len(vals))


def per_second_imbalance(ph):
    xs, ys = [], []
    for sec in sorted(ph["servers"]):
        loads = list(ph["servers"][sec].values())
        if len(loads) and sum(loads) > 0:
            xs.append(sec)
            ys.append(imbalance(loads))
    return xs, ys


def summary(ph):
    kb = ph["kb"]
    loads = [v for _, v in server_loads(ph)]
    lat = kb.get("latency_us", {})
    val = kb.get("validation", {})
    cache = {}
    if ph["kvlb"]:
        last = ph["kvlb"][-1]
        c = last.get("cache", {})
        lookups = c.get("l1_hits", 0) + c.get("l2_hits", 0) + c.get("misses", 0)
        cache = {
            "l1_hits": c.get("l1_hits", 0),
            "l2_hits": c.get("l2_hits", 0),
            "cache_hit_ratio": (c.get("l1_hits", 0) + c.get("l2_hits", 0)) / lookups if lookups else 0.0,
            "hot_keys": len(last.get("hot_keys", [])),
            "replica_reads": last.get("replication", {}).get("replica_reads", 0),
            "balance_reads": last.get("replication", {}).get("balance_reads", 0),
            "drops": last.get("drops", {}),
        }
    return {
        "ops_per_sec": kb.get("ops_per_sec", 0.0),
        "p50_us": lat.get("p50"),
        "p99_us": lat.get("p99"),
        "p999_us": lat.get("p999"),
        "hit_ratio": kb.get("hit_ratio"),
        "errors": kb.get("errors", 0),
        "timeouts": kb.get("timeouts", 0),
        "stale": val.get("stale", 0),
        "corrupt": val.get("corrupt", 0),
        "server_loads": loads,
        "backend_total": sum(loads),
        "imbalance": imbalance(loads),
        **cache,
    }


def plot_server_loads(phases, path):
    present = [(w, t) for w, t in WORKLOADS if f"{w}-off" in phases and f"{w}-on" in phases]
    if not present:
        return False
    fig, axes = plt.subplots(1, len(present), figsize=(5.2 * len(present), 4.2), squeeze=False)
    for ax, (w, title) in zip(axes[0], present):
        off = server_loads(phases[f"{w}-off"])
        on = server_loads(phases[f"{w}-on"])
        secs_off = phases[f"{w}-off"]["kb"].get("duration_s") or 1
        secs_on = phases[f"{w}-on"]["kb"].get("duration_s") or 1
        n = len(off)
        xs = list(range(n))
        ax.bar([x - 0.2 for x in xs], [v / secs_off / 1000 for _, v in off], 0.4, color=OFF,
               label=f"hot-key handling off (max/mean {imbalance([v for _, v in off]):.2f})")
        ax.bar([x + 0.2 for x in xs], [v / secs_on / 1000 for _, v in on], 0.4, color=ON,
               label=f"on (max/mean {imbalance([v for _, v in on]):.2f})")
        mean_on = sum(v for _, v in on) / max(1, n) / secs_on / 1000
        ax.axhline(mean_on, color=ON, lw=0.8, ls="--")
        ax.set_xticks(xs)
        ax.set_xticklabels([f"s{i}" for i in xs])
        ax.set_xlabel("memcached server")
        ax.set_ylabel("requests/s served (thousands)")
        ax.set_title(title)
        ax.legend(fontsize=8, loc="upper right")
    fig.suptitle("Load on each memcached server (from the servers' own stats)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def plot_over_time(phases, path):
    present = [(w, t) for w, t in WORKLOADS if f"{w}-on" in phases]
    if not present:
        return False
    fig, axes = plt.subplots(2, len(present), figsize=(5.2 * len(present), 6.5), squeeze=False, sharex="col")
    for col, (w, title) in enumerate(present):
        ax = axes[0][col]
        for tag, color, label in (("off", OFF, "off"), ("on", ON, "on")):
            name = f"{w}-{tag}"
            if name in phases:
                xs, ys = per_second_imbalance(phases[name])
                ax.plot(xs, ys, color=color, marker=".", label=f"hot-key handling {label}")
        ax.axhline(1.10, color="#d62728", lw=0.8, ls=":", label="1.10")
        ax.set_ylabel("backend max/mean load")
        ax.set_title(title)
        ax.legend(fontsize=8)
        ax = axes[1][col]
        # The last line of a run covers the fraction of a second before kvlb stopped: too
        # short a window for a ratio, so it is left out of the plot.
        on = [r for r in phases[f"{w}-on"]["kvlb"] if r.get("interval", {}).get("seconds", 1) >= 0.5]
        if on:
            t0 = on[0]["uptime_s"]
            xs = [r["uptime_s"] - t0 for r in on]
            ax.plot(xs, [100 * r["interval"]["l1_hit_ratio"] for r in on], color="#2ca02c", label="L1 (hot keys)")
            ax.plot(xs, [100 * r["interval"]["l2_hit_ratio"] for r in on], color="#ff7f0e", label="L2 (warm keys)")
            ax.plot(xs, [100 * (r["interval"]["l1_hit_ratio"] + r["interval"]["l2_hit_ratio"]) for r in on],
                    color="black", lw=0.8, label="both")
        shifts = phases[f"{w}-on"]["kb"].get("config", {}).get("shift_at_s") or []
        for t in shifts:
            for a in (axes[0][col], axes[1][col]):
                a.axvline(t, color="#d62728", lw=0.8, ls="--")
            axes[0][col].text(t, axes[0][col].get_ylim()[1], " hot set moves", color="#d62728",
                              fontsize=8, va="top")
        ax.set_ylabel("GETs answered by kvlb's cache (%)")
        ax.set_xlabel("seconds")
        ax.legend(fontsize=8)
    fig.suptitle("Balance and cache over time")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def plot_hot_keys(phases, path):
    name = "shift-on" if "shift-on" in phases else next((n for n in phases if n.endswith("-on")), None)
    if not name or not phases[name]["kvlb"]:
        return False
    rows = phases[name]["kvlb"]
    t0 = rows[0]["uptime_s"]
    first_seen = {}
    points = []
    for r in rows:
        t = r["uptime_s"] - t0
        for h in r.get("hot_keys", []):
            first_seen.setdefault(h["key"], len(first_seen))
            points.append((t, h["key"], h["estimate"]))
    if not points:
        return False
    keys = sorted(first_seen, key=first_seen.get)[:40]
    ypos = {k: i for i, k in enumerate(keys)}
    fig, ax = plt.subplots(figsize=(9, 0.22 * len(keys) + 1.8))
    xs = [p[0] for p in points if p[1] in ypos]
    ys = [ypos[p[1]] for p in points if p[1] in ypos]
    ax.scatter(xs, ys, s=14, marker="s", color=ON)
    ax.set_yticks(range(len(keys)))
    ax.set_yticklabels(keys, fontsize=7)
    ax.invert_yaxis()
    ax.set_xlabel("seconds")
    ax.set_title(f"Hot keys kvlb found over time ({name}; one mark per key per second)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def plot_throughput_latency(phases, summaries, path):
    present = [(w, t) for w, t in WORKLOADS if f"{w}-off" in phases and f"{w}-on" in phases]
    if not present:
        return False
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(11, 4))
    xs = list(range(len(present)))
    off = [summaries[f"{w}-off"] for w, _ in present]
    on = [summaries[f"{w}-on"] for w, _ in present]
    a1.bar([x - 0.2 for x in xs], [s["ops_per_sec"] / 1000 for s in off], 0.4, color=OFF, label="off")
    a1.bar([x + 0.2 for x in xs], [s["ops_per_sec"] / 1000 for s in on], 0.4, color=ON, label="on")
    a1.set_ylabel("requests/s through kvlb (thousands)")
    a1.set_xticks(xs)
    a1.set_xticklabels([t for _, t in present], fontsize=8)
    a1.legend()
    a1.set_title("Throughput")
    width = 0.2
    for i, (pct, hatch) in enumerate((("p50_us", ""), ("p99_us", "//"))):
        a2.bar([x - 0.3 + i * width for x in xs], [(s[pct] or 0) / 1000 for s in off], width, color=OFF,
               hatch=hatch, label=f"off {pct[:-3]}")
        a2.bar([x + 0.1 + i * width for x in xs], [(s[pct] or 0) / 1000 for s in on], width, color=ON,
               hatch=hatch, label=f"on {pct[:-3]}")
    a2.set_ylabel("latency (ms)")
    a2.set_xticks(xs)
    a2.set_xticklabels([t for _, t in present], fontsize=8)
    a2.legend(fontsize=8)
    a2.set_title("Latency (kvbench, from the intended send time)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def recovery_seconds(ph, shift_at, limit=1.10):
    """Seconds after the shift until the servers' per-second max/mean is back ≤ limit."""
    xs, ys = per_second_imbalance(ph)
    for x, y in zip(xs, ys):
        if x > shift_at and y <= limit:
            return x - shift_at
    return None


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("out")
    ap.add_argument("--mode", default="serve")
    ap.add_argument("--servers", type=int, default=8)
    ap.add_argument("--keys", type=int, default=0)
    ap.add_argument("--duration", type=int, default=0)
    ap.add_argument("--elapsed", type=int, default=0)
    ap.add_argument("--setup", type=int, default=0, help="seconds spent installing and building before the run")
    a = ap.parse_args()

    phases = {}
    order = {f"{w}-{t}": i for i, (w, t) in enumerate((w, t) for w, _ in WORKLOADS for t in ("off", "on"))}
    for name in sorted(os.listdir(a.out), key=lambda n: (order.get(n, len(order)), n)):
        d = os.path.join(a.out, name)
        if os.path.isfile(os.path.join(d, "kvbench.json")):
            phases[name] = load_phase(d)
    if not phases:
        sys.exit(f"demo_report: no phases under {a.out}")
    summaries = {n: summary(p) for n, p in phases.items()}
    shift_at = a.duration // 2
    recovery = {}
    for tag in ("off", "on"):
        if f"shift-{tag}" in phases:
            recovery[tag] = recovery_seconds(phases[f"shift-{tag}"], shift_at)

    plots = []
    for fname, ok in (
        ("per_server_load.png", plot_server_loads(phases, os.path.join(a.out, "per_server_load.png"))),
        ("balance_and_cache_over_time.png", plot_over_time(phases, os.path.join(a.out, "balance_and_cache_over_time.png"))),
        ("hot_keys.png", plot_hot_keys(phases, os.path.join(a.out, "hot_keys.png"))),
        ("throughput_latency.png", plot_throughput_latency(phases, summaries, os.path.join(a.out, "throughput_latency.png"))),
    ):
        if ok:
            plots.append(fname)

    report = {
        "datapath": a.mode,
        "servers": a.servers,
        "keys": a.keys,
        "seconds_per_phase": a.duration,
        "elapsed_s": a.elapsed,
        "setup_s": a.setup,
        "phases": summaries,
        "shift_recovery_s": recovery,
        "plots": plots,
    }
    with open(os.path.join(a.out, "report.json"), "w") as f:
        json.dump(report, f, indent=2)

    where = {
        "serve": "on loopback",
        "serve-tcp": "on loopback, clients over TCP",
        "dpdk": "in a network namespace behind kvlb's DPDK ports (net_af_packet on veths)",
        "onvm": "in a network namespace behind the ONVM manager's TAP ports",
    }.get(a.mode, "")
    lines = [
        "# kvlb demo",
        "",
        f"{a.servers} memcached servers {where}, {a.keys:,} keys (100-byte values), 95% GETs, "
        f"kvbench through kvlb (`{a.mode}` datapath), {a.duration} s per phase; "
        f"the run took {a.elapsed} s"
        + (f" (after {a.setup} s installing and building)" if a.setup else "")
        + ". Backend load is what the memcached servers themselves counted "
        "(cmd_get + cmd_set).",
        "",
        "| phase | requests/s | p50 µs | p99 µs | backend max/mean | kvlb cache answered | hot keys | stale/corrupt |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for n, s in summaries.items():
        cache = f"{100 * s['cache_hit_ratio']:.1f}%" if "cache_hit_ratio" in s and n.endswith("-on") else "—"
        hot = str(s.get("hot_keys", "—")) if n.endswith("-on") else "—"
        lines.append(
            f"| {n} | {s['ops_per_sec']:,.0f} | {s['p50_us'] or 0:,.0f} | {s['p99_us'] or 0:,.0f} | "
            f"{s['imbalance']:.2f} | {cache} | {hot} | {s['stale']}/{s['corrupt']} |"
        )
    lines.append("")
    for w, title in WORKLOADS:
        if f"{w}-off" in summaries and f"{w}-on" in summaries:
            off, on = summaries[f"{w}-off"], summaries[f"{w}-on"]
            lines.append(
                f"- **{title}**: busiest server at {off['imbalance']:.2f}× the mean without hot-key handling, "
                f"{on['imbalance']:.2f}× with it; throughput {on['ops_per_sec'] / max(off['ops_per_sec'], 1):.2f}×, "
                f"p99 {((on['p99_us'] or 0) / max(off['p99_us'] or 1, 1)):.2f}×."
            )
    if "on" in recovery:
        r = recovery["on"]
        lines.append(
            f"- **Hot set moved at {shift_at} s**: per-second max/mean back at or below 1.10 "
            + (f"{r} s later." if r is not None else "not within the run.")
        )
    bad = sum(s["stale"] + s["corrupt"] for s in summaries.values())
    lines.append(f"- **Consistency**: {bad} stale or corrupt values read in the whole run (kvbench checks every value).")
    lines.append("")
    for p in plots:
        lines.append(f"![{p}]({p})")
        lines.append("")
    text = "\n".join(lines)
    with open(os.path.join(a.out, "report.md"), "w") as f:
        f.write(text + "\n")
    print(text)


if __name__ == "__main__":
    main()
