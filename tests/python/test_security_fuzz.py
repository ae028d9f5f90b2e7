"""Issue 8, bad input: "a fuzz-style test sends random bytes to each listener type".

One broker with PLAINTEXT, SSL, SASL_PLAINTEXT and SASL_SSL listeners (SASL PLAIN and
SCRAM enabled). Each listener gets CONNS seeded connections of mixed junk: pure random
bytes, a valid size prefix before random bytes, a valid request header before a random
body, hostile size prefixes, a truncated TLS ClientHello, a SaslHandshake followed by
random tokens (v0 raw frames or SaslAuthenticate), a valid SaslHandshake followed by a
garbage SaslAuthenticate (v0-v2). On the TLS listeners half of the connections finish a
real TLS handshake first and send the junk inside it. On the SASL listeners the SASL kinds
of junk end with a well-formed CreateTopics, which must never be processed.

Afterwards: the process is alive, every connection was closed by the broker once the
client stopped sending (nothing hangs), confluent-kafka produces and consumes over every
listener with valid credentials, no topic was created by an unauthenticated request, and
the broker log has no panic.

A second test speaks SCRAM by hand over SASL_PLAINTEXT: a correct exchange succeeds (so
the hand-made client is right), then a changed nonce, a proof salted with the wrong
iteration count, a wrong channel binding and a replayed client-final are each refused with
SASL_AUTHENTICATION_FAILED, the connection closes, a CreateTopics sent behind them is never
processed, and each failure leaves an audit line. Then every SaslAuthenticate version
(v0-v2) on the wire, and TLS clients limited to 1.0/1.1 (refused) or 1.2/1.3 (served).
"""

import base64
import hashlib
import hmac
import os
import random
import re
import socket
import ssl
import struct
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor

from certs import make_pki
from conftest import STROM_BIN
from strom_helpers import (check_consumed, ck_consume_all, ck_create_topic, ck_produce_all,
                           ck_producer, make_records, wait_until)

# Fixed by default so a failure reproduces; STROM_FUZZ_SEED / STROM_FUZZ_CONNS explore more.
CONNS = int(os.environ.get("STROM_FUZZ_CONNS", 200))  # per listener
SEED = int(os.environ.get("STROM_FUZZ_SEED", 0x5EC8))
CLOSE_TIMEOUT_S = 10  # the broker must drop a connection this soon after our EOF
JAAS = ('org.apache.kafka.common.security.plain.PlainLoginModule required '
        'user_admin="admin-secret";')
MECHANISMS = ["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"]
# A spread of API keys for "valid header, random body" (SaslHandshake and
# SaslAuthenticate included: their decoders see junk too).
API_KEYS = [0, 1, 2, 3, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20, 22, 23, 24, 25,
            26, 29, 30, 31, 32, 33, 36, 37, 42, 44, 48, 49, 50, 51, 60, 68, 1000, -1]


# -- frames -------------------------------------------------------------------------------

def _str(s):
    b = s.encode()
    return struct.pack(">h", len(b)) + b


def frame(api_key, version, corr, body, flexible=False, client_id="fuzz"):
    header = struct.pack(">hhi", api_key, version, corr) + _str(client_id)
    if flexible:
        header += b"\x00"  # request header v2: empty tagged fields
    payload = header + body
    return struct.pack(">i", len(payload)) + payload


def sasl_handshake(mechanism, version, corr=1):
    return frame(17, version, corr, _str(mechanism))


def sasl_authenticate(token, version, corr=2):
    if version == 2:  # flexible: compact bytes, tagged fields
        body = _uvarint(len(token) + 1) + token + b"\x00"
        return frame(36, 2, corr, body, flexible=True)
    return frame(36, version, corr, struct.pack(">i", len(token)) + token)


def _uvarint(n):
    out = b""
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out += bytes([b | 0x80])
        else:
            return out + bytes([b])


def create_topics_v2(topic, corr=99):
    body = (struct.pack(">i", 1) + _str(topic) + struct.pack(">ih", 1, 1)
            + struct.pack(">i", 0) + struct.pack(">i", 0)
            + struct.pack(">i", 10000) + b"\x00")
    return frame(19, 2, corr, body)


