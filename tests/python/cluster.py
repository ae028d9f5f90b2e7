"""A multi-process Strom cluster for the issue-7 fault tests: n real `strom server`
processes on free loopback ports sharing one metadata quorum, each with its own data
dir, plus a loopback TCP proxy that a test can cut to isolate a node.

    from cluster import cluster_factory  # the fixture

    def test_x(cluster_factory):
        c = cluster_factory(n=3)            # started, every node lists every broker
        leader = c.leader_of("t", 0)
        c.node(leader).kill9(); c.node(leader).restart()
        c.wait_isr("t", 0, 3)

Node i (1-based, = node.id) has a PLAINTEXT listener (Kafka clients and followers)
and a CONTROLLER listener (the Raft transport). `voters` of the nodes are
controller+broker; the rest are broker-only observers. What a node advertises and
where it reaches the voters can be routed through `TcpProxy`s (see
`Cluster(..., proxied=[1])`): then the node's inbound PLAINTEXT/CONTROLLER traffic
and its outbound controller traffic pass through proxies that `isolate(1)` cuts,
while the test itself still reaches the node at its real port.

Cluster state is read with raw Metadata v1 / DescribeQuorum v0 requests (no client
library in between, so the test sees exactly what each broker says).
"""

import json
import os
import select
import signal
import socket
import struct
import subprocess
import threading
import time
from pathlib import Path

import pytest

from conftest import STROM_BIN, StromBroker, _BrokerExited, free_port
from strom_helpers import wait_until

HOST = "127.0.0.1"

# Errors a raw Produce may get while leadership is settling (nothing was appended):
# UNKNOWN_TOPIC_OR_PARTITION, LEADER_NOT_AVAILABLE, NOT_LEADER_OR_FOLLOWER.
RETRIABLE_PRODUCE_ERRORS = {3, 5, 6}


def _ephemeral_range():
    try:
        lo, hi = Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()
        return int(lo), int(hi)
    except (OSError, ValueError):
        return 32768, 60999


_handed_out = set()


def cluster_port():
    """A free loopback port below the kernel's ephemeral range. Nodes keep their
    ports across restarts (the others' configs name them); a port from the
    ephemeral range could meanwhile become some client connection's source port."""
    import random
    lo, _ = _ephemeral_range()
    floor = 20000 if lo > 21000 else 1024
    for _ in range(1000):
        port = random.randrange(floor, lo)
        if port in _handed_out:
            continue
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            try:
                s.bind((HOST, port))
            except OSError:
                continue
        _handed_out.add(port)
        return port
    return free_port()

# Fast failure detection for tests (Kafka's defaults are 9000/2000/30000 ms).
FAST = {
    "broker.session.timeout.ms": "3000",
    "broker.heartbeat.interval.ms": "500",
    "replica.lag.time.max.ms": "5000",
}


# -- a minimal Kafka protocol client (just what the harness needs) --------------------

class _W:
    def __init__(self):
        self.b = bytearray()

    def i8(self, v):
        self.b += struct.pack(">b", v); return self

    def i16(self, v):
        self.b += struct.pack(">h", v); return self

    def i32(self, v):
        self.b += struct.pack(">i", v); return self

    def string(self, s):
        if s is None:
            return self.i16(-1)
        d = s.encode(); self.i16(len(d)); self.b += d; return self

    def uvarint(self, v):
        while True:
            byte = v & 0x7F
            v >>= 7
            if v:
                self.b.append(byte | 0x80)
            else:
                self.b.append(byte)
                return self

    def cstring(self, s):
        d = s.encode(); self.uvarint(len(d) + 1); self.b += d; return self


class _R:
    def __init__(self, data):
        self.d, self.o = data, 0

    def take(self, n):
        v = self.d[self.o:self.o + n]
        if len(v) != n:
            raise ValueError("short response")
        self.o += n
        return v

    def i8(self):
        return struct.unpack(">b", self.take(1))[0]

    def i16(self):
        return struct.unpack(">h", self.take(2))[0]

    def i32(self):
        return struct.unpack(">i", self.take(4))[0]

    def i64(self):
        return struct.unpack(">q", self.take(8))[0]

    def string(self):
        n = self.i16()
        return None if n < 0 else self.take(n).decode()

    def array(self, f):
        n = self.i32()
        return [] if n < 0 else [f() for _ in range(n)]

    def uvarint(self):
        shift = v = 0
        while True:
            b = self.take(1)[0]
            v |= (b & 0x7F) << shift
            if not b & 0x80:
                return v
            shift += 7

    def cstring(self):
        n = self.uvarint()
        return None if n == 0 else self.take(n - 1).decode()

    def carray(self, f):
        n = self.uvarint()
        return [] if n == 0 else [f() for _ in range(n - 1)]

    def tags(self):
        for _ in range(self.uvarint()):
            self.uvarint()
            self.take(self.uvarint())


