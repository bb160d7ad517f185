#!/usr/bin/env python3
"""How rewind's costs grow: the driver behind bench/costs.sh.

    costs.py run               run the sections named in COSTS_SECTIONS (see
                               bench/costs.sh for every knob), print a table per
                               section and write bench/results/costs-<stamp>.csv
    costs.py report FILE.csv   print the tables of an earlier run again

Standard library only (Debian's /usr/bin/python3).  Every figure goes into
the CSV as one row: section, case, metric, value, unit.  The tables show the
main metrics of each section; the CSV has them all.

Sections (each on fresh stores, served by nbdkit over a Unix socket, driven
with fio's nbd engine):

  checkpoint     latency of checkpoints over the control socket (one
                 persistent connection; the round trip a client sees), idle
                 and under 4 KiB random-write loads at QD32 (unthrottled and
                 at fixed rates), on each disk size; with, under the same
                 conditions, the wall time of `rewind checkpoint` (a process
                 start, connect, request) and the latency of NBD flushes
  restore        offline `rewind restore --json` against the share of the
                 disk changed since the point, and against the length of the
                 history (records written after the point), next to nbdcopy
                 of the live disk
  timetravel     4 KiB random reads at QD32 of @POINT exports against the
                 live export, for the points of the restore section
  recovery       kill -9 of nbdkit after N MiB written without flush, then
                 the time until the NBD socket and the control socket answer
  amplification  bytes written to storage per byte the guest wrote: the
                 process's /proc/PID/io write_bytes and the block device's
                 sectors written, for rewind and nbdkit's file plugin
  space          growth of redo_bytes + undo_bytes (rewind info) per byte
                 the guest wrote, for random and 50%-compressible data
"""

import csv
import json
import math
import os
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SECTIONS = ["checkpoint", "restore", "timetravel", "recovery", "amplification", "space"]
KiB, MiB, GiB = 1 << 10, 1 << 20, 1 << 30


# --- configuration --------------------------------------------------------------------------------


def env(name, default):
    v = os.environ.get(name)
    return default if v is None or v.strip() == "" else v.strip()


def parse_size(text):
    """1G, 512M, 64k, 4096 -> bytes (binary units, as nbdkit and fio take them)."""
    t = text.strip().upper().removesuffix("B").removesuffix("I")
    mult = 1
    for suffix, m in (("K", KiB), ("M", MiB), ("G", GiB), ("T", 1 << 40)):
        if t.endswith(suffix):
            t, mult = t[:-1], m
            break
    return int(float(t) * mult)


def human(n):
    for unit, m in (("GiB", GiB), ("MiB", MiB), ("KiB", KiB)):
        if n >= m:
            v = n / m
            return f"{v:.0f} {unit}" if v == int(v) else f"{v:.1f} {unit}"
    return f"{n} B"


class Config:
    def __init__(self):
        self.build = env("BUILD_DIR", "build")
        bdir = Path(self.build)
        if not bdir.is_absolute():
            bdir = ROOT / bdir
        self.plugin = bdir / "nbdplugin" / "nbdkit-rewind-plugin.so"
        self.rewind = bdir / "restore" / "rewind"
        self.store_bench = bdir / "store_bench"
        self.sections = env("COSTS_SECTIONS", " ".join(SECTIONS)).split()
        for s in self.sections:
            if s not in SECTIONS:
                sys.exit(f"bench/costs: unknown section '{s}' in COSTS_SECTIONS ({' '.join(SECTIONS)})")
        self.bench_dir = Path(env("COSTS_DIR", str(bdir / "bench")))
        self.keep = env("COSTS_KEEP", "0") == "1"
        self.drop_caches = env("COSTS_DROP_CACHES", "1") == "1"
        # checkpoint
        self.cp_sizes = env("COSTS_CP_SIZES", "1G 64G").split()
        self.cp_count = int(env("COSTS_CP_COUNT", "200"))
        self.cp_gap_ms = float(env("COSTS_CP_GAP_MS", "10"))
        self.cp_cli = int(env("COSTS_CP_CLI", "10"))
        self.cp_flushes = int(env("COSTS_CP_FLUSHES", "20"))
        self.cp_loads = env("COSTS_CP_LOADS", "max 20000").split()
        self.cp_region = env("COSTS_CP_REGION", "1G")
        self.cp_seconds = float(env("COSTS_CP_SECONDS", "30"))
        for x in self.cp_loads:
            if x != "max" and not x.isdigit():
                sys.exit("bench/costs: COSTS_CP_LOADS are 'max' or IOPS")
        # restore and timetravel
        self.restore_size = env("COSTS_RESTORE_SIZE", "1G")
        self.changed = [float(x) for x in env("COSTS_CHANGED", "1 10 50").split()]
        self.records = [int(float(x)) for x in env("COSTS_RECORDS", "1000000 10000000").split()]
        self.history_size = env("COSTS_HISTORY_SIZE", "1G")
        self.history_region = env("COSTS_HISTORY_REGION", "64M")
        self.history_bs = env("COSTS_HISTORY_BS", "512")
        self.history_gen = env("COSTS_HISTORY_GEN", "fio")
        self.restore_timeout = float(env("COSTS_RESTORE_TIMEOUT", "300"))
        self.runtime = int(env("COSTS_RUNTIME", "10"))
        self.ramp = int(env("COSTS_RAMP", "2"))
        # recovery
        self.unflushed = [int(x) for x in env("COSTS_UNFLUSHED_MIB", "0 64 256 1024").split()]
        self.recovery_size = env("COSTS_RECOVERY_SIZE", "2G")
        # amplification and space
        self.amp_size = env("COSTS_AMP_SIZE", "1G")
        self.amp_bytes = env("COSTS_AMP_BYTES", "512M")
        self.amp_targets = env("COSTS_AMP_TARGETS", "file rewind").split()
        self.space_size = env("COSTS_SPACE_SIZE", "1G")
        self.space_bytes = env("COSTS_SPACE_BYTES", "256M")
        if self.history_gen not in ("fio", "store_bench"):
            sys.exit("bench/costs: COSTS_HISTORY_GEN is fio or store_bench")
        if max(self.changed, default=0) >= 100 or min(self.changed, default=1) <= 0:
            sys.exit("bench/costs: COSTS_CHANGED are percentages above 0 and below 100")
        if max(self.unflushed, default=0) * MiB > parse_size(self.recovery_size):
            sys.exit("bench/costs: COSTS_RECOVERY_SIZE must hold the largest of COSTS_UNFLUSHED_MIB")