def client_hello():
    """A real TLS ClientHello as Python's OpenSSL writes it."""
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    out = ssl.MemoryBIO()
    obj = ctx.wrap_bio(ssl.MemoryBIO(), out, server_hostname="localhost")
    try:
        obj.do_handshake()
    except ssl.SSLWantReadError:
        pass
    hello = out.read()
    assert hello[0] == 0x16, "a TLS handshake record"
    return hello


def junk_payloads(rnd, hello, sasl, i, topic):
    """One connection's bytes: (kind, payload). On a SASL listener the SASL kinds end
    with a CreateTopics for `topic` that must not be processed."""
    kind = rnd.randrange(8)
    junk = rnd.randbytes(rnd.randint(0, 300))
    if kind == 0:    # pure random bytes
        return "random", junk
    if kind == 1:    # a valid size prefix, random bytes after it
        return "sized-random", struct.pack(">i", len(junk)) + junk
    if kind == 2:    # a valid request header, random body
        api = rnd.choice(API_KEYS)
        version = rnd.randint(-1, 14)
        return "header-random-body", frame(api, version, i, junk,
                                           flexible=rnd.random() < 0.5)
    if kind == 3:    # hostile sizes: negative, zero, huge, just over the limit
        size = rnd.choice([-1, -2**31, 0, 2**31 - 1, 100 * 1024 * 1024 + 1, 5])
        return "bad-size", struct.pack(">i", size) + junk[:8]
    if kind == 4:    # a TLS ClientHello cut short (with random bytes after it, sometimes)
        cut = hello[:rnd.randint(1, len(hello) - 1)]
        return "truncated-client-hello", cut + (junk if rnd.random() < 0.5 else b"")
    tail = create_topics_v2(topic) if sasl else b""
    mech = rnd.choice(MECHANISMS + ["GSSAPI", "OAUTHBEARER", "", "\u00e9" * 3])
    if kind == 5:    # a SaslHandshake, then random tokens
        version = rnd.randint(0, 1)
        out = sasl_handshake(mech, version)
        for n in range(rnd.randint(1, 3)):
            tok = rnd.randbytes(rnd.randint(0, 200))
            if version == 0:   # v0: tokens are raw size-prefixed frames
                out += struct.pack(">i", len(tok)) + tok
            else:
                out += sasl_authenticate(tok, rnd.randint(0, 2), corr=2 + n)
        return "handshake-random-tokens", out + tail
    if kind == 6:    # a valid handshake for an enabled mechanism, garbage authenticate
        out = sasl_handshake(rnd.choice(MECHANISMS), 1)
        tok = rnd.choice([junk, b"\0admin\0" + junk, b"n,,n=admin,r=" + junk,
                          b"\0\0", b"c=biws,r=x,p=" + junk])
        return "handshake-garbage-authenticate", out + sasl_authenticate(
            tok, rnd.randint(0, 2)) + tail
    # kind 7: SaslAuthenticate before any handshake, then a request
    return "authenticate-before-handshake", sasl_authenticate(junk, rnd.randint(0, 2)) + tail


# -- connections --------------------------------------------------------------------------

def _drain_until_closed(raw, timeout):
    """Read until the broker closes; True if it did within `timeout`."""
    raw.settimeout(timeout)
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            if not raw.recv(65536):
                return True
    except (ConnectionResetError, BrokenPipeError):
        return True
    except socket.timeout:
        return False
    return False


def send_raw(port, payload):
    """Send `payload` on a fresh TCP connection, then EOF; True if the broker closed."""
    with socket.create_connection(("127.0.0.1", port), timeout=CLOSE_TIMEOUT_S) as raw:
        try:
            raw.sendall(payload)
            raw.shutdown(socket.SHUT_WR)
        except (ConnectionResetError, BrokenPipeError):
            return True
        return _drain_until_closed(raw, CLOSE_TIMEOUT_S)


def send_in_tls(port, payload, ctx):
    """Finish a real TLS handshake, send `payload` inside it, then close_notify and EOF;
    True if the broker closed. The TLS is driven through memory BIOs so the close is
    ours to time."""
    with socket.create_connection(("127.0.0.1", port), timeout=CLOSE_TIMEOUT_S) as raw:
        inc, out = ssl.MemoryBIO(), ssl.MemoryBIO()
        obj = ctx.wrap_bio(inc, out, server_hostname="localhost")
        while True:
            try:
                obj.do_handshake()
                break
            except ssl.SSLWantReadError:
                raw.sendall(out.read())
                data = raw.recv(65536)
                assert data, "the broker closed during a valid TLS handshake"
                inc.write(data)
        try:
            obj.write(payload)
            try:
                obj.unwrap()
            except (ssl.SSLWantReadError, ssl.SSLError):
                pass
            raw.sendall(out.read())
            raw.shutdown(socket.SHUT_WR)
        except (ConnectionResetError, BrokenPipeError):
            return True
        return _drain_until_closed(raw, CLOSE_TIMEOUT_S)


