"""ACLs (issue 8, acceptance 3) with clients Strom did not write.

confluent-kafka's AdminClient creates, lists and deletes ACLs; `strom acl` does the
same; a raw CreateAcls request shows Kafka's validation errors. The authorizer is
checked end to end with real principals: on PLAINTEXT every connection is
`User:ANONYMOUS`, so a broker whose `super.users` names ANONYMOUS sets the stage
(topics, ACLs), and a restart without it (ACLs survive restarts) leaves ANONYMOUS
with only what the ACLs grant. With SASL PLAIN, `alice` and the super user `admin`
are distinct principals on one broker.
"""

import json
import re
import socket
import struct
import subprocess
import time
import uuid

import pytest

from conftest import STROM_BIN
from strom_helpers import ck_create_topic, ck_producer, wait_until

AUTHORIZER = "org.apache.kafka.metadata.authorizer.StandardAuthorizer"
TOPIC_AUTHORIZATION_FAILED = 29
GROUP_AUTHORIZATION_FAILED = 30
CLUSTER_AUTHORIZATION_FAILED = 31
INVALID_REQUEST = 42
SECURITY_DISABLED = 54


def admin(bootstrap, **extra):
    from confluent_kafka.admin import AdminClient
    return AdminClient({"bootstrap.servers": bootstrap, **extra})


def binding(restype, name, principal, op, perm="ALLOW", pattern="LITERAL", host="*"):
    from confluent_kafka.admin import (AclBinding, AclOperation, AclPermissionType,
                                       ResourcePatternType, ResourceType)
    return AclBinding(ResourceType[restype], name, ResourcePatternType[pattern], principal, host,
                      AclOperation[op], AclPermissionType[perm])


def any_filter(**kw):
    from confluent_kafka.admin import (AclBindingFilter, AclOperation, AclPermissionType,
                                       ResourcePatternType, ResourceType)
    return AclBindingFilter(ResourceType[kw.get("restype", "ANY")], kw.get("name"),
                            ResourcePatternType[kw.get("pattern", "ANY")], kw.get("principal"),
                            kw.get("host"), AclOperation[kw.get("op", "ANY")],
                            AclPermissionType[kw.get("perm", "ANY")])


def create_acls(adm, bindings):
    for b, f in adm.create_acls(bindings, request_timeout=15).items():
        f.result(timeout=20)


def describe(adm, flt=None):
    res = adm.describe_acls(flt or any_filter(), request_timeout=15).result(timeout=20)
    return sorted((b.restype.name, b.name, b.resource_pattern_type.name, b.principal, b.host,
                   b.operation.name, b.permission_type.name) for b in res)


def kafka_code(exc):
    err = exc.args[0]
    return err.code() if hasattr(err, "code") else None


def produce_one(bootstrap, topic, **extra):
    """Produce one record; the delivery report's error (or None)."""
    p = ck_producer(bootstrap, **{"message.timeout.ms": 10000, **extra})
    result = []
    p.produce(topic, b"v", on_delivery=lambda err, msg: result.append(err))
    p.flush(20)
    assert result, "no delivery report"
    return result[0]


def consume_group(bootstrap, topic, group, expected, timeout=30, **extra):
    """Subscribe in `group`, read `expected` records, commit them; returns the values."""
    from confluent_kafka import Consumer
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": group,
                  "auto.offset.reset": "earliest", "enable.auto.commit": False, **extra})
    try:
        c.subscribe([topic])
        got = []
        deadline = time.monotonic() + timeout
        while len(got) < expected and time.monotonic() < deadline:
            m = c.poll(0.5)
            if m is None:
                continue
            assert m.error() is None, f"consumer error: {m.error()}"
            got.append(m.value())
        assert len(got) == expected, f"consumed {len(got)} of {expected}"
        c.commit(asynchronous=False)
        return got
    finally:
        c.close()


