#!/usr/bin/env python3
"""Strom's benchmark suite (issue 9); `bench/run` builds the binary and calls this.

Measures the machine's own limits (sequential disk write, fsync latency, loopback TCP
bandwidth) and then the workloads W1–W9 against real `strom server` processes, driven
by `strom perf` (librdkafka). Prints every figure beside its target and writes
`bench/results/<date>.json`. Standard library only, so it runs from a fresh clone.

Units: MB = 10^6 bytes, GB = 10^9 bytes (disk and network figures use the same).
"""

import argparse
import datetime
import json
import os
import platform
import resource
import shutil
import signal
import socket
import statistics
import struct
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CLK_TCK = os.sysconf("SC_CLK_TCK")
PAGE = 4096


def log(msg):
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def loadavg():
    return [float(x) for x in Path("/proc/loadavg").read_text().split()[:3]]


def busy_cpu_secs():
    """Core-seconds every CPU spent busy since boot (/proc/stat)."""
    f = [int(x) for x in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    # user nice system idle iowait irq softirq steal
    return (f[0] + f[1] + f[2] + f[5] + f[6] + f[7]) / CLK_TCK


def own_cpu_secs():
    """This process and its waited-for children (brokers, strom perf, dd, iperf3)."""
    t = os.times()
    return t.user + t.system + t.children_user + t.children_system


def free_port():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def pct(values, q):
    """Nearest-rank percentile of a list (q in 0..100)."""
    s = sorted(values)
    if not s:
        return None
    k = max(0, min(len(s) - 1, int(round(q / 100.0 * len(s) + 0.5)) - 1))
    return s[k]


# ---- the broker process ------------------------------------------------------------

def api_versions(host, port, timeout=0.5):
    """A raw ApiVersions v0 round trip: True once the broker reads and answers requests."""
    cid = b"strom-bench"
    body = struct.pack(">hhih", 18, 0, 0x5170, len(cid)) + cid
    try:
        with socket.create_connection((host, port), timeout=timeout) as s:
            s.settimeout(timeout)
            s.sendall(struct.pack(">i", len(body)) + body)
            hdr = b""
            while len(hdr) < 8:
                chunk = s.recv(8 - len(hdr))
                if not chunk:
                    return False
                hdr += chunk
            return struct.unpack(">ii", hdr)[1] == 0x5170
    except OSError:
        return False


class Broker:
    """One `strom server` on free loopback ports with its data under `workdir/data`."""

    def __init__(self, strom, workdir, overrides=None):
        self.strom = strom
        self.workdir = Path(workdir)
        self.data = self.workdir / "data"
        self.data.mkdir(parents=True, exist_ok=True)
        self.overrides = dict(overrides or {})
        self.port = free_port()
        self.admin_port = free_port()
        self.proc = None
        self.starts = 0

    @property
    def bootstrap(self):
        return f"127.0.0.1:{self.port}"

    @property
    def pid(self):
        return self.proc.pid

    def start(self, overrides=None, timeout=120):
        """Spawns the broker and waits for ApiVersions; returns seconds until it answered."""
        if overrides is not None:
            self.overrides = dict(overrides)
        props = {
            "node.id": "1",
            "listeners": f"PLAINTEXT://{self.bootstrap}",
            "advertised.listeners": f"PLAINTEXT://{self.bootstrap}",
            "log.dirs": str(self.data),
            "strom.admin.listener": f"127.0.0.1:{self.admin_port}",
            "num.partitions": "1",
            "auto.create.topics.enable": "true",
        }
        props.update(self.overrides)
        cfg = self.workdir / "server.properties"
        cfg.write_text("".join(f"{k}={v}\n" for k, v in props.items()))
        self.starts += 1
        self.logfile = open(self.workdir / f"server-{self.starts}.log", "wb")
        env = dict(os.environ, RUST_LOG=os.environ.get("RUST_LOG", "info"), NO_COLOR="1")
        t0 = time.monotonic()
        self.proc = subprocess.Popen([str(self.strom), "server", "--config", str(cfg)],
                                     stdin=subprocess.DEVNULL, stdout=self.logfile,
                                     stderr=subprocess.STDOUT, env=env, cwd=str(self.workdir))
        while time.monotonic() - t0 < timeout:
            if self.proc.poll() is not None:
                raise RuntimeError(f"strom server exited with {self.proc.returncode}; see "
                                   f"{self.workdir}/server-{self.starts}.log")
            if api_versions("127.0.0.1", self.port):
                return time.monotonic() - t0
            time.sleep(0.005)
        raise RuntimeError(f"strom server did not answer within {timeout} s")

    def stop(self, sig=signal.SIGTERM, timeout=60):
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self.proc:
            self.logfile.close()

    # -- /proc figures ------------------------------------------------------------------
    def rss_mb(self):
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024.0
        return None

    def cpu_times(self):
        """(user, system) CPU seconds of the broker so far."""
        fields = Path(f"/proc/{self.pid}/stat").read_text().rsplit(")", 1)[1].split()
        # after the comm field: state is [0], utime [11], stime [12]
        return int(fields[11]) / CLK_TCK, int(fields[12]) / CLK_TCK

    def cpu_secs(self):
        return sum(self.cpu_times())


class Sampler:
    """Samples the broker's VmRSS every 100 ms on a background thread."""

    def __init__(self, broker, interval=0.1):
        self.broker, self.interval = broker, interval
        self.samples = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()

    def _run(self):
        while not self._stop.is_set():
            try:
                self.samples.append(self.broker.rss_mb())
            except (OSError, ValueError):
                pass
            self._stop.wait(self.interval)

    @property
    def peak(self):
        return max((s for s in self.samples if s is not None), default=None)


# ---- machine limits ------------------------------------------------------------------

def disk_write(dirpath, mb):
    path = Path(dirpath) / "ddtest"
    t0 = time.monotonic()
    ru0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    r = subprocess.run(["dd", "if=/dev/zero", f"of={path}", "bs=1M", f"count={mb}",
                        "conv=fdatasync"], capture_output=True, text=True)
    ru1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    secs = time.monotonic() - t0
    # CPU dd spent putting the bytes into the file (almost all of it the kernel's
    # copy into the page cache): the floor under a broker's CPU per GB written.
    dd_cpu = (ru1.ru_utime - ru0.ru_utime) + (ru1.ru_stime - ru0.ru_stime)
    path.unlink(missing_ok=True)
    if r.returncode != 0:
        raise RuntimeError(f"dd failed: {r.stderr.strip()}")
    # dd's own figure excludes process start-up; parse it, fall back to ours.
    try:
        last = r.stderr.strip().splitlines()[-1]
        nbytes = int(last.split()[0])
        secs = float(last.split(",")[2].split()[0])
    except (IndexError, ValueError):
        nbytes = mb * 1024 * 1024
    return {"bytes": nbytes, "secs": secs, "mb_per_sec": nbytes / secs / 1e6,
            "cpu_secs_per_gb": dd_cpu / (nbytes / 1e9),
            "command": f"dd if=/dev/zero of=<datadir>/ddtest bs=1M count={mb} conv=fdatasync"}


def fsync_latency(dirpath, n):
    """4 KiB write + fsync, n times, on the data dir's file system."""
    path = Path(dirpath) / "fsynctest"
    buf = os.urandom(4096)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    lat = []
    try:
        for i in range(n):
            t0 = time.perf_counter()
            os.write(fd, buf)
            os.fsync(fd)
            lat.append((time.perf_counter() - t0) * 1000.0)
    finally:
        os.close(fd)
        path.unlink(missing_ok=True)
    return {"n": n, "p50_ms": pct(lat, 50), "p99_ms": pct(lat, 99), "max_ms": max(lat),
            "avg_ms": statistics.mean(lat), "method": "4 KiB os.write + os.fsync (python)"}


def loopback_bw(secs):
    if shutil.which("iperf3"):
        port = free_port()
        srv = subprocess.Popen(["iperf3", "-s", "-B", "127.0.0.1", "-p", str(port)],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            for _ in range(20):
                time.sleep(0.2)  # no probe connection: iperf3 would count it as a test
                r = subprocess.run(["iperf3", "-c", "127.0.0.1", "-p", str(port), "-t",
                                    str(secs), "-J"], capture_output=True, text=True,
                                   timeout=secs + 30)
                d = json.loads(r.stdout or "{}")
                if "end" in d and "sum_received" in d["end"]:
                    bps = d["end"]["sum_received"]["bits_per_second"]
                    return {"mb_per_sec": bps / 8 / 1e6,
                            "method": f"iperf3 -c 127.0.0.1 -t {secs} (1 stream)"}
            log(f"iperf3 gave no result ({d.get('error')}); using the python probe")
        except (subprocess.TimeoutExpired, ValueError) as e:
            log(f"iperf3 failed ({e}); using the python probe")
        finally:
            srv.kill()
            srv.wait()
    return python_loopback(secs)


def python_loopback(secs):
    port = free_port()
    ls = socket.socket()
    ls.bind(("127.0.0.1", port))
    ls.listen(1)
    total = [0]

    def sink():
        c, _ = ls.accept()
        while True:
            b = len(c.recv(1 << 20))
            if not b:
                break
            total[0] += b
        c.close()

    t = threading.Thread(target=sink)
    t.start()
    s = socket.create_connection(("127.0.0.1", port))
    buf = b"\0" * (1 << 20)
    t0 = time.monotonic()
    while time.monotonic() - t0 < secs:
        s.sendall(buf)
    s.close()
    t.join()
    el = time.monotonic() - t0
    ls.close()
    return {"mb_per_sec": total[0] / el / 1e6, "method": "python socket probe (1 MiB sends)"}


# ---- strom perf -------------------------------------------------------------------------

class Perf:
    def __init__(self, strom, broker):
        self.strom, self.broker = strom, broker

    def cmd(self, *args):
        return [str(self.strom), "-b", self.broker.bootstrap, "--timeout", "30", "perf", *args,
                "--json"]

    def run(self, *args, timeout=1800):
        r = subprocess.run(self.cmd(*args), capture_output=True, text=True, timeout=timeout)
        try:
            d = json.loads(r.stdout)
        except ValueError:
            raise RuntimeError(f"strom perf {' '.join(args)} failed ({r.returncode}): "
                               f"{r.stderr.strip()[-2000:]}")
        if d.get("errors"):
            log(f"strom perf {args[0]}: {d['errors']} errors, first: {d.get('first_error')}")
        return d

    def spawn(self, *args):
        return subprocess.Popen(self.cmd(*args), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                text=True)


def measured(broker, fn):
    """Runs fn() while sampling the broker: returns (result, cpu seconds, peak RSS MB, wall s,
    user cpu seconds). User time is the broker's own code; the rest is the kernel's (copies
    into and out of the page cache and sockets, and on a VM the faults behind them)."""
    u0, s0 = broker.cpu_times()
    t0 = time.monotonic()
    with Sampler(broker) as s:
        res = fn()
    u1, s1 = broker.cpu_times()
    return res, (u1 - u0) + (s1 - s0), s.peak, time.monotonic() - t0, u1 - u0


def mbps(d):
    return d["bytes"] / max(d["elapsed_secs"], 1e-9) / 1e6


def settle_rss(broker, secs=2.0):
    time.sleep(secs)
    return broker.rss_mb()


# ---- the workloads -------------------------------------------------------------------

def produce_args(topic, n, size, parts, linger=5, extra=()):
    return ["produce", "-t", topic, "--num-records", str(n), "--record-size", str(size),
            "--acks", "all", "--linger-ms", str(linger), "--partitions", str(parts),
            "--replication-factor", "1", *extra]


def e2e_args(topic, secs, rate):
    return ["e2e", "-t", topic, "--duration", str(secs), "--throughput", str(rate),
            "--record-size", "1024", "--acks", "all", "--linger-ms", "0", "--partitions", "1",
            "--replication-factor", "1", "--consumer-prop", "fetch.wait.max.ms=100"]


def w_produce(perf, broker, name, topic, n, size, parts):
    log(f"{name}: produce {n} x {size} B, acks=all, linger 5 ms, {parts} partition(s)")
    d, cpu, peak, _, user = measured(
        broker, lambda: perf.run(*produce_args(topic, n, size, parts)))
    gb = d["bytes"] / 1e9
    out = {"records": d["records"], "bytes": d["bytes"], "secs": d["elapsed_secs"],
           "mb_per_sec": mbps(d), "records_per_sec": d["records_per_sec"],
           "ack_p99_ms": d["latency_ms"]["p99"], "errors": d["errors"],
           "broker_cpu_secs": cpu, "cpu_secs_per_gb": cpu / gb if gb else None,
           "user_cpu_secs_per_gb": user / gb if gb else None,
           "broker_rss_peak_mb": peak}
    log(f"  {out['mb_per_sec']:.0f} MB/s, {out['records_per_sec']:.0f} rec/s, "
        f"{out['cpu_secs_per_gb']:.3f} broker CPU s/GB, peak RSS {peak:.1f} MB")
    return out


def w_latency(perf, broker, name, topic, secs, rate=10000):
    log(f"{name}: e2e 1 KiB at {rate}/s for {secs} s, acks=all, linger 0")
    d, cpu, peak, _, _ = measured(broker, lambda: perf.run(*e2e_args(topic, secs, rate)))
    lat, ack = d["latency_ms"], d["ack_latency_ms"]
    out = {"records": d["records"], "sent": d.get("sent"), "errors": d["errors"],
           "rate": d["records_per_sec"], "e2e_p50_ms": lat["p50"], "e2e_p99_ms": lat["p99"],
           "e2e_p999_ms": lat["p999"], "e2e_max_ms": lat["max"], "ack_p50_ms": ack["p50"],
           "ack_p99_ms": ack["p99"], "ack_p999_ms": ack["p999"], "broker_cpu_secs": cpu,
           "broker_rss_peak_mb": peak}
    log(f"  e2e p50 {lat['p50']:.2f} p99 {lat['p99']:.2f} p99.9 {lat['p999']:.2f} "
        f"max {lat['max']:.2f} ms; ack p99 {ack['p99']:.2f} ms")
    return out


def w_consume(perf, broker, topic, n):
    log(f"W4: consume {n} records of 1 KiB from the page cache")
    d, cpu, peak, _, user = measured(broker, lambda: perf.run(
        "consume", "-t", topic, "--num-records", str(n), "--idle-timeout", "10"))
    gb = d["bytes"] / 1e9
    out = {"records": d["records"], "bytes": d["bytes"], "secs": d["elapsed_secs"],
           "mb_per_sec": mbps(d), "errors": d["errors"], "broker_cpu_secs": cpu,
           "cpu_secs_per_gb": cpu / gb if gb else None,
           "user_cpu_secs_per_gb": user / gb if gb else None, "broker_rss_peak_mb": peak,
           "first_record_ms": d.get("first_record_ms")}
    log(f"  {out['mb_per_sec']:.0f} MB/s, {out['cpu_secs_per_gb']:.3f} broker CPU s/GB")
    return out


def create_topics(strom, broker, names, parts):
    """`strom topic create` in chunks (one CreateTopics request per chunk)."""
    for i in range(0, len(names), 200):
        r = subprocess.run([str(strom), "-b", broker.bootstrap, "--timeout", "120", "topic",
                            "create", "--if-not-exists", "-p", str(parts), "-r", "1",
                            *names[i:i + 200]], capture_output=True, text=True, timeout=600)
        if r.returncode != 0:
            raise RuntimeError(f"strom topic create failed: {r.stderr.strip()[-1000:]}")


def w6(perf, strom, broker, parts, producers, consumers, per_producer):
    topic = "w6"
    log(f"W6: {parts} partitions, {producers} producers x {per_producer} x 1 KiB, "
        f"{consumers} consumers in a group")
    t0 = time.monotonic()
    create_topics(strom, broker, [topic], parts)
    create_secs = time.monotonic() - t0
    total = producers * per_producer

    def run():
        # Auto-commit, so a rebalance re-reads little (duplicates are counted, not errors).
        cons = [perf.spawn("consume", "-t", topic, "--group", "strom-bench-w6",
                           "--num-records", str(total), "--idle-timeout", "8",
                           "--consumer-prop", "enable.auto.commit=true",
                           "--consumer-prop", "auto.commit.interval.ms=1000")
                for _ in range(consumers)]
        time.sleep(1.0)  # let the consumers join before the data flows
        t_start = time.monotonic()
        prods = [perf.spawn(*produce_args(topic, per_producer, 1024, parts))
                 for _ in range(producers)]
        pres = [json.loads(p.communicate(timeout=1800)[0] or "{}") for p in prods]
        t_prod = time.monotonic() - t_start
        cres = [json.loads(c.communicate(timeout=1800)[0] or "{}") for c in cons]
        return pres, cres, t_prod

    (pres, cres, t_prod), cpu, peak, _, _ = measured(broker, run)
    acked = sum(p.get("records", 0) for p in pres)
    consumed = sum(c.get("records", 0) for c in cres)
    pbytes = sum(p.get("bytes", 0) for p in pres)
    cbytes = sum(c.get("bytes", 0) for c in cres)
    cspan = max((c.get("elapsed_secs", 0) for c in cres), default=0)
    out = {"partitions": parts, "producers": producers, "consumers": consumers,
           "create_topic_secs": create_secs, "acked": acked, "consumed": consumed,
           "produce_mb_per_sec": pbytes / t_prod / 1e6,
           "consume_mb_per_sec": cbytes / max(cspan, 1e-9) / 1e6,
           "consumer_records": [c.get("records") for c in cres],
           "produce_ack_p99_ms_max": max((p["latency_ms"]["p99"] for p in pres if "latency_ms" in p),
                                         default=None),
           "errors": sum(p.get("errors", 0) for p in pres) + sum(c.get("errors", 0) for c in cres),
           "broker_cpu_secs": cpu, "broker_rss_peak_mb": peak}
    log(f"  produce {out['produce_mb_per_sec']:.0f} MB/s aggregate, consume "
        f"{out['consume_mb_per_sec']:.0f} MB/s; acked {acked}, consumed {consumed} "
        f"(per consumer {out['consumer_records']}), peak RSS {peak:.1f} MB")
    return out


def dir_bytes(path):
    total = 0
    for dp, _, files in os.walk(path):
        for f in files:
            try:
                total += os.path.getsize(os.path.join(dp, f))
            except OSError:
                pass
    return total


def w8(strom, broker, fill_topic, target_bytes, perf):
    """SIGKILL with ~target_bytes on disk plus a torn tail; time until it serves again."""
    have = dir_bytes(broker.data)
    if have < target_bytes:
        n = int((target_bytes - have) / 1024) + 1
        log(f"W8: topping the log up with {n} records ({(target_bytes - have) / 1e9:.2f} GB)")
        perf.run(*produce_args(fill_topic, n, 1024, 1))
    on_disk = dir_bytes(broker.data)
    pdir = broker.data / f"{fill_topic}-0"
    seg = max(pdir.glob("*.log"))
    before = seg.stat().st_size
    log(f"W8: SIGKILL with {on_disk / 1e9:.2f} GB on disk, then 4 KiB of garbage on {seg.name}")
    broker.stop(sig=signal.SIGKILL)
    with open(seg, "ab") as f:
        # A torn batch: a plausible length, then noise.
        f.write(struct.pack(">qi", 1 << 40, 4084) + os.urandom(4084))
    # Restart; served = answers ApiVersions, then metadata + an acks=all produce succeed.
    t0 = time.monotonic()
    api_secs = broker.start(overrides=broker.overrides)
    recovered = seg.stat().st_size
    produce_cmd = [str(strom), "-b", broker.bootstrap, "--timeout", "60", "topic", "produce",
                   fill_topic, "-p", "0", "--acks", "all"]
    r = subprocess.run(produce_cmd, input="after-crash\n", capture_output=True, text=True)
    served = time.monotonic() - t0
    ok = r.returncode == 0
    # The CLI's own start-up (librdkafka, metadata) against a warm broker, for reference.
    t1 = time.monotonic()
    subprocess.run(produce_cmd, input="again\n", capture_output=True, text=True)
    client = time.monotonic() - t1
    out = {"bytes_on_disk": on_disk, "torn_segment": seg.name, "segment_bytes_before": before,
           "segment_bytes_after_recovery": recovered, "torn_tail_truncated": recovered <= before,
           "secs_to_api_versions": api_secs, "secs_to_first_produce": served,
           "client_overhead_secs": client, "first_produce_ok": ok}
    if not ok:
        out["error"] = r.stderr.strip()[-500:]
    log(f"  ApiVersions after {api_secs:.2f} s, first acked produce after {served:.2f} s "
        f"(client alone {client:.2f} s); tail truncated: {out['torn_tail_truncated']}")
    return out


def w9(strom, b, parts_total, topics):
    per = parts_total // topics
    log(f"W9: {topics} topics x {per} partitions = {topics * per}")
    b.start()
    names = [f"w9-{i:04d}" for i in range(topics)]
    t0 = time.monotonic()
    create_topics(strom, b, names, per)
    create_secs = time.monotonic() - t0
    rss_loaded = settle_rss(b, 1.0)
    b.stop()
    startup = b.start()
    # Metadata must list every topic once the broker answers.
    r = subprocess.run([str(strom), "-b", b.bootstrap, "--timeout", "60", "topic", "list"],
                       capture_output=True, text=True)
    listed = sum(1 for line in r.stdout.splitlines() if line.split()[:1] and
                 line.split()[0].startswith("w9-"))
    rss = settle_rss(b, 2.0)
    startup_ms_logged = None
    for line in (b.workdir / f"server-{b.starts}.log").read_text(errors="replace").splitlines():
        if "startup_ms=" in line:
            try:
                startup_ms_logged = int(line.rsplit("startup_ms=", 1)[1].split()[0])
            except ValueError:
                pass
    b.stop()
    out = {"partitions": topics * per, "topics": topics, "create_secs": create_secs,
           "startup_secs": startup, "startup_ms_logged": startup_ms_logged,
           "rss_mb_after_start": rss, "rss_mb_after_create": rss_loaded,
           "topics_listed_after_restart": listed}
    log(f"  start-up {startup:.2f} s (broker says {startup_ms_logged} ms), RSS {rss:.1f} MB "
        f"(after create {rss_loaded:.1f} MB); create took {create_secs:.1f} s")
    return out


# ---- the report -------------------------------------------------------------------------

def targets(r):
    """(figure, measured, unit, target text, ratio, met) for every target of issue 9.

    ratio = measured / target for "≥" targets and target / measured for "≤" targets,
    so ≥ 1.0 always means met."""
    rows = []

    def ge(fig, val, unit, tgt, tgt_text):
        if val is None or tgt is None:
            rows.append((fig, val, unit, tgt_text, None, None))
        else:
            rows.append((fig, val, unit, tgt_text, val / tgt if tgt else None, val >= tgt))

    def le(fig, val, unit, tgt, tgt_text):
        if val is None or tgt is None:
            rows.append((fig, val, unit, tgt_text, None, None))
        else:
            rows.append((fig, val, unit, tgt_text, tgt / val if val else float("inf"), val <= tgt))

    m = r["machine"]
    w = r["workloads"]
    limit = min(m["disk_write"]["mb_per_sec"], m["loopback"]["mb_per_sec"])
    w1 = w.get("W1_1p")
    if w1:
        ge("W1 1 KiB, 1 partition", w1["mb_per_sec"], "MB/s", 0.5 * limit,
           f"≥ 50% of min(disk, loopback) = {0.5 * limit:.0f}")
    for k in ("W1_1p", "W1_8p", "W2_1p", "W2_8p"):
        if k in w:
            le(f"{k.replace('_', ' ')} broker CPU", w[k]["cpu_secs_per_gb"], "s/GB", 0.35, "≤ 0.35")
    if "W3" in w:
        le("W3 e2e p99", w["W3"]["e2e_p99_ms"], "ms", 2.0, "≤ 2")
        le("W3 e2e p99.9", w["W3"]["e2e_p999_ms"], "ms", 10.0, "≤ 10")
    if "W4" in w and w1:
        ge("W4 consume", w["W4"]["mb_per_sec"], "MB/s", 1.5 * w1["mb_per_sec"],
           f"≥ 1.5 × W1 = {1.5 * w1['mb_per_sec']:.0f}")
        le("W4 broker CPU", w["W4"]["cpu_secs_per_gb"], "s/GB", 0.15, "≤ 0.15")
    if "W5_produce" in w and w1:
        ge("W5 fsync-before-ack produce", w["W5_produce"]["mb_per_sec"], "MB/s",
           0.5 * w1["mb_per_sec"], f"≥ 50% of W1 = {0.5 * w1['mb_per_sec']:.0f}")
    if "W5_latency" in w:
        t = m["fsync"]["p99_ms"] + 2.0
        le("W5 e2e p99 (fsync)", w["W5_latency"]["e2e_p99_ms"], "ms", t,
           f"≤ fsync p99 + 2 = {t:.2f}")
    if "W7" in w:
        w7 = w["W7"]
        le("W7 RSS idle", w7["idle_mb"], "MB", 30.0, "≤ 30")
        le("W7 RSS peak during W1", w7["peak_during_w1_mb"], "MB", 200.0, "≤ 200")
        le("W7 RSS growth after W1", max(w7["after_w1_mb"] - w7["idle_mb"], 0.001), "MB",
           20.0, "flat (≤ +20 over idle)")
    if "W8" in w:
        le("W8 recovery to first produce", w["W8"]["secs_to_first_produce"], "s", 5.0, "≤ 5")
    if "W9" in w:
        le("W9 start-up", w["W9"]["startup_secs"], "s", 10.0, "≤ 10")
        le("W9 RSS", w["W9"]["rss_mb_after_start"], "MB", 500.0, "≤ 500")
    return rows


def fmt(v, nd=2):
    if v is None:
        return "-"
    if isinstance(v, float):
        if abs(v) >= 100:
            return f"{v:.0f}"
        return f"{v:.{nd}f}"
    return str(v)


def render(r):
    out = []
    m = r["machine"]
    out.append(f"Strom benchmark {r['date']} ({'quick' if r['quick'] else 'full'}) on "
               f"{m['cpus']} CPU(s) {m['cpu_model']}, {m['mem_gb']:.0f} GB RAM, kernel {m['kernel']}")
    out.append(f"load average at start {r['load_start']}, at end {r['load_end']} (includes this run); "
               f"other processes used {r['other_processes_cores']:.2f} of {m['cpus']} cores during "
               f"the {r['wall_secs']:.0f} s run"
               + ("  — the machine was busy: figures are pessimistic" if r["busy"] else ""))
    out.append("")
    dd_cpu = m["disk_write"].get("cpu_secs_per_gb")
    out.append(f"machine: disk write {m['disk_write']['mb_per_sec']:.0f} MB/s (dd, fdatasync"
               + (f", dd itself {dd_cpu:.2f} CPU s/GB" if dd_cpu is not None else "") + "); "
               f"fsync 4 KiB p50 {m['fsync']['p50_ms']:.2f} ms p99 {m['fsync']['p99_ms']:.2f} ms; "
               f"loopback {m['loopback']['mb_per_sec']:.0f} MB/s ({m['loopback']['method']})")
    if m.get("page_reporting_gb"):
        out.append(f"VM free page reporting handed {m['page_reporting_gb']:.1f} GB of freed guest "
                   "memory back to the host during the run: page-cache writes into it pay host "
                   "faults (system CPU), so CPU per GB varies from run to run")
    out.append("")
    w = r["workloads"]
    hdr = (f"{'workload':<28} {'MB/s':>8} {'rec/s':>10} {'ack p99 ms':>10} {'CPU s/GB':>9} "
           f"{'user s/GB':>9} {'peak RSS MB':>11}")
    out.append(hdr)
    out.append("-" * len(hdr))
    for k in ("W1_1p", "W1_8p", "W2_1p", "W2_8p", "W5_produce", "W4"):
        if k in w:
            x = w[k]
            label = {"W1_1p": "W1 1 KiB, 1 partition", "W1_8p": "W1 1 KiB, 8 partitions",
                     "W2_1p": "W2 100 B, 1 partition", "W2_8p": "W2 100 B, 8 partitions",
                     "W5_produce": "W5 W1 1p, flush.mode=always", "W4": "W4 consume 1 KiB"}[k]
            rps = x.get("records_per_sec") or (x["records"] / x["secs"] if x.get("secs") else None)
            out.append(f"{label:<28} {fmt(x['mb_per_sec']):>8} {fmt(rps):>10} "
                       f"{fmt(x.get('ack_p99_ms')):>10} {fmt(x['cpu_secs_per_gb'], 3):>9} "
                       f"{fmt(x.get('user_cpu_secs_per_gb'), 3):>9} "
                       f"{fmt(x['broker_rss_peak_mb'], 1):>11}")
    out.append("")
    for k, label in (("W3", "W3 latency 10k/s"), ("W5_latency", "W5 latency, flush=always")):
        if k in w:
            x = w[k]
            out.append(f"{label:<28} e2e p50 {x['e2e_p50_ms']:.2f}  p99 {x['e2e_p99_ms']:.2f}  "
                       f"p99.9 {x['e2e_p999_ms']:.2f}  max {x['e2e_max_ms']:.2f} ms;  "
                       f"produce-ack p99 {x['ack_p99_ms']:.2f} ms  ({x['records']} records)")
    if "W6" in w:
        x = w["W6"]
        out.append(f"{'W6 ' + str(x['partitions']) + ' partitions':<28} produce "
                   f"{x['produce_mb_per_sec']:.0f} MB/s ({x['producers']} producers), consume "
                   f"{x['consume_mb_per_sec']:.0f} MB/s ({x['consumers']} in a group), "
                   f"acked {x['acked']} consumed {x['consumed']}, peak RSS {x['broker_rss_peak_mb']:.1f} MB")
    if "W7" in w:
        x = w["W7"]
        out.append(f"{'W7 broker RSS':<28} idle {x['idle_mb']:.1f} MB, peak during W1 "
                   f"{x['peak_during_w1_mb']:.1f} MB, after W1 {x['after_w1_mb']:.1f} MB, after all "
                   f"produce workloads {x['after_all_mb']:.1f} MB")
    if "W8" in w:
        x = w["W8"]
        out.append(f"{'W8 SIGKILL + torn tail':<28} {x['bytes_on_disk'] / 1e9:.2f} GB on disk: "
                   f"ApiVersions after {x['secs_to_api_versions']:.2f} s, first acked produce after "
                   f"{x['secs_to_first_produce']:.2f} s (client alone {x['client_overhead_secs']:.2f} s); "
                   f"tail truncated: {x['torn_tail_truncated']}")
    if "W9" in w:
        x = w["W9"]
        out.append(f"{'W9 ' + str(x['partitions']) + ' partitions':<28} start-up "
                   f"{x['startup_secs']:.2f} s, RSS {x['rss_mb_after_start']:.1f} MB")
    out.append("")
    hdr = f"{'target':<34} {'measured':>10} {'unit':<5} {'target':<32} {'ratio':>6}  met"
    out.append(hdr)
    out.append("-" * len(hdr))
    for fig, val, unit, tt, ratio, met in r["targets"]:
        out.append(f"{fig:<34} {fmt(val, 3 if unit == 's/GB' else 2):>10} {unit:<5} {tt:<32} "
                   f"{fmt(ratio):>6}  {'yes' if met else ('-' if met is None else 'NO')}")
    out.append("")
    out.append("ratio = measured/target for ≥ targets, target/measured for ≤ targets: ≥ 1 is met")
    dd_cpu = m["disk_write"].get("cpu_secs_per_gb")
    produce = [(k, w[k]["cpu_secs_per_gb"]) for k in ("W1_1p", "W1_8p", "W2_1p", "W2_8p")
               if k in w and w[k].get("cpu_secs_per_gb")]
    if dd_cpu and produce:
        # The kernel's copy into the page cache is most of a produce's CPU; on
        # some machines (VMs touching fresh memory) it alone exceeds 0.35 s/GB.
        out.append(f"kernel floor: dd spent {dd_cpu:.2f} CPU s/GB writing into the page cache; "
                   "broker CPU per GB as a multiple of it: "
                   + ", ".join(f"{k.replace('_', ' ')} {v / dd_cpu:.2f}x" for k, v in produce))
    return "\n".join(out)


# ---- main -------------------------------------------------------------------------------

def page_reporting_kib():
    """Guest memory the kernel has handed back to the host so far (virtio-balloon free
    page reporting), or None without it. Memory handed back is faulted in again on its
    next use: on such a VM, every fresh page-cache page a write fills costs a host fault,
    which lands in the writer's system CPU."""
    try:
        return int(Path("/sys/module/page_reporting/parameters/reported_kib").read_text())
    except (OSError, ValueError):
        return None


def machine_info():
    model = "?"
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            model = line.split(":", 1)[1].strip()
            break
    mem = 0
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemTotal:"):
            mem = int(line.split()[1]) / 1024 / 1024
    return {"cpus": os.cpu_count(), "cpu_model": model, "mem_gb": mem,
            "kernel": platform.release(), "hostname": socket.gethostname()}


def git_rev():
    r = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"],
                       capture_output=True, text=True)
    dirty = subprocess.run(["git", "-C", str(ROOT), "status", "--porcelain", "--untracked-files=no"],
                           capture_output=True, text=True).stdout.strip()
    return r.stdout.strip() + ("+dirty" if dirty else "")


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--quick", action="store_true", help="small counts, < 2 minutes")
    ap.add_argument("--strom", default=os.environ.get("STROM_BIN", ROOT / "target/release/strom"))
    ap.add_argument("--workdir", help="where brokers keep data (default: a temp dir)")
    ap.add_argument("--keep", action="store_true", help="keep the work dir")
    ap.add_argument("--results", default=ROOT / "bench" / "results")
    ap.add_argument("--only", help="comma-separated workloads to run (W1,W2,…); default all")
    a = ap.parse_args()
    strom = Path(a.strom).resolve()
    only = set((a.only or "W1,W2,W3,W4,W5,W6,W7,W8,W9").upper().split(","))
    q = a.quick
    n1 = 100_000 if q else 2_000_000
    n2 = 200_000 if q else 2_000_000
    lat_secs = 3 if q else 30
    base = Path(a.workdir) if a.workdir else Path(tempfile.mkdtemp(prefix="strom-bench-"))
    base.mkdir(parents=True, exist_ok=True)
    res = {"date": datetime.datetime.now().isoformat(timespec="seconds"), "quick": q,
           "git": git_rev(), "strom": str(strom), "load_start": loadavg(),
           "machine": machine_info(), "workloads": {}}
    w = res["workloads"]
    busy0, own0, wall0 = busy_cpu_secs(), own_cpu_secs(), time.monotonic()
    reported0 = page_reporting_kib()
    log(f"work dir {base}; load average {res['load_start']}")
    brokers = []
    try:
        b = Broker(strom, base / "main")
        brokers.append(b)
        # -- machine limits, measured on the data dir's file system ----------------------
        log("machine: dd sequential write")
        res["machine"]["disk_write"] = disk_write(b.data, 256 if q else 1024)
        log(f"  {res['machine']['disk_write']['mb_per_sec']:.0f} MB/s, dd itself "
            f"{res['machine']['disk_write']['cpu_secs_per_gb']:.2f} CPU s/GB")
        res["machine"]["fsync"] = fsync_latency(b.data, 200 if q else 1000)
        log(f"  fsync p50 {res['machine']['fsync']['p50_ms']:.2f} ms p99 "
            f"{res['machine']['fsync']['p99_ms']:.2f} ms")
        res["machine"]["loopback"] = loopback_bw(2 if q else 5)
        log(f"  loopback {res['machine']['loopback']['mb_per_sec']:.0f} MB/s")

        b.start()
        perf = Perf(strom, b)
        time.sleep(1.0)
        idle = b.rss_mb()
        log(f"W7: idle RSS {idle:.1f} MB")
        if "W1" in only or "W7" in only:
            w["W1_1p"] = w_produce(perf, b, "W1", "w1-1p", n1, 1024, 1)
            after_w1 = settle_rss(b)
            w["W1_8p"] = w_produce(perf, b, "W1", "w1-8p", n1, 1024, 8)
        if "W2" in only:
            w["W2_1p"] = w_produce(perf, b, "W2", "w2-1p", n2, 100, 1)
            w["W2_8p"] = w_produce(perf, b, "W2", "w2-8p", n2, 100, 8)
        if "W4" in only and "W1_1p" in w:
            w["W4"] = w_consume(perf, b, "w1-1p", n1)
        if "W1_1p" in w:
            w["W7"] = {"idle_mb": idle, "peak_during_w1_mb": w["W1_1p"]["broker_rss_peak_mb"],
                       "after_w1_mb": after_w1, "after_all_mb": settle_rss(b, 1.0),
                       "sampling": "VmRSS from /proc/<pid>/status every 100 ms"}
            log(f"W7: idle {idle:.1f}, peak during W1 {w['W7']['peak_during_w1_mb']:.1f}, "
                f"after W1 {after_w1:.1f}, after W1+W2+W4 {w['W7']['after_all_mb']:.1f} MB")
        if "W3" in only:
            w["W3"] = w_latency(perf, b, "W3", "w3", lat_secs)
        if "W8" in only:
            w["W8"] = w8(strom, b, "w1-1p", 400e6 if q else 4e9, perf)
        if "W5" in only:
            log("W5: restarting the broker with strom.flush.mode=always")
            b.stop()
            b.start(overrides={"strom.flush.mode": "always"})
            w["W5_produce"] = w_produce(perf, b, "W5", "w5-1p", n1, 1024, 1)
            w["W5_latency"] = w_latency(perf, b, "W5", "w5-lat", lat_secs)
            b.stop()
            b.start(overrides={})
        if "W6" in only:
            w["W6"] = w6(perf, strom, b, 100 if q else 1000, 8, 4,
                         5_000 if q else 250_000)
        b.stop()
        if "W9" in only:
            b9 = Broker(strom, base / "w9")
            brokers.append(b9)
            w["W9"] = w9(strom, b9, 1000 if q else 10_000, 10 if q else 100)
    finally:
        for x in brokers:
            try:
                x.stop(sig=signal.SIGKILL)
            except Exception:
                pass
        if not a.keep:
            shutil.rmtree(base, ignore_errors=True)
        else:
            log(f"kept {base}")

    res["load_end"] = loadavg()
    wall = time.monotonic() - wall0
    # Load averages include this run; the CPU other processes used while it ran does not.
    foreign = max(0.0, (busy_cpu_secs() - busy0) - (own_cpu_secs() - own0))
    res["wall_secs"] = wall
    reported1 = page_reporting_kib()
    if reported0 is not None and reported1 is not None:
        res["machine"]["page_reporting_gb"] = (reported1 - reported0) / 1024 / 1024
    res["other_processes_cores"] = foreign / wall
    # Judged by what others used while this run ran: the load average at the
    # start still counts a build that has just finished.
    res["busy"] = res["other_processes_cores"] > 0.25
    res["targets"] = [
        {"figure": f, "measured": v, "unit": u, "target": t, "ratio": r, "met": m}
        for f, v, u, t, r, m in targets(res)]
    res_rows = targets(res)
    text = render(dict(res, targets=res_rows))
    print(text)
    outdir = Path(a.results)
    outdir.mkdir(parents=True, exist_ok=True)
    stamp = datetime.datetime.now().strftime("%Y-%m-%d")
    name = f"{stamp}{'-quick' if q else ''}.json"
    path = outdir / name
    if path.exists():
        path = outdir / f"{datetime.datetime.now().strftime('%Y-%m-%dT%H%M%S')}{'-quick' if q else ''}.json"
    path.write_text(json.dumps(res, indent=2) + "\n")
    log(f"results in {path}")
    errors = sum(x.get("errors", 0) or 0 for x in w.values() if isinstance(x, dict))
    if errors:
        log(f"{errors} client errors during the run")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
