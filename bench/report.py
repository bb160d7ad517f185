#!/usr/bin/python3
"""Summarise one run of bench/run.sh: the table, and optionally CSV files.

Usage: bench/report.py [--csv FILE] [--runs-csv FILE] [--markdown] RAWDIR

RAWDIR holds fio's JSON (--output-format=json) of every measurement and of
the fill before it, schedule.tsv (which file is which: round, position,
workload, target), machine.txt and, for rewind, `rewind info --json` of the
store after each measurement.  Result folders of the older two-target
bench/run.sh (TARGET-WORKLOAD.json, no schedule.tsv) are read as one round.

Every figure is the median over the rounds.  A ratio is the median over the
rounds of (target / file plugin, same round and workload): IOPS and MB/s give
the same ratio (same block size), latency ratios above 1 mean slower than the
file plugin.  MB/s is 10^6 bytes per second; latencies are fio's total
latency (`lat`, submission to completion) in microseconds.  Randrw figures
count reads and writes together.  Only the standard library is used, so
Debian's /usr/bin/python3 runs it as is.
"""

import argparse
import csv
import json
import os
import re
import signal
import statistics
import sys

TARGET_ORDER = ("file", "rewind", "cow", "cow4k", "qcow2")
WORKLOADS = {
    # name: (description, latency shown in the table)
    "randwrite-qd1": ("4 KiB random write, QD1", True),
    "randwrite-qd32": ("4 KiB random write, QD32", False),
    "randread-qd1": ("4 KiB random read, QD1", True),
    "randread-qd32": ("4 KiB random read, QD32", False),
    "randrw-qd1": ("4 KiB random 70% read / 30% write, QD1", True),
    "randrw-qd32": ("4 KiB random 70% read / 30% write, QD32", False),
    "seqwrite": ("1 MiB sequential write, QD8", False),
    "flush32": ("4 KiB random write, flush every 32, QD1", True),
    "multiconn": ("4 KiB random write, 4 connections x QD8", False),
    "fill": ("fill: 1 MiB sequential write, QD8 + flush", False),
}
# Issue 5's goals for rewind, as a fraction of the file plugin's IOPS.
GOALS = {"randwrite-qd32": 0.7, "randread-qd32": 0.9, "seqwrite": 0.5}
# The two-target bench/run.sh named its workloads differently.
OLD_NAMES = {"randread": "randread-qd32", "randwrite": "randwrite-qd32",
             "seqwrite": "seqwrite", "fill": "fill"}


def pct(lat, p):
    return lat.get("percentile", {}).get(p)


def load(path):
    """The figures of the (group-reported) job in fio's JSON file PATH."""
    with open(path) as f:
        data = json.load(f)
    job = data["jobs"][0]
    if job.get("error"):
        raise SystemExit(f"report: {path}: fio reported error {job['error']}")
    dirs = [d for d in ("read", "write") if job[d]["total_ios"] > 0]
    if not dirs:
        raise SystemExit(f"report: {path}: no I/O was done")
    r = {
        "iops": sum(job[d]["iops"] for d in dirs),
        "mbps": sum(job[d]["bw_bytes"] for d in dirs) / 1e6,
        "read_iops": job["read"]["iops"],
        "write_iops": job["write"]["iops"],
        "flushes": job.get("sync", {}).get("total_ios", 0),
        "writes": job["write"]["total_ios"],
    }
    # Latency: fio's `lat` (total) percentiles when run with lat_percentiles=1,
    # else `clat`'s (older result folders).  A mixed workload's combined
    # latency is fio's `mixed` section when there is one (unified_rw_reporting),
    # else that of the direction with more I/Os.
    def lat_of(section):
        lat = section["lat_ns"] if "percentile" in section["lat_ns"] else section.get("clat_ns", {})
        mean = section["lat_ns"]["mean"] / 1e3
        p50, p99 = pct(lat, "50.000000"), pct(lat, "99.000000")
        return mean, (p50 / 1e3 if p50 else None), (p99 / 1e3 if p99 else None)

    for d in ("read", "write"):
        if d in dirs:
            _, r[f"{d}_p50_us"], r[f"{d}_p99_us"] = lat_of(job[d])
        else:
            r[f"{d}_p50_us"] = r[f"{d}_p99_us"] = None
    if len(dirs) == 2 and "mixed" in job:
        main = job["mixed"]
    else:
        main = job[max(dirs, key=lambda d: job[d]["total_ios"])]
    r["lat_mean_us"], r["lat_p50_us"], r["lat_p99_us"] = lat_of(main)
    return r


