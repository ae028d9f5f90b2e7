"""TLS listeners (issue 8): kcat (Debian's librdkafka 2.0.2) and confluent-kafka produce
and consume over SSL with server authentication and with mTLS; PEM (with an encrypted
key) and PKCS12 stores; untrusted or missing client certificates, garbage and plaintext
Kafka on the TLS port are refused while the broker keeps serving; a bad TLS setting
stops the broker with a message naming the key.

Every broker keeps a PLAINTEXT listener beside the SSL one (the fixture's readiness
probe speaks plaintext), so the tests also show that Metadata advertises the listener
the client connected on.
"""

import os
import random
import re
import socket
import struct
import subprocess
import time

import pytest

from certs import CLIENT_DN, KEY_PASSWORD, STORE_PASSWORD, make_pki
from conftest import STROM_BIN, api_versions_probe, free_port
from strom_helpers import (check_consumed, ck_consume_all, ck_produce_all, ck_producer,
                           make_records, wait_until)
from test_kcat import kcat, kcat_consume_all, kcat_lines

N = 500
PARTITIONS = 3


@pytest.fixture
def pki(tmp_path):
    return make_pki(tmp_path / "pki")


def log_text(broker):
    """The broker's log without terminal colours."""
    return re.sub(r"\x1b\[[0-9;]*m", "", broker.stderr_text())


def ssl_client(pki, cert=None, key=None):
    """confluent-kafka / librdkafka properties for an SSL client trusting our CA."""
    conf = {"security.protocol": "SSL", "ssl.ca.location": str(pki.ca_pem)}
    if cert is not None:
        conf["ssl.certificate.location"] = str(cert)
        conf["ssl.key.location"] = str(key)
    return conf


def kcat_ssl_args(conf):
    args = []
    for k, v in conf.items():
        args += ["-X", f"{k}={v}"]
    return args


def ck_create_topic_ssl(bootstrap, topic, partitions, conf):
    from confluent_kafka.admin import AdminClient, NewTopic
    admin = AdminClient({"bootstrap.servers": bootstrap, **conf})
    fs = admin.create_topics([NewTopic(topic, num_partitions=partitions, replication_factor=1)],
                             operation_timeout=10, request_timeout=15)
    fs[topic].result(timeout=30)
    return admin


def advertised_ports(bootstrap, conf):
    from confluent_kafka.admin import AdminClient
    md = AdminClient({"bootstrap.servers": bootstrap, **conf}).list_topics(timeout=15)
    return {b.port for b in md.brokers.values()}


def round_trip_confluent(bootstrap, conf, topic, seed):
    """Create `topic` over TLS, produce N records with confluent-kafka, read them back
    byte-identically."""
    ck_create_topic_ssl(bootstrap, topic, PARTITIONS, conf)
    records = make_records(N, PARTITIONS, seed=seed)
    delivered = ck_produce_all(ck_producer(bootstrap, **conf), topic, records)
    consumed = ck_consume_all(bootstrap, topic, PARTITIONS, N, **conf)
    check_consumed(records, delivered, consumed, PARTITIONS)


def round_trip_kcat(bootstrap, conf, topic, seed):
    """Produce N keyed lines with kcat over TLS and consume them back with kcat."""
    keys, values = kcat_lines(N, seed=seed)
    payload = b"".join(k + b":" + v + b"\n" for k, v in zip(keys, values))
    kcat(*kcat_ssl_args(conf), "-P", "-b", bootstrap, "-t", topic, "-K", ":", "-p", "0",
         input_bytes=payload)
    got = kcat_consume_all_ssl(bootstrap, topic, conf)
    assert [(k, v) for _, _, k, v, _ in got] == list(zip(keys, values))
    assert [off for _, off, _, _, _ in got] == list(range(N))


def kcat_consume_all_ssl(bootstrap, topic, conf):
    from test_kcat import FMT, parse_kcat_output
    p = kcat(*kcat_ssl_args(conf), "-C", "-b", bootstrap, "-t", topic, "-e", "-o", "beginning",
             "-q", "-f", FMT, timeout=180)
    return list(parse_kcat_output(p.stdout))