def consume_error(bootstrap, topic, group, timeout=20, **extra):
    """Subscribe and return the first error the consumer reports."""
    from confluent_kafka import Consumer
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": group,
                  "auto.offset.reset": "earliest", **extra})
    try:
        c.subscribe([topic])
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            m = c.poll(0.5)
            if m is not None and m.error() is not None:
                return m.error()
        return None
    finally:
        c.close()


def strom_acl(bootstrap, *args, check=True):
    p = subprocess.run([str(STROM_BIN), "-b", bootstrap, "acl", *args], capture_output=True,
                       text=True, timeout=30)
    if check:
        assert p.returncode == 0, f"strom acl {args} failed: {p.stderr}"
    return p


def raw_create_acls_v1(host, port, creations):
    """CreateAcls v1 by hand (non-flexible), for bindings clients refuse to send.
    Returns [(error_code, error_message)]."""
    def s(x):
        b = x.encode()
        return struct.pack(">h", len(b)) + b
    body = struct.pack(">hhi", 30, 1, 77) + s("raw-test") + struct.pack(">i", len(creations))
    for rt, name, pt, principal, h, op, perm in creations:
        body += struct.pack(">b", rt) + s(name) + struct.pack(">b", pt) + s(principal) + s(h) \
            + struct.pack(">bb", op, perm)
    with socket.create_connection((host, port), timeout=10) as sock:
        sock.sendall(struct.pack(">i", len(body)) + body)
        size = struct.unpack(">i", _recv(sock, 4))[0]
        data = _recv(sock, size)
    corr, _throttle, n = struct.unpack(">iii", data[:12])
    assert corr == 77
    out, pos = [], 12
    for _ in range(n):
        code, mlen = struct.unpack(">hh", data[pos:pos + 4])
        pos += 4
        msg = None
        if mlen >= 0:
            msg = data[pos:pos + mlen].decode()
            pos += mlen
        out.append((code, msg))
    return out


def _recv(sock, n):
    buf = b""
    while len(buf) < n:
        chunk = sock.recv(n - len(buf))
        assert chunk, "connection closed"
        buf += chunk
    return buf


def test_acl_apis_need_an_authorizer(strom):
    bootstrap, _, _ = strom
    adm = admin(bootstrap)
    fs = adm.create_acls([binding("TOPIC", "a", "User:alice", "READ")], request_timeout=15)
    with pytest.raises(Exception) as e:
        list(fs.values())[0].result(timeout=20)
    assert kafka_code(e.value) == SECURITY_DISABLED, e.value
    p = strom_acl(bootstrap, "list", check=False)
    assert p.returncode != 0 and "SecurityDisabled" in p.stderr, p.stderr


@pytest.mark.strom_config(**{"authorizer.class.name": AUTHORIZER, "super.users": "User:ANONYMOUS"})
def test_admin_client_creates_lists_deletes_acls_and_they_survive_restart(strom):
    bootstrap, _, broker = strom
    adm = admin(bootstrap)
    create_acls(adm, [
        binding("TOPIC", "a", "User:alice", "READ"),
        binding("TOPIC", "orders-", "User:alice", "WRITE", pattern="PREFIXED"),
        binding("TOPIC", "orders-secret", "User:alice", "WRITE", perm="DENY"),
        binding("GROUP", "g", "User:alice", "READ"),
        binding("BROKER", "kafka-cluster", "User:bob", "IDEMPOTENT_WRITE", host="10.1.2.3"),
    ])
    # creating an existing binding again is a no-op
    create_acls(adm, [binding("TOPIC", "a", "User:alice", "READ")])
    everything = describe(adm)
    assert len(everything) == 5, everything
    # confluent-kafka names the CLUSTER resource type (4) BROKER
    assert ("BROKER", "kafka-cluster", "LITERAL", "User:bob", "10.1.2.3", "IDEMPOTENT_WRITE",
            "ALLOW") in everything
    # MATCH: every binding that applies to topic orders-secret
    match = describe(adm, any_filter(restype="TOPIC", name="orders-secret", pattern="MATCH"))
    assert [(m[1], m[6]) for m in match] == [("orders-", "ALLOW"), ("orders-secret", "DENY")]
    assert [m[1] for m in describe(adm, any_filter(restype="TOPIC", pattern="PREFIXED"))] \
        == ["orders-"]
    assert len(describe(adm, any_filter(principal="User:alice"))) == 4

    broker.terminate()
    broker.restart()
    adm = admin(bootstrap)
    assert describe(adm) == everything, "ACLs lost across a restart"

    res = adm.delete_acls([any_filter(restype="TOPIC", pattern="PREFIXED"),
                           any_filter(principal="User:bob")], request_timeout=15)
    deleted = sorted(b.name for f in res.values() for b in f.result(timeout=20))
    assert deleted == ["kafka-cluster", "orders-"]
    assert len(describe(adm)) == 3
    broker.terminate()
    broker.restart()
    assert len(describe(admin(bootstrap))) == 3, "deletions lost across a restart"