def samples_from_schedule(rawdir):
    """[(round, position, workload, target, started, load1, kind, result)]."""
    out = []
    with open(os.path.join(rawdir, "schedule.tsv")) as f:
        for row in csv.DictReader(f, delimiter="\t"):
            for kind, col in (("fill", "fill"), (row["workload"], "result")):
                path = os.path.join(rawdir, row[col])
                if os.path.exists(path):
                    out.append({"round": int(row["round"]), "position": int(row["position"]),
                                "slot": row["workload"], "workload": kind,
                                "target": row["target"], "started": row["started"],
                                "load1": row["load1"], "file": row[col],
                                **load(path)})
    return out


def samples_from_old_layout(rawdir):
    out = []
    for name in sorted(os.listdir(rawdir)):
        m = re.fullmatch(r"([a-z0-9]+)-([a-z0-9-]+)\.json", name)
        if not m or m.group(2) not in OLD_NAMES:
            continue
        w = OLD_NAMES[m.group(2)]
        out.append({"round": 1, "position": "", "slot": "all", "workload": w,
                    "target": m.group(1), "started": "", "load1": "", "file": name,
                    **load(os.path.join(rawdir, name))})
    return out


def median(values):
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


def summarise(samples):
    """One row per (workload, target): medians, and paired ratios to `file`."""
    workloads = [w for w in WORKLOADS if any(s["workload"] == w for s in samples)]
    workloads += sorted({s["workload"] for s in samples} - set(workloads))
    known = [t for t in TARGET_ORDER if any(s["target"] == t for s in samples)]
    targets = known + sorted({s["target"] for s in samples} - set(known))
    base = {(s["workload"], s["round"], s["slot"]): s for s in samples if s["target"] == "file"}
    rows = []
    for w in workloads:
        for t in targets:
            mine = [s for s in samples if s["workload"] == w and s["target"] == t]
            if not mine:
                continue
            row = {"workload": w, "description": WORKLOADS.get(w, (w, False))[0], "target": t,
                   "samples": len(mine), "show_latency": WORKLOADS.get(w, (w, False))[1]}
            for key in ("iops", "mbps", "read_iops", "write_iops", "lat_mean_us", "lat_p50_us",
                        "lat_p99_us", "read_p50_us", "read_p99_us", "write_p50_us",
                        "write_p99_us"):
                row[key] = median([s[key] for s in mine])
            row["flushes"] = median([s["flushes"] for s in mine])
            row["writes_per_flush"] = median([s["writes"] / s["flushes"] for s in mine
                                              if s["flushes"]])
            ratios = {"iops": [], "mbps": [], "lat_p50_us": [], "lat_p99_us": []}
            for s in mine:
                f = base.get((w, s["round"], s["slot"]))
                if not f:
                    continue
                for key in ratios:
                    if s[key] is not None and f[key]:
                        ratios[key].append(s[key] / f[key])
            row["ratio_iops"] = median(ratios["iops"])
            row["ratio_mbps"] = median(ratios["mbps"])
            row["ratio_p50"] = median(ratios["lat_p50_us"])
            row["ratio_p99"] = median(ratios["lat_p99_us"])
            row["ratio_min"] = min(ratios["iops"]) if ratios["iops"] else None
            row["ratio_max"] = max(ratios["iops"]) if ratios["iops"] else None
            row["goal"] = GOALS.get(w) if t == "rewind" else None
            row["goal_met"] = (None if row["goal"] is None or row["ratio_iops"] is None
                               else row["ratio_iops"] >= row["goal"])
            rows.append(row)
    return rows


def fmt(v, spec, suffix=""):
    return "-" if v is None else format(v, spec) + suffix


def table(rows):
    rounds = max(r["samples"] for r in rows if r["workload"] != "fill")
    header = ["workload", "target", "IOPS", "MB/s", "x file"]
    if rounds > 1:
        header.append("range")
    header += ["p50 us", "x file", "p99 us", "x file", "goal"]
    lines, last = [], None
    for r in rows:
        lat = r["show_latency"]
        line = [r["description"] if r["workload"] != last else "", r["target"],
                fmt(r["iops"], ",.0f"), fmt(r["mbps"], ",.1f"), fmt(r["ratio_iops"], ".2f", "x")]
        if rounds > 1:
            line.append("" if r["ratio_min"] is None or r["target"] == "file"
                        else f"{r['ratio_min']:.2f}-{r['ratio_max']:.2f}")
        line += [fmt(r["lat_p50_us"], ",.0f") if lat else "",
                 fmt(r["ratio_p50"], ".2f", "x") if lat else "",
                 fmt(r["lat_p99_us"], ",.0f") if lat else "",
                 fmt(r["ratio_p99"], ".2f", "x") if lat else "",
                 "" if r["goal"] is None else
                 f">= {r['goal']:.1f}: " + ("-" if r["goal_met"] is None
                                            else "met" if r["goal_met"] else "NOT met")]
        lines.append(line)
        last = r["workload"]
    return header, lines