# --- results --------------------------------------------------------------------------------------


class Results:
    """Rows of the CSV, written as they come so that an interrupted run keeps its figures."""

    COLUMNS = ["section", "case", "metric", "value", "unit"]

    def __init__(self, path):
        self.path = path
        self.rows = []
        self.f = open(path, "w", newline="")
        self.w = csv.writer(self.f)
        self.w.writerow(self.COLUMNS)
        self.f.flush()

    def add(self, section, case, metric, value, unit=""):
        if isinstance(value, float):
            value = f"{value:.6g}" if abs(value) < 1e15 else str(value)
        row = [section, case, metric, str(value), unit]
        self.rows.append(row)
        self.w.writerow(row)
        self.f.flush()


def load_rows(path):
    with open(path, newline="") as f:
        r = csv.reader(f)
        header = next(r)
        if header != Results.COLUMNS:
            sys.exit(f"bench/costs: {path} is not a costs CSV (columns {header})")
        return [row for row in r]


# What each section's table shows (metric, column title, format); the CSV has more.
TABLES = {
    "checkpoint": (
        "Checkpoint latency (goal: p99 < 1 ms on every disk size)",
        [("n", "n", "{:.0f}"), ("p50_us", "p50 us", "{:,.0f}"), ("p99_us", "p99 us", "{:,.0f}"),
         ("max_us", "max us", "{:,.0f}"), ("mean_us", "mean us", "{:,.0f}"),
         ("under_1ms_pct", "<1ms %", "{:.1f}"), ("load_iops", "load IOPS", "{:,.0f}")]),
    "restore": (
        "Restore (offline `rewind restore --json`; nbdcopy of the live disk for scale)",
        [("wall_s", "wall s", "{:.2f}"), ("seconds", "in store s", "{:.2f}"),
         ("changed_mib", "changed MiB", "{:,.1f}"), ("data_mib", "data MiB", "{:,.0f}"),
         ("mb_per_s", "MB/s", "{:,.0f}"), ("speed_vs_nbdcopy", "vs nbdcopy", "{:.2f}x"),
         ("open_s", "open s", "{:.2f}")]),
    "restore-setup": (
        "Producing the histories",
        [("records", "records", "{:,.0f}"), ("seconds", "seconds", "{:.1f}"),
         ("records_per_s", "records/s", "{:,.0f}"), ("journal_mib", "journal MiB", "{:,.0f}"),
         ("bytes_per_record", "journal B/record", "{:,.0f}"),
         ("store_mib", "store MiB w/o image", "{:,.0f}")]),
    "timetravel": (
        "Time-travel reads, 4 KiB random QD32 (goal of issue 3: >= 0.5x live)",
        [("iops", "IOPS", "{:,.0f}"), ("vs_live", "vs live", "{:.2f}x"),
         ("clat_p99_us", "p99 us", "{:,.0f}"), ("changed_pct", "changed %", "{:g}")]),
    "recovery": (
        "Recovery after kill -9 with unflushed writes (time from nbdkit's start)",
        [("nbd_ready_s", "NBD answers s", "{:.3f}"), ("control_ready_s", "control s", "{:.3f}"),
         ("writes", "writes", "{:,.0f}"),
         ("recovered", "recovered", "{:,.0f}"), ("lost", "lost", "{:,.0f}")]),
    "amplification": (
        "Write amplification: storage bytes per guest byte",
        [("guest_mib", "guest MiB", "{:,.0f}"), ("proc_amp", "process", "{:.2f}x"),
         ("dev_amp", "device", "{:.2f}x"), ("proc_mib", "process MiB", "{:,.0f}"),
         ("dev_mib", "device MiB", "{:,.0f}"), ("mb_per_s", "guest MB/s", "{:,.0f}")]),
    "space": (
        "Journal space per byte written (goal: <= 1.1)",
        [("guest_mib", "guest MiB", "{:,.0f}"), ("redo_mib", "redo MiB", "{:,.1f}"),
         ("undo_mib", "undo MiB", "{:,.1f}"), ("journal_ratio", "journal/guest", "{:.3f}"),
         ("dir_ratio", "du/guest", "{:.3f}")]),
}


def print_tables(rows, sections=None):
    machine = [r for r in rows if r[0] == "machine"]
    if machine and sections is None:
        for r in machine:
            print(f"{r[2] + ':':<26}{r[3]}")
        print()
    order = []
    for r in rows:
        if r[0] != "machine" and r[0] not in order:
            order.append(r[0])
    for section in order:
        if sections is not None and section not in sections:
            continue
        print_table(section, [r for r in rows if r[0] == section])


def print_table(section, rows):
    title, cols = TABLES.get(section, (section, []))
    cases = []
    values = {}
    for _, case, metric, value, _unit in rows:
        if case not in cases:
            cases.append(case)
        values[(case, metric)] = value
    notes = [(c, values[(c, "note")]) for c in cases if (c, "note") in values]
    cols = [c for c in cols if any((case, c[0]) in values for case in cases)]
    if not cols:
        return
    cells = []
    for case in cases:
        if not any((case, m) in values for m, _, _ in cols):
            continue
        line = [case]
        for m, _, fmt in cols:
            v = values.get((case, m))
            if v is None or v == "":
                line.append("")
                continue
            try:
                line.append(fmt.format(float(v)))
            except ValueError:
                line.append(v)
        cells.append(line)
    head = ["case"] + [t for _, t, _ in cols]
    widths = [max(len(x[i]) for x in cells + [head]) for i in range(len(head))]
    print(f"== {title}")
    print("  ".join(h.ljust(widths[0]) if i == 0 else h.rjust(widths[i]) for i, h in enumerate(head)))
    for line in cells:
        print("  ".join(x.ljust(widths[0]) if i == 0 else x.rjust(widths[i]) for i, x in enumerate(line)))
    for case, note in notes:
        print(f"  note ({case}): {note}")
    print()


# --- processes, sockets, counters -----------------------------------------------------------------


