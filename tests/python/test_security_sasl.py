"""SASL authentication (issue 8): kcat (Debian's librdkafka 2.0.2), confluent-kafka and
kafka-python produce and consume over SASL_PLAINTEXT with PLAIN (JAAS users), SCRAM-SHA-256
and SCRAM-SHA-512 (users made with `strom user create`) and OAUTHBEARER (an RS256 JWT this
test signs, checked against a JWKS file; and Kafka's unsecured mode with kcat's built-in
token); the same over SASL_SSL. Wrong password, unknown user and an expired token fail with
an authentication error while the broker keeps serving; requests before authentication are
never processed; KIP-368 re-authentication; SCRAM users survive a restart;
AlterUserScramCredentials / DescribeUserScramCredentials error codes through
confluent-kafka's AdminClient.

Every broker keeps a PLAINTEXT listener beside the SASL one (the fixture's readiness probe
and `strom user create` use it).
"""

import base64
import json
import re
import socket
import struct
import subprocess
import time

import pytest

from certs import make_pki
from conftest import STROM_BIN
from strom_helpers import (check_consumed, ck_consume_all, ck_produce_all, ck_producer,
                           kp_consume_all, kp_produce_all, kp_producer, make_records,
                           wait_until)
from test_kcat import FMT, kcat, kcat_lines, parse_kcat_output

N = 300
PARTITIONS = 2
ISSUER = "https://idp.strom.test"
AUDIENCE = "strom"
JAAS = ('org.apache.kafka.common.security.plain.PlainLoginModule required '
        'user_admin="admin-secret" user_alice="alice-plain";')


def log_text(broker):
    return re.sub(r"\x1b\[[0-9;]*m", "", broker.stderr_text())


# -- keys and tokens ---------------------------------------------------------------------