# -- the test -----------------------------------------------------------------------------

def strom_cli(*args):
    p = subprocess.run([str(STROM_BIN), *args], capture_output=True, timeout=60)
    assert p.returncode == 0, p.stderr.decode()


def round_trip(bootstrap, conf, topic, seed, n=200, partitions=2):
    records = make_records(n, partitions, seed=seed)
    delivered = ck_produce_all(ck_producer(bootstrap, **conf), topic, records)
    consumed = ck_consume_all(bootstrap, topic, partitions, n, timeout=60, **conf)
    check_consumed(records, delivered, consumed, partitions)


def test_random_bytes_on_every_listener_type(strom_factory, tmp_path):
    pki = make_pki(tmp_path / "pki")
    overrides = {"auto.create.topics.enable": "false"}
    for l in ("ssl", "sasl_ssl"):
        overrides[f"listener.name.{l}.ssl.keystore.type"] = "PEM"
        overrides[f"listener.name.{l}.ssl.keystore.location"] = pki.server_keystore_pem
    for l in ("sasl_plaintext", "sasl_ssl"):
        overrides[f"listener.name.{l}.sasl.enabled.mechanisms"] = ",".join(MECHANISMS)
        overrides[f"listener.name.{l}.plain.sasl.jaas.config"] = JAAS
    broker = strom_factory(overrides=overrides, listeners={
        "SSL": "SSL", "SASL_PLAINTEXT": "SASL_PLAINTEXT", "SASL_SSL": "SASL_SSL"})
    strom_cli("-b", broker.bootstrap, "user", "create", "--name", "fuzzer", "--password",
              "fuzz-512", "--mechanism", "SCRAM-SHA-512")
    ports = {"PLAINTEXT": broker.port, **broker.extra_ports}

    tls_ctx = ssl.create_default_context(cafile=str(pki.ca_pem))
    tls_ctx.check_hostname = False  # the test CA's server cert names localhost/127.0.0.1
    hello = client_hello()
    rnd = random.Random(SEED)
    jobs = []  # (listener, index, kind, inside_tls, payload)
    for listener in ports:
        tls = listener.endswith("SSL")
        sasl = listener.startswith("SASL")
        for i in range(CONNS):
            kind, payload = junk_payloads(rnd, hello, sasl, i,
                                          f"fuzz-unauth-{listener.lower()}-{i}")
            inside = tls and rnd.random() < 0.5
            jobs.append((listener, i, kind, inside, payload))

    def run(job):
        listener, _, _, inside, payload = job
        port = ports[listener]
        return send_in_tls(port, payload, tls_ctx) if inside else send_raw(port, payload)

    started = time.monotonic()
    with ThreadPoolExecutor(max_workers=8) as pool:
        closed = list(pool.map(run, jobs))
    fuzz_s = time.monotonic() - started
    stuck = [(l, i, k, t) for (l, i, k, t, _), c in zip(jobs, closed) if not c]
    assert not stuck, f"connections the broker kept open after EOF: {stuck[:10]}"
    assert broker.is_running(), "the broker died under fuzzing"
    kinds = {(l, k, t) for l, _, k, t, _ in jobs}
    # Every listener saw every kind of junk (the seed is fixed; this guards edits).
    for listener in ports:
        assert len({k for l, k, _ in kinds if l == listener}) == 8, listener
        if listener.endswith("SSL"):
            assert {t for l, _, t in kinds if l == listener} == {True, False}

    # Every listener still serves a real client with valid credentials.
    clients = {
        "PLAINTEXT": {},
        "SSL": {"security.protocol": "SSL", "ssl.ca.location": str(pki.ca_pem)},
        "SASL_PLAINTEXT": {"security.protocol": "SASL_PLAINTEXT", "sasl.mechanism": "PLAIN",
                           "sasl.username": "admin", "sasl.password": "admin-secret"},
        "SASL_SSL": {"security.protocol": "SASL_SSL", "sasl.mechanism": "SCRAM-SHA-512",
                     "sasl.username": "fuzzer", "sasl.password": "fuzz-512",
                     "ssl.ca.location": str(pki.ca_pem)},
    }
    expected_topics = set()
    for n, (listener, conf) in enumerate(clients.items()):
        topic = f"after-fuzz-{listener.lower()}"
        ck_create_topic(broker.bootstrap, topic, 2)
        expected_topics.add(topic)
        round_trip(f"127.0.0.1:{ports[listener]}", conf, topic, seed=SEED + n)

    # No unauthenticated request created a topic (auto-creation is off, so only the
    # CreateTopics frames after junk on the SASL listeners could have).
    from confluent_kafka.admin import AdminClient
    md = AdminClient({"bootstrap.servers": broker.bootstrap}).list_topics(timeout=15)
    topics = {t for t in md.topics if not t.startswith("__")}
    assert topics == expected_topics, f"unexpected topics: {topics - expected_topics}"

    log = re.sub(r"\x1b\[[0-9;]*m", "", broker.stderr_text())
    assert "panicked" not in log
    assert broker.is_running()
    print(f"seed {SEED}: {len(jobs)} junk connections in {fuzz_s:.1f}s")