def client_fails_to_connect(bootstrap, conf):
    """True if a librdkafka client with `conf` cannot get metadata and reports an
    SSL/authentication error."""
    from confluent_kafka import KafkaException
    from confluent_kafka.admin import AdminClient
    errors = []
    admin = AdminClient({"bootstrap.servers": bootstrap, **conf,
                         "error_cb": lambda e: errors.append(e)})
    with pytest.raises(KafkaException):
        admin.list_topics(timeout=5)
    admin.poll(0.5)
    text = " ".join(str(e) for e in errors).lower()
    assert "ssl" in text or "authentication" in text or "handshake" in text, errors
    return True


def test_ssl_server_auth_kcat_and_confluent(strom_factory, pki):
    # PEM key store with an encrypted PKCS#8 key (ssl.key.password), per-listener keys.
    broker = strom_factory(listeners={"SSL": "SSL"}, overrides={
        "listener.name.ssl.ssl.keystore.type": "PEM",
        "listener.name.ssl.ssl.keystore.location": pki.server_keystore_enc_pem,
        "listener.name.ssl.ssl.key.password": KEY_PASSWORD,
    })
    ssl_bootstrap = broker.listener_bootstrap("SSL")
    conf = ssl_client(pki)
    # Each listener advertises itself: a client on the SSL port is sent to the SSL port.
    assert advertised_ports(ssl_bootstrap, conf) == {broker.extra_ports["SSL"]}
    assert advertised_ports(broker.bootstrap, {}) == {broker.port}

    round_trip_confluent(ssl_bootstrap, conf, "tls-ck", seed=81)
    round_trip_kcat(ssl_bootstrap, conf, "tls-kcat", seed=82)
    # What kcat wrote over TLS is readable over PLAINTEXT, and the other way round.
    assert sum(map(len, kcat_consume_all(broker.bootstrap, "tls-kcat").values())) == N
    assert len(kcat_consume_all_ssl(ssl_bootstrap, "tls-ck", conf)) == N
    # A client that does not trust the broker's CA refuses it.
    client_fails_to_connect(ssl_bootstrap, {"security.protocol": "SSL",
                                            "ssl.ca.location": str(pki.rogue_cert_pem)})


def test_mtls_required_maps_the_certificate_to_a_principal(strom_factory, pki):
    # The rule only matches the exact RFC 2253 form of the client's DN, so the mapped
    # principal in the log proves both the DN formatting and the rule syntax.
    rules = r"RULE:^CN=([^,]*),OU=(eng),O=acme$/$1@$2/U,DEFAULT"
    broker = strom_factory(
        listeners={"SSL": "SSL"},
        overrides={
            "ssl.keystore.location": pki.server_keystore_pem,
            "ssl.truststore.type": "PEM",
            "ssl.truststore.location": pki.ca_pem,
            "ssl.client.auth": "required",
            "ssl.principal.mapping.rules": rules,
        },
        env={"RUST_LOG": "info,strom_broker::network=debug"})
    ssl_bootstrap = broker.listener_bootstrap("SSL")
    conf = ssl_client(pki, pki.client_cert_pem, pki.client_key_pem)
    round_trip_confluent(ssl_bootstrap, conf, "mtls-ck", seed=83)
    round_trip_kcat(ssl_bootstrap, conf, "mtls-kcat", seed=84)
    wait_until(lambda: "principal=User:ALICE@ENG" in log_text(broker), 10,
               "the mapped principal of CN=alice,OU=eng,O=acme in the broker log")
    assert CLIENT_DN == "CN=alice,OU=eng,O=acme"

    # An untrusted certificate, and no certificate at all: the client reports an SSL
    # error, kcat fails, the broker logs and keeps serving.
    client_fails_to_connect(ssl_bootstrap, ssl_client(pki, pki.rogue_cert_pem, pki.rogue_key_pem))
    client_fails_to_connect(ssl_bootstrap, ssl_client(pki))
    p = kcat(*kcat_ssl_args(ssl_client(pki, pki.rogue_cert_pem, pki.rogue_key_pem)),
             "-L", "-b", ssl_bootstrap, "-m", "5", timeout=60, check=False)
    assert p.returncode != 0, p.stdout
    assert "ssl" in p.stderr.decode(errors="replace").lower()
    wait_until(lambda: "TLS handshake failed" in log_text(broker), 10,
               "a log line for the refused handshake")
    assert broker.is_running()
    assert sum(map(len, ck_consume_all(ssl_bootstrap, "mtls-ck", PARTITIONS, N,
                                       **conf).values())) == N
    assert api_versions_probe(broker.host, broker.port)