def _call(addr, api_key, version, body, flexible_header=False, timeout=3.0):
    host, port = addr.rsplit(":", 1)
    hdr = _W().i16(api_key).i16(version).i32(7).string("strom-cluster-test")
    if flexible_header:
        hdr.uvarint(0)
    frame = bytes(hdr.b) + body
    with socket.create_connection((host, int(port)), timeout=timeout) as s:
        s.settimeout(timeout)
        s.sendall(struct.pack(">i", len(frame)) + frame)
        size = struct.unpack(">i", _recv(s, 4))[0]
        r = _R(_recv(s, size))
    if r.i32() != 7:
        raise ValueError("correlation id mismatch")
    if flexible_header:
        r.tags()
    return r


def _recv(s, n):
    buf = b""
    while len(buf) < n:
        chunk = s.recv(n - len(buf))
        if not chunk:
            raise ConnectionError("connection closed")
        buf += chunk
    return buf


class Metadata:
    """A Metadata v1 answer: `brokers` {id: (host, port)}, `controller`, `topics`
    {name: (error, {partition: (error, leader, replicas, isr)})}."""

    def __init__(self, brokers, controller, topics):
        self.brokers, self.controller, self.topics = brokers, controller, topics

    def partition(self, topic, p):
        t = self.topics.get(topic)
        return None if t is None else t[1].get(p)


def metadata(addr, topics=None, timeout=3.0):
    """Raw Metadata v1 (`topics=None`: every topic)."""
    w = _W()
    if topics is None:
        w.i32(-1)
    else:
        w.i32(len(topics))
        for t in topics:
            w.string(t)
    r = _call(addr, 3, 1, bytes(w.b), timeout=timeout)

    def broker():
        node, host, port, _rack = r.i32(), r.string(), r.i32(), r.string()
        return node, (host, port)

    brokers = dict(r.array(broker))
    controller = r.i32()

    def partition():
        err, idx, leader = r.i16(), r.i32(), r.i32()
        replicas, isr = r.array(r.i32), r.array(r.i32)
        return idx, (err, leader, replicas, isr)

    def topic():
        err, name, _internal = r.i16(), r.string(), r.i8()
        return name, (err, dict(r.array(partition)))

    return Metadata(brokers, controller, dict(r.array(topic)))


def produce(addr, topic, partition, values, acks=-1, timeout_ms=5000, timeout=None):
    """Raw Produce v3 of one batch of `values` to the broker at `addr` (no metadata
    lookups, no retries: the answer of exactly that broker). Returns
    (error_code, base_offset)."""
    from kafka.record.memory_records import MemoryRecordsBuilder
    b = MemoryRecordsBuilder(2, 0, 1 << 22)
    now = int(time.time() * 1000)
    for v in values:
        b.append(now, None, v)
    b.close()
    records = bytes(b.buffer())
    w = (_W().string(None).i16(acks).i32(timeout_ms).i32(1).string(topic).i32(1).i32(partition)
         .i32(len(records)))
    w.b += records
    r = _call(addr, 0, 3, bytes(w.b), timeout=timeout or (timeout_ms / 1000 + 5))
    for _t in range(r.i32()):
        r.string()
        for _p in range(r.i32()):
            _idx, err, base = r.i32(), r.i16(), r.i64()
            r.i64()
            return err, base
    raise ValueError("empty Produce answer")


def produce_settled(addr, topic, partition, values, acks=-1, timeout_ms=5000, within=30):
    """`produce`, again while the broker answers an error that means leadership is
    still settling (NOT_LEADER_OR_FOLLOWER…: nothing appended), as a client's retry
    would. Returns the last (error_code, base_offset)."""
    deadline = time.monotonic() + within
    while True:
        err, base = produce(addr, topic, partition, values, acks, timeout_ms)
        if err not in RETRIABLE_PRODUCE_ERRORS or time.monotonic() > deadline:
            return err, base
        time.sleep(0.1)