# -- SCRAM by hand: wrong nonce, wrong iteration count, wrong channel binding ------------

def _recv_exact(s, n):
    buf = b""
    while len(buf) < n:
        chunk = s.recv(n - len(buf))
        if not chunk:
            raise ConnectionError("closed by the broker")
        buf += chunk
    return buf


def _read_uvarint(b, pos):
    n = shift = 0
    while True:
        byte = b[pos]
        pos += 1
        n |= (byte & 0x7F) << shift
        shift += 7
        if not byte & 0x80:
            return n, pos


def _authenticate(s, token, corr, version=1):
    """SaslAuthenticate v0-v2; returns (error_code, message, auth_bytes)."""
    s.sendall(sasl_authenticate(token, version, corr=corr))
    (size,) = struct.unpack(">i", _recv_exact(s, 4))
    resp = _recv_exact(s, size)
    (got,) = struct.unpack(">i", resp[:4])
    assert got == corr
    if version == 2:  # response header v1 (tagged fields), compact strings and bytes
        assert resp[4] == 0
        (err,) = struct.unpack(">h", resp[5:7])
        ln, pos = _read_uvarint(resp, 7)
        msg = None if ln == 0 else resp[pos:pos + ln - 1].decode()
        pos += max(ln - 1, 0)
        bl, pos = _read_uvarint(resp, pos)
        auth = resp[pos:pos + bl - 1]
        lifetime_and_tags = resp[pos + bl - 1:]
        assert len(lifetime_and_tags) == 9 and lifetime_and_tags[-1] == 0
        return err, msg, auth
    err, ln = struct.unpack(">hh", resp[4:8])
    msg = None if ln < 0 else resp[8:8 + ln].decode()
    rest = resp[8 + max(ln, 0):]
    (bl,) = struct.unpack(">i", rest[:4])
    # v1 adds session_lifetime_ms after the bytes; v0 ends with them
    assert len(rest) == 4 + bl + (8 if version == 1 else 0)
    return err, msg, rest[4:4 + bl]


def _closed(s):
    return _drain_until_closed(s, CLOSE_TIMEOUT_S)


class ScramClient:
    """RFC 5802 client side, enough to make valid and deliberately wrong messages."""

    def __init__(self, hash_name, user, password):
        self.h, self.user, self.password = hash_name, user, password.encode()

    def first(self, cnonce):
        self.bare = f"n={self.user},r={cnonce}"
        return ("n,," + self.bare).encode()

    def final(self, server_first, nonce=None, iterations=None, binding="biws"):
        attrs = dict(kv.split("=", 1) for kv in server_first.decode().split(","))
        salt = base64.b64decode(attrs["s"])
        i = iterations if iterations is not None else int(attrs["i"])
        without_proof = f"c={binding},r={nonce or attrs['r']}"
        salted = hashlib.pbkdf2_hmac(self.h, self.password, salt, i)
        client_key = hmac.new(salted, b"Client Key", self.h).digest()
        stored = hashlib.new(self.h, client_key).digest()
        auth_msg = f"{self.bare},{server_first.decode()},{without_proof}".encode()
        sig = hmac.new(stored, auth_msg, self.h).digest()
        proof = bytes(a ^ b for a, b in zip(client_key, sig))
        return f"{without_proof},p={base64.b64encode(proof).decode()}".encode()