@pytest.mark.strom_config(**{"authorizer.class.name": AUTHORIZER, "super.users": "User:ANONYMOUS"})
def test_invalid_bindings_get_invalid_request(strom):
    _, _, broker = strom
    # (resource type, name, pattern type, principal, host, operation, permission)
    bad = [
        (2, "a", 1, "User:x", "*", 3, 3),   # pattern ANY
        (2, "a", 2, "User:x", "*", 3, 3),   # pattern MATCH
        (1, "a", 3, "User:x", "*", 3, 3),   # resource type ANY
        (2, "a", 3, "User:x", "*", 1, 3),   # operation ANY
        (2, "a", 3, "User:x", "*", 0, 3),   # operation UNKNOWN
        (2, "a", 3, "User:x", "*", 3, 1),   # permission ANY
        (2, "", 3, "User:x", "*", 3, 3),    # empty name
        (2, "a", 3, "x", "*", 3, 3),        # principal without a type
        (4, "other", 3, "User:x", "*", 7, 3),  # cluster resource named wrongly
    ]
    good = (2, "ok", 3, "User:x", "*", 3, 3)
    results = raw_create_acls_v1(broker.host, broker.port, bad + [good])
    codes = [c for c, _ in results]
    assert codes == [INVALID_REQUEST] * len(bad) + [0], results
    assert all(m for _, m in results[:-1]), results
    # the valid one was applied, the invalid ones were not
    got = describe(admin(broker.bootstrap))
    assert got == [("TOPIC", "ok", "LITERAL", "User:x", "*", "READ", "ALLOW")], got