def test_client_auth_requested_accepts_both_and_default_rule_keeps_the_dn(strom_factory, pki):
    broker = strom_factory(
        listeners={"SSL": "SSL"},
        overrides={
            "ssl.keystore.location": pki.server_keystore_pem,
            "ssl.truststore.location": pki.ca_pem,
            "listener.name.ssl.ssl.client.auth": "requested",
        },
        env={"RUST_LOG": "info,strom_broker::network=debug"})
    ssl_bootstrap = broker.listener_bootstrap("SSL")
    anonymous = ssl_client(pki)
    alice = ssl_client(pki, pki.client_cert_pem, pki.client_key_pem)
    assert advertised_ports(ssl_bootstrap, anonymous) == {broker.extra_ports["SSL"]}
    wait_until(lambda: "principal=User:ANONYMOUS" in log_text(broker), 10,
               "an anonymous SSL principal without a client certificate")
    assert advertised_ports(ssl_bootstrap, alice) == {broker.extra_ports["SSL"]}
    # DEFAULT: the DN itself, in RFC 2253 form (last RDN first, no spaces).
    wait_until(lambda: f"principal=User:{CLIENT_DN}" in log_text(broker), 10,
               "the RFC 2253 DN as the principal")
    # A certificate from a CA the broker does not name is not offered by the client
    # (as with Java clients): it is served as ANONYMOUS, never as that certificate's DN.
    rogue = ssl_client(pki, pki.rogue_cert_pem, pki.rogue_key_pem)
    assert advertised_ports(ssl_bootstrap, rogue) == {broker.extra_ports["SSL"]}
    assert "mallory" not in log_text(broker)


def test_pkcs12_key_and_trust_stores(strom_factory, pki):
    broker = strom_factory(listeners={"SSL": "SSL"}, overrides={
        "ssl.keystore.type": "PKCS12",
        "ssl.keystore.location": pki.server_keystore_p12,
        "ssl.keystore.password": STORE_PASSWORD,
        "ssl.truststore.type": "PKCS12",
        "ssl.truststore.location": pki.truststore_p12,
        "ssl.truststore.password": STORE_PASSWORD,
        "ssl.client.auth": "required",
        # Kafka's IANA names; the server key is ECDSA P-256.
        "ssl.cipher.suites": "TLS_AES_256_GCM_SHA384,TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384",
    })
    ssl_bootstrap = broker.listener_bootstrap("SSL")
    conf = ssl_client(pki, pki.client_cert_pem, pki.client_key_pem)
    round_trip_confluent(ssl_bootstrap, conf, "p12-ck", seed=85)
    client_fails_to_connect(ssl_bootstrap, ssl_client(pki, pki.rogue_cert_pem, pki.rogue_key_pem))


def _closed_without_kafka_answer(port, payload, timeout=10):
    """Send `payload` and read until the broker closes. Returns what came back (a TLS
    alert at most, never a Kafka response)."""
    got = b""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        s.sendall(payload)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                chunk = s.recv(4096)
            except ConnectionResetError:
                break
            if not chunk:
                break
            got += chunk
        else:
            raise AssertionError("the broker kept the connection open")
    return got


def inline_pem(path):
    """A PEM file as an inline property value, continued over lines as Kafka's docs
    write it (the continuations join it into one line)."""
    return " \\\n".join(path.read_text().strip().splitlines())