def test_scram_tampering_is_refused_and_closes(strom_factory):
    broker = strom_factory(listeners={"SASL_PLAINTEXT": "SASL_PLAINTEXT"}, overrides={
        "auto.create.topics.enable": "false",
        "listener.name.sasl_plaintext.sasl.enabled.mechanisms": ",".join(MECHANISMS),
        "listener.name.sasl_plaintext.plain.sasl.jaas.config": JAAS,
    })
    strom_cli("-b", broker.bootstrap, "user", "create", "--name", "sam", "--password",
              "sam-secret", "--mechanism", "SCRAM-SHA-256", "--mechanism", "SCRAM-SHA-512")
    port = broker.extra_ports["SASL_PLAINTEXT"]

    def exchange(mechanism, **tamper):
        """One SCRAM exchange; returns (error_code, message, server_final, socket)."""
        client = ScramClient("sha" + mechanism.rsplit("-", 1)[1], "sam", "sam-secret")
        s = socket.create_connection(("127.0.0.1", port), timeout=CLOSE_TIMEOUT_S)
        s.sendall(sasl_handshake(mechanism, 1))
        (size,) = struct.unpack(">i", _recv_exact(s, 4))
        assert struct.unpack(">ih", _recv_exact(s, size)[:6]) == (1, 0)
        err, msg, server_first = _authenticate(s, client.first("fuzzclientnonce"), corr=2)
        assert err == 0 and server_first.startswith(b"r=fuzzclientnonce"), (err, msg)
        err, msg, server_final = _authenticate(s, client.final(server_first, **tamper), corr=3)
        return err, msg, server_final, s, (client, server_first)

    # The hand-made client is right: a correct exchange authenticates and is served.
    for mechanism in ("SCRAM-SHA-256", "SCRAM-SHA-512"):
        err, msg, server_final, s, _ = exchange(mechanism)
        with s:
            assert err == 0 and server_final.startswith(b"v="), (err, msg)
            s.sendall(frame(3, 1, 4, struct.pack(">i", -1)))   # Metadata v1: answered
            (size,) = struct.unpack(">i", _recv_exact(s, 4))
            assert struct.unpack(">i", _recv_exact(s, size)[:4])[0] == 4

    cases = {
        "changed-nonce": dict(nonce="fuzzclientnonce-not-the-servers"),
        "wrong-iterations": dict(iterations=4097),
        "wrong-channel-binding": dict(binding=base64.b64encode(b"y,,").decode()),
    }
    for n, (name, tamper) in enumerate(cases.items()):
        mechanism = ("SCRAM-SHA-256", "SCRAM-SHA-512")[n % 2]
        err, msg, _, s, _ = exchange(mechanism, **tamper)
        with s:
            assert err == 58, (name, err, msg)   # SASL_AUTHENTICATION_FAILED
            # Nothing after a failed authentication is processed.
            try:
                s.sendall(create_topics_v2(f"scram-{name}"))
            except (ConnectionResetError, BrokenPipeError):
                pass
            assert _closed(s), name

    # A client-final replayed on a new connection (the server nonce differs) fails too.
    _, _, _, s, (client, server_first) = exchange("SCRAM-SHA-256")
    s.close()
    replay = client.final(server_first)
    with socket.create_connection(("127.0.0.1", port), timeout=CLOSE_TIMEOUT_S) as s:
        s.sendall(sasl_handshake("SCRAM-SHA-256", 1))
        (size,) = struct.unpack(">i", _recv_exact(s, 4))
        _recv_exact(s, size)
        err, _, first2 = _authenticate(s, client.first("fuzzclientnonce"), corr=2)
        assert err == 0 and first2 != server_first
        err, msg, _ = _authenticate(s, replay, corr=3)
        assert err == 58, (err, msg)
        assert _closed(s)

    from confluent_kafka.admin import AdminClient
    md = AdminClient({"bootstrap.servers": broker.bootstrap}).list_topics(timeout=15)
    assert not [t for t in md.topics if t.startswith("scram-")], md.topics
    # Four failures, each an audit line naming the user.
    wait_until(lambda: len(re.findall(
        r'strom::audit.*result="failure" principal="User:sam" mechanism="SCRAM-SHA-(256|512)"',
        re.sub(r"\x1b\[[0-9;]*m", "", broker.stderr_text()))) >= 4, 10,
        "an audit line per refused SCRAM exchange")
    assert broker.is_running()