def human_bytes(n):
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if n < 1024 or unit == "TiB":
            return f"{n:.1f} {unit}" if unit != "B" else f"{n} B"
        n /= 1024


def rewind_infos(rawdir):
    """Store sizes after each measurement of round 1 (schedule order)."""
    out = []
    old = os.path.join(rawdir, "rewind-info.json")
    if os.path.exists(old):
        out.append(("all workloads", old))
    path = os.path.join(rawdir, "schedule.tsv")
    if os.path.exists(path):
        with open(path) as f:
            for row in csv.DictReader(f, delimiter="\t"):
                p = os.path.join(rawdir, f"r{row['round']}-{row['workload']}-rewind-info.json")
                if row["target"] == "rewind" and row["round"] == "1" and os.path.exists(p):
                    out.append((row["workload"], p))
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--csv", help="write the summary (one row per workload and target) here")
    ap.add_argument("--runs-csv", help="write every measurement and fill, in run order, here")
    ap.add_argument("--markdown", action="store_true", help="print a Markdown table")
    ap.add_argument("rawdir")
    args = ap.parse_args()
    signal.signal(signal.SIGPIPE, signal.SIG_DFL)   # quiet under `| head`

    if os.path.exists(os.path.join(args.rawdir, "schedule.tsv")):
        samples = samples_from_schedule(args.rawdir)
    else:
        samples = samples_from_old_layout(args.rawdir)
    if not samples:
        raise SystemExit(f"report: no fio results in {args.rawdir}")
    rows = summarise(samples)

    header, lines = table(rows)
    if args.markdown:
        header = [h.replace(" us", " µs") for h in header]
        print("| " + " | ".join(header) + " |")
        print("|" + "|".join(["---", "---"] + ["---:"] * (len(header) - 2)) + "|")
        for line in lines:
            print("| " + " | ".join(line) + " |")
    else:
        widths = [max(len(x) for x in col) for col in zip(header, *lines)]
        spec = "  ".join(["{:<%d}" % widths[0], "{:<%d}" % widths[1]] +
                         ["{:>%d}" % w for w in widths[2:]])
        print(spec.format(*header).rstrip())
        for line in lines:
            print(spec.format(*line).rstrip())
    print()
    print("Figures: medians over the rounds; x file: median of (target / file plugin) in the "
          "same round;\nlatency (p50, p99: fio's total latency, us) shown for queue depth 1; "
          "all of it in the CSV.")
    flush = [r for r in rows if r["workload"] == "flush32" and r["flushes"]]
    if flush:
        print("flush32, writes per flush (should be 32): " +
              ", ".join(f"{r['target']} {r['writes_per_flush']:.1f}" for r in flush))

    infos = rewind_infos(args.rawdir)
    if infos:
        print()
        print("rewind store after each measurement of round 1 (`rewind info --json`):")
        for what, p in infos:
            with open(p) as f:
                info = json.load(f)
            print(f"  {what}: redo {human_bytes(info['redo_bytes'])} in "
                  f"{info['redo_records']:,} records, undo {human_bytes(info['undo_bytes'])} in "
                  f"{info['undo_records']:,} records")

    if args.csv:
        fields = ["workload", "description", "target", "samples", "iops", "mbps",
                  "lat_mean_us", "lat_p50_us", "lat_p99_us", "read_iops", "write_iops",
                  "read_p50_us", "read_p99_us", "write_p50_us", "write_p99_us", "flushes",
                  "writes_per_flush", "ratio_iops", "ratio_mbps", "ratio_p50", "ratio_p99",
                  "ratio_min", "ratio_max", "goal", "goal_met"]
        decimals = {"iops": 0, "read_iops": 0, "write_iops": 0, "flushes": 0, "mbps": 1}
        with open(args.csv, "w", newline="") as out:
            wr = csv.writer(out)
            wr.writerow(fields)
            for r in rows:
                line = []
                for k in fields:
                    v = r[k]
                    if v is None:
                        line.append("")
                    elif isinstance(v, bool):
                        line.append("yes" if v else "no")
                    elif isinstance(v, float):
                        d = decimals.get(k, 3 if k.startswith(("ratio", "goal")) else 1)
                        line.append(f"{v:.{d}f}")
                    else:
                        line.append(v)
                wr.writerow(line)

    if args.runs_csv:
        fields = ["round", "position", "started", "load1", "workload", "target", "iops", "mbps",
                  "lat_mean_us", "lat_p50_us", "lat_p99_us", "flushes", "file"]
        with open(args.runs_csv, "w", newline="") as out:
            wr = csv.writer(out)
            wr.writerow(fields)
            for s in samples:
                wr.writerow([f"{s[k]:.1f}" if isinstance(s[k], float) else
                             ("" if s[k] is None else s[k]) for k in fields])
    return 0


if __name__ == "__main__":
    sys.exit(main())