def test_garbage_and_plaintext_on_the_ssl_port(strom_factory, pki):
    # Inline PEM key store (ssl.keystore.certificate.chain / ssl.keystore.key).
    broker = strom_factory(listeners={"SSL": "SSL"}, overrides={
        "ssl.keystore.type": "PEM",
        "ssl.keystore.certificate.chain": inline_pem(pki.server_cert_pem),
        "ssl.keystore.key": inline_pem(pki.server_key_pem),
    })
    port = broker.extra_ports["SSL"]
    rng = random.Random(88)
    # A plaintext ApiVersions v0 request, as a non-TLS client would send it.
    cid = b"plain"
    api_versions = struct.pack(">hhih", 18, 0, 7, len(cid)) + cid
    plain = struct.pack(">i", len(api_versions)) + api_versions
    fuzz = [rng.randbytes(rng.randint(1, 2048)) for _ in range(30)]
    for payload in [plain, b"\x16\x03\x01\x00\x05hello", b"GET / HTTP/1.1\r\n\r\n", *fuzz]:
        got = _closed_without_kafka_answer(port, payload)
        # Nothing but (at most) a TLS alert record: content type 21.
        assert got == b"" or got[0] == 0x15, got[:16]
    with pytest.raises((ConnectionError, OSError)):
        if not api_versions_probe("127.0.0.1", port, timeout=5):
            raise ConnectionError("no Kafka answer")

    # A silent client holds nothing up: others are served while it waits, and the
    # handshake timeout (10 s) closes it.
    silent = socket.create_connection(("127.0.0.1", port))
    try:
        opened = time.monotonic()
        round_trip_confluent(broker.listener_bootstrap("SSL"), ssl_client(pki), "tls-after-junk",
                             seed=86)
        assert api_versions_probe(broker.host, broker.port)
        silent.settimeout(30)
        assert silent.recv(1) == b"", "the broker closes a connection that never says hello"
        assert time.monotonic() - opened >= 9
        wait_until(lambda: "TLS handshake timed out" in log_text(broker), 5,
                   "a log line for the handshake timeout")
    finally:
        silent.close()
    text = log_text(broker)
    assert "TLS handshake failed" in text
    # 33+ refused handshakes within a few seconds: at most 10 warnings per 10 s
    # window (two windows if the run straddles a boundary).
    assert text.count("TLS handshake failed") <= 20, "the warning is rate-limited"
    assert broker.is_running()


def _start_expecting_failure(tmp_path, props):
    port, ssl_port = free_port(), free_port()
    cfg = {
        "node.id": "1",
        "listeners": f"PLAINTEXT://127.0.0.1:{port},SSL://127.0.0.1:{ssl_port}",
        "log.dirs": str(tmp_path / "data"),
        "strom.admin.listener": "",
        **{k: str(v) for k, v in props.items()},
    }
    path = tmp_path / "server.properties"
    path.write_text("".join(f"{k}={v}\n" for k, v in cfg.items()))
    p = subprocess.run([str(STROM_BIN), "server", "--config", str(path)],
                       stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=60,
                       env=dict(os.environ))
    out = p.stdout.decode(errors="replace")
    assert p.returncode != 0, out
    assert "panicked" not in out, out
    return out