def log(msg):
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def recv_exact(s, n):
    buf = b""
    while len(buf) < n:
        chunk = s.recv(n - len(buf))
        if not chunk:
            raise ConnectionError("connection closed")
        buf += chunk
    return buf


class NbdClient:
    """Just enough NBD: the fixed-newstyle handshake up to NBD_OPT_GO (which makes nbdkit
    open the export) and NBD_CMD_FLUSH with simple replies.  The constructor raises
    OSError while nothing listens on the socket."""

    def __init__(self, path, export="", timeout=600.0):
        self.s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            self.s.settimeout(timeout)
            self.s.connect(path)
            hello = recv_exact(self.s, 18)
            if hello[:16] != b"NBDMAGICIHAVEOPT":
                raise ConnectionError("not an NBD newstyle server")
            self.s.sendall(struct.pack(">I", 1 | 2))  # FIXED_NEWSTYLE | NO_ZEROES
            name = export.encode()
            data = struct.pack(">I", len(name)) + name + struct.pack(">H", 0)
            self.s.sendall(struct.pack(">QII", 0x49484156454F5054, 7, len(data)) + data)  # OPT_GO
            while True:
                _magic, _opt, rtype, length = struct.unpack(">QIII", recv_exact(self.s, 20))
                recv_exact(self.s, length)
                if rtype == 1:  # NBD_REP_ACK
                    break
                if rtype & 0x80000000:
                    raise ConnectionError(f"NBD_OPT_GO refused ({rtype:#x})")
        except BaseException:
            self.s.close()
            raise
        self.handle = 0

    def _request(self, rtype):
        self.handle += 1
        self.s.sendall(struct.pack(">IHHQQI", 0x25609513, 0, rtype, self.handle, 0, 0))

    def flush(self):
        self._request(3)  # NBD_CMD_FLUSH
        magic, error, handle = struct.unpack(">IIQ", recv_exact(self.s, 16))
        if magic != 0x67446698 or handle != self.handle or error:
            raise ConnectionError(f"flush failed (error {error})")

    def close(self):
        try:
            self._request(2)  # NBD_CMD_DISC
        except OSError:
            pass
        self.s.close()


def nbd_go(path, export="", timeout=600.0):
    NbdClient(path, export, timeout).close()


class Control:
    """A persistent connection to DIR/control.sock; one JSON line each way."""

    def __init__(self, path, timeout=3600.0):
        self.path = str(path)
        self.timeout = timeout
        self.next_id = 1
        self.s = None
        self.f = None

    def connect(self):
        self.close()
        self.s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.s.settimeout(self.timeout)
        self.s.connect(self.path)
        self.f = self.s.makefile("rb")

    def close(self):
        if self.f is not None:
            self.f.close()
        if self.s is not None:
            self.s.close()
        self.s = self.f = None

    def send_recv(self, line):
        self.s.sendall(line)
        while True:
            resp = self.f.readline()
            if not resp:
                raise ConnectionError("control socket closed")
            msg = json.loads(resp)
            if "progress" in msg and "ok" not in msg:
                continue
            return msg

    def call(self, op, **args):
        req = {"v": 1, "id": self.next_id, "op": op}
        req.update(args)
        self.next_id += 1
        line = (json.dumps(req) + "\n").encode()
        for attempt in (0, 1):  # the server closes connections idle for 60 s
            try:
                if self.s is None:
                    self.connect()
                msg = self.send_recv(line)
                break
            except (ConnectionError, BrokenPipeError, ConnectionResetError):
                self.close()
                if attempt:
                    raise
        if not msg.get("ok"):
            raise RuntimeError(f"control {op}: {msg.get('error')}")
        return msg["result"]

    def timed_checkpoint(self, name):
        """Round trip in µs of one checkpoint request on the open connection."""
        if self.s is None:
            self.connect()
        line = (json.dumps({"v": 1, "id": self.next_id, "op": "checkpoint", "name": name}) + "\n").encode()
        self.next_id += 1
        t0 = time.perf_counter_ns()
        msg = self.send_recv(line)
        t1 = time.perf_counter_ns()
        if not msg.get("ok"):
            raise RuntimeError(f"checkpoint {name}: {msg.get('error')}")
        return (t1 - t0) / 1000.0


def proc_write_bytes(pid):
    with open(f"/proc/{pid}/io") as f:
        for line in f:
            if line.startswith("write_bytes:"):
                return int(line.split()[1])
    return 0


def block_stat_path(path):
    """/sys/dev/block/M:m/stat of the device holding path, or None (tmpfs, overlay...)."""
    st = os.stat(path)
    p = Path(f"/sys/dev/block/{os.major(st.st_dev)}:{os.minor(st.st_dev)}/stat")
    return p if os.major(st.st_dev) != 0 and p.exists() else None


def dev_written(stat_path):
    if stat_path is None:
        return None
    return int(stat_path.read_text().split()[6]) * 512


def du(path):
    total = 0
    for dirpath, _dirs, files in os.walk(path):
        for name in files:
            try:
                total += os.lstat(os.path.join(dirpath, name)).st_blocks * 512
            except FileNotFoundError:
                pass
    return total


def percentile(sorted_values, p):
    if not sorted_values:
        return float("nan")
    k = max(0, math.ceil(p / 100.0 * len(sorted_values)) - 1)
    return sorted_values[k]


class Server:
    """nbdkit in the foreground behind a Unix socket; os.wait4 on stop gives its rusage."""

    def __init__(self, bench, name, args, sock):
        self.bench = bench
        self.sock = str(sock)
        self.logf = open(bench.raw / f"nbdkit-{name}.log", "a")
        self.logf.write(f"--- {time.strftime('%H:%M:%S')} nbdkit {' '.join(map(str, args))}\n")
        self.logf.flush()
        if os.path.lexists(self.sock):  # left by an nbdkit that was killed: nbdkit would refuse it
            os.unlink(self.sock)
        self.t0 = time.perf_counter()
        self.proc = subprocess.Popen(["nbdkit", "-f", "--exit-with-parent", "-U", self.sock] +
                                     [str(a) for a in args], stdout=self.logf, stderr=self.logf)
        self.pid = self.proc.pid
        self.rusage = None
        bench.servers.append(self)

    def uri(self, export=""):
        return f"nbd+unix:///{export}?socket={self.sock}"

    def wait_ready(self, timeout=600.0):
        deadline = time.monotonic() + timeout
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"nbdkit exited with {self.proc.returncode}; see {self.logf.name}")
            try:
                nbd_go(self.sock, timeout=max(1.0, deadline - time.monotonic()))
                return time.perf_counter() - self.t0
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.001)

    def stop(self, sig=signal.SIGTERM):
        if self.rusage is None:
            try:
                os.kill(self.pid, sig)
            except ProcessLookupError:
                pass
            _, status, self.rusage = os.wait4(self.pid, 0)
            self.proc.returncode = os.waitstatus_to_exitcode(status)
            self.logf.close()
            self.bench.servers.remove(self)
        return self.rusage


