#!/usr/bin/python3
"""Plot one run of bench/run.sh: each target's IOPS as a ratio to the file plugin's.

Usage: bench/plot.py [--machine machine.txt] --out PNG [--out PNG ...] SUMMARY.csv

SUMMARY.csv is what bench/report.py --csv writes (bench/results/<date>.csv).
A grouped bar chart: one group per workload, one bar per target other than
the file plugin, the bar's height the median ratio over the rounds, its
whisker the lowest and highest ratio of a round when there were several.  A
line at 1.0 (the file plugin) and, over the workloads that have one, issue
5's goal for rewind.  Needs matplotlib (Debian: python3-matplotlib).
"""

import argparse
import csv
import os
import sys

try:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
except ImportError:
    raise SystemExit("plot: matplotlib is missing: apt-get install python3-matplotlib")

COLOURS = {"rewind": "#d62728", "cow": "#1f77b4", "cow4k": "#17becf", "qcow2": "#2ca02c"}
YCAP = 3.0
SHORT = {
    "randwrite-qd1": "randwrite\nQD1", "randwrite-qd32": "randwrite\nQD32",
    "randread-qd1": "randread\nQD1", "randread-qd32": "randread\nQD32",
    "randrw-qd1": "randrw 70/30\nQD1", "randrw-qd32": "randrw 70/30\nQD32",
    "seqwrite": "seqwrite 1M\nQD8", "flush32": "randwrite\n+flush/32 QD1",
    "multiconn": "randwrite\n4 conn x QD8", "fill": "fill 1M\n+flush",
}


def num(s):
    return float(s) if s not in ("", None) else None


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--machine", help="machine.txt of the run, for the subtitle")
    ap.add_argument("--out", action="append", required=True, help="PNG to write (repeatable)")
    ap.add_argument("csv")
    args = ap.parse_args()

    with open(args.csv) as f:
        rows = [r for r in csv.DictReader(f) if r["target"] != "file" and r["workload"] != "fill"]
    rows = [r for r in rows if num(r["ratio_iops"]) is not None]
    if not rows:
        raise SystemExit(f"plot: no ratios to the file plugin in {args.csv} (was 'file' run?)")
    workloads = list(dict.fromkeys(r["workload"] for r in rows))
    targets = list(dict.fromkeys(r["target"] for r in rows))
    by = {(r["workload"], r["target"]): r for r in rows}

    fig, ax = plt.subplots(figsize=(max(8, 1.3 * len(workloads) + 2), 5.5), dpi=110)
    width = 0.8 / len(targets)
    ratios = [num(r["ratio_iops"]) for r in rows] + [num(r["ratio_max"]) or 0 for r in rows]
    ymax = min(max(1.25, max(ratios) * 1.15), YCAP)   # taller bars are cut, their label kept
    for i, t in enumerate(targets):
        xs, ys, lo, hi = [], [], [], []
        for j, w in enumerate(workloads):
            r = by.get((w, t))
            if not r:
                continue
            y = num(r["ratio_iops"])
            xs.append(j - 0.4 + width * (i + 0.5))
            ys.append(y)
            rmin, rmax = num(r["ratio_min"]), num(r["ratio_max"])
            lo.append(y - rmin if rmin is not None else 0)
            hi.append(rmax - y if rmax is not None else 0)
        several = any(v > 0 for v in lo + hi)
        ax.bar(xs, ys, width * 0.92, label=t, color=COLOURS.get(t),
               yerr=[lo, hi] if several else None, capsize=2, error_kw={"lw": 0.8})
        for x, y in zip(xs, ys):
            if y > ymax * 0.88:   # no room above: write it inside the bar
                ax.text(x, min(y, ymax) - 0.01 * ymax, f"{y:.2f}", ha="center", va="top",
                        fontsize=6, rotation=90, color="white")
            else:
                ax.text(x, y + 0.01 * ymax, f"{y:.2f}", ha="center", va="bottom", fontsize=6,
                        rotation=90)

    ax.axhline(1.0, color="black", lw=1, label="file plugin = 1.0")
    goal_drawn = False
    for j, w in enumerate(workloads):
        r = by.get((w, "rewind"))
        goal = num(r["goal"]) if r else None
        if goal is None:
            continue
        ax.hlines(goal, j - 0.45, j + 0.45, colors=COLOURS["rewind"], linestyles="dashed",
                  lw=1.5, label=None if goal_drawn else "rewind's goal (issue 5)")
        ax.text(j - 0.45, goal, f"{goal:.1f}", ha="right", va="center", fontsize=7,
                color=COLOURS["rewind"])
        goal_drawn = True

    ax.set_xticks(range(len(workloads)))
    ax.set_xticklabels([SHORT.get(w, w) for w in workloads], fontsize=8)
    ax.set_ylim(0, ymax)
    ax.set_ylabel("IOPS (= MB/s) / file plugin's, same round")
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=8, ncol=len(targets) + 2, loc="lower center", bbox_to_anchor=(0.5, 1.0),
              frameon=False)
    fig.suptitle("IOPS relative to nbdkit's file plugin in the same run (higher is better)",
                 fontsize=10)
    if args.machine and os.path.exists(args.machine):
        info = {}
        with open(args.machine) as f:
            for line in f:
                k, _, v = line.partition(":")
                info[k.strip()] = v.strip()
        sub = "; ".join(x for x in (info.get("date"), info.get("git") and "git " + info["git"],
                                    info.get("cpus"), info.get("disk"),
                                    info.get("rounds", "").split(" (")[0] + " round(s), median"
                                    if info.get("rounds") else None) if x)
        fig.text(0.5, 0.01, sub, ha="center", fontsize=7, color="#555555")
    fig.tight_layout(rect=(0, 0.03, 1, 1))
    for out in args.out:
        os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
        fig.savefig(out)
        print(f"plot: {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