@pytest.mark.parametrize("props,key", [
    ({}, "ssl.keystore.location"),
    ({"ssl.keystore.location": "/nonexistent/keystore.pem"}, "ssl.keystore.location"),
    ({"listener.name.ssl.ssl.keystore.location": "{ks}",
      "ssl.enabled.protocols": "TLSv1.1,TLSv1.2"}, "ssl.enabled.protocols"),
    ({"ssl.keystore.location": "{p12}", "ssl.keystore.type": "PKCS12",
      "ssl.keystore.password": "wrong"}, "ssl.keystore.location"),
    ({"ssl.keystore.location": "{enc}"}, "ssl.keystore.location"),
    ({"ssl.keystore.location": "{ks}", "ssl.client.auth": "required"},
     "ssl.truststore.location"),
    ({"ssl.keystore.location": "{ks}", "ssl.client.auth": "maybe"}, "ssl.client.auth"),
    ({"ssl.keystore.location": "{ks}", "ssl.principal.mapping.rules": "RULE:x"},
     "ssl.principal.mapping.rules"),
    ({"ssl.keystore.location": "{ks}", "ssl.cipher.suites": "TLS_RSA_WITH_RC4_128_MD5"},
     "ssl.cipher.suites"),
    ({"ssl.keystore.location": "{ks}", "inter.broker.listener.name": "NOPE"},
     "inter.broker.listener.name"),
])
def test_bad_tls_config_refuses_to_start(tmp_path, pki, props, key):
    paths = {"ks": pki.server_keystore_pem, "p12": pki.server_keystore_p12,
             "enc": pki.server_keystore_enc_pem}
    props = {k: v.format(**paths) for k, v in props.items()}
    out = _start_expecting_failure(tmp_path, props)
    assert key in out, out


def _strom_cli(*args, timeout=60):
    return subprocess.run([str(STROM_BIN), *args], stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, timeout=timeout)


def test_cli_raw_client_over_mtls_with_command_config(strom_factory, pki, tmp_path):
    broker = strom_factory(listeners={"SSL": "SSL"}, overrides={
        "ssl.keystore.location": pki.server_keystore_pem,
        "ssl.truststore.location": pki.ca_pem,
        "ssl.client.auth": "required",
    })
    ssl_bootstrap = broker.listener_bootstrap("SSL")
    # Kafka tools' --command-config file, with Kafka's (Java client) key names.
    good = tmp_path / "client-ssl.properties"
    good.write_text(f"security.protocol=SSL\nssl.truststore.type=PEM\n"
                    f"ssl.truststore.location={pki.ca_pem}\nssl.keystore.type=PEM\n"
                    f"ssl.keystore.location={pki.client_keystore_pem}\n")
    p = _strom_cli("--command-config", str(good), "-b", ssl_bootstrap, "quota", "alter",
                   "--user", "alice", "--add-config", "producer_byte_rate=1024")
    assert p.returncode == 0, p.stderr.decode(errors="replace")
    p = _strom_cli("--command-config", str(good), "-b", ssl_bootstrap, "--json", "quota",
                   "describe", "--user", "alice")
    assert p.returncode == 0, p.stderr.decode(errors="replace")
    assert "1024" in p.stdout.decode(), p.stdout
    # librdkafka's names through -X work the same.
    p = _strom_cli("-b", ssl_bootstrap, "-X", "security.protocol=SSL",
                   "-X", f"ssl.ca.location={pki.ca_pem}",
                   "-X", f"ssl.certificate.location={pki.client_cert_pem}",
                   "-X", f"ssl.key.location={pki.client_key_pem}",
                   "--json", "quota", "describe", "--user", "alice")
    assert p.returncode == 0 and "1024" in p.stdout.decode(), p.stderr.decode(errors="replace")

    # A broker certificate the client does not trust: a clear TLS error.
    p = _strom_cli("-b", ssl_bootstrap, "-X", "security.protocol=SSL",
                   "-X", f"ssl.ca.location={pki.rogue_cert_pem}", "quota", "describe")
    err = p.stderr.decode(errors="replace")
    assert p.returncode != 0 and "TLS handshake" in err, err
    # No client certificate under ssl.client.auth=required: refused.
    p = _strom_cli("-b", ssl_bootstrap, "-X", "security.protocol=SSL",
                   "-X", f"ssl.ca.location={pki.ca_pem}", "quota", "describe")
    assert p.returncode != 0, p.stdout
    # Plaintext to the SSL port gets no answer; TLS to the plaintext port fails.
    p = _strom_cli("-b", broker.bootstrap, "-X", "security.protocol=SSL",
                   "-X", f"ssl.ca.location={pki.ca_pem}", "quota", "describe")
    assert p.returncode != 0
    p = _strom_cli("--command-config", str(tmp_path / "missing.properties"), "quota", "describe")
    assert p.returncode == 2 and "command-config" in p.stderr.decode()
    assert broker.is_running()
