"""Client quotas (issue 8, acceptance 4) with clients Strom did not write.

- A `producer_byte_rate` of 1 MiB/s on a client-id holds a confluent-kafka producer that
  sends as fast as it can at about that rate, while another client-id on the same broker
  goes much faster; librdkafka reports the broker's throttle_time_ms in its statistics.
- A `consumer_byte_rate` holds a confluent-kafka consumer the same way.
- DescribeClientQuotas / AlterClientQuotas round trip with kafka-python's protocol
  classes (users, client-ids, defaults, removal, validate_only), surviving a restart;
  `strom quota` reads the same.
- Bad input (unknown key, negative or fractional byte rate, unknown or duplicate entity
  type, bad match types) gets INVALID_REQUEST (or Kafka's code) and changes nothing.
- controller_mutation_rate (KIP-599): CreateTopics v6+ beyond the quota answers
  THROTTLING_QUOTA_EXCEEDED.
"""

import json
import os
import subprocess
import time
import uuid

import pytest

from conftest import STROM_BIN
from strom_helpers import ck_create_topic, ck_producer, wait_until

INVALID_REQUEST = 42
UNSUPPORTED_VERSION = 35
THROTTLING_QUOTA_EXCEEDED = 89
MIB = 1024 * 1024


# -- kafka-python's protocol classes for the two quota APIs ---------------------------

def kp_admin(bootstrap):
    from kafka.admin import KafkaAdminClient
    return KafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=15000)


def kp_send(admin, request):
    return admin._manager.run(admin._manager.send, request)


def alter(admin, entries, validate_only=False):
    """entries: [(entity dict {type: name|None}, {key: value|None (remove)})].
    Returns [(error_code, error_message)] per entry."""
    from kafka.protocol.admin.client_quotas import AlterClientQuotasRequest as A
    E = A.EntryData
    req = A(validate_only=validate_only, entries=[
        E(entity=[E.EntityData(entity_type=t, entity_name=n) for t, n in entity.items()],
          ops=[E.OpData(key=k, value=0.0 if v is None else float(v), remove=v is None)
               for k, v in ops.items()])
        for entity, ops in entries])
    resp = kp_send(admin, req)
    assert len(resp.entries) == len(entries)
    return [(e.error_code, e.error_message) for e in resp.entries]


def describe(admin, components=(), strict=False):
    """components: [(entity_type, match_type, match)]. Returns (error_code, {entity: values})
    with entity a sorted tuple of (type, name|None)."""
    from kafka.protocol.admin.client_quotas import DescribeClientQuotasRequest as D
    req = D(strict=strict, components=[
        D.ComponentData(entity_type=t, match_type=m, match=n) for t, m, n in components])
    resp = kp_send(admin, req)
    if resp.error_code:
        return resp.error_code, None
    out = {}
    for e in resp.entries:
        entity = tuple(sorted((x.entity_type, x.entity_name) for x in e.entity))
        out[entity] = {v.key: v.value for v in e.values}
    return 0, out


def strom_quota(bootstrap, *args, check=True):
    r = subprocess.run([str(STROM_BIN), "-b", bootstrap, *args], capture_output=True,
                       text=True, timeout=30)
    if check:
        assert r.returncode == 0, f"strom {' '.join(args)} failed: {r.stderr}"
    return r


# -- enforcement ----------------------------------------------------------------------