@pytest.mark.strom_config(**{"authorizer.class.name": AUTHORIZER, "super.users": "User:ANONYMOUS"})
def test_strom_acl_cli(strom):
    bootstrap, _, broker = strom
    strom_acl(bootstrap, "add", "--allow-principal", "User:alice", "--operation", "Read",
              "--operation", "Describe", "--topic", "a", "--group", "g")
    strom_acl(bootstrap, "add", "--deny-principal", "User:mallory", "--deny-host", "10.0.0.9",
              "--operation", "All", "--topic", "pay-", "--resource-pattern-type", "prefixed")
    strom_acl(bootstrap, "add", "--allow-principal", "User:bob", "--operation",
              "IdempotentWrite", "--cluster")
    rows = json.loads(strom_acl(bootstrap, "list", "--json").stdout)
    assert len(rows) == 6, rows
    assert {"resource_type": "TOPIC", "resource_name": "pay-", "pattern_type": "PREFIXED",
            "principal": "User:mallory", "host": "10.0.0.9", "operation": "ALL",
            "permission": "DENY"} in rows
    # what the AdminClient sees is what the CLI wrote
    assert len(describe(admin(bootstrap))) == 6
    table = strom_acl(bootstrap, "list", "--topic", "a").stdout
    assert "User:alice" in table and "READ" in table and "GROUP" not in table, table
    bad = strom_acl(bootstrap, "add", "--allow-principal", "User:a", "--operation", "Fly",
                    "--topic", "a", check=False)
    assert bad.returncode != 0 and "unknown operation" in bad.stderr, bad.stderr
    bad = strom_acl(bootstrap, "add", "--allow-principal", "alice", "--operation", "Read",
                    "--topic", "a", check=False)
    assert bad.returncode != 0 and "InvalidRequest" in bad.stderr, bad.stderr
    removed = json.loads(strom_acl(bootstrap, "remove", "--json", "--allow-principal",
                                   "User:alice", "--operation", "Describe", "--topic", "a").stdout)
    assert [r["operation"] for r in removed] == ["DESCRIBE"], removed
    removed = json.loads(strom_acl(bootstrap, "remove", "--json", "--topic", "pay-",
                                   "--resource-pattern-type", "prefixed").stdout)
    assert len(removed) == 1, removed
    assert len(json.loads(strom_acl(bootstrap, "list", "--json").stdout)) == 4
    # kafka-acls' shorthands
    strom_acl(bootstrap, "add", "--allow-principal", "User:carol", "--consumer", "--topic", "c1",
              "--group", "cg")
    strom_acl(bootstrap, "add", "--allow-principal", "User:carol", "--producer", "--idempotent",
              "--topic", "p1")
    carol = json.loads(strom_acl(bootstrap, "list", "--json", "--principal", "User:carol").stdout)
    assert sorted((r["resource_type"], r["resource_name"], r["operation"]) for r in carol) == [
        ("CLUSTER", "kafka-cluster", "IDEMPOTENT_WRITE"), ("GROUP", "cg", "READ"),
        ("TOPIC", "c1", "DESCRIBE"), ("TOPIC", "c1", "READ"), ("TOPIC", "p1", "CREATE"),
        ("TOPIC", "p1", "DESCRIBE"), ("TOPIC", "p1", "WRITE")], carol
    bad = strom_acl(bootstrap, "add", "--allow-principal", "User:carol", "--consumer",
                    "--topic", "c1", check=False)
    assert bad.returncode != 0 and "--consumer needs --group" in bad.stderr, bad.stderr