def find_coordinator(addr, key, key_type=0, timeout=3.0):
    """Raw FindCoordinator v1 (`key_type` 0: group, 1: transactional id); returns
    (error_code, node_id)."""
    r = _call(addr, 10, 1, bytes(_W().string(key).i8(key_type).b), timeout=timeout)
    r.i32()
    err = r.i16()
    r.string()
    return err, r.i32()


def quorum_leader(addr, timeout=3.0):
    """The metadata quorum's leader as `addr` knows it (raw DescribeQuorum v0; a
    follower answers NOT_LEADER_OR_FOLLOWER with the leader id). -1 when unknown."""
    body = (_W().uvarint(2).cstring("__cluster_metadata").uvarint(2).i32(0).uvarint(0)
            .uvarint(0).uvarint(0))
    r = _call(addr, 55, 0, bytes(body.b), flexible_header=True, timeout=timeout)
    r.i16()  # top-level error
    for _t in range(r.uvarint() - 1):
        r.cstring()
        for _p in range(r.uvarint() - 1):
            _idx, _err, leader = r.i32(), r.i16(), r.i32()
            return leader
    return -1


# -- a TCP proxy a test can cut -------------------------------------------------------

class TcpProxy:
    """Listens on a free loopback port and forwards every connection to `target`
    (`host:port`). `cut()` closes every forwarded connection and makes new ones
    close at once (the peer sees a reset/EOF, as across a failed link); `heal()`
    forwards again."""

    def __init__(self, target, name=""):
        self.target = target
        self.name = name
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._sock.bind((HOST, 0))
        self._sock.listen(128)
        self.port = self._sock.getsockname()[1]
        self._cut = False
        self._closed = False
        self._lock = threading.Lock()
        self._conns = set()
        self._thread = threading.Thread(target=self._accept_loop, daemon=True,
                                        name=f"proxy-{name}")
        self._thread.start()

    @property
    def addr(self):
        return f"{HOST}:{self.port}"

    def _accept_loop(self):
        while not self._closed:
            try:
                client, _ = self._sock.accept()
            except OSError:
                return
            if self._cut or self._closed:
                _close_hard(client)
                continue
            try:
                host, port = self.target.rsplit(":", 1)
                upstream = socket.create_connection((host, int(port)), timeout=2)
                upstream.settimeout(None)
            except OSError:
                _close_hard(client)
                continue
            pair = (client, upstream)
            with self._lock:
                self._conns.add(pair)
            threading.Thread(target=self._pump, args=(pair,), daemon=True).start()

    def _pump(self, pair):
        a, b = pair
        try:
            while not self._cut and not self._closed:
                ready, _, _ = select.select([a, b], [], [], 0.2)
                for s in ready:
                    data = s.recv(65536)
                    if not data:
                        return
                    (b if s is a else a).sendall(data)
        except OSError:
            pass
        finally:
            with self._lock:
                self._conns.discard(pair)
            _close_hard(a)
            _close_hard(b)

    def cut(self):
        self._cut = True
        with self._lock:
            conns = list(self._conns)
        for a, b in conns:
            _close_hard(a)
            _close_hard(b)

    def heal(self):
        self._cut = False

    def close(self):
        self._closed = True
        self.cut()
        try:
            self._sock.close()
        except OSError:
            pass


def _close_hard(s):
    try:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    except OSError:
        pass
    try:
        s.close()
    except OSError:
        pass


# -- nodes and the cluster ------------------------------------------------------------

