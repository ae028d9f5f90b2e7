"""TLS on the controller listener (issue 7): three voters whose CONTROLLER listener
speaks SSL with client certificates required (`listener.name.controller.ssl.*`), so
the Raft RPCs between voters, the brokers' registrations and heartbeats, and the
leader's replication to observers all run over mutual TLS.

A cluster whose voters could not talk would never elect a controller, so forming it,
creating an RF-3 topic and surviving a SIGKILL of the active controller show the TLS
path works; the port checks show it is really TLS (and not a plaintext fallback), and
a node with the wrong trust store shows the certificates are checked.
"""

import socket
import ssl
import struct
import time

from cryptography.x509.oid import NameOID

import certs
from cluster import HOST, cluster_factory, quorum_leader  # noqa: F401 (fixture)
from strom_helpers import wait_until
from test_cluster_security import _pki

TOPIC = "ctl-tls"
MESSAGES = 100


def _controller_tls(pki, truststore=None):
    return {
        "listener.security.protocol.map": "PLAINTEXT:PLAINTEXT,CONTROLLER:SSL",
        "listener.name.controller.ssl.keystore.location": pki["broker"],
        "listener.name.controller.ssl.truststore.location": truststore or pki["ca"],
        "listener.name.controller.ssl.client.auth": "required",
    }


def _round_trip(bootstrap, topic, tag):
    """confluent-kafka produces MESSAGES with acks=all and reads them back."""
    from confluent_kafka import Consumer, Producer
    p = Producer({"bootstrap.servers": bootstrap, "acks": "all", "linger.ms": 5})
    errors = []
    for i in range(MESSAGES):
        p.produce(topic, value=f"{tag}-{i}".encode(),
                  callback=lambda err, _m: err and errors.append(err))
    assert p.flush(60) == 0, "messages left unacknowledged"
    assert errors == []
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": f"g-{tag}",
                  "auto.offset.reset": "earliest", "enable.auto.commit": False})
    c.subscribe([topic])
    seen = set()
    deadline = time.monotonic() + 60
    try:
        while time.monotonic() < deadline and not all(
                f"{tag}-{i}".encode() in seen for i in range(MESSAGES)):
            m = c.poll(0.5)
            if m is not None and m.error() is None:
                seen.add(m.value())
    finally:
        c.close()
    missing = [i for i in range(MESSAGES) if f"{tag}-{i}".encode() not in seen]
    assert not missing, f"{len(missing)} records not read back, first {missing[:5]}"


def _rogue_ca(d):
    """A CA that signed none of the cluster's certificates."""
    key = certs._key()
    name = certs._name((NameOID.COMMON_NAME, "Rogue CA"))
    path = d / "rogue-ca.pem"
    path.write_bytes(certs._pem_cert(certs._cert(name, key, name, key, ca=True)))
    return str(path)


def _assert_speaks_tls(port, pki):
    # A plaintext frame header (length 16, then one byte): a plaintext server
    # waits for the other 15 bytes; a TLS server rejects the record at once.
    with socket.create_connection((HOST, port), timeout=5) as s:
        s.sendall(struct.pack(">I", 16) + b"{")
        try:
            data = s.recv(64)
        except socket.timeout:
            raise AssertionError("the controller port waited for a plaintext frame")
        except ConnectionResetError:
            data = b""
        assert data == b"" or data[0] == 0x15, f"not a TLS alert: {data!r}"
    # With the CA and a client certificate the handshake succeeds and the server
    # presents the broker's certificate.
    ctx = ssl.create_default_context(cafile=pki["ca"])
    ctx.load_cert_chain(pki["broker"])
    with socket.create_connection((HOST, port), timeout=5) as raw:
        with ctx.wrap_socket(raw, server_hostname=HOST) as s:
            subject = dict(x[0] for x in s.getpeercert()["subject"])
            assert subject["commonName"] == "broker"
    # Without a client certificate (ssl.client.auth=required) the server ends the
    # connection: at the handshake (TLS 1.2) or at the first read (TLS 1.3).
    ctx = ssl.create_default_context(cafile=pki["ca"])
    with socket.create_connection((HOST, port), timeout=5) as raw:
        refused = False
        try:
            with ctx.wrap_socket(raw, server_hostname=HOST) as s:
                s.sendall(struct.pack(">I", 2) + b"{}")
                refused = s.recv(64) == b""
        except (ssl.SSLError, ConnectionResetError, BrokenPipeError):
            refused = True
        assert refused, "a client without a certificate was served"