def test_anonymous_with_read_acls_only(strom_factory):
    """Acceptance 3 for User:ANONYMOUS: with Read on topic `a` and group `g` only, it
    consumes `a` in `g`, cannot produce to `a`, does not see `b`, cannot create topics; a
    PREFIXED allow and a LITERAL deny interact as in Kafka; ACLs survive the restart."""
    from confluent_kafka.admin import NewTopic
    props = {"authorizer.class.name": AUTHORIZER, "super.users": "User:ANONYMOUS"}
    broker = strom_factory(overrides=props)
    bootstrap = broker.bootstrap
    for t in ["a", "b", "pre-open", "pre-secret"]:
        ck_create_topic(bootstrap, t, 1)
        assert produce_one(bootstrap, t) is None
    adm = admin(bootstrap)
    create_acls(adm, [
        binding("TOPIC", "a", "User:ANONYMOUS", "READ"),
        binding("GROUP", "g", "User:ANONYMOUS", "READ"),
        binding("TOPIC", "pre-", "User:ANONYMOUS", "READ", pattern="PREFIXED"),
        binding("TOPIC", "pre-secret", "User:ANONYMOUS", "READ", perm="DENY"),
    ])
    # the same data dir, no longer a super user
    broker.overrides.pop("super.users")
    broker.terminate()
    broker.restart()

    assert consume_group(bootstrap, "a", "g", 1) == [b"v"]
    err = produce_one(bootstrap, "a")
    assert err is not None and err.code() == TOPIC_AUTHORIZATION_FAILED, err

    adm = admin(bootstrap)
    visible = set(adm.list_topics(timeout=10).topics)
    assert visible == {"a", "pre-open", "pre-secret"}, visible

    # kcat (Debian's librdkafka 2.0.2): reads a, cannot write it, lists what it may see
    from test_kcat import kcat
    out = kcat("-C", "-b", bootstrap, "-t", "a", "-e", "-o", "beginning", "-q", timeout=60)
    assert out.stdout == b"v\n", out.stdout
    out = kcat("-P", "-b", bootstrap, "-t", "a", input_bytes=b"x\n", timeout=60, check=False)
    assert b"authorization failed" in out.stderr.lower(), out.stderr
    listed = json.loads(kcat("-L", "-J", "-b", bootstrap, timeout=60).stdout)
    assert {t["topic"] for t in listed["topics"]} == {"a", "pre-open", "pre-secret"}, listed
    md = adm.list_topics("b", timeout=10)
    assert md.topics["b"].error is not None \
        and md.topics["b"].error.code() == TOPIC_AUTHORIZATION_FAILED, md.topics["b"].error

    fs = adm.create_topics([NewTopic("c-" + uuid.uuid4().hex[:6], 1, 1)], request_timeout=15)
    with pytest.raises(Exception) as e:
        list(fs.values())[0].result(timeout=20)
    assert kafka_code(e.value) == TOPIC_AUTHORIZATION_FAILED, e.value

    # PREFIXED allow, LITERAL deny: pre-open readable, pre-secret denied
    assert consume_group(bootstrap, "pre-open", "g", 1) == [b"v"]
    err = consume_error(bootstrap, "pre-secret", "g")
    assert err is not None and err.code() == TOPIC_AUTHORIZATION_FAILED, err
    # committed offsets: all topics of g lists only what ANONYMOUS may Describe; asking
    # for topic b gets TOPIC_AUTHORIZATION_FAILED on its partition
    from confluent_kafka import ConsumerGroupTopicPartitions, TopicPartition
    res = adm.list_consumer_group_offsets([ConsumerGroupTopicPartitions("g")],
                                          request_timeout=15)["g"].result(timeout=20)
    assert {tp.topic for tp in res.topic_partitions} == {"a", "pre-open"}, res.topic_partitions
    res = adm.list_consumer_group_offsets(
        [ConsumerGroupTopicPartitions("g", [TopicPartition("b", 0), TopicPartition("a", 0)])],
        request_timeout=15)["g"].result(timeout=20)
    by_topic = {tp.topic: tp for tp in res.topic_partitions}
    assert by_topic["a"].offset == 1 and by_topic["a"].error is None, by_topic
    assert by_topic["b"].error is not None \
        and by_topic["b"].error.code() == TOPIC_AUTHORIZATION_FAILED, by_topic
    # Read on group g only: another group is refused
    err = consume_error(bootstrap, "a", "other-group")
    assert err is not None and err.code() == GROUP_AUTHORIZATION_FAILED, err

    # no Alter/Describe on the cluster: the ACL APIs refuse
    fs = adm.create_acls([binding("TOPIC", "b", "User:ANONYMOUS", "READ")], request_timeout=15)
    with pytest.raises(Exception) as e:
        list(fs.values())[0].result(timeout=20)
    assert kafka_code(e.value) == CLUSTER_AUTHORIZATION_FAILED, e.value
    # (confluent-kafka 2.16 drops DescribeAcls' top-level error; strom acl shows it)
    p = strom_acl(bootstrap, "list", check=False)
    assert p.returncode != 0 and "ClusterAuthorizationFailed" in p.stderr, p.stderr
    # the denied produce left an audit line (target strom::audit)
    def audit():
        text = re.sub(r"\x1b\[[0-9;]*m", "", broker.stderr_text())
        return [l for l in text.splitlines() if "strom::audit" in l and "authorization denied" in l]
    wait_until(lambda: any("User:ANONYMOUS" in l and "WRITE" in l and "TOPIC" in l
                           for l in audit()), 10, "an audit line for the denied produce")


