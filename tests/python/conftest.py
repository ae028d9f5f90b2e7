"""Fixtures that run a real `strom server` process for the compatibility suite.

Every test gets its own broker (fresh data dir, free loopback port) unless it asks
for the module-scoped one. Nothing here assumes 9092 is free, nothing is mocked.

    def test_x(strom):
        bootstrap, data_dir, broker = strom
        broker.kill9(); broker.restart()
"""

import gc
import os
import signal
import socket
import struct
import subprocess
import time
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
STROM_BIN = Path(os.environ.get("STROM_BIN", REPO_ROOT / "target" / "debug" / "strom"))
READY_TIMEOUT_S = float(os.environ.get("STROM_READY_TIMEOUT", "20"))


def free_port():
    """A loopback port nobody listens on right now (bind to 0, ask, release)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def api_versions_probe(host, port, timeout=1.0):
    """Send a raw ApiVersions request; True if a response with our correlation id comes
    back. Any answer counts (even an error code): it proves the broker reads requests
    and writes responses, which a bare TCP accept does not. Tries v0 (fixed header),
    then v3 (flexible header) in case the broker drops v0 connections."""
    client_id = b"strom-test-probe"
    v0 = struct.pack(">hhih", 18, 0, 0x5170, len(client_id)) + client_id
    v3 = (struct.pack(">hhih", 18, 3, 0x5173, len(client_id)) + client_id + b"\x00"
          + bytes([len(b"probe") + 1]) + b"probe" + bytes([len(b"1") + 1]) + b"1" + b"\x00")
    last = None
    for body, corr in ((v0, 0x5170), (v3, 0x5173)):
        try:
            with socket.create_connection((host, port), timeout=timeout) as s:
                s.settimeout(timeout)
                s.sendall(struct.pack(">i", len(body)) + body)
                size, got = struct.unpack(">ii", _recv_exact(s, 8))
                if got == corr and size >= 4:
                    _recv_exact(s, size - 4)
                    return True
        except ConnectionRefusedError:
            raise
        except OSError as e:
            last = e
    if last:
        raise last
    return False


def _recv_exact(s, n):
    buf = b""
    while len(buf) < n:
        chunk = s.recv(n - len(buf))
        if not chunk:
            raise ConnectionError("connection closed by broker")
        buf += chunk
    return buf


class StromBroker:
    """One `strom server` process bound to a fixed data dir and port.

    Iterating gives `(bootstrap, data_dir, self)` so tests can unpack the fixture.
    """

    def __init__(self, workdir, overrides=None, extra_listeners=None, env=None):
        self.workdir = Path(workdir)
        # Listeners beside PLAINTEXT (which the readiness probe uses): name -> security
        # protocol, each on its own free loopback port, advertised as bound.
        self.extra_listeners = dict(extra_listeners or {})
        self.extra_ports = {}
        self.env = dict(env or {})
        self.data_dir = self.workdir / "data"
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.overrides = dict(overrides or {})
        self.port = None
        # /metrics and /health (strom.admin.listener); a free port per broker.
        self.admin_port = None
        self.proc = None
        self.starts = 0
        self.stderr_path = None
        self._expected_exit = False
        self.exit_codes = []

    # -- addressing -------------------------------------------------------------
    @property
    def host(self):
        return "127.0.0.1"

    @property
    def bootstrap(self):
        return f"{self.host}:{self.port}"

    def __iter__(self):
        return iter((self.bootstrap, self.data_dir, self))

    def listener_bootstrap(self, name):
        """`host:port` of the extra listener `name`."""
        return f"{self.host}:{self.extra_ports[name]}"

    # -- lifecycle --------------------------------------------------------------
    def _write_config(self):
        if self.admin_port is None:
            self.admin_port = free_port()
        props = {
            "strom.admin.listener": f"{self.host}:{self.admin_port}",
            "node.id": "1",
            "listeners": f"PLAINTEXT://{self.host}:{self.port}",
            "advertised.listeners": f"PLAINTEXT://{self.host}:{self.port}",
            "log.dirs": str(self.data_dir),
            "num.partitions": "1",
            "auto.create.topics.enable": "true",
        }
        if self.extra_listeners:
            for name in self.extra_listeners:
                self.extra_ports.setdefault(name, free_port())
            listeners = ",".join([props["listeners"]] + [
                f"{n}://{self.host}:{self.extra_ports[n]}" for n in self.extra_listeners])
            props["listeners"] = props["advertised.listeners"] = listeners
            props["listener.security.protocol.map"] = ",".join(
                ["PLAINTEXT:PLAINTEXT"] + [f"{n}:{p}" for n, p in self.extra_listeners.items()])
        props.update({k: str(v) for k, v in self.overrides.items()})
        path = self.workdir / "server.properties"
        path.write_text("".join(f"{k}={v}\n" for k, v in props.items()))
        return path

    def start(self):
        if not STROM_BIN.exists():
            pytest.fail(f"strom binary not found at {STROM_BIN}; run `cargo build -p strom-cli` "
                        "or set STROM_BIN")
        # Another process may grab the port between free_port() and the broker's bind:
        # on the first start only, retry with a fresh port if the bind was refused.
        for attempt in range(3):
            self.port = free_port()
            self.extra_ports = {}
            self._spawn()
            try:
                self.wait_ready()
                return self
            except _BrokerExited as e:
                if "in use" in e.stderr.lower() and attempt < 2:
                    continue
                pytest.fail(str(e))
        raise AssertionError("unreachable")

    def _spawn(self):
        cfg = self._write_config()
        self.starts += 1
        self.stderr_path = self.workdir / f"server-{self.starts}.stderr"
        env = dict(os.environ)
        env.setdefault("RUST_BACKTRACE", "1")
        env.update(self.env)
        self._stderr_file = open(self.stderr_path, "wb")
        self._expected_exit = False
        self.proc = subprocess.Popen(
            [str(STROM_BIN), "server", "--config", str(cfg)],
            stdin=subprocess.DEVNULL,
            stdout=self._stderr_file,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=str(self.workdir),
        )

    def wait_ready(self, timeout=READY_TIMEOUT_S):
        deadline = time.monotonic() + timeout
        last_err = None
        while time.monotonic() < deadline:
            rc = self.proc.poll()
            if rc is not None:
                raise _BrokerExited(
                    f"strom server exited with {rc} before accepting connections "
                    f"(port {self.port})", self.stderr_text())
            try:
                if api_versions_probe(self.host, self.port):
                    return
            except OSError as e:
                last_err = e
            time.sleep(0.05)
        self._hard_kill()
        pytest.fail(f"strom server did not answer ApiVersions on {self.bootstrap} within "
                    f"{timeout}s (last error: {last_err})\n--- server stderr ---\n"
                    f"{self.stderr_tail()}")

    def kill9(self):
        """SIGKILL: no chance to flush or write a clean-shutdown marker."""
        self._expected_exit = True
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
        rc = self.proc.wait(timeout=10)
        self.exit_codes.append(rc)
        self._close_stderr()
        return rc

    def terminate(self, timeout=20, sig=signal.SIGTERM):
        """SIGTERM (or `sig`) and wait for the exit; returns the exit code (0 = clean)."""
        self._expected_exit = True
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            rc = self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self._hard_kill()
            pytest.fail(f"strom server did not exit within {timeout}s of {sig!r}\n"
                        f"--- server stderr ---\n{self.stderr_tail()}")
        self.exit_codes.append(rc)
        self._close_stderr()
        return rc

    def restart(self):
        """Start again on the same data dir and port (the process must be stopped)."""
        if self.proc is not None and self.proc.poll() is None:
            raise RuntimeError("restart() while the broker still runs; kill9() or terminate() first")
        self._spawn()
        try:
            self.wait_ready()
        except _BrokerExited as e:
            pytest.fail(str(e))
        return self

    def _hard_kill(self):
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)
        self._close_stderr()

    def _close_stderr(self):
        f = getattr(self, "_stderr_file", None)
        if f is not None and not f.closed:
            f.close()

    def stop_at_teardown(self):
        died_unexpectedly = (self.proc is not None and self.proc.poll() is not None
                             and not self._expected_exit)
        self._hard_kill()
        return died_unexpectedly

    # -- diagnostics ------------------------------------------------------------
    def stderr_text(self):
        """Everything every start of this broker wrote to stderr, oldest first."""
        parts = []
        for i in range(1, self.starts + 1):
            p = self.workdir / f"server-{i}.stderr"
            if p.exists():
                parts.append(f"[start #{i}]\n" + p.read_text(errors="replace"))
        return "\n".join(parts)

    def stderr_tail(self, chars=6000):
        text = self.stderr_text()
        return text[-chars:]

    def is_running(self):
        return self.proc is not None and self.proc.poll() is None


class _BrokerExited(Exception):
    def __init__(self, msg, stderr):
        super().__init__(f"{msg}\n--- server stderr ---\n{stderr[-6000:]}")
        self.stderr = stderr


def pytest_configure(config):
    config.addinivalue_line(
        "markers", "strom_config(**props): extra server.properties for the `strom` fixture")


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    rep = outcome.get_result()
    setattr(item, "rep_" + rep.when, rep)
    # A failing test shows what the broker said, next to the client's view.
    if rep.failed and rep.when in ("setup", "call"):
        module = item.getparent(pytest.Module)
        for broker in (getattr(item, "_strom_brokers", [])
                       + getattr(module, "_strom_brokers", [])):
            rep.sections.append((f"strom server stderr ({broker.bootstrap})",
                                 broker.stderr_tail(8000)))


def _finish(broker, request):
    # Free the test's client objects (librdkafka handles caught in reference cycles)
    # while the broker still runs, so they don't spend the rest of the session
    # reconnecting to a dead port and logging about it.
    gc.collect()
    died = broker.stop_at_teardown()
    text = broker.stderr_text()
    # The house rule is "never a panic": a broker that panicked or died on its own
    # during a test fails that test even if the client happened not to notice.
    assert not died, (f"strom server died during the test (exit codes {broker.proc.returncode})\n"
                      f"--- server stderr ---\n{text[-6000:]}")
    assert "panicked at" not in text, f"strom server panicked:\n{text[-6000:]}"


@pytest.fixture
def strom(request, tmp_path):
    """A fresh broker for this test: yields a StromBroker; unpack as
    `bootstrap, data_dir, broker = strom`."""
    marker = request.node.get_closest_marker("strom_config")
    overrides = dict(marker.kwargs) if marker else {}
    broker = StromBroker(tmp_path / "strom", overrides)
    request.node._strom_brokers = getattr(request.node, "_strom_brokers", []) + [broker]
    broker.start()
    try:
        yield broker
    finally:
        _finish(broker, request)


@pytest.fixture
def strom_factory(request, tmp_path):
    """Starts brokers with extra listeners, overrides or environment:
    `broker = strom_factory(overrides={...}, listeners={"SSL": "SSL"})`, then
    `broker.listener_bootstrap("SSL")`. Each is stopped and checked like `strom`'s."""
    brokers = []

    def make(overrides=None, listeners=None, env=None):
        broker = StromBroker(tmp_path / f"strom-{len(brokers)}", overrides,
                             extra_listeners=listeners, env=env)
        brokers.append(broker)
        request.node._strom_brokers = getattr(request.node, "_strom_brokers", []) + [broker]
        return broker.start()

    try:
        yield make
    finally:
        for broker in brokers:
            _finish(broker, request)


@pytest.fixture(scope="module")
def strom_module(request, tmp_path_factory):
    """One broker shared by a module's tests, for tests that use their own topics and
    don't care about broker state."""
    broker = StromBroker(tmp_path_factory.mktemp("strom-module")).start()
    request.node._strom_brokers = [broker]
    try:
        yield broker
    finally:
        died = broker.stop_at_teardown()
        text = broker.stderr_text()
        assert not died, f"shared strom server died:\n{text[-6000:]}"
        assert "panicked at" not in text, f"strom server panicked:\n{text[-6000:]}"