class ClusterNode(StromBroker):
    """One node of a `Cluster`: ports fixed at construction (the other nodes'
    configs name them), config written by the cluster."""

    def __init__(self, cluster, node_id, workdir, overrides):
        super().__init__(workdir, overrides)
        self.cluster = cluster
        self.node_id = node_id
        self.port = cluster_port()
        self.controller_port = cluster_port()
        self.client_port = cluster_port() if cluster.client_listener else None
        self.admin_port = cluster_port()
        self.voter = node_id <= cluster.voters
        # Filled in by the cluster when this node's traffic goes through proxies.
        self.advertised_port = self.port
        self.voters_spec = None

    @property
    def client_bootstrap(self):
        """Where the test's clients connect: the CLIENT listener when there is one."""
        return f"{HOST}:{self.client_port or self.port}"

    def _write_config(self):
        listeners = [f"PLAINTEXT://{HOST}:{self.port}", f"CONTROLLER://{HOST}:{self.controller_port}"]
        advertised = [f"PLAINTEXT://{HOST}:{self.advertised_port}"]
        protocols = ["PLAINTEXT:PLAINTEXT", "CONTROLLER:PLAINTEXT"]
        if self.client_port:
            listeners.append(f"CLIENT://{HOST}:{self.client_port}")
            advertised.append(f"CLIENT://{HOST}:{self.client_port}")
            protocols.append("CLIENT:PLAINTEXT")
        props = {
            "strom.admin.listener": f"{HOST}:{self.admin_port}",
            "node.id": str(self.node_id),
            "process.roles": "broker,controller" if self.voter else "broker",
            "listeners": ",".join(listeners),
            "advertised.listeners": ",".join(advertised),
            "listener.security.protocol.map": ",".join(protocols),
            "controller.listener.names": "CONTROLLER",
            "inter.broker.listener.name": "PLAINTEXT",
            "controller.quorum.voters": self.voters_spec or self.cluster.voters_spec(),
            "log.dirs": str(self.data_dir),
            "num.partitions": "1",
            "auto.create.topics.enable": "true",
        }
        props.update({k: str(v) for k, v in self.overrides.items()})
        path = self.workdir / "server.properties"
        path.write_text("".join(f"{k}={v}\n" for k, v in props.items()))
        return path

    def spawn(self):
        if not STROM_BIN.exists():
            pytest.fail(f"strom binary not found at {STROM_BIN}; run `cargo build` or set STROM_BIN")
        self._spawn()

    def start(self):
        self.spawn()
        self.wait_up()
        return self

    def wait_up(self):
        try:
            self.wait_ready()
        except _BrokerExited as e:
            pytest.fail(str(e))

    def restart(self):
        super().restart()
        return self

    def stop(self, timeout=30):
        """SIGTERM: a controlled shutdown (leaderships move first); returns the exit code."""
        return self.terminate(timeout=timeout)

    def sigstop(self):
        """SIGSTOP: a hung process (sockets open, nothing answered)."""
        self.proc.send_signal(signal.SIGSTOP)

    def sigcont(self):
        self.proc.send_signal(signal.SIGCONT)

    def metadata(self, topics=None, timeout=3.0):
        return metadata(self.bootstrap, topics, timeout)

    def partition_dir(self, topic, partition):
        return self.data_dir / f"{topic}-{partition}"

    def log_bytes(self, topic, partition):
        """The partition's record batches as stored: every `.log` segment's bytes in
        offset order (preallocated zero tails trimmed)."""
        d = self.partition_dir(topic, partition)
        segments = sorted(d.glob("*.log"))
        return b"".join(_trim_segment(p.read_bytes()) for p in segments)


def _trim_segment(data):
    """A segment's batches, up to the first position where no complete batch
    header fits or the length is zero (preallocation)."""
    out, pos = [], 0
    while pos + 12 <= len(data):
        length = struct.unpack(">i", data[pos + 8:pos + 12])[0]
        if length <= 0 or pos + 12 + length > len(data):
            break
        out.append(data[pos:pos + 12 + length])
        pos += 12 + length
    return b"".join(out)