def produce_flat_out(bootstrap, topic, client_id, seconds, value_size=10_000, **conf):
    """Produce as fast as librdkafka lets us for `seconds`, then flush. Returns
    (acked bytes per second from the first send to the last ack, max broker throttle avg
    (ms) seen in the statistics)."""
    throttle = [0]

    def on_stats(js):
        for b in json.loads(js).get("brokers", {}).values():
            throttle[0] = max(throttle[0], b.get("throttle", {}).get("avg", 0))

    # A small local queue, so producing blocks on the broker's pace instead of
    # buffering a gigabyte that the final flush would then wait for.
    p = ck_producer(bootstrap, **{
        "client.id": client_id, "acks": 1, "linger.ms": 5,
        "queue.buffering.max.kbytes": 1024, "statistics.interval.ms": 500,
        "stats_cb": on_stats, **conf})
    acked, errors = [0], []

    def on_delivery(err, msg):
        if err is None:
            acked[0] += len(msg.value())
        else:
            errors.append(err)

    value = os.urandom(value_size)
    start = time.monotonic()
    deadline = start + seconds
    while time.monotonic() < deadline:
        try:
            p.produce(topic, value=value, on_delivery=on_delivery)
        except BufferError:
            p.poll(0.01)
        p.poll(0)
    assert p.flush(60) == 0, "undelivered messages after 60 s"
    elapsed = time.monotonic() - start
    # one more statistics round, so the last throttles are reported
    t_end = time.monotonic() + 1.2
    while time.monotonic() < t_end:
        p.poll(0.1)
    assert not errors, errors[:3]
    return acked[0] / elapsed, throttle[0]


def test_producer_byte_rate_holds_a_producer_at_the_quota(strom):
    bootstrap, _, broker = strom
    topic = f"quota-produce-{uuid.uuid4().hex[:8]}"
    ck_create_topic(bootstrap, topic, 1)
    strom_quota(bootstrap, "quota", "alter", "--entity-type", "clients", "--entity-name",
                "throttled", "--add-config", f"producer_byte_rate={MIB}")

    rate, throttle = produce_flat_out(bootstrap, topic, "throttled", 12)
    print(f"throttled client: {rate / MIB:.2f} MiB/s, librdkafka throttle avg {throttle} ms")
    assert 0.5 * MIB <= rate <= 1.6 * MIB, f"throttled rate {rate / MIB:.2f} MiB/s"
    assert throttle > 0, "librdkafka saw no throttle_time_ms from the broker"

    free_rate, free_throttle = produce_flat_out(bootstrap, topic, "unthrottled", 4)
    print(f"unthrottled client: {free_rate / MIB:.2f} MiB/s")
    assert free_throttle == 0
    assert free_rate > 3 * rate, (free_rate, rate)

    # the broker's /metrics shows the sensor and the throttle it answered
    import urllib.request
    text = urllib.request.urlopen(f"http://127.0.0.1:{broker.admin_port}/metrics",
                                  timeout=10).read().decode()
    series = [l for l in text.splitlines() if l.startswith("strom_quota_throttle_time_ms_total{")
              and 'quota_type="Produce"' in l and 'client_id="throttled"' in l]
    assert len(series) == 1 and float(series[0].split()[-1]) > 0, series


JAAS = ('org.apache.kafka.common.security.plain.PlainLoginModule required '
        'user_alice="alice-secret" user_bob="bob-secret";')


def test_user_quota_holds_the_sasl_principal_across_its_client_ids(strom_factory):
    """A quota on user alice (PLAIN over SASL_PLAINTEXT) is shared by all of alice's
    client-ids (Kafka's user-level sensor); user bob is not limited."""
    import threading
    broker = strom_factory(listeners={"SASL_PLAINTEXT": "SASL_PLAINTEXT"}, overrides={
        "listener.name.sasl_plaintext.sasl.enabled.mechanisms": "PLAIN",
        "listener.name.sasl_plaintext.plain.sasl.jaas.config": JAAS,
        "quota.window.num": "3"})
    sasl = broker.listener_bootstrap("SASL_PLAINTEXT")
    topic = f"quota-user-{uuid.uuid4().hex[:8]}"
    ck_create_topic(broker.bootstrap, topic, 1)
    quota = 512 * 1024
    strom_quota(broker.bootstrap, "quota", "alter", "--user", "alice",
                "--add-config", f"producer_byte_rate={quota}")

    def login(user):
        return {"security.protocol": "SASL_PLAINTEXT", "sasl.mechanism": "PLAIN",
                "sasl.username": user, "sasl.password": f"{user}-secret"}

    results = {}

    def run(cid):
        # requests of at most ~100 KB: fine-grained against a 3 s quota window
        results[cid] = produce_flat_out(sasl, topic, cid, 8, **login("alice"),
                                        **{"batch.size": 100_000})

    threads = [threading.Thread(target=run, args=(cid,)) for cid in ("alice-1", "alice-2")]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert set(results) == {"alice-1", "alice-2"}, results
    combined = sum(r for r, _ in results.values())
    print(f"alice, two client-ids: {combined / 1024:.0f} KiB/s together (quota "
          f"{quota / 1024:.0f}), throttles {[t for _, t in results.values()]}")
    assert 0.5 * quota <= combined <= 1.6 * quota, combined
    assert all(t > 0 for _, t in results.values()), results
    bob, bob_throttle = produce_flat_out(sasl, topic, "bob-1", 3, **login("bob"))
    print(f"bob: {bob / MIB:.1f} MiB/s")
    assert bob_throttle == 0 and bob > 3 * combined, (bob, combined)