# --- the benchmark --------------------------------------------------------------------------------


class Bench:
    def __init__(self, cfg):
        self.cfg = cfg
        self.stamp = time.strftime("%Y-%m-%dT%H%M%SZ", time.gmtime())
        results = ROOT / "bench" / "results"
        self.raw = results / f"costs-{self.stamp}"
        self.raw.mkdir(parents=True, exist_ok=True)
        self.csv_path = results / f"costs-{self.stamp}.csv"
        self.res = Results(self.csv_path)
        cfg.bench_dir.mkdir(parents=True, exist_ok=True)
        self.work = Path(tempfile.mkdtemp(prefix=f"costs-{self.stamp}-", dir=cfg.bench_dir))
        self.sockdir = Path(tempfile.mkdtemp(prefix="rewind-costs.", dir="/tmp"))  # sun_path: 108 bytes
        self.servers = []
        self.fio_n = 0
        self.dev_stat = block_stat_path(self.work)
        self.can_drop = cfg.drop_caches and os.access("/proc/sys/vm/drop_caches", os.W_OK)

    def cleanup(self):
        for s in list(self.servers):
            s.stop(signal.SIGKILL)
        shutil.rmtree(self.sockdir, ignore_errors=True)
        if not self.cfg.keep:
            shutil.rmtree(self.work, ignore_errors=True)

    # helpers

    def fresh(self, name):
        d = self.work / name
        shutil.rmtree(d, ignore_errors=True)
        d.mkdir(parents=True)
        return d

    def discard(self, d):
        if not self.cfg.keep:
            shutil.rmtree(d, ignore_errors=True)

    def rewind_server(self, name, store, size):
        sock = self.sockdir / f"{name}.sock"
        srv = Server(self, name, [self.cfg.plugin, f"dir={store}", f"size={size}"], sock)
        srv.wait_ready()
        return srv

    def drop(self):
        os.sync()
        if self.can_drop:
            with open("/proc/sys/vm/drop_caches", "w") as f:
                f.write("3\n")

    def fio_cmd(self, name, uri, opts):
        self.fio_n += 1
        out = self.raw / f"fio-{self.fio_n:03d}-{name}.json"
        cmd = ["fio", f"--name={name}", "--ioengine=nbd", f"--uri={uri}", "--output-format=json",
               f"--output={out}"] + opts
        return cmd, out

    @staticmethod
    def fio_job(out):
        text = out.read_text()
        # fio may print warnings before the JSON object
        data = json.loads(text[text.index("{"):])
        return data["jobs"][0]

    def fio(self, name, uri, *opts):
        cmd, out = self.fio_cmd(name, uri, list(opts))
        t0 = time.perf_counter()
        p = subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        secs = time.perf_counter() - t0
        if p.returncode != 0:
            raise RuntimeError(f"fio {name} failed: {p.stderr.strip()[-500:]}")
        return self.fio_job(out), secs

    def fio_start(self, name, uri, *opts):
        cmd, out = self.fio_cmd(name, uri, list(opts))
        return subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL), out

    def fio_stop(self, handle):
        p, out = handle
        p.send_signal(signal.SIGINT)
        try:
            p.wait(timeout=60)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()
        return self.fio_job(out)

    def fill(self, uri, size):
        job, secs = self.fio("fill", uri, f"--size={size}", "--rw=write", "--bs=1M", "--iodepth=8",
                             "--refill_buffers", "--end_fsync=1")
        return secs

    def cli(self, *args, timeout=None):
        """Runs the CLI; returns (its JSON or text, wall seconds), or (None, seconds) when
        it was interrupted (SIGINT, as Ctrl-C) after timeout seconds."""
        t0 = time.perf_counter()
        p = subprocess.Popen([str(self.cfg.rewind)] + [str(a) for a in args], stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True)
        try:
            out, err = p.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            p.send_signal(signal.SIGINT)
            p.communicate()
            return None, time.perf_counter() - t0
        secs = time.perf_counter() - t0
        p.stdout, p.stderr = out, err
        if p.returncode != 0:
            raise RuntimeError(f"rewind {' '.join(map(str, args))}: {p.stderr.strip()}")
        return (json.loads(p.stdout) if "--json" in args else p.stdout), secs

    def wait_applied(self, ctl, timeout=120.0):
        """Until the applier has carried every journaled write into the image
        (info's durable_lsn is the applied LSN)."""
        deadline = time.monotonic() + timeout
        while True:
            info = ctl.call("info")
            if info["durable_lsn"] >= info["newest_lsn"] or time.monotonic() > deadline:
                return info
            time.sleep(0.05)

    # --- sections ---

    def machine(self):
        add = lambda k, v: self.res.add("machine", "", k, v)
        add("date", time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()))
        model = ""
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
        add("cpus", f"{len(os.sched_getaffinity(0))} (nproc) x {model}")
        with open("/proc/meminfo") as f:
            mem = int(next(l for l in f if l.startswith("MemTotal")).split()[1]) * KiB
        add("memory", f"{mem / GiB:.1f} GiB")
        add("kernel", " ".join(os.uname()[i] for i in (0, 2)))
        with open("/proc/loadavg") as f:
            add("load", " ".join(f.read().split()[:3]) + " (1, 5, 15 min) at start")
        df = subprocess.run(["df", "--output=fstype,source,avail", "-B1", str(self.work)],
                            capture_output=True, text=True).stdout.split("\n")[1].split()
        add("filesystem", f"{df[0]} on {df[1]} ({human(int(df[2]))} free), bench dir {self.cfg.bench_dir}")
        add("block stat", str(self.dev_stat) if self.dev_stat else "none (no block device)")
        add("nbdkit", subprocess.run(["nbdkit", "--version"], capture_output=True, text=True).stdout.split("\n")[0])
        add("fio", subprocess.run(["fio", "--version"], capture_output=True, text=True).stdout.strip())
        git = subprocess.run(["git", "-C", str(ROOT), "describe", "--always", "--dirty"],
                             capture_output=True, text=True).stdout.strip()
        add("git", git or "unknown")
        add("sections", " ".join(self.cfg.sections))
        add("page cache", "dropped before each read measurement and restore" if self.can_drop
            else "not dropped (needs root, or COSTS_DROP_CACHES=0)")

    def sec_checkpoint(self):
        """Checkpoint (and flush) latency, idle and under loads, on each disk size.  The
        load writes into the first COSTS_CP_REGION of every disk, filled beforehand, so
        that the disks differ only by their size."""
        c = self.cfg
        S = "checkpoint"
        gap = c.cp_gap_ms / 1000.0
        for size in c.cp_sizes:
            region = min(parse_size(size), parse_size(c.cp_region))
            where = "" if region == parse_size(size) else f", load on the first {human(region)}"
            d = self.fresh(f"cp-{size}")
            store = d / "store"
            srv = self.rewind_server(f"cp-{size}", store, size)
            ctl = Control(store / "control.sock")
            log(f"checkpoint: {size} disk, filling {human(region)}")
            self.fill(srv.uri(), region)
            seq = [0]

            def measure(label, job_opts=None):
                case = f"{size}{where}, {label}"
                log(f"checkpoint: {case}")
                load = None
                if job_opts is not None:
                    load = self.fio_start("cp-load", srv.uri(), f"--size={region}", "--rw=randwrite",
                                          "--bs=4k", "--iodepth=32", "--time_based", "--runtime=3600",
                                          "--norandommap", "--randrepeat=0", *job_opts)
                    time.sleep(c.ramp)
                lat, cli, fl = [], [], []
                t0 = time.perf_counter()
                for _ in range(c.cp_count):
                    if time.perf_counter() - t0 > c.cp_seconds:
                        break
                    seq[0] += 1
                    lat.append(ctl.timed_checkpoint(f"p{seq[0]}"))
                    time.sleep(gap)
                storm_s = time.perf_counter() - t0
                t1 = time.perf_counter()
                for _ in range(c.cp_cli):
                    if time.perf_counter() - t1 > c.cp_seconds:
                        break
                    seq[0] += 1
                    _, secs = self.cli("checkpoint", store, "--name", f"p{seq[0]}", "--json")
                    cli.append(secs * 1e6)
                    time.sleep(gap)
                if c.cp_flushes:
                    nc = NbdClient(srv.sock)
                    t2 = time.perf_counter()
                    for _ in range(c.cp_flushes):
                        if time.perf_counter() - t2 > c.cp_seconds:
                            break
                        t3 = time.perf_counter_ns()
                        nc.flush()
                        fl.append((time.perf_counter_ns() - t3) / 1000.0)
                        time.sleep(gap)
                    nc.close()
                job = self.fio_stop(load) if load else None
                for suffix, values in (("", lat), (", CLI wall", cli), (", NBD flush", fl)):
                    if not values:
                        continue
                    v = sorted(values)
                    k = case + suffix
                    self.res.add(S, k, "n", len(v))
                    self.res.add(S, k, "p50_us", percentile(v, 50), "us")
                    self.res.add(S, k, "p99_us", percentile(v, 99), "us")
                    self.res.add(S, k, "max_us", v[-1], "us")
                    self.res.add(S, k, "mean_us", sum(v) / len(v), "us")
                    self.res.add(S, k, "under_1ms_pct", 100.0 * sum(1 for x in v if x < 1000) / len(v), "%")
                    if job:
                        self.res.add(S, k, "load_iops", job["write"]["iops"], "IOPS")
                self.res.add(S, case, "storm_s", storm_s, "s")
                if job is not None:
                    self.wait_applied(ctl, timeout=300)  # the next case starts from a quiet store

            measure("idle")
            for load in c.cp_loads:
                if load == "max":
                    measure("randwrite QD32, unthrottled", [])
                else:
                    measure(f"randwrite QD32 at {int(load):,} IOPS", [f"--rate_iops={int(load)}"])
            info = ctl.call("info")
            self.res.add(S, f"{size}{where}, idle", "store_checkpoints", info["checkpoints"])
            ctl.close()
            srv.stop()
            self.discard(d)
        self.res.add(S, "all", "note", f"checkpoints {c.cp_gap_ms:g} ms apart, on one control "
                     "connection; the load starts " + f"{c.ramp} s before them; CLI wall: "
                     "`rewind checkpoint --json` process; NBD flush: a second NBD connection")

    def changed_store(self, do_restore, do_timetravel):
        """A 1 GiB disk, filled, then COSTS_CHANGED percent of it rewritten (4 KiB random
        writes, each block at most once) after checkpoints changed-P, in disjoint
        regions: from changed-P to the end, exactly P% of the disk's blocks changed."""
        c = self.cfg
        size = parse_size(c.restore_size)
        d = self.fresh("changed")
        store = d / "store"
        srv = self.rewind_server("changed", store, c.restore_size)
        ctl = Control(store / "control.sock")
        log(f"restore: filling {c.restore_size}")
        fill_s = self.fill(srv.uri(), c.restore_size)
        pcts = sorted(set(c.changed), reverse=True)
        off = 0
        t0 = time.perf_counter()
        for i, p in enumerate(pcts):
            ctl.call("checkpoint", name=f"changed-{p:g}")
            nxt = pcts[i + 1] if i + 1 < len(pcts) else 0.0
            length = int(size * (p - nxt) / 100) // 4096 * 4096
            if length > 0:
                log(f"restore: rewriting {human(length)} at {human(off)} with 4 KiB random writes")
                self.fio("change", srv.uri(), f"--offset={off}", f"--size={length}", "--rw=randwrite",
                         "--bs=4k", "--iodepth=32", "--refill_buffers", "--end_fsync=1")
            off += length
        ctl.call("checkpoint", name="now")
        change_s = time.perf_counter() - t0
        S = "restore-setup"
        case = f"{c.restore_size} disk, {max(pcts):g}% changed"
        self.res.add(S, case, "seconds", fill_s + change_s, "s")
        self.res.add(S, case, "records", ctl.call("info")["redo_records"])
        self.res.add(S, case, "note", f"fill {fill_s:.1f} s, changes {change_s:.1f} s")
        points = [("now", 0.0)] + [(f"changed-{p:g}", p) for p in sorted(pcts)]

        if do_timetravel:
            S = "timetravel"
            live = None
            for name, p in [("", 0.0)] + points[1:]:
                export = f"@{name}" if name else ""
                log(f"timetravel: 4 KiB random reads of '{export}'")
                self.drop()
                job, _ = self.fio("read", srv.uri(export), f"--size={c.restore_size}", "--rw=randread",
                                  "--bs=4k", "--iodepth=32", "--time_based", f"--runtime={c.runtime}",
                                  f"--ramp_time={c.ramp}", "--norandommap", "--randrepeat=0")
                iops = job["read"]["iops"]
                case = "live ''" if not name else f"@{name}"
                live = iops if not name else live
                self.res.add(S, case, "iops", iops, "IOPS")
                self.res.add(S, case, "vs_live", iops / live if live else float("nan"), "x")
                pct = job["read"]["clat_ns"].get("percentile", {})
                self.res.add(S, case, "clat_p99_us", pct.get("99.000000", 0) / 1000.0, "us")
                self.res.add(S, case, "changed_pct", p, "%")

        if not do_restore:
            ctl.close()
            srv.stop()
            self.discard(d)
            return
        S = "restore"
        out = d / "out.raw"
        log("restore: nbdcopy of the live disk")
        self.drop()
        t0 = time.perf_counter()
        subprocess.run(["nbdcopy", srv.uri(), str(out)], check=True)
        copy_s = time.perf_counter() - t0
        out.unlink()
        case = f"nbdcopy of the live disk ({c.restore_size})"
        self.res.add(S, case, "wall_s", copy_s, "s")
        self.res.add(S, case, "mb_per_s", size / copy_s / 1e6, "MB/s")
        self.res.add(S, case, "speed_vs_nbdcopy", 1.0, "x")
        worst = points[-1][0]
        log(f"restore: nbdcopy of @{worst}")
        self.drop()
        t0 = time.perf_counter()
        subprocess.run(["nbdcopy", srv.uri("@" + worst), str(out)], check=True)
        secs = time.perf_counter() - t0
        out.unlink()
        case = f"nbdcopy of @{worst} (time-travel export)"
        self.res.add(S, case, "wall_s", secs, "s")
        self.res.add(S, case, "mb_per_s", size / secs / 1e6, "MB/s")
        self.res.add(S, case, "speed_vs_nbdcopy", copy_s / secs, "x")
        ctl.close()
        srv.stop()
        _, open_s = self.cli("info", store, "--json")
        self.copy_rate = size / copy_s
        for name, p in points:
            self.offline_restore(store, name, f"to {name} ({p:g}% changed)", out, self.copy_rate, open_s)
        self.discard(d)

    def offline_restore(self, store, point, case, out, copy_rate, open_s):
        S = "restore"
        log(f"restore: offline restore {case}")
        self.drop()
        r, wall = self.cli("restore", store, "--to", point, "--output", out, "--force", "--json",
                           timeout=self.cfg.restore_timeout)
        if r is None:
            self.res.add(S, case, "note", f"interrupted after {wall:.0f} s (COSTS_RESTORE_TIMEOUT)")
            self.res.add(S, case, "wall_s", f">{wall:.0f}", "s")
            return
        out.unlink()
        self.res.add(S, case, "wall_s", wall, "s")
        self.res.add(S, case, "seconds", r["seconds"], "s")
        self.res.add(S, case, "changed_mib", r["changed_bytes"] / MiB, "MiB")
        self.res.add(S, case, "data_mib", r["data_bytes"] / MiB, "MiB")
        self.res.add(S, case, "mb_per_s", r["bytes"] / wall / 1e6, "MB/s")
        if copy_rate:
            self.res.add(S, case, "speed_vs_nbdcopy", r["bytes"] / wall / copy_rate, "x")
        self.res.add(S, case, "open_s", open_s, "s")

    def history(self):
        """Restore against the number of journal records after the point: N small random
        writes into a fixed region (so the data changed stays the same), restored to the
        checkpoint before them, to an LSN in their middle and to the checkpoint after."""
        c = self.cfg
        bs = parse_size(c.history_bs)
        region = parse_size(c.history_region)
        copy_rate = getattr(self, "copy_rate", None)
        for n in c.records:
            d = self.fresh(f"hist-{n}")
            store = d / "store"
            srv = self.rewind_server(f"hist-{n}", store, c.history_size)
            ctl = Control(store / "control.sock")
            log(f"restore: history of {n:,} records: fill {c.history_size}")
            self.fill(srv.uri(), c.history_size)
            start = ctl.call("checkpoint", name="start")
            i0 = ctl.call("info")
            log(f"restore: {n:,} writes of {human(bs)} into {human(region)} ({c.history_gen})")
            t0 = time.perf_counter()
            if c.history_gen == "fio":
                self.fio("history", srv.uri(), f"--size={region}", "--rw=randwrite", f"--bs={bs}",
                         "--iodepth=32", "--norandommap", "--randrepeat=0", f"--number_ios={n}",
                         f"--io_size={n * bs}", "--end_fsync=1")
            else:
                ctl.close()
                srv.stop()
                p = subprocess.run([str(c.store_bench), str(store), "16", "0", c.history_size, "records",
                                    str(n), str(bs), str(region)], capture_output=True, text=True)
                if p.returncode != 0:
                    raise RuntimeError(f"store_bench: {p.stderr.strip()}")
                srv = self.rewind_server(f"hist-{n}", store, c.history_size)
            gen_s = time.perf_counter() - t0
            end = ctl.call("checkpoint", name="end")
            i1 = ctl.call("info")
            journal = (i1["redo_bytes"] + i1["undo_bytes"]) - (i0["redo_bytes"] + i0["undo_bytes"])
            written = end["lsn"] - start["lsn"]
            mid = start["lsn"] + written // 2
            ctl.close()
            srv.stop()
            store_bytes = du(store)
            image_bytes = os.stat(store / "image.raw").st_blocks * 512
            S = "restore-setup"
            case = f"{n:,} records of {human(bs)}"
            self.res.add(S, case, "records", written)
            self.res.add(S, case, "seconds", gen_s, "s")
            self.res.add(S, case, "records_per_s", written / gen_s, "1/s")
            self.res.add(S, case, "journal_mib", journal / MiB, "MiB")
            self.res.add(S, case, "bytes_per_record", journal / max(1, written), "B")
            self.res.add(S, case, "store_mib", (store_bytes - image_bytes) / MiB, "MiB")
            self.res.add(S, case, "note", f"{c.history_gen}, {written:,} writes of {human(bs)} at random "
                         f"into the first {human(region)} of a filled {c.history_size} disk")
            info, open_s = self.cli("info", store, "--json")
            out = d / "out.raw"
            for point, label in (("start", "before them"), (f"lsn:{mid}", "half-way"),
                                 ("end", "after them")):
                self.offline_restore(store, point, f"{n:,} records, {label} ({point})", out, copy_rate,
                                     open_s)
            self.discard(d)

    def sec_recovery(self):
        c = self.cfg
        S = "recovery"
        for mib in c.unflushed:
            d = self.fresh(f"rec-{mib}")
            store = d / "store"
            name = f"rec-{mib}"
            srv = self.rewind_server(name, store, c.recovery_size)
            if mib:
                log(f"recovery: {mib} MiB of 1 MiB writes without flush, then kill -9")
                self.fio("unflushed", srv.uri(), f"--size={c.recovery_size}", "--rw=write", "--bs=1M",
                         "--iodepth=8", f"--io_size={mib}M", "--refill_buffers")
            else:
                log("recovery: nothing written, kill -9")
            # No request between the writes and the kill: an info or a checkpoint would
            # make the committer take the queue first.
            srv.stop(signal.SIGKILL)
            sock = Path(srv.sock)
            t = {}

            def poll_nbd():
                while "nbd" not in t:
                    try:
                        nbd_go(str(sock))
                        t["nbd"] = time.perf_counter() - srv2.t0
                    except OSError:
                        time.sleep(0.001)

            def poll_ctl():
                while "ctl" not in t:
                    try:
                        cc = Control(store / "control.sock", timeout=600)
                        cc.call("hello")
                        t["ctl"] = time.perf_counter() - srv2.t0
                        cc.close()
                    except (OSError, ConnectionError):
                        time.sleep(0.001)

            srv2 = Server(self, name, [c.plugin, f"dir={store}", f"size={c.recovery_size}"], sock)
            threads = [threading.Thread(target=f, daemon=True) for f in (poll_nbd, poll_ctl)]
            for th in threads:
                th.start()
            deadline = time.monotonic() + 900
            while any(th.is_alive() for th in threads):
                if srv2.proc.poll() is not None:
                    raise RuntimeError(f"nbdkit exited during recovery; see {srv2.logf.name}")
                if time.monotonic() > deadline:
                    raise RuntimeError("recovery took more than 900 s")
                time.sleep(0.01)
            ctl = Control(store / "control.sock")
            after = ctl.call("info")
            ctl.close()
            srv2.stop()
            case = f"{mib} MiB unflushed"
            self.res.add(S, case, "nbd_ready_s", t["nbd"], "s")
            self.res.add(S, case, "control_ready_s", t["ctl"], "s")
            self.res.add(S, case, "writes", mib)
            self.res.add(S, case, "recovered", after["newest_lsn"])
            self.res.add(S, case, "lost", mib - after["newest_lsn"])
            self.discard(d)

    def measure_phase(self, S, case, srv, ctl, fio_opts, uri):
        """Process and device bytes written while fio writes and until the data is
        where it stays (rewind: applied to the image)."""
        if ctl:
            self.wait_applied(ctl)
        os.sync()
        p0, d0 = proc_write_bytes(srv.pid), dev_written(self.dev_stat)
        job, secs = self.fio("amp", uri, *fio_opts, "--end_fsync=1", "--refill_buffers")
        if ctl:
            self.wait_applied(ctl)
            time.sleep(0.2)
        p1 = proc_write_bytes(srv.pid)
        os.sync()
        d1 = dev_written(self.dev_stat)
        guest = job["write"]["io_bytes"]
        self.res.add(S, case, "guest_mib", guest / MiB, "MiB")
        self.res.add(S, case, "proc_mib", (p1 - p0) / MiB, "MiB")
        self.res.add(S, case, "proc_amp", (p1 - p0) / guest, "x")
        if d0 is not None:
            self.res.add(S, case, "dev_mib", (d1 - d0) / MiB, "MiB")
            self.res.add(S, case, "dev_amp", (d1 - d0) / guest, "x")
        self.res.add(S, case, "seconds", secs, "s")
        self.res.add(S, case, "mb_per_s", guest / secs / 1e6, "MB/s")

    def sec_amplification(self):
        c = self.cfg
        S = "amplification"
        n = c.amp_bytes
        rand = ["--rw=randwrite", "--bs=4k", "--iodepth=32", f"--size={c.amp_size}", f"--io_size={n}"]
        seq = ["--rw=write", "--bs=1M", "--iodepth=8", f"--size={c.amp_size}", f"--io_size={n}"]
        fill = ["--rw=write", "--bs=1M", "--iodepth=8", f"--size={c.amp_size}"]
        for target in c.amp_targets:
            d = self.fresh(f"amp-{target}")
            if target == "file":
                img = d / "disk.raw"
                with open(img, "wb") as f:
                    f.truncate(parse_size(c.amp_size))
                srv = Server(self, "amp-file", ["file", f"file={img}"], self.sockdir / "amp-file.sock")
                srv.wait_ready()
                ctl = None
            else:
                srv = self.rewind_server("amp-rewind", d / "store", c.amp_size)
                ctl = Control(d / "store" / "control.sock")
            log(f"amplification: {target}")
            self.measure_phase(S, f"{target}: fill, 1 MiB seq, fresh disk", srv, ctl, fill, srv.uri())
            self.measure_phase(S, f"{target}: 4 KiB randwrite", srv, ctl, rand, srv.uri())
            self.measure_phase(S, f"{target}: 1 MiB seqwrite", srv, ctl, seq, srv.uri())
            if ctl:
                ctl.call("checkpoint", name="a")
                self.measure_phase(S, f"{target}: 4 KiB randwrite, after checkpoint", srv, ctl, rand,
                                   srv.uri())
                ctl.call("checkpoint", name="b")
                self.measure_phase(S, f"{target}: 1 MiB seqwrite, after checkpoint", srv, ctl, seq,
                                   srv.uri())
                ctl.close()
            rusage = srv.stop()
            self.res.add(S, f"{target}: whole run", "process_oublock_mib", rusage.ru_oublock * 512 / MiB, "MiB")
            self.discard(d)
        if self.dev_stat is None:
            self.res.add(S, "device", "note", "the bench dir is on no block device: no device figures")
        else:
            os.sync()
            d0 = dev_written(self.dev_stat)
            time.sleep(5)
            os.sync()
            self.res.add(S, "background: 5 s, nothing of ours running", "dev_mib",
                         (dev_written(self.dev_stat) - d0) / MiB, "MiB")
            self.res.add(S, "device", "note", f"{self.dev_stat} sectors written, after a sync: "
                         "machine-wide, other writers included (see the background row)")
        self.res.add(S, "process", "note", "/proc/PID/io write_bytes of nbdkit (all its threads): "
                     "buffered writes count whole page-cache folios when first dirtied (ext4 has "
                     "large folios since Linux 6.16: a 4 KiB write into a cached 16 KiB folio counts "
                     "16 KiB), so it over-counts small random writes; O_DIRECT writes count exactly")

    def sec_space(self):
        c = self.cfg
        S = "space"
        d = self.fresh("space")
        store = d / "store"
        srv = self.rewind_server("space", store, c.space_size)
        ctl = Control(store / "control.sock")
        log(f"space: filling {c.space_size}")
        self.fill(srv.uri(), c.space_size)
        n = c.space_bytes
        patterns = [("4 KiB randwrite", ["--rw=randwrite", "--bs=4k", "--iodepth=32", f"--size={c.space_size}"]),
                    ("1 MiB seqwrite", ["--rw=write", "--bs=1M", "--iodepth=8", f"--size={c.space_size}"])]
        data = [("random", ["--refill_buffers"]),
                ("50% compressible", ["--refill_buffers", "--buffer_compress_percentage=50",
                                      "--buffer_compress_chunk=4k"])]
        k = 0
        for epoch in ("same epoch", "after checkpoint"):
            for pname, popts in patterns:
                for dname, dopts in data:
                    if epoch == "after checkpoint":
                        k += 1
                        ctl.call("checkpoint", name=f"s{k}")
                    case = f"{pname}, {dname}, {epoch}"
                    log(f"space: {case}")
                    i0, du0 = ctl.call("info"), du(store)
                    job, _ = self.fio("space", srv.uri(), *popts, *dopts, f"--io_size={n}", "--end_fsync=1")
                    i1, du1 = ctl.call("info"), du(store)
                    guest = job["write"]["io_bytes"]
                    dr = i1["redo_bytes"] - i0["redo_bytes"]
                    du_ = i1["undo_bytes"] - i0["undo_bytes"]
                    self.res.add(S, case, "guest_mib", guest / MiB, "MiB")
                    self.res.add(S, case, "redo_mib", dr / MiB, "MiB")
                    self.res.add(S, case, "undo_mib", du_ / MiB, "MiB")
                    self.res.add(S, case, "journal_ratio", (dr + du_) / guest, "x")
                    self.res.add(S, case, "dir_ratio", (du1 - du0) / guest, "x")
        self.res.add(S, "same epoch", "note", "blocks already saved in the epoch (after the fill, no "
                     "checkpoint since): redo only")
        self.res.add(S, "after checkpoint", "note", "a checkpoint right before: every block's first "
                     "overwrite also saves its before-image")
        ctl.close()
        srv.stop()
        self.discard(d)

    def run(self):
        c = self.cfg
        self.machine()
        print_tables(self.res.rows)
        sys.stdout.flush()
        t_all = time.perf_counter()
        steps = [[x] for x in ("checkpoint", "recovery", "amplification", "space") if x in c.sections]
        history = [x for x in ("restore", "timetravel") if x in c.sections]
        if history:  # one store serves both
            steps.insert(1 if "checkpoint" in c.sections else 0, history)
        for done in steps:
            t0 = time.perf_counter()
            section = done[0]
            if section == "checkpoint":
                self.sec_checkpoint()
            elif section in ("restore", "timetravel"):
                self.changed_store("restore" in done, "timetravel" in done)
                if "restore" in done:
                    self.history()
            elif section == "recovery":
                self.sec_recovery()
            elif section == "amplification":
                self.sec_amplification()
            elif section == "space":
                self.sec_space()
            self.res.add("machine", "", f"time {'+'.join(done)}", f"{time.perf_counter() - t0:.0f} s")
            extra = {"restore-setup"} if section in ("restore", "timetravel") else set()
            print_tables(self.res.rows, sections=set(done) | extra)
            sys.stdout.flush()
        self.res.add("machine", "", "time total", f"{time.perf_counter() - t_all:.0f} s")
        print(f"total {time.perf_counter() - t_all:.0f} s; results: {self.csv_path.relative_to(ROOT)} "
              f"(raw fio JSON and nbdkit logs in {self.raw.relative_to(ROOT)}/)")


def main():
    if len(sys.argv) >= 2 and sys.argv[1] == "report":
        if len(sys.argv) != 3:
            sys.exit("usage: costs.py report FILE.csv")
        print_tables(load_rows(sys.argv[2]))
        return
    if len(sys.argv) != 2 or sys.argv[1] != "run":
        sys.exit(__doc__)
    cfg = Config()
    bench = Bench(cfg)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    try:
        bench.run()
    except BaseException:
        log(f"stopped; what was measured so far is in {bench.csv_path.relative_to(ROOT)}")
        raise
    finally:
        bench.cleanup()
        bench.res.f.close()


if __name__ == "__main__":
    main()