class Cluster:
    """`n` nodes, the first `voters` of them controller voters. `overrides` go into
    every node's config, `node_overrides[id]` into one node's. `proxied` node ids get
    their inbound PLAINTEXT and CONTROLLER traffic and their outbound controller
    traffic routed through `TcpProxy`s (see `isolate`); the test reaches an isolated
    node directly at its real PLAINTEXT port (`node.bootstrap`, e.g. with the raw
    `produce`). `client_listener=True` gives every node a CLIENT listener advertised
    directly, which `bootstrap` then uses."""

    def __init__(self, tmp_path, n=3, voters=3, overrides=None, node_overrides=None,
                 proxied=(), client_listener=False):
        self.tmp_path = Path(tmp_path)
        self.n = n
        self.voters = voters
        self.overrides = dict(FAST)
        self.overrides.update(overrides or {})
        self.node_overrides = dict(node_overrides or {})
        self.proxied = set(proxied)
        self.client_listener = client_listener
        self.nodes = {}
        self.proxies = {}  # node id -> [TcpProxy]
        for i in range(1, n + 1):
            self._add_node(i)
        for i in self.proxied:
            self._proxy_node(i)

    def _add_node(self, i):
        ov = dict(self.overrides)
        ov.update(self.node_overrides.get(i, {}))
        node = ClusterNode(self, i, self.tmp_path / f"node{i}", ov)
        self.nodes[i] = node
        return node

    def _proxy_node(self, i):
        node = self.nodes[i]
        inbound_plain = TcpProxy(f"{HOST}:{node.port}", f"{i}-plaintext")
        inbound_ctrl = TcpProxy(f"{HOST}:{node.controller_port}", f"{i}-controller")
        node.advertised_port = inbound_plain.port
        self._inbound_ctrl = getattr(self, "_inbound_ctrl", {})
        self._inbound_ctrl[i] = inbound_ctrl
        proxies = [inbound_plain, inbound_ctrl]
        # Node i reaches the other voters through proxies of its own.
        spec = []
        for v in range(1, self.voters + 1):
            if v == i:
                spec.append(f"{v}@{HOST}:{node.controller_port}")
            else:
                p = TcpProxy(f"{HOST}:{self.nodes[v].controller_port}", f"{i}-to-{v}")
                proxies.append(p)
                spec.append(f"{v}@{p.addr}")
        node.voters_spec = ",".join(spec)
        self.proxies[i] = proxies

    def voters_spec(self):
        """`controller.quorum.voters` as every non-proxied node sees it."""
        parts = []
        for v in range(1, self.voters + 1):
            ctrl = getattr(self, "_inbound_ctrl", {}).get(v)
            addr = ctrl.addr if ctrl else f"{HOST}:{self.nodes[v].controller_port}"
            parts.append(f"{v}@{addr}")
        return ",".join(parts)

    # -- lifecycle --------------------------------------------------------------
    def start(self, timeout=60):
        """Starts every node at once (voters wait for each other), then waits until
        every node answers Metadata listing all of them."""
        for node in self.nodes.values():
            node.spawn()
        for node in self.nodes.values():
            node.wait_up()
        self.wait_brokers(timeout=timeout)
        return self

    def add_node(self, overrides=None):
        """Starts one more broker-only node (the next id) in the running cluster."""
        i = max(self.nodes) + 1
        self.n += 1
        if overrides:
            self.node_overrides[i] = overrides
        node = self._add_node(i)
        node.start()
        return node

    def wait_brokers(self, ids=None, timeout=60):
        """Waits until every running node's Metadata lists exactly the brokers `ids`
        (default: every node that runs)."""
        want = set(ids) if ids is not None else {i for i, n in self.nodes.items() if n.is_running()}

        def agreed():
            for node in self.running():
                try:
                    if set(node.metadata([]).brokers) != want:
                        return False
                except OSError:
                    return False
            return True

        wait_until(agreed, timeout, f"every node's Metadata to list brokers {sorted(want)}", 0.2)

    def running(self):
        return [n for n in self.nodes.values() if n.is_running()]

    def node(self, i):
        return self.nodes[i]

    @property
    def bootstrap(self):
        return ",".join(n.client_bootstrap for n in self.nodes.values())

    def running_bootstrap(self):
        return ",".join(n.client_bootstrap for n in self.running())

    def isolate(self, i):
        """Cuts node i off from the other nodes (its proxies refuse and drop)."""
        for p in self.proxies[i]:
            p.cut()

    def heal(self, i):
        for p in self.proxies[i]:
            p.heal()

    def close(self):
        for ps in self.proxies.values():
            for p in ps:
                p.close()

    # -- cluster state ------------------------------------------------------------
    def any_metadata(self, topics=None):
        last = None
        for node in self.running():
            try:
                return node.metadata(topics)
            except OSError as e:
                last = e
        raise AssertionError(f"no running node answers Metadata ({last})")

    def partition_state(self, topic, partition, via=None):
        """(leader, replicas, isr) as node `via` (default: any running node) says."""
        md = (self.nodes[via].metadata([topic]) if via else self.any_metadata([topic]))
        p = md.partition(topic, partition)
        if p is None:
            return None
        return p[1], p[2], p[3]

    def _among(self, among):
        if among is None:
            return self.running()
        return [self.nodes[i] for i in among if self.nodes[i].is_running()]

    def leader_of(self, topic, partition, timeout=30, exclude=(), among=None):
        """The partition's leader once the running nodes (or those of `among`) agree
        on one that runs (and is not in `exclude`)."""
        def agreed():
            seen = set()
            for node in self._among(among):
                try:
                    st = self.partition_state(topic, partition, via=node.node_id)
                except OSError:
                    return None
                if st is None:
                    return None
                seen.add(st[0])
            if len(seen) == 1:
                leader = seen.pop()
                if leader in self.nodes and self.nodes[leader].is_running() and leader not in exclude:
                    return leader
            return None

        return wait_until(agreed, timeout, f"one live leader of {topic}-{partition}", 0.1)

    def wait_isr(self, topic, partition, n, timeout=60, among=None):
        """Waits until every running node (or those of `among`) reports a leader and an
        ISR of `n` replicas; returns the ISR."""
        def full():
            isrs = []
            for node in self._among(among):
                try:
                    st = self.partition_state(topic, partition, via=node.node_id)
                except OSError:
                    return None
                if st is None or st[0] < 0 or len(st[2]) != n:
                    return None
                isrs.append(tuple(sorted(st[2])))
            return list(isrs[0]) if isrs and len(set(isrs)) == 1 else None

        return wait_until(full, timeout, f"ISR of {topic}-{partition} with {n} replicas", 0.1)

    def controller_id(self, timeout=30):
        """The active controller (the metadata quorum's leader), as the running voters
        agree on it."""
        def agreed():
            seen = set()
            for node in self.running():
                if not node.voter:
                    continue
                try:
                    seen.add(quorum_leader(node.bootstrap))
                except (OSError, ValueError):
                    return None
            if len(seen) == 1:
                leader = seen.pop()
                return leader if leader > 0 else None
            return None

        return wait_until(agreed, timeout, "the voters to agree on an active controller", 0.1)

    def create_topic(self, name, partitions=1, rf=3, config=None, timeout=30):
        """CreateTopics through confluent-kafka's admin; waits until every running
        node has a leader for every partition."""
        from confluent_kafka.admin import AdminClient, NewTopic
        admin = AdminClient({"bootstrap.servers": self.running_bootstrap()})
        fs = admin.create_topics([NewTopic(name, partitions, rf, config=config or {})],
                                 request_timeout=timeout)
        fs[name].result(timeout=timeout)
        for p in range(partitions):
            self.leader_of(name, p, timeout=timeout)
        return admin

    def cli(self, *args, check=True, timeout=60, bootstrap=None):
        """Runs `strom <args> -b <bootstrap>`; returns the CompletedProcess."""
        cmd = [str(STROM_BIN), *args, "-b", bootstrap or self.running_bootstrap()]
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
        if check and r.returncode != 0:
            raise AssertionError(f"{' '.join(cmd)} exited {r.returncode}\nstdout: {r.stdout}\n"
                                 f"stderr: {r.stderr}")
        return r

    def cli_json(self, *args, **kw):
        r = self.cli(*args, "--json", **kw)
        return json.loads(r.stdout)