@pytest.mark.strom_config(**{"quota.window.num": "3"})
def test_consumer_byte_rate_holds_a_consumer_at_the_quota(strom):
    from confluent_kafka import Consumer, TopicPartition
    bootstrap, _, _ = strom
    topic = f"quota-fetch-{uuid.uuid4().hex[:8]}"
    ck_create_topic(bootstrap, topic, 1)
    p = ck_producer(bootstrap, **{"client.id": "loader", "acks": 1})
    value = os.urandom(10_000)
    total = 4 * MIB
    n = total // len(value)
    for _ in range(n):
        while True:
            try:
                p.produce(topic, value=value)
                break
            except BufferError:
                p.poll(0.05)
    assert p.flush(60) == 0
    quota = 512 * 1024
    strom_quota(bootstrap, "quota", "alter", "--client", "slow-consumer",
                "--add-config", f"consumer_byte_rate={quota}")

    def consume_all(client_id):
        throttle = [0]

        def on_stats(js):
            for b in json.loads(js).get("brokers", {}).values():
                throttle[0] = max(throttle[0], b.get("throttle", {}).get("avg", 0))

        c = Consumer({"bootstrap.servers": bootstrap, "group.id": f"g-{client_id}",
                      "client.id": client_id, "enable.auto.commit": False,
                      "statistics.interval.ms": 500, "stats_cb": on_stats})
        try:
            c.assign([TopicPartition(topic, 0, 0)])
            got, start = 0, time.monotonic()
            deadline = start + 60
            while got < n and time.monotonic() < deadline:
                for m in c.consume(500, timeout=0.5):
                    assert m.error() is None, m.error()
                    got += 1
            elapsed = time.monotonic() - start
            assert got == n, f"{client_id} consumed {got} of {n} in 60 s"
            t_end = time.monotonic() + 1.2
            while time.monotonic() < t_end:
                c.poll(0.1)
            return got * len(value) / elapsed, throttle[0]
        finally:
            c.close()

    rate, throttle = consume_all("slow-consumer")
    print(f"throttled consumer: {rate / 1024:.0f} KiB/s (quota {quota / 1024:.0f}), "
          f"throttle avg {throttle} ms")
    # 3 samples of 1 s: up to 2 s worth may come at once, the rest at the quota. A
    # throttled fetch is answered empty and asked again, so the consumer ends up
    # somewhat below the quota (as with Kafka); the bound that matters is the upper one.
    assert 0.3 * quota <= rate <= 1.6 * quota, rate
    assert throttle > 0
    free_rate, _ = consume_all("fast-consumer")
    print(f"unthrottled consumer: {free_rate / MIB:.1f} MiB/s")
    assert free_rate > 3 * rate, (free_rate, rate)