SASL_JAAS = ('org.apache.kafka.common.security.plain.PlainLoginModule required '
             'user_admin="admin-secret" user_alice="alice-secret";')


def sasl(user, password):
    return {"security.protocol": "SASL_PLAINTEXT", "sasl.mechanism": "PLAIN",
            "sasl.username": user, "sasl.password": password}


def test_sasl_users_alice_and_super_user_admin(strom_factory):
    """Acceptance 3 with SASL PLAIN principals: alice has Read on topic `a` and group `g`
    only; admin is a super user; the ACLs survive a restart."""
    from confluent_kafka.admin import NewTopic
    broker = strom_factory(overrides={
        "authorizer.class.name": AUTHORIZER,
        "super.users": "User:admin",
        "sasl.enabled.mechanisms": "PLAIN",
        "listener.name.sasl_plaintext.plain.sasl.jaas.config": SASL_JAAS,
    }, listeners={"SASL_PLAINTEXT": "SASL_PLAINTEXT"})
    bootstrap = broker.listener_bootstrap("SASL_PLAINTEXT")
    su, alice = sasl("admin", "admin-secret"), sasl("alice", "alice-secret")

    # the super user does everything, with no ACL naming it
    adm = admin(bootstrap, **su)
    fs = adm.create_topics([NewTopic(t, 1, 1) for t in ["a", "b", "pre-open", "pre-secret",
                                                         "doomed"]], request_timeout=15)
    for f in fs.values():
        f.result(timeout=20)
    for t in ["a", "b", "pre-open", "pre-secret"]:
        wait_until(lambda: produce_one(bootstrap, t, **su) is None, 20, f"produce to {t}")
    adm.delete_topics(["doomed"], request_timeout=15)["doomed"].result(timeout=20)
    create_acls(adm, [
        binding("TOPIC", "a", "User:alice", "READ"),
        binding("GROUP", "g", "User:alice", "READ"),
        binding("TOPIC", "pre-", "User:alice", "READ", pattern="PREFIXED"),
        binding("TOPIC", "pre-secret", "User:alice", "READ", perm="DENY"),
    ])
    assert consume_group(bootstrap, "b", "admin-group", 1, **su) == [b"v"]

    def alice_is_limited():
        assert consume_group(bootstrap, "a", "g", 1, **alice) == [b"v"]
        err = produce_one(bootstrap, "a", **alice)
        assert err is not None and err.code() == TOPIC_AUTHORIZATION_FAILED, err
        aa = admin(bootstrap, **alice)
        visible = set(aa.list_topics(timeout=10).topics)
        assert visible == {"a", "pre-open", "pre-secret"}, visible
        fs = aa.create_topics([NewTopic("alice-topic", 1, 1)], request_timeout=15)
        with pytest.raises(Exception) as e:
            fs["alice-topic"].result(timeout=20)
        assert kafka_code(e.value) == TOPIC_AUTHORIZATION_FAILED, e.value
        assert consume_group(bootstrap, "pre-open", "g", 1, **alice) == [b"v"]
        err = consume_error(bootstrap, "pre-secret", "g", **alice)
        assert err is not None and err.code() == TOPIC_AUTHORIZATION_FAILED, err
        err = consume_error(bootstrap, "a", "not-g", **alice)
        assert err is not None and err.code() == GROUP_AUTHORIZATION_FAILED, err

    alice_is_limited()
    broker.terminate()
    broker.restart()
    # one new record each where alice's group g has committed everything so far
    for t in ["a", "pre-open"]:
        wait_until(lambda: produce_one(bootstrap, t, **su) is None, 20, f"produce to {t}")
    alice_is_limited()
    # strom acl over SASL: the super user manages ACLs, alice may not
    def x(conf):
        return [a for k, v in conf.items() for a in ("-X", f"{k}={v}")]
    strom_acl(bootstrap, *x(su), "add", "--allow-principal", "User:alice", "--operation",
              "Write", "--topic", "a")
    rows = json.loads(strom_acl(bootstrap, *x(su), "list", "--json", "--principal",
                                "User:alice").stdout)
    assert len(rows) == 5, rows
    p = strom_acl(bootstrap, *x(alice), "list", check=False)
    assert p.returncode != 0 and "ClusterAuthorizationFailed" in p.stderr, p.stderr
    # with Write now granted, alice's produce goes through
    wait_until(lambda: produce_one(bootstrap, "a", **alice) is None, 20, "alice's produce")
    # the super user still can, and sees every topic
    assert {"a", "b"} <= set(admin(bootstrap, **su).list_topics(timeout=10).topics)
    assert produce_one(bootstrap, "a", **su) is None