def scrape_metrics(node):
    """{name: value} of the node's /metrics samples without labels."""
    import urllib.request
    with urllib.request.urlopen(f"http://{HOST}:{node.admin_port}/metrics", timeout=5) as r:
        text = r.read().decode()
    out = {}
    for line in text.splitlines():
        if line.startswith("#") or not line.strip():
            continue
        name, _, value = line.rpartition(" ")
        if "{" not in name:
            out[name] = float(value)
    return out


@pytest.fixture
def cluster_factory(request, tmp_path):
    """`cluster_factory(n=3, voters=3, overrides=..., node_overrides=..., proxied=...)`
    returns a started `Cluster`. At teardown every node is killed; a node that died on
    its own or panicked fails the test, and a failing test shows each node's stderr."""
    clusters = []

    def make(n=3, voters=3, overrides=None, node_overrides=None, proxied=(), start=True,
             client_listener=False):
        c = Cluster(tmp_path / f"cluster{len(clusters)}", n=n, voters=voters,
                    overrides=overrides, node_overrides=node_overrides, proxied=proxied,
                    client_listener=client_listener)
        clusters.append(c)
        request.node._strom_brokers = getattr(request.node, "_strom_brokers", []) + list(
            c.nodes.values())
        return c.start() if start else c

    try:
        yield make
    finally:
        import gc
        gc.collect()
        problems = []
        for c in clusters:
            # Nodes added while the test ran are reported too.
            known = getattr(request.node, "_strom_brokers", [])
            for node in c.nodes.values():
                if node not in known:
                    request.node._strom_brokers = known + [node]
            for node in c.nodes.values():
                if node.proc is None:
                    continue
                if node.is_running():
                    try:
                        node.sigcont()
                    except OSError:
                        pass
                died = node.stop_at_teardown()
                text = node.stderr_text()
                if died:
                    problems.append(f"node {node.node_id} died during the test "
                                    f"(exit {node.proc.returncode}):\n{text[-4000:]}")
                if "panicked at" in text:
                    problems.append(f"node {node.node_id} panicked:\n{text[-4000:]}")
            c.close()
        assert not problems, "\n\n".join(problems)