def test_request_percentage_throttles_every_api(strom):
    """request_percentage: a client-id allowed 0.001% of a core is throttled after a
    few requests, in Metadata (and any API with throttle_time_ms); others are not."""
    from kafka.admin import KafkaAdminClient
    from kafka.errors import NodeNotReadyError
    from kafka.protocol.metadata import MetadataRequest
    bootstrap, _, _ = strom
    strom_quota(bootstrap, "quota", "alter", "--client", "busy",
                "--add-config", "request_percentage=0.001")
    busy = KafkaAdminClient(bootstrap_servers=bootstrap, client_id="busy")
    calm = KafkaAdminClient(bootstrap_servers=bootstrap, client_id="calm")
    try:
        throttles = []

        def throttled():
            try:
                r = kp_send(busy, MetadataRequest(topics=None))
            except NodeNotReadyError:  # kafka-python pausing after a throttle
                return False
            throttles.append(r.throttle_time_ms)
            return r.throttle_time_ms > 0
        wait_until(throttled, 20, "a throttled Metadata response", interval=0.01)
        # capped at one quota window, as Kafka caps request throttles
        assert 0 < max(throttles) <= 1000, throttles
        for _ in range(20):
            assert kp_send(calm, MetadataRequest(topics=None)).throttle_time_ms == 0
    finally:
        busy.close()
        calm.close()


@pytest.mark.strom_config(**{"controller.quota.window.num": "2"})
def test_controller_mutation_rate_refuses_topics_beyond_the_quota(strom):
    """KIP-599 with kafka-python's admin (CreateTopics v6+, strict): burst = rate x 2 s.
    A client that honours throttle_time_ms never sees the error alone, so a second
    connection with the same client-id asks while the first one is throttled."""
    from kafka.admin import KafkaAdminClient, NewTopic
    from kafka.errors import ThrottlingQuotaExceededError
    bootstrap, _, _ = strom
    strom_quota(bootstrap, "quota", "alter", "--client", "mutator",
                "--add-config", "controller_mutation_rate=5")
    first = KafkaAdminClient(bootstrap_servers=bootstrap, client_id="mutator")
    second = KafkaAdminClient(bootstrap_servers=bootstrap, client_id="mutator")
    free = KafkaAdminClient(bootstrap_servers=bootstrap, client_id="free-admin")
    try:
        # 10 tokens: a 12-partition topic is taken (the bucket was not yet exceeded),
        # leaving it 2 below zero for 400 ms...
        first.create_topics([NewTopic("mut-a", 12, 1)])
        # ...so the next topic of that client-id is refused, and not created
        with pytest.raises(ThrottlingQuotaExceededError):
            second.create_topics([NewTopic("mut-b", 1, 1)])
        assert "mut-b" not in free.list_topics()
        # a client-id without the quota is not affected
        free.create_topics([NewTopic("mut-c", 12, 1)])
        # once the bucket has refilled the client-id may create again
        wait_until(lambda: _try_create(second, "mut-b"), 10, "mut-b created after refill",
                   interval=0.2)
        assert "mut-b" in free.list_topics()
    finally:
        for a in (first, second, free):
            a.close()


def _try_create(admin, name):
    from kafka.admin import NewTopic
    from kafka.errors import NodeNotReadyError, ThrottlingQuotaExceededError
    try:
        admin.create_topics([NewTopic(name, 1, 1)])
        return True
    except (ThrottlingQuotaExceededError, NodeNotReadyError):
        return False


# -- describe / alter ---------------------------------------------------------------

U, C = "user", "client-id"
EXACT, DEFAULT, SPECIFIED = 0, 1, 2