@pytest.fixture
def idp(tmp_path):
    """An RSA key, its JWKS file and a function that signs tokens with it."""
    from cryptography.hazmat.primitives.asymmetric import rsa
    import jwt
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pub = key.public_key().public_numbers()

    def b64(n):
        return base64.urlsafe_b64encode(n.to_bytes((n.bit_length() + 7) // 8, "big")) \
            .rstrip(b"=").decode()

    jwks = tmp_path / "jwks.json"
    jwks.write_text(json.dumps({"keys": [
        {"kty": "RSA", "kid": "k1", "use": "sig", "alg": "RS256", "n": b64(pub.n),
         "e": b64(pub.e)}]}))

    def token(sub, lifetime_s=300, iss=ISSUER, aud=AUDIENCE, signer=key):
        now = int(time.time())
        claims = {"sub": sub, "iss": iss, "aud": aud, "iat": now, "exp": now + lifetime_s}
        return jwt.encode(claims, signer, algorithm="RS256", headers={"kid": "k1"}), \
            now + lifetime_s

    token.jwks = jwks
    return token


def sasl_overrides(listener, jwks=None, extra=None):
    l = listener.lower()
    props = {
        f"listener.name.{l}.sasl.enabled.mechanisms":
            "PLAIN,SCRAM-SHA-256,SCRAM-SHA-512,OAUTHBEARER",
        f"listener.name.{l}.plain.sasl.jaas.config": JAAS,
    }
    if jwks is not None:
        props.update({
            "sasl.oauthbearer.jwks.endpoint.url": f"file://{jwks}",
            "sasl.oauthbearer.expected.issuer": ISSUER,
            "sasl.oauthbearer.expected.audience": AUDIENCE,
        })
    props.update(extra or {})
    return props


def strom_cli(*args, timeout=60, check=True):
    p = subprocess.run([str(STROM_BIN), *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                       timeout=timeout)
    if check:
        assert p.returncode == 0, p.stderr.decode()
    return p


def create_user(broker, name, password, *mechanisms):
    args = ["-b", broker.bootstrap, "user", "create", "--name", name, "--password", password]
    for m in mechanisms:
        args += ["--mechanism", m]
    strom_cli(*args)


# -- clients -----------------------------------------------------------------------------

def plain(user, password, protocol="SASL_PLAINTEXT"):
    return {"security.protocol": protocol, "sasl.mechanism": "PLAIN",
            "sasl.username": user, "sasl.password": password}


def scram(mechanism, user, password, protocol="SASL_PLAINTEXT"):
    return {"security.protocol": protocol, "sasl.mechanism": mechanism,
            "sasl.username": user, "sasl.password": password}


def oauth(token_fn, sub, protocol="SASL_PLAINTEXT"):
    def cb(_config):
        tok, exp = token_fn(sub)
        return tok, float(exp)
    return {"security.protocol": protocol, "sasl.mechanism": "OAUTHBEARER", "oauth_cb": cb}


def round_trip_confluent(bootstrap, conf, topic, seed):
    records = make_records(N, PARTITIONS, seed=seed)
    delivered = ck_produce_all(ck_producer(bootstrap, **conf), topic, records)
    consumed = ck_consume_all(bootstrap, topic, PARTITIONS, N, **conf)
    check_consumed(records, delivered, consumed, PARTITIONS)


def kcat_args(conf):
    out = []
    for k, v in conf.items():
        out += ["-X", f"{k}={v}"]
    return out


def round_trip_kcat(bootstrap, conf, topic, seed):
    keys, values = kcat_lines(N, seed=seed)
    payload = b"".join(k + b":" + v + b"\n" for k, v in zip(keys, values))
    kcat(*kcat_args(conf), "-P", "-b", bootstrap, "-t", topic, "-K", ":", "-p", "0",
         input_bytes=payload)
    p = kcat(*kcat_args(conf), "-C", "-b", bootstrap, "-t", topic, "-p", "0", "-e", "-o",
             "beginning", "-q", "-f", FMT)
    got = list(parse_kcat_output(p.stdout))
    assert [(k, v) for _, _, k, v, _ in got] == list(zip(keys, values))


def create_topic(bootstrap, topic, conf=None):
    from confluent_kafka.admin import AdminClient, NewTopic
    admin = AdminClient({"bootstrap.servers": bootstrap, **(conf or {})})
    fs = admin.create_topics([NewTopic(topic, num_partitions=PARTITIONS, replication_factor=1)],
                             operation_timeout=10, request_timeout=15)
    fs[topic].result(timeout=30)


def auth_fails(bootstrap, conf):
    """A librdkafka client with `conf` gets no metadata and reports an authentication
    error; returns the error text."""
    from confluent_kafka import KafkaException
    from confluent_kafka.admin import AdminClient
    errors = []
    admin = AdminClient({"bootstrap.servers": bootstrap, **conf,
                         "error_cb": lambda e: errors.append(e)})
    with pytest.raises(KafkaException):
        admin.list_topics(timeout=5)
    admin.poll(0.5)
    text = " ".join(str(e) for e in errors)
    assert "authentication" in text.lower(), errors
    return text


def metadata_ok(bootstrap, conf):
    from confluent_kafka.admin import AdminClient
    md = AdminClient({"bootstrap.servers": bootstrap, **conf}).list_topics(timeout=15)
    return md.brokers


# -- the tests ---------------------------------------------------------------------------

def test_plain_scram_and_oauthbearer_with_kcat_and_confluent(strom_factory, idp):
    broker = strom_factory(listeners={"SASL_PLAINTEXT": "SASL_PLAINTEXT"},
                           overrides=sasl_overrides("SASL_PLAINTEXT", idp.jwks))
    sasl = broker.listener_bootstrap("SASL_PLAINTEXT")
    create_user(broker, "scram512", "s3cret-512", "SCRAM-SHA-512")
    create_user(broker, "scram256", "s3cret-256", "SCRAM-SHA-256")
    admin = plain("admin", "admin-secret")
    # The SASL listener advertises itself to clients that connect to it.
    assert {b.port for b in metadata_ok(sasl, admin).values()} == \
        {broker.extra_ports["SASL_PLAINTEXT"]}
    for t in ("sasl-plain", "sasl-512", "sasl-256", "sasl-oauth", "kcat-plain", "kcat-512"):
        create_topic(sasl, t, admin)

    round_trip_confluent(sasl, plain("alice", "alice-plain"), "sasl-plain", seed=1)
    round_trip_confluent(sasl, scram("SCRAM-SHA-512", "scram512", "s3cret-512"), "sasl-512", 2)
    round_trip_confluent(sasl, scram("SCRAM-SHA-256", "scram256", "s3cret-256"), "sasl-256", 3)
    round_trip_confluent(sasl, oauth(idp, "carol"), "sasl-oauth", seed=4)
    round_trip_kcat(sasl, plain("alice", "alice-plain"), "kcat-plain", seed=5)
    round_trip_kcat(sasl, scram("SCRAM-SHA-512", "scram512", "s3cret-512"), "kcat-512", seed=6)

    # Each success is one audit line naming the principal and mechanism.
    log = log_text(broker)
    for principal, mech in (("User:alice", "PLAIN"), ("User:scram512", "SCRAM-SHA-512"),
                            ("User:scram256", "SCRAM-SHA-256"), ("User:carol", "OAUTHBEARER")):
        assert re.search(r"strom::audit.*result=\"success\" principal=" + principal +
                         r" mechanism=\"" + mech + r"\" listener=SASL_PLAINTEXT", log), \
            (principal, mech)


def test_kafka_python_scram_sha256(strom_factory):
    broker = strom_factory(listeners={"SASL_PLAINTEXT": "SASL_PLAINTEXT"},
                           overrides=sasl_overrides("SASL_PLAINTEXT"))
    sasl = broker.listener_bootstrap("SASL_PLAINTEXT")
    create_user(broker, "kp", "kp-secret", "SCRAM-SHA-256")
    conf = dict(security_protocol="SASL_PLAINTEXT", sasl_mechanism="SCRAM-SHA-256",
                sasl_plain_username="kp", sasl_plain_password="kp-secret")
    create_topic(sasl, "kp-256", plain("admin", "admin-secret"))
    records = make_records(N, PARTITIONS, seed=11)
    producer = kp_producer(sasl, **conf)
    delivered = kp_produce_all(producer, "kp-256", records)
    producer.close()
    consumed = kp_consume_all(sasl, "kp-256", PARTITIONS, N, **conf)
    check_consumed(records, delivered, consumed, PARTITIONS)


def test_unsecured_oauthbearer_with_kcat(strom_factory):
    # No JWKS: Kafka's unsecured validator (alg none), which kcat's built-in token uses.
    broker = strom_factory(listeners={"SASL_PLAINTEXT": "SASL_PLAINTEXT"},
                           overrides=sasl_overrides("SASL_PLAINTEXT"))
    sasl = broker.listener_bootstrap("SASL_PLAINTEXT")
    create_topic(sasl, "kcat-oauth", plain("admin", "admin-secret"))
    conf = {"security.protocol": "SASL_PLAINTEXT", "sasl.mechanism": "OAUTHBEARER",
            "enable.sasl.oauthbearer.unsecure.jwt": "true",
            "sasl.oauthbearer.config": "principal=dave"}
    round_trip_kcat(sasl, conf, "kcat-oauth", seed=21)
    assert 'principal=User:dave mechanism="OAUTHBEARER"' in log_text(broker)


def test_bad_credentials_are_refused_and_others_keep_working(strom_factory, idp):
    broker = strom_factory(listeners={"SASL_PLAINTEXT": "SASL_PLAINTEXT"},
                           overrides=sasl_overrides("SASL_PLAINTEXT", idp.jwks))
    sasl = broker.listener_bootstrap("SASL_PLAINTEXT")
    create_user(broker, "erin", "erin-secret", "SCRAM-SHA-512")
    good = scram("SCRAM-SHA-512", "erin", "erin-secret")
    assert metadata_ok(sasl, good)

    assert "Invalid username or password" in auth_fails(sasl, plain("alice", "wrong"))
    assert "invalid credentials" in auth_fails(
        sasl, scram("SCRAM-SHA-512", "erin", "wrong"))
    assert "invalid credentials" in auth_fails(
        sasl, scram("SCRAM-SHA-512", "nobody", "whatever"))
    # erin has no SCRAM-SHA-256 credential.
    auth_fails(sasl, scram("SCRAM-SHA-256", "erin", "erin-secret"))

    def expired_cb(_config):
        tok, _ = idp("carol", lifetime_s=-120)
        return tok, time.time() + 60
    assert "expired" in auth_fails(sasl, {"security.protocol": "SASL_PLAINTEXT",
                                          "sasl.mechanism": "OAUTHBEARER",
                                          "oauth_cb": expired_cb}).lower()

    def wrong_aud_cb(_config):
        tok, exp = idp("carol", aud="someone-else")
        return tok, float(exp)
    auth_fails(sasl, {"security.protocol": "SASL_PLAINTEXT", "sasl.mechanism": "OAUTHBEARER",
                      "oauth_cb": wrong_aud_cb})

    # A mechanism not enabled: the handshake names the enabled ones.
    p = kcat("-X", "security.protocol=SASL_PLAINTEXT", "-X", "sasl.mechanism=SCRAM-SHA-1",
             "-X", "sasl.username=x", "-X", "sasl.password=y", "-L", "-b", sasl,
             timeout=60, check=False)
    assert p.returncode != 0

    # The broker still serves everyone else, on both listeners.
    assert metadata_ok(sasl, good)
    assert metadata_ok(broker.bootstrap, {})
    log = log_text(broker)
    assert re.search(r'strom::audit.*result="failure" principal="User:nobody" '
                     r'mechanism="SCRAM-SHA-512"', log)
    assert re.search(r'strom::audit.*result="failure".*mechanism="OAUTHBEARER"', log)


# -- raw protocol: nothing is processed before authentication ----------------------------

def _str(s):
    b = s.encode()
    return struct.pack(">h", len(b)) + b


def frame(api_key, version, corr, body, client_id="raw-test"):
    payload = struct.pack(">hhi", api_key, version, corr) + _str(client_id) + body
    return struct.pack(">i", len(payload)) + payload


def frame_flexible(api_key, version, corr, body, client_id="raw-test"):
    # request header v2: client_id is a (non-compact) nullable string, then tagged fields
    payload = struct.pack(">hhi", api_key, version, corr) + _str(client_id) + b"\x00" + body
    return struct.pack(">i", len(payload)) + payload


def create_topics_v2(corr, topic):
    body = (struct.pack(">i", 1) + _str(topic) + struct.pack(">ih", 1, 1)
            + struct.pack(">i", 0) + struct.pack(">i", 0)
            + struct.pack(">i", 10000) + b"\x00")
    return frame(19, 2, corr, body)


def recv_frame(s):
    head = b""
    while len(head) < 4:
        chunk = s.recv(4 - len(head))
        if not chunk:
            return None
        head += chunk
    (size,) = struct.unpack(">i", head)
    buf = b""
    while len(buf) < size:
        chunk = s.recv(size - len(buf))
        if not chunk:
            return None
        buf += chunk
    return buf


def closed_without_answer(s, timeout=10):
    s.settimeout(timeout)
    try:
        return s.recv(1) == b""
    except ConnectionResetError:
        return True


def handshake(s, mechanism, version=1, corr=1):
    s.sendall(frame(17, version, corr, _str(mechanism)))
    resp = recv_frame(s)
    corr_got, err, n = struct.unpack(">ihi", resp[:10])
    assert corr_got == corr
    mechs, rest = [], resp[10:]
    for _ in range(n):
        (ln,) = struct.unpack(">h", rest[:2])
        mechs.append(rest[2:2 + ln].decode())
        rest = rest[2 + ln:]
    return err, mechs


def authenticate_v1(s, token, corr=2):
    """SaslAuthenticate v1 (not flexible): returns (error, message, bytes, lifetime)."""
    s.sendall(frame(36, 1, corr, struct.pack(">i", len(token)) + token))
    resp = recv_frame(s)
    corr_got, err = struct.unpack(">ih", resp[:6])
    assert corr_got == corr
    rest = resp[6:]
    (ln,) = struct.unpack(">h", rest[:2])
    msg = None if ln < 0 else rest[2:2 + ln].decode()
    rest = rest[2 + max(ln, 0):]
    (bl,) = struct.unpack(">i", rest[:4])
    auth = rest[4:4 + bl]
    (lifetime,) = struct.unpack(">q", rest[4 + bl:12 + bl])
    return err, msg, auth, lifetime


def metadata_v1(corr):
    return frame(3, 1, corr, struct.pack(">i", -1))


def topic_exists(broker, topic):
    from confluent_kafka.admin import AdminClient
    md = AdminClient({"bootstrap.servers": broker.bootstrap}).list_topics(timeout=15)
    return topic in md.topics


def test_requests_before_authentication_are_not_processed(strom_factory):
    broker = strom_factory(listeners={"SASL_PLAINTEXT": "SASL_PLAINTEXT"},
                           overrides=sasl_overrides("SASL_PLAINTEXT", extra={
                               "auto.create.topics.enable": "false"}))
    host, port = "127.0.0.1", broker.extra_ports["SASL_PLAINTEXT"]

    # CreateTopics before authentication: connection closed, topic not created.
    with socket.create_connection((host, port), timeout=10) as s:
        s.sendall(create_topics_v2(7, "made-before-auth"))
        assert closed_without_answer(s)
    # Also after a successful handshake but before SaslAuthenticate.
    with socket.create_connection((host, port), timeout=10) as s:
        assert handshake(s, "PLAIN")[0] == 0
        s.sendall(create_topics_v2(8, "made-before-auth"))
        assert closed_without_answer(s)
    # And after a failed authentication.
    with socket.create_connection((host, port), timeout=10) as s:
        assert handshake(s, "PLAIN")[0] == 0
        err, msg, _, _ = authenticate_v1(s, b"\0admin\0wrong")
        assert err == 58 and "Invalid username or password" in msg
        assert closed_without_answer(s)
    assert not topic_exists(broker, "made-before-auth")

    # SaslAuthenticate before SaslHandshake: ILLEGAL_SASL_STATE, then closed.
    with socket.create_connection((host, port), timeout=10) as s:
        err, _, _, _ = authenticate_v1(s, b"\0admin\0admin-secret", corr=3)
        assert err == 34
        assert closed_without_answer(s)
    # An unknown mechanism: UNSUPPORTED_SASL_MECHANISM with the enabled list, closed.
    with socket.create_connection((host, port), timeout=10) as s:
        err, mechs = handshake(s, "GSSAPI")
        assert err == 33
        assert mechs == ["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512", "OAUTHBEARER"]
        assert closed_without_answer(s)
    # Garbage as a SASL token (v0: raw frames) closes the connection.
    with socket.create_connection((host, port), timeout=10) as s:
        assert handshake(s, "SCRAM-SHA-512", version=0)[0] == 0
        s.sendall(struct.pack(">i", 5) + b"\xff\x00\xfe\x01\x02")
        assert closed_without_answer(s)

    # v0 handshake then a raw PLAIN token: authenticated, then requests work.
    with socket.create_connection((host, port), timeout=10) as s:
        assert handshake(s, "PLAIN", version=0)[0] == 0
        tok = b"\0admin\0admin-secret"
        s.sendall(struct.pack(">i", len(tok)) + tok)
        assert recv_frame(s) == b""
        s.sendall(create_topics_v2(9, "made-after-auth"))
        resp = recv_frame(s)
        assert struct.unpack(">i", resp[:4])[0] == 9
    wait_until(lambda: topic_exists(broker, "made-after-auth"), 10, "topic after auth")
    assert re.search(r"closing connection.*CreateTopics request before SASL authentication",
                     log_text(broker))


def test_reauthentication(strom_factory):
    broker = strom_factory(listeners={"SASL_PLAINTEXT": "SASL_PLAINTEXT"},
                           overrides=sasl_overrides("SASL_PLAINTEXT", extra={
                               "connections.max.reauth.ms": "2000"}))
    sasl = broker.listener_bootstrap("SASL_PLAINTEXT")
    host, port = "127.0.0.1", broker.extra_ports["SASL_PLAINTEXT"]

    # The session lifetime is announced (SaslAuthenticate v1+) ...
    with socket.create_connection((host, port), timeout=10) as s:
        assert handshake(s, "PLAIN")[0] == 0
        err, _, _, lifetime = authenticate_v1(s, b"\0admin\0admin-secret")
        assert err == 0 and lifetime == 2000
        s.sendall(metadata_v1(10))
        assert struct.unpack(">i", recv_frame(s)[:4])[0] == 10
        # ... re-authenticating on the same connection extends it ...
        time.sleep(1.2)
        assert handshake(s, "PLAIN", corr=11)[0] == 0
        err, _, _, lifetime = authenticate_v1(s, b"\0admin\0admin-secret", corr=12)
        assert err == 0 and lifetime == 2000
        time.sleep(1.2)  # 2.4 s after the first authentication, 1.2 s after the second
        s.sendall(metadata_v1(13))
        assert struct.unpack(">i", recv_frame(s)[:4])[0] == 13
        # ... and a principal change is refused.
        assert handshake(s, "PLAIN", corr=14)[0] == 0
        err, msg, _, _ = authenticate_v1(s, b"\0alice\0alice-plain", corr=15)
        assert err == 58 and "Cannot change principals" in msg
        assert closed_without_answer(s)
    # A session that expires without re-authentication is closed at its next request.
    with socket.create_connection((host, port), timeout=10) as s:
        assert handshake(s, "PLAIN")[0] == 0
        assert authenticate_v1(s, b"\0admin\0admin-secret")[0] == 0
        time.sleep(2.3)
        s.sendall(metadata_v1(16))
        assert closed_without_answer(s)

    # librdkafka re-authenticates on its own: a producer keeps going for 6 s.
    create_topic(sasl, "reauth", plain("admin", "admin-secret"))
    errors = []
    p = ck_producer(sasl, **plain("alice", "alice-plain"), error_cb=lambda e: errors.append(e))
    acked = []
    deadline = time.monotonic() + 6
    i = 0
    while time.monotonic() < deadline:
        p.produce("reauth", value=b"v%d" % i, partition=0,
                  on_delivery=lambda err, m: acked.append(err))
        p.poll(0.05)
        i += 1
    assert p.flush(30) == 0
    assert len(acked) == i and all(e is None for e in acked), [e for e in acked if e][:3]
    reauths = re.findall(r'result="success" principal=User:alice mechanism="PLAIN" '
                         r'listener=SASL_PLAINTEXT peer=\S+ reauthentication=true', log_text(broker))
    assert len(reauths) >= 2, "librdkafka did not re-authenticate"


def test_scram_users_survive_restart_and_can_be_deleted(strom_factory):
    broker = strom_factory(listeners={"SASL_PLAINTEXT": "SASL_PLAINTEXT"},
                           overrides=sasl_overrides("SASL_PLAINTEXT"))
    create_user(broker, "frank", "frank-secret", "SCRAM-SHA-512", "SCRAM-SHA-256")
    # `strom user` also works over SASL (PLAIN admin).
    admin_args = ["-b", broker.listener_bootstrap("SASL_PLAINTEXT"), "-X",
                  "security.protocol=SASL_PLAINTEXT", "-X", "sasl.mechanism=PLAIN",
                  "-X", "sasl.username=admin", "-X", "sasl.password=admin-secret"]
    strom_cli(*admin_args, "user", "create", "--name", "gina", "--password", "gina-secret",
              "--mechanism", "SCRAM-SHA-256")
    broker.terminate()
    broker.restart()
    sasl = broker.listener_bootstrap("SASL_PLAINTEXT")
    assert metadata_ok(sasl, scram("SCRAM-SHA-512", "frank", "frank-secret"))
    assert metadata_ok(sasl, scram("SCRAM-SHA-256", "frank", "frank-secret"))
    assert metadata_ok(sasl, scram("SCRAM-SHA-256", "gina", "gina-secret"))
    listed = json.loads(strom_cli("-b", broker.bootstrap, "--json", "user", "list").stdout)
    assert sorted((u["user"], u["mechanism"], u["iterations"]) for u in listed) == [
        ("frank", "SCRAM-SHA-256", 8192), ("frank", "SCRAM-SHA-512", 8192),
        ("gina", "SCRAM-SHA-256", 8192)]
    # The CLI's own SCRAM login works too.
    strom_cli("-b", sasl, "-X", "security.protocol=SASL_PLAINTEXT", "-X",
              "sasl.mechanism=SCRAM-SHA-512", "-X", "sasl.username=frank", "-X",
              "sasl.password=frank-secret", "user", "list", "frank")
    p = strom_cli("-b", sasl, "-X", "security.protocol=SASL_PLAINTEXT", "-X",
                  "sasl.mechanism=SCRAM-SHA-512", "-X", "sasl.username=frank", "-X",
                  "sasl.password=nope", "user", "list", check=False)
    assert p.returncode != 0 and b"authentication failed" in p.stderr

    # Kafka's spelling of the bootstrap flag works too.
    strom_cli("user", "delete", "--bootstrap-server", broker.bootstrap, "--name", "frank")
    auth_fails(sasl, scram("SCRAM-SHA-512", "frank", "frank-secret"))
    broker.terminate()
    broker.restart()
    auth_fails(broker.listener_bootstrap("SASL_PLAINTEXT"),
               scram("SCRAM-SHA-512", "frank", "frank-secret"))
    assert metadata_ok(broker.listener_bootstrap("SASL_PLAINTEXT"),
                       scram("SCRAM-SHA-256", "gina", "gina-secret"))
    p = strom_cli("-b", broker.bootstrap, "user", "delete", "--name", "frank", check=False)
    assert p.returncode != 0 and b"ResourceNotFound" in p.stderr


def test_scram_credential_admin_api_errors(strom):
    """AlterUserScramCredentials / DescribeUserScramCredentials through confluent-kafka's
    AdminClient: Kafka's error codes, nothing half-applied."""
    from confluent_kafka import KafkaException
    from confluent_kafka.admin import (AdminClient, ScramCredentialInfo, ScramMechanism,
                                       UserScramCredentialDeletion,
                                       UserScramCredentialUpsertion)
    admin = AdminClient({"bootstrap.servers": strom.bootstrap})

    def alter(ops):
        out = {}
        for user, f in admin.alter_user_scram_credentials(ops).items():
            try:
                f.result(timeout=15)
                out[user] = None
            except KafkaException as e:
                out[user] = e.args[0].name()
        return out

    def upsert(user, mech=ScramMechanism.SCRAM_SHA_256, iterations=8192):
        return UserScramCredentialUpsertion(user, ScramCredentialInfo(mech, iterations),
                                            b"password", b"salt-of-" + user.encode())

    assert alter([upsert("hal"), upsert("ida", ScramMechanism.SCRAM_SHA_512, 4096)]) == \
        {"hal": None, "ida": None}
    assert alter([upsert("low", iterations=4095), upsert("high", iterations=16385),
                  upsert("ok")]) == {
        "low": "UNACCEPTABLE_CREDENTIAL", "high": "UNACCEPTABLE_CREDENTIAL", "ok": None}
    assert alter([UserScramCredentialDeletion("nobody", ScramMechanism.SCRAM_SHA_256)]) == \
        {"nobody": "RESOURCE_NOT_FOUND"}
    # Two changes of one user in one request: refused, neither applied (Kafka's rule).
    assert alter([upsert("dup"), upsert("dup", ScramMechanism.SCRAM_SHA_512)]) == \
        {"dup": "DUPLICATE_RESOURCE"}

    described = admin.describe_user_scram_credentials().result(timeout=15)
    got = {u: sorted((i.mechanism, i.iterations) for i in d.scram_credential_infos)
           for u, d in described.items()}
    assert got == {"hal": [(ScramMechanism.SCRAM_SHA_256, 8192)],
                   "ida": [(ScramMechanism.SCRAM_SHA_512, 4096)],
                   "ok": [(ScramMechanism.SCRAM_SHA_256, 8192)]}
    fs = admin.describe_user_scram_credentials(["hal", "nobody"])
    assert fs["hal"].result(timeout=15).scram_credential_infos[0].iterations == 8192
    with pytest.raises(KafkaException) as e:
        fs["nobody"].result(timeout=15)
    assert e.value.args[0].name() == "RESOURCE_NOT_FOUND"
    assert alter([UserScramCredentialDeletion("hal", ScramMechanism.SCRAM_SHA_256)]) == \
        {"hal": None}
    assert "hal" not in admin.describe_user_scram_credentials().result(timeout=15)


# -- SASL_SSL: SASL over the TLS listener ------------------------------------------------

@pytest.fixture
def pki(tmp_path):
    return make_pki(tmp_path / "pki")


def test_sasl_ssl_scram(strom_factory, pki, tmp_path):
    overrides = sasl_overrides("SASL_SSL", extra={
        "listener.name.sasl_ssl.ssl.keystore.type": "PEM",
        "listener.name.sasl_ssl.ssl.keystore.location": pki.server_keystore_pem,
    })
    broker = strom_factory(listeners={"SASL_SSL": "SASL_SSL"}, overrides=overrides)
    sasl_ssl = broker.listener_bootstrap("SASL_SSL")
    create_user(broker, "tls512", "tls-secret-512", "SCRAM-SHA-512")
    create_user(broker, "tls256", "tls-secret-256", "SCRAM-SHA-256")
    ca = {"ssl.ca.location": str(pki.ca_pem)}
    c512 = dict(scram("SCRAM-SHA-512", "tls512", "tls-secret-512", "SASL_SSL"), **ca)
    create_topic(sasl_ssl, "ssl-512", c512)
    create_topic(sasl_ssl, "ssl-kcat", c512)
    create_topic(sasl_ssl, "ssl-kp", c512)
    round_trip_confluent(sasl_ssl, c512, "ssl-512", seed=31)
    round_trip_kcat(sasl_ssl, c512, "ssl-kcat", seed=32)
    # kafka-python, SCRAM-SHA-256 over SASL_SSL.
    conf = dict(security_protocol="SASL_SSL", sasl_mechanism="SCRAM-SHA-256",
                sasl_plain_username="tls256", sasl_plain_password="tls-secret-256",
                ssl_cafile=str(pki.ca_pem))
    records = make_records(N, PARTITIONS, seed=33)
    producer = kp_producer(sasl_ssl, **conf)
    delivered = kp_produce_all(producer, "ssl-kp", records)
    producer.close()
    consumed = kp_consume_all(sasl_ssl, "ssl-kp", PARTITIONS, N, **conf)
    check_consumed(records, delivered, consumed, PARTITIONS)
    # strom user over SASL_SSL, with a Java client's --command-config file.
    cfg = tmp_path / "admin.properties"
    cfg.write_text("security.protocol=SASL_SSL\n"
                   f"ssl.truststore.location={pki.ca_pem}\nssl.truststore.type=PEM\n"
                   "sasl.mechanism=SCRAM-SHA-512\n"
                   "sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule "
                   'required username="tls512" password="tls-secret-512";\n')
    listed = json.loads(strom_cli("--bootstrap-server", sasl_ssl, "--command-config", str(cfg),
                                  "--json", "user", "list").stdout)
    assert sorted(u["user"] for u in listed) == ["tls256", "tls512"]
    # Wrong password over TLS: an authentication error, not a TLS one.
    auth_fails(sasl_ssl, dict(scram("SCRAM-SHA-512", "tls512", "bad", "SASL_SSL"), **ca))
    assert 'principal=User:tls256 mechanism="SCRAM-SHA-256" listener=SASL_SSL' in \
        log_text(broker)


def test_scram_admin_apis_need_cluster_permissions(strom_factory):
    """With the authorizer on, only a principal allowed ALTER/DESCRIBE on the cluster
    manages SCRAM users: the super user (PLAIN) bootstraps them over SASL, another
    authenticated user gets CLUSTER_AUTHORIZATION_FAILED and changes nothing."""
    from confluent_kafka import KafkaException
    from confluent_kafka.admin import (AdminClient, ScramCredentialInfo, ScramMechanism,
                                       UserScramCredentialUpsertion)
    broker = strom_factory(listeners={"SASL_PLAINTEXT": "SASL_PLAINTEXT"},
                           overrides=sasl_overrides("SASL_PLAINTEXT", extra={
                               "authorizer.class.name":
                                   "org.apache.kafka.metadata.authorizer.StandardAuthorizer",
                               "super.users": "User:admin"}))
    sasl = broker.listener_bootstrap("SASL_PLAINTEXT")
    strom_cli("-b", sasl, "-X", "security.protocol=SASL_PLAINTEXT", "-X",
              "sasl.mechanism=PLAIN", "-X", "sasl.username=admin", "-X",
              "sasl.password=admin-secret", "user", "create", "--name", "jo", "--password",
              "jo-secret", "--mechanism", "SCRAM-SHA-512")
    jo = scram("SCRAM-SHA-512", "jo", "jo-secret")
    assert metadata_ok(sasl, jo)

    as_jo = AdminClient({"bootstrap.servers": sasl, **jo})
    fs = as_jo.alter_user_scram_credentials([UserScramCredentialUpsertion(
        "kim", ScramCredentialInfo(ScramMechanism.SCRAM_SHA_256, 4096), b"pw", b"salt")])
    with pytest.raises(KafkaException) as e:
        fs["kim"].result(timeout=15)
    assert e.value.args[0].name() == "CLUSTER_AUTHORIZATION_FAILED"
    # (Not through confluent-kafka: its DescribeUserScramCredentials crashes the process
    # on this top-level error, which Kafka returns too.)
    p = strom_cli("-b", sasl, "-X", "security.protocol=SASL_PLAINTEXT", "-X",
                  "sasl.mechanism=SCRAM-SHA-512", "-X", "sasl.username=jo", "-X",
                  "sasl.password=jo-secret", "user", "list", check=False)
    assert p.returncode != 0 and b"ClusterAuthorizationFailed" in p.stderr
    # The anonymous PLAINTEXT listener is refused as well.
    p = strom_cli("-b", broker.bootstrap, "user", "list", check=False)
    assert p.returncode != 0 and b"ClusterAuthorizationFailed" in p.stderr

    as_admin = AdminClient({"bootstrap.servers": sasl, **plain("admin", "admin-secret")})
    users = as_admin.describe_user_scram_credentials().result(timeout=15)
    assert sorted(users) == ["jo"]


def test_random_bytes_and_tokens_on_the_sasl_listener(strom_factory):
    """Garbage in place of frames and of SASL tokens (v0 raw and v1 SaslAuthenticate, for
    every mechanism): each connection is refused or answered with an error and closed; the
    broker neither panics nor stops serving (the fixture fails the test on a panic)."""
    import random
    broker = strom_factory(listeners={"SASL_PLAINTEXT": "SASL_PLAINTEXT"},
                           overrides=sasl_overrides("SASL_PLAINTEXT"))
    create_user(broker, "fuzz", "fuzz-secret", "SCRAM-SHA-256")
    host, port = "127.0.0.1", broker.extra_ports["SASL_PLAINTEXT"]
    rnd = random.Random(8)
    mechanisms = ["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512", "OAUTHBEARER"]
    for i in range(120):
        junk = rnd.randbytes(rnd.randint(0, 200))
        with socket.create_connection((host, port), timeout=10) as s:
            kind = i % 4
            if kind == 0:      # bytes where a frame should be
                s.sendall(junk)
            elif kind == 1:    # a well-sized frame of junk
                s.sendall(struct.pack(">i", len(junk)) + junk)
            elif kind == 2:    # v0 handshake, then a raw junk token
                assert handshake(s, rnd.choice(mechanisms), version=0)[0] == 0
                s.sendall(struct.pack(">i", len(junk)) + junk)
            else:              # v1 handshake, then junk in SaslAuthenticate (twice)
                assert handshake(s, rnd.choice(mechanisms))[0] == 0
                err = authenticate_v1(s, junk)[0]
                if err == 0:   # a challenge (SCRAM, OAUTHBEARER's error status)
                    err = authenticate_v1(s, junk + b"\x01", corr=3)[0]
                assert err == 58
            if kind != 0 or len(junk) >= 4:
                s.shutdown(socket.SHUT_WR)
                s.settimeout(10)
                try:
                    while s.recv(4096):
                        pass
                except ConnectionResetError:
                    pass
    assert metadata_ok(broker.listener_bootstrap("SASL_PLAINTEXT"),
                       scram("SCRAM-SHA-256", "fuzz", "fuzz-secret"))
    assert metadata_ok(broker.bootstrap, {})
