#!/usr/bin/python3
"""Summarise one run of bench/run.sh: the table, and optionally a CSV.

Usage: bench/report.py [--csv FILE] [--markdown] RAWDIR

RAWDIR holds TARGET-WORKLOAD.json files written by fio --output-format=json
(TARGET is `file` or `rewind`), machine.txt and, when rewind ran,
rewind-info.json.  MB/s is 10^6 bytes per second.  The ratio is rewind's IOPS
over the file plugin's.  Only the standard library is used, so Debian's
/usr/bin/python3 runs it as is.
"""

import argparse
import csv
import json
import os
import sys

TARGETS = ("file", "rewind")
# Measured workloads first, in the order run.sh runs them; `fill` is the
# untimed preconditioning pass (whole disk, then one flush).
WORKLOADS = ("randread", "randwrite", "seqwrite", "fill")


def load(path):
    """Returns the fio result of the job in PATH: direction, iops, MB/s, latencies."""
    with open(path) as f:
        data = json.load(f)
    job = data["jobs"][0]
    if job.get("error"):
        raise SystemExit(f"report: {path}: fio reported error {job['error']}")
    opts = job["job options"]
    direction = "read" if "read" in opts["rw"] else "write"
    res = job[direction]
    pct = res.get("clat_ns", {}).get("percentile", {})
    return {
        "rw": opts["rw"],
        "bs": opts["bs"],
        "iodepth": opts.get("iodepth", "1"),
        "iops": res["iops"],
        "mbps": res["bw_bytes"] / 1e6,
        "lat_mean_us": res["lat_ns"]["mean"] / 1e3,
        "lat_p99_us": pct.get("99.000000", 0) / 1e3,
        "runtime_s": res["runtime"] / 1e3,
    }


def label(workload, r):
    bs = {"4k": "4 KiB", "1M": "1 MiB", "1m": "1 MiB"}.get(r["bs"], r["bs"])
    kind = {"randread": "random read", "randwrite": "random write",
            "write": "sequential write", "read": "sequential read"}[r["rw"]]
    text = f"{bs} {kind}, QD{r['iodepth']}"
    return f"fill: {text} + flush" if workload == "fill" else text


def human_bytes(n):
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if n < 1024 or unit == "TiB":
            return f"{n:.1f} {unit}" if unit != "B" else f"{n} B"
        n /= 1024


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--csv", help="write the rows to this CSV file")
    ap.add_argument("--markdown", action="store_true", help="print a Markdown table")
    ap.add_argument("rawdir")
    args = ap.parse_args()

    rows = []
    for w in WORKLOADS:
        res = {}
        for t in TARGETS:
            p = os.path.join(args.rawdir, f"{t}-{w}.json")
            if os.path.exists(p):
                res[t] = load(p)
        if not res:
            continue
        any_r = next(iter(res.values()))
        f, r = res.get("file"), res.get("rewind")
        rows.append({
            "workload": w,
            "label": label(w, any_r),
            "file": f,
            "rewind": r,
            "ratio": (r["iops"] / f["iops"]) if f and r and f["iops"] else None,
        })
    if not rows:
        raise SystemExit(f"report: no fio results in {args.rawdir}")

    def num(r, key, fmt):
        return format(r[key], fmt) if r else "-"

    header = ["workload", "file IOPS", "file MB/s", "rewind IOPS", "rewind MB/s",
              "rewind/file"]
    table = [[row["label"],
              num(row["file"], "iops", ",.0f"), num(row["file"], "mbps", ",.1f"),
              num(row["rewind"], "iops", ",.0f"), num(row["rewind"], "mbps", ",.1f"),
              f"{row['ratio']:.2f}x" if row["ratio"] is not None else "-"]
             for row in rows]

    if args.markdown:
        print("| " + " | ".join(header) + " |")
        print("|" + "|".join(["---"] + ["---:"] * (len(header) - 1)) + "|")
        for line in table:
            print("| " + " | ".join(line) + " |")
    else:
        widths = [max(len(x) for x in col) for col in zip(header, *table)]
        fmt = "  ".join(["{:<%d}" % widths[0]] + ["{:>%d}" % w for w in widths[1:]])
        print(fmt.format(*header))
        for line in table:
            print(fmt.format(*line))

    info_path = os.path.join(args.rawdir, "rewind-info.json")
    if os.path.exists(info_path):
        with open(info_path) as f:
            info = json.load(f)
        print()
        print(f"rewind store at the end: redo {human_bytes(info['redo_bytes'])} in "
              f"{info['redo_records']:,} records, undo {human_bytes(info['undo_bytes'])} in "
              f"{info['undo_records']:,} records, newest lsn {info.get('newest_lsn', 0):,}")

    if args.csv:
        fields = ["workload", "description"]
        for t in TARGETS:
            fields += [f"{t}_iops", f"{t}_mbps", f"{t}_lat_mean_us", f"{t}_lat_p99_us"]
        fields.append("ratio_iops")
        with open(args.csv, "w", newline="") as out:
            wr = csv.writer(out)
            wr.writerow(fields)
            for row in rows:
                line = [row["workload"], row["label"]]
                for t in TARGETS:
                    r = row[t]
                    line += ([f"{r['iops']:.0f}", f"{r['mbps']:.1f}", f"{r['lat_mean_us']:.1f}",
                              f"{r['lat_p99_us']:.1f}"] if r else ["", "", "", ""])
                line.append(f"{row['ratio']:.3f}" if row["ratio"] is not None else "")
                wr.writerow(line)
    return 0


if __name__ == "__main__":
    sys.exit(main())