def test_describe_alter_round_trip_with_defaults_removal_and_restart(strom):
    bootstrap, _, broker = strom
    admin = kp_admin(bootstrap)
    assert describe(admin) == (0, {})
    res = alter(admin, [
        ({U: "alice"}, {"producer_byte_rate": 1024, "consumer_byte_rate": 2048}),
        ({U: None}, {"request_percentage": 50.5}),
        ({U: "alice", C: None}, {"producer_byte_rate": 4096}),
        ({C: "app"}, {"controller_mutation_rate": 10}),
        ({C: None}, {"consumer_byte_rate": 8192}),
    ])
    assert all(code == 0 for code, _ in res), res
    everything = {
        ((U, "alice"),): {"producer_byte_rate": 1024.0, "consumer_byte_rate": 2048.0},
        ((U, None),): {"request_percentage": 50.5},
        ((C, None), (U, "alice")): {"producer_byte_rate": 4096.0},
        ((C, "app"),): {"controller_mutation_rate": 10.0},
        ((C, None),): {"consumer_byte_rate": 8192.0},
    }
    assert describe(admin) == (0, everything)
    # filters: exact, default, specified, strict
    assert describe(admin, [(U, EXACT, "alice")])[1] == {
        k: v for k, v in everything.items() if (U, "alice") in k}
    assert describe(admin, [(U, EXACT, "alice")], strict=True)[1] == {
        ((U, "alice"),): everything[((U, "alice"),)]}
    assert describe(admin, [(U, DEFAULT, None)])[1] == {((U, None),): {"request_percentage": 50.5}}
    assert set(describe(admin, [(C, SPECIFIED, None)], strict=True)[1]) == {
        ((C, "app"),), ((C, None),)}
    assert set(describe(admin, [(U, SPECIFIED, None), (C, DEFAULT, None)])[1]) == {
        ((C, None), (U, "alice"))}

    # validate_only changes nothing
    assert alter(admin, [({C: "app"}, {"controller_mutation_rate": 99})],
                 validate_only=True)[0][0] == 0
    assert describe(admin)[1] == everything
    # removal of one key, then of the last key (the entity disappears)
    assert alter(admin, [({U: "alice"}, {"consumer_byte_rate": None})])[0][0] == 0
    assert alter(admin, [({C: "app"}, {"controller_mutation_rate": None})])[0][0] == 0
    everything[((U, "alice"),)] = {"producer_byte_rate": 1024.0}
    del everything[((C, "app"),)]
    assert describe(admin)[1] == everything
    admin.close()

    # survives a restart; the CLI reads the same
    assert broker.terminate() == 0
    broker.restart()
    admin = kp_admin(bootstrap)
    assert describe(admin)[1] == everything
    admin.close()
    out = json.loads(strom_quota(bootstrap, "--json", "quota", "describe").stdout)
    from_cli = {tuple(sorted((c["type"], c["name"]) for c in e["entity"])): e["quotas"]
                for e in out}
    assert from_cli == everything
    out = strom_quota(bootstrap, "quota", "describe", "--entity-type", "users",
                      "--entity-default").stdout
    assert "user=<default>" in out and "request_percentage=50.5" in out, out


def test_bad_input_is_refused_and_changes_nothing(strom):
    bootstrap, _, _ = strom
    admin = kp_admin(bootstrap)
    assert alter(admin, [({C: "app"}, {"producer_byte_rate": 1000})])[0][0] == 0
    before = describe(admin)
    bad = [
        ({C: "app"}, {"bogus_rate": 5}),                    # unknown key
        ({C: "app"}, {"producer_byte_rate": -1}),           # negative
        ({C: "app"}, {"consumer_byte_rate": 1.5}),          # byte rates are integers
        ({C: "app"}, {"producer_byte_rate": 5, "bogus": 1}),  # one bad op spoils the entry
        ({"group": "g"}, {"producer_byte_rate": 5}),        # unknown entity type
        ({}, {"producer_byte_rate": 5}),                    # empty entity
    ]
    res = alter(admin, bad)
    assert [code for code, _ in res] == [INVALID_REQUEST] * len(bad), res
    assert all(msg for _, msg in res), res
    assert describe(admin) == before
    # a duplicate entity type, via a raw request (a dict cannot hold it)
    from kafka.protocol.admin.client_quotas import AlterClientQuotasRequest as A
    E = A.EntryData
    resp = kp_send(admin, A(validate_only=False, entries=[E(
        entity=[E.EntityData(entity_type=C, entity_name="a"),
                E.EntityData(entity_type=C, entity_name="b")],
        ops=[E.OpData(key="producer_byte_rate", value=5.0, remove=False)])]))
    assert resp.entries[0].error_code == INVALID_REQUEST
    # good and bad entries in one request: only the good one applies
    res = alter(admin, [({C: "other"}, {"producer_byte_rate": 7}),
                        ({C: "app"}, {"producer_byte_rate": -7})])
    assert [c for c, _ in res] == [0, INVALID_REQUEST]
    assert describe(admin, [(C, EXACT, "app")])[1] == {((C, "app"),): {"producer_byte_rate": 1000.0}}
    assert describe(admin, [(C, EXACT, "other")])[1] == {((C, "other"),): {"producer_byte_rate": 7.0}}
    # describe: bad filters
    assert describe(admin, [(C, EXACT, None)])[0] == INVALID_REQUEST
    assert describe(admin, [(C, DEFAULT, "x")])[0] == INVALID_REQUEST
    assert describe(admin, [(C, SPECIFIED, None), (C, DEFAULT, None)])[0] == INVALID_REQUEST
    assert describe(admin, [(C, 9, None)])[0] == UNSUPPORTED_VERSION
    assert describe(admin, [("topic", SPECIFIED, None)])[0] == UNSUPPORTED_VERSION
    admin.close()
    # the CLI reports the broker's refusal and exits non-zero
    r = strom_quota(bootstrap, "quota", "alter", "--client", "app", "--add-config",
                    "producer_byte_rate=-5", check=False)
    assert r.returncode != 0 and "InvalidRequest" in r.stderr, r.stderr
    r = strom_quota(bootstrap, "quota", "alter", "--client", "app", "--add-config",
                    "nonsense_key=5", check=False)
    assert r.returncode != 0 and "Invalid configuration key" in r.stderr, r.stderr