def test_sasl_authenticate_v0_v1_v2(strom_factory):
    """Each SaslAuthenticate version (v2 is flexible) authenticates with the right PLAIN
    password and answers SASL_AUTHENTICATION_FAILED, then closes, with a wrong one."""
    broker = strom_factory(listeners={"SASL_PLAINTEXT": "SASL_PLAINTEXT"}, overrides={
        "listener.name.sasl_plaintext.sasl.enabled.mechanisms": ",".join(MECHANISMS),
        "listener.name.sasl_plaintext.plain.sasl.jaas.config": JAAS,
    })
    port = broker.extra_ports["SASL_PLAINTEXT"]
    for version in (0, 1, 2):
        for password, want in ((b"admin-secret", 0), (b"wrong", 58)):
            with socket.create_connection(("127.0.0.1", port), timeout=CLOSE_TIMEOUT_S) as s:
                s.sendall(sasl_handshake("PLAIN", 1))
                (size,) = struct.unpack(">i", _recv_exact(s, 4))
                assert struct.unpack(">ih", _recv_exact(s, size)[:6]) == (1, 0)
                err, msg, _ = _authenticate(s, b"\0admin\0" + password, corr=2,
                                            version=version)
                assert err == want, (version, err, msg)
                if want:
                    assert msg and "Invalid username or password" in msg, msg
                    assert _closed(s)
                else:
                    s.sendall(frame(3, 1, 3, struct.pack(">i", -1)))  # Metadata: served
                    (size,) = struct.unpack(">i", _recv_exact(s, 4))
                    assert struct.unpack(">i", _recv_exact(s, size)[:4])[0] == 3


def test_only_tls_1_2_and_1_3_are_spoken(strom_factory, tmp_path):
    """A client offering only TLS 1.0 or 1.1 is refused in the handshake (and the broker
    keeps serving); TLS 1.2 and 1.3 clients are served."""
    import warnings
    pki = make_pki(tmp_path / "pki")
    broker = strom_factory(listeners={"SSL": "SSL"}, overrides={
        "listener.name.ssl.ssl.keystore.type": "PEM",
        "listener.name.ssl.ssl.keystore.location": pki.server_keystore_pem,
    })
    port = broker.extra_ports["SSL"]

    def connect(version):
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        ctx.load_verify_locations(cafile=str(pki.ca_pem))
        ctx.check_hostname = False
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)  # TLSv1/1.1 on purpose
            ctx.minimum_version = ctx.maximum_version = version
        if version < ssl.TLSVersion.TLSv1_2:
            ctx.set_ciphers("DEFAULT:@SECLEVEL=0")  # let OpenSSL offer the old versions
        raw = socket.create_connection(("127.0.0.1", port), timeout=CLOSE_TIMEOUT_S)
        return ctx.wrap_socket(raw, server_hostname="localhost")

    for old in (ssl.TLSVersion.TLSv1, ssl.TLSVersion.TLSv1_1):
        try:
            s = connect(old)
        except ssl.SSLError:
            pass  # rustls answers with a fatal alert (which one depends on the hello)
        else:
            s.close()
            raise AssertionError(f"the broker accepted {old.name}")
    for good, name in ((ssl.TLSVersion.TLSv1_2, "TLSv1.2"), (ssl.TLSVersion.TLSv1_3, "TLSv1.3")):
        with connect(good) as s:
            assert s.version() == name
            cid = b"tls-version"
            req = struct.pack(">hhih", 18, 0, 5, len(cid)) + cid   # ApiVersions v0
            s.sendall(struct.pack(">i", len(req)) + req)
            (size,) = struct.unpack(">i", _recv_exact(s, 4))
            assert struct.unpack(">ih", _recv_exact(s, size)[:6]) == (5, 0)
    text = re.sub(r"\x1b\[[0-9;]*m", "", broker.stderr_text())
    assert text.count("TLS handshake failed") == 2, "one log line per refused client"
    assert broker.is_running()