TRANSACTIONAL_ID_AUTHORIZATION_FAILED = 53


def test_transactions_and_idempotence_under_acls(strom_factory):
    """Write on the transactional id (and the topic) lets a transactional producer
    commit; without it InitProducerId fails with TRANSACTIONAL_ID_AUTHORIZATION_FAILED;
    an idempotent producer needs only Write on some topic."""
    from confluent_kafka import KafkaException, Producer
    broker = strom_factory(overrides={"authorizer.class.name": AUTHORIZER,
                                      "super.users": "User:ANONYMOUS"})
    bootstrap = broker.bootstrap
    ck_create_topic(bootstrap, "t", 1)
    create_acls(admin(bootstrap), [
        binding("TOPIC", "t", "User:ANONYMOUS", "WRITE"),
        binding("TRANSACTIONAL_ID", "tx-", "User:ANONYMOUS", "WRITE", pattern="PREFIXED"),
    ])
    broker.overrides.pop("super.users")
    broker.terminate()
    broker.restart()

    p = Producer({"bootstrap.servers": bootstrap, "transactional.id": "tx-ok"})
    p.init_transactions(20)
    p.begin_transaction()
    p.produce("t", b"in-txn")
    p.commit_transaction(20)

    bad = Producer({"bootstrap.servers": bootstrap, "transactional.id": "other-tx"})
    with pytest.raises(KafkaException) as e:
        bad.init_transactions(20)
    assert e.value.args[0].code() == TRANSACTIONAL_ID_AUTHORIZATION_FAILED, e.value

    assert produce_one(bootstrap, "t", **{"enable.idempotence": True}) is None


def test_kip848_consumer_under_acls(strom_factory):
    """A `group.protocol=consumer` member needs Read on its group and Describe on the
    topics it subscribes to (ConsumerGroupHeartbeat), then Read to fetch."""
    broker = strom_factory(overrides={"authorizer.class.name": AUTHORIZER,
                                      "super.users": "User:ANONYMOUS",
                                      "group.consumer.heartbeat.interval.ms": "300"})
    bootstrap = broker.bootstrap
    for t in ["a", "b"]:
        ck_create_topic(bootstrap, t, 1)
        assert produce_one(bootstrap, t) is None
    create_acls(admin(bootstrap), [binding("TOPIC", "a", "User:ANONYMOUS", "READ"),
                                   binding("GROUP", "g848", "User:ANONYMOUS", "READ")])
    broker.overrides.pop("super.users")
    broker.terminate()
    broker.restart()
    new = {"group.protocol": "consumer"}
    assert consume_group(bootstrap, "a", "g848", 1, **new) == [b"v"]
    err = consume_error(bootstrap, "b", "g848", **new)
    assert err is not None and err.code() == TOPIC_AUTHORIZATION_FAILED, err
    err = consume_error(bootstrap, "a", "other848", **new)
    assert err is not None and err.code() == GROUP_AUTHORIZATION_FAILED, err