CLUSTER_AUTHORIZATION_FAILED = 31


def test_quota_apis_need_cluster_describe_configs_and_alter_configs(strom_factory):
    """With the authorizer on: User:ANONYMOUS (PLAINTEXT, no ACLs) gets
    CLUSTER_AUTHORIZATION_FAILED from both APIs and changes nothing; the super user
    (PLAIN over SASL_PLAINTEXT) may alter and describe."""
    from kafka.admin import KafkaAdminClient
    broker = strom_factory(listeners={"SASL_PLAINTEXT": "SASL_PLAINTEXT"}, overrides={
        "listener.name.sasl_plaintext.sasl.enabled.mechanisms": "PLAIN",
        "listener.name.sasl_plaintext.plain.sasl.jaas.config": JAAS,
        "authorizer.class.name": "org.apache.kafka.metadata.authorizer.StandardAuthorizer",
        "super.users": "User:alice"})
    anonymous = kp_admin(broker.bootstrap)
    alice = KafkaAdminClient(bootstrap_servers=broker.listener_bootstrap("SASL_PLAINTEXT"),
                             security_protocol="SASL_PLAINTEXT", sasl_mechanism="PLAIN",
                             sasl_plain_username="alice", sasl_plain_password="alice-secret")
    try:
        assert alter(alice, [({C: "app"}, {"producer_byte_rate": 1000})])[0][0] == 0
        assert describe(anonymous)[0] == CLUSTER_AUTHORIZATION_FAILED
        res = alter(anonymous, [({C: "app"}, {"producer_byte_rate": 5}),
                                ({U: None}, {"request_percentage": 5})])
        assert [c for c, _ in res] == [CLUSTER_AUTHORIZATION_FAILED] * 2, res
        assert describe(alice) == (0, {((C, "app"),): {"producer_byte_rate": 1000.0}})
    finally:
        anonymous.close()
        alice.close()
    # strom quota authenticates as -X says; anonymous it is refused
    sasl = ["-X", "security.protocol=SASL_PLAINTEXT", "-X", "sasl.mechanism=PLAIN",
            "-X", "sasl.username=alice", "-X", "sasl.password=alice-secret"]
    strom_quota(broker.listener_bootstrap("SASL_PLAINTEXT"), *sasl, "quota", "alter",
                "--user-defaults", "--add-config", "consumer_byte_rate=2048")
    out = strom_quota(broker.listener_bootstrap("SASL_PLAINTEXT"), *sasl, "quota",
                      "describe", "--user-defaults").stdout
    assert "consumer_byte_rate=2048" in out, out
    r = strom_quota(broker.bootstrap, "quota", "describe", check=False)
    assert r.returncode != 0 and "ClusterAuthorizationFailed" in r.stderr, r.stderr