def test_controller_listener_over_mutual_tls(cluster_factory, tmp_path):
    pki = _pki(tmp_path / "pki")
    c = cluster_factory(n=3, overrides=_controller_tls(pki))
    for node in c.nodes.values():
        _assert_speaks_tls(node.controller_port, pki)

    c.create_topic(TOPIC, partitions=1, rf=3)
    c.wait_isr(TOPIC, 0, 3)
    _round_trip(c.bootstrap, TOPIC, "before")

    victim = c.controller_id()
    c.node(victim).kill9()
    rest = [i for i in c.nodes if i != victim]

    def new_controller():
        try:
            seen = {quorum_leader(c.node(i).bootstrap) for i in rest}
        except (OSError, ValueError):
            return False
        return len(seen) == 1 and seen.pop() in rest
    wait_until(new_controller, 60, "the two voters left to agree on a new active controller")
    # A new topic needs the new controller; the old one keeps serving on the two left.
    c.create_topic(TOPIC + "-after", partitions=1, rf=2)
    _round_trip(c.running_bootstrap(), TOPIC + "-after", "after")
    _round_trip(c.running_bootstrap(), TOPIC, "failover")

    c.node(victim).restart()
    c.wait_brokers()
    c.wait_isr(TOPIC, 0, 3, timeout=90)


def test_a_node_with_the_wrong_trust_store_cannot_join(cluster_factory, tmp_path):
    pki = _pki(tmp_path / "pki")
    c = cluster_factory(n=3, overrides=_controller_tls(pki))
    # Node 4 (broker-only) trusts a CA that signed none of the voters'
    # certificates: its registration never reaches the controller.
    # (`add_node` would wait for ApiVersions, which a broker answers only
    # once registered.)
    c.n += 1
    c.node_overrides[4] = _controller_tls(pki, truststore=_rogue_ca(tmp_path))
    intruder = c._add_node(4)
    intruder.spawn()
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        for i in (1, 2, 3):
            assert set(c.node(i).metadata([]).brokers) == {1, 2, 3}
        time.sleep(0.5)
    assert intruder.is_running()
    wait_until(lambda: "invalid peer certificate: UnknownIssuer" in intruder.stderr_text(), 20,
               "node 4 to report the voters' certificates as untrusted")
    # The three others keep working.
    from confluent_kafka.admin import AdminClient, NewTopic
    bootstrap = ",".join(c.node(i).client_bootstrap for i in (1, 2, 3))
    admin = AdminClient({"bootstrap.servers": bootstrap})
    fs = admin.create_topics([NewTopic(TOPIC, 1, 3)], request_timeout=30)
    fs[TOPIC].result(timeout=30)
    c.wait_isr(TOPIC, 0, 3, among=[1, 2, 3])
    _round_trip(bootstrap, TOPIC, "intruder")
    intruder.kill9()


def test_sasl_on_the_controller_listener_is_refused(tmp_path):
    """The quorum's transport has no SASL: the node must not start (rather than serve
    the listener unauthenticated) and must say which key to change."""
    import subprocess
    from conftest import STROM_BIN
    from cluster import cluster_port
    for protocol in ("SASL_SSL", "SASL_PLAINTEXT"):
        cfg = tmp_path / f"{protocol}.properties"
        cfg.write_text("".join(f"{k}={v}\n" for k, v in {
            "node.id": "1",
            "process.roles": "broker,controller",
            "listeners": f"PLAINTEXT://{HOST}:{cluster_port()},CONTROLLER://{HOST}:{cluster_port()}",
            "listener.security.protocol.map": f"PLAINTEXT:PLAINTEXT,CONTROLLER:{protocol}",
            "controller.listener.names": "CONTROLLER",
            "log.dirs": str(tmp_path / protocol),
            "strom.admin.listener": "",
        }.items()))
        done = subprocess.run([str(STROM_BIN), "server", "--config", str(cfg)],
                              capture_output=True, timeout=30, cwd=str(tmp_path))
        out = (done.stdout + done.stderr).decode(errors="replace")
        assert done.returncode != 0, f"started with CONTROLLER:{protocol}:\n{out}"
        assert "listener.security.protocol.map" in out, out
        assert "SASL on the controller listener is not supported yet; use PLAINTEXT or SSL" in out, out
