"""Consumer groups against Strom's group coordinator, with clients Strom did not write:
confluent-kafka (librdkafka 2.x), kafka-python, and Debian's kcat (librdkafka 2.0.2).

Every broker runs with `group.initial.rebalance.delay.ms=100` so rebalances are quick;
every wait polls a condition.
"""

import shutil
import subprocess
import time

import pytest

from strom_helpers import ck_create_topic, ck_producer, wait_until

FAST_GROUPS = pytest.mark.strom_config(**{"group.initial.rebalance.delay.ms": "100"})
KCAT = shutil.which("kcat") or shutil.which("kafkacat")


def produce_ids(bootstrap, topic, n, partitions, start=0):
    """Records with value b"<id>" spread round-robin over the partitions."""
    p = ck_producer(bootstrap)
    for i in range(start, start + n):
        p.produce(topic, key=b"k%d" % i, value=b"%d" % i, partition=i % partitions)
        if i % 1000 == 0:
            p.poll(0)
    assert p.flush(60) == 0


def group_consumer(bootstrap, group, **extra):
    from confluent_kafka import Consumer
    conf = {
        "bootstrap.servers": bootstrap,
        "group.id": group,
        "enable.auto.commit": False,
        "auto.offset.reset": "earliest",
        "session.timeout.ms": 6000,
        "heartbeat.interval.ms": 300,
    }
    conf.update(extra)
    return Consumer(conf)


def assigned(c):
    return {tp.partition for tp in c.assignment()}


# Commit errors Kafka itself returns when a commit races a rebalance (the member
# commits with the generation it knows while its rejoin is in flight). The record is
# then re-delivered to whoever owns the partition next.
RETRIABLE_COMMIT = {"ILLEGAL_GENERATION", "REBALANCE_IN_PROGRESS", "UNKNOWN_MEMBER_ID"}
failed_commits = set()


def poll_all(consumers, seen, timeout=0.05, commit=True, per_consumer=100):
    """One poll round over `consumers`: each hands over what it has ready (up to
    `per_consumer` records, waiting at most `timeout` for the first); appends
    (id, partition, offset) to seen[i] and commits each record synchronously once
    processed (ids whose commit lost a race with a rebalance go to `failed_commits`).
    Draining in bulk keeps the tests' pace independent of the polling interval."""
    from confluent_kafka import KafkaException
    n = 0
    for i, c in enumerate(consumers):
        for k in range(per_consumer):
            m = c.poll(timeout if k == 0 else 0)
            if m is None:
                break
            assert m.error() is None, m.error()
            seen[i].append((int(m.value()), m.partition(), m.offset()))
            if commit:
                try:
                    c.commit(message=m, asynchronous=False)
                except KafkaException as e:
                    assert e.args[0].name() in RETRIABLE_COMMIT, e
                    failed_commits.add(int(m.value()))
            n += 1
    return n


def assert_exactly_once_beyond_failed_commits(seen, n):
    ids = [r[0] for s in seen for r in s]
    assert sorted(set(ids)) == list(range(n)), "records lost"
    dups = {i for i in ids if ids.count(i) > 1}
    assert dups <= failed_commits, (
        f"records delivered twice although their commit succeeded: {sorted(dups - failed_commits)[:20]}")


@FAST_GROUPS
def test_three_consumers_share_then_take_over_after_leave(strom):
    failed_commits.clear()
    bootstrap = strom.bootstrap
    topic, parts, n = "shared", 8, 3000
    ck_create_topic(bootstrap, topic, parts)
    produce_ids(bootstrap, topic, n, parts)
    consumers = [group_consumer(bootstrap, "g-share") for _ in range(3)]
    for c in consumers:
        c.subscribe([topic])
    seen = [[] for _ in consumers]

    def balanced():
        poll_all(consumers, seen)
        a = [assigned(c) for c in consumers]
        return (all(len(x) >= 2 for x in a) and sum(len(x) for x in a) == parts
                and set().union(*a) == set(range(parts))) and a
    owners = wait_until(balanced, 60, "8 partitions spread over 3 consumers")
    for i, a in enumerate(owners):
        for j, b in enumerate(owners):
            assert i == j or not (a & b), f"partition owned twice: {owners}"

    wait_until(lambda: poll_all(consumers, seen) is not None and sum(map(len, seen)) >= n // 2,
               60, "half of the records consumed")
    leaving = consumers.pop()
    leaving.close()  # LeaveGroup: the survivors take over its partitions
    rest = seen[:2]
    wait_until(lambda: poll_all(consumers, rest) is not None
               and set().union(*(assigned(c) for c in consumers)) == set(range(parts)),
               60, "the two survivors own every partition")
    wait_until(lambda: poll_all(consumers, rest) is not None
               and len({r[0] for s in seen for r in s}) >= n, 60, "every record consumed")
    # Everything was committed right after processing: nothing lost, and nothing
    # twice unless its commit lost a race with the rebalance.
    assert_exactly_once_beyond_failed_commits(seen, n)
    for c in consumers:
        c.close()


@FAST_GROUPS
def test_commits_are_fetched_back(strom):
    from confluent_kafka import TopicPartition
    bootstrap = strom.bootstrap
    topic = "commits"
    ck_create_topic(bootstrap, topic, 4)
    produce_ids(bootstrap, topic, 400, 4)
    c = group_consumer(bootstrap, "g-commit")
    c.subscribe([topic])
    seen = [[]]
    wait_until(lambda: poll_all([c], seen, commit=False) is not None and len(seen[0]) >= 40, 30,
               "some records")
    # sync commit with metadata for partitions 0/1, async commit for 2/3
    c.commit(offsets=[TopicPartition(topic, 0, 11, metadata="m0"),
                      TopicPartition(topic, 1, 12)], asynchronous=False)
    results = []
    c2 = group_consumer(bootstrap, "g-commit-async",
                        on_commit=lambda err, parts: results.append((err, parts)))
    c2.subscribe([topic])
    wait_until(lambda: c2.poll(0.1) is not None, 30, "async consumer receives records")
    c2.commit(offsets=[TopicPartition(topic, 2, 21), TopicPartition(topic, 3, 22)],
              asynchronous=True)
    wait_until(lambda: c2.poll(0.05) is None and results, 30, "async commit callback")
    assert results[0][0] is None, results

    committed = c.committed([TopicPartition(topic, p) for p in range(4)], timeout=10)
    assert [tp.offset for tp in committed[:2]] == [11, 12]
    assert committed[0].metadata == "m0"
    fresh = group_consumer(bootstrap, "g-commit-async")
    got2 = fresh.committed([TopicPartition(topic, 2), TopicPartition(topic, 3)], timeout=10)
    assert [tp.offset for tp in got2] == [21, 22]
    # Unknown group: -1 (no offset), no error.
    other = group_consumer(bootstrap, "g-never-used")
    none = other.committed([TopicPartition(topic, 0)], timeout=10)
    assert none[0].offset < 0 and none[0].error is None
    other.close()
    fresh.close()
    c2.close()
    c.close()

    # A new member of g-commit resumes exactly at the committed offsets.
    r = group_consumer(bootstrap, "g-commit")
    r.subscribe([topic])
    first = {}

    def one_from_each():
        m = r.poll(0.1)
        if m is not None and m.error() is None:
            first.setdefault(m.partition(), m.offset())
        return len(first) == 4
    wait_until(one_from_each, 30, "a record from each partition")
    assert first[0] == 11 and first[1] == 12, first
    r.close()


@pytest.mark.parametrize("how", ["sigterm", "sigkill"])
@FAST_GROUPS
def test_offsets_and_group_survive_restart(strom, how):
    from confluent_kafka import TopicPartition
    from confluent_kafka.admin import AdminClient
    bootstrap = strom.bootstrap
    topic = "durable"
    ck_create_topic(bootstrap, topic, 2)
    produce_ids(bootstrap, topic, 100, 2)
    c = group_consumer(bootstrap, "g-durable", **{"group.instance.id": "static-1"})
    c.subscribe([topic])
    seen = [[]]
    wait_until(lambda: poll_all([c], seen) is not None and len(seen[0]) >= 100, 30, "100 records")
    admin = AdminClient({"bootstrap.servers": bootstrap})
    before = admin.describe_consumer_groups(["g-durable"])["g-durable"].result()
    assert before.state.name == "STABLE" and len(before.members) == 1
    member_id = before.members[0].member_id

    if how == "sigterm":
        assert strom.terminate() == 0
    else:
        strom.kill9()
    strom.restart()

    # The static member survived with its id; the consumer keeps going
    # (same generation) and sees new records.
    admin = AdminClient({"bootstrap.servers": bootstrap})

    def described():
        c.poll(0.05)  # keep the member alive while waiting
        d = admin.describe_consumer_groups(["g-durable"])["g-durable"].result(timeout=10)
        return d if d.state.name == "STABLE" else None
    after = wait_until(described, 30, "group Stable after restart")
    assert [m.member_id for m in after.members] == [member_id]
    produce_ids(bootstrap, topic, 10, 2, start=100)
    wait_until(lambda: poll_all([c], seen) is not None and len(seen[0]) >= 110, 60,
               "records produced after the restart")
    committed = c.committed([TopicPartition(topic, p) for p in range(2)], timeout=10)
    assert [tp.offset for tp in committed] == [55, 55]
    c.close()
    fresh = group_consumer(bootstrap, "g-durable")
    assert [tp.offset for tp in fresh.committed(
        [TopicPartition(topic, p) for p in range(2)], timeout=10)] == [55, 55]
    fresh.close()


@FAST_GROUPS
def test_cooperative_sticky(strom):
    failed_commits.clear()
    bootstrap = strom.bootstrap
    topic, parts, n = "coop", 8, 2000
    ck_create_topic(bootstrap, topic, parts)
    produce_ids(bootstrap, topic, n, parts)
    conf = {"partition.assignment.strategy": "cooperative-sticky"}
    a = group_consumer(bootstrap, "g-coop", **conf)
    a.subscribe([topic])
    seen = [[], []]
    wait_until(lambda: poll_all([a], seen) is not None and len(assigned(a)) == parts, 30,
               "the first consumer owns everything")
    b = group_consumer(bootstrap, "g-coop", **conf)
    b.subscribe([topic])
    both = [a, b]

    def split():
        poll_all(both, seen)
        x, y = assigned(a), assigned(b)
        return len(x) == 4 and len(y) == 4 and not (x & y) and (x, y)
    wait_until(split, 60, "an incremental 4/4 split")
    wait_until(lambda: poll_all(both, seen) is not None
               and len({r[0] for s in seen for r in s}) >= n, 60, "every record consumed")
    assert_exactly_once_beyond_failed_commits(seen, n)
    assert a.memberid() != b.memberid()
    for c in both:
        c.close()


@FAST_GROUPS
def test_kafka_python_group_and_admin(strom):
    """kafka-python 3.x: a group consumer, then the admin API (list_groups,
    describe_groups, list_group_offsets, delete_groups)."""
    from kafka import KafkaConsumer, TopicPartition
    from kafka.admin import KafkaAdminClient
    bootstrap = strom.bootstrap
    topic = "kp-group"
    ck_create_topic(bootstrap, topic, 3)
    produce_ids(bootstrap, topic, 300, 3)
    c = KafkaConsumer(topic, bootstrap_servers=bootstrap, group_id="g-kp",
                      auto_offset_reset="earliest", enable_auto_commit=False,
                      session_timeout_ms=6000, heartbeat_interval_ms=500)
    ids = set()
    deadline = time.monotonic() + 60
    while len(ids) < 300 and time.monotonic() < deadline:
        for recs in c.poll(timeout_ms=500).values():
            ids.update(int(r.value) for r in recs)
    assert ids == set(range(300))
    c.commit()
    assert {c.committed(TopicPartition(topic, p)) for p in range(3)} == {100}

    admin = KafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=10000)
    listed = admin.list_groups()
    assert {"group_id": "g-kp", "protocol_type": "consumer", "group_state": "Stable",
            "group_type": "classic"} in listed, listed
    desc = admin.describe_groups(["g-kp"])["g-kp"]
    assert desc["group_state"] == "Stable" and desc["protocol_type"] == "consumer", desc
    assert desc["protocol_data"] == "range" and len(desc["members"]) == 1, desc
    offsets = admin.list_group_offsets({"g-kp": None})
    flat = offsets.get("g-kp", offsets)
    assert {tp.partition: om.offset for tp, om in flat.items()} == {0: 100, 1: 100, 2: 100}

    assert admin.delete_groups(["g-kp"]) == {"g-kp": "NonEmptyGroupError"}
    c.close()
    wait_until(lambda: admin.describe_groups(["g-kp"])["g-kp"]["group_state"] == "Empty", 30,
               "group Empty after the consumer left")
    assert admin.delete_groups(["g-kp", "g-missing"]) == {
        "g-kp": "OK", "g-missing": "GroupIdNotFoundError"}
    assert "g-kp" not in [g["group_id"] for g in admin.list_groups()]
    admin.close()


@FAST_GROUPS
def test_kcat_balanced_consumer(strom):
    assert KCAT, "kcat is not installed (scripts/test installs it with apt-get)"
    from confluent_kafka import TopicPartition
    bootstrap = strom.bootstrap
    topic = "kcat-group"
    ck_create_topic(bootstrap, topic, 4)
    produce_ids(bootstrap, topic, 200, 4)
    cmd = [KCAT, "-X", "api.version.request=true", "-b", bootstrap, "-G", "g-kcat",
           "-X", "auto.offset.reset=earliest", "-X", "session.timeout.ms=6000",
           "-c", "200", "-f", "%s\n", topic]
    p = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=120)
    assert p.returncode == 0, p.stderr.decode(errors="replace")[-3000:]
    got = sorted(int(x) for x in p.stdout.split())
    assert got == list(range(200))
    # kcat commits what it consumed (auto commit on close).
    c = group_consumer(bootstrap, "g-kcat")
    committed = c.committed([TopicPartition(topic, q) for q in range(4)], timeout=10)
    assert sum(tp.offset for tp in committed) == 200, committed
    c.close()


def consume_batch_and_commit(c, seen):
    """Processes one batch (records go to `seen`), then commits it synchronously."""
    msgs = [m for m in c.consume(num_messages=500, timeout=0.05) if m.error() is None]
    if msgs:
        seen.extend((int(m.value()), m.partition()) for m in msgs)
        c.commit(asynchronous=False)
    return True


@FAST_GROUPS
def test_acceptance_three_consumers_60000_exactly_once_balanced(strom):
    """Acceptance 1: three members share a 6-partition topic two partitions each, and
    60,000 records committed after processing are each consumed exactly once."""
    bootstrap = strom.bootstrap
    topic, parts, n = "acc1", 6, 60_000
    ck_create_topic(bootstrap, topic, parts)
    consumers = [group_consumer(bootstrap, "g-acc1") for _ in range(3)]
    for c in consumers:
        c.subscribe([topic])
    seen = [[] for _ in consumers]

    def balanced():
        for c, s in zip(consumers, seen):
            consume_batch_and_commit(c, s)
        a = [assigned(c) for c in consumers]
        return all(len(x) == 2 for x in a) and set().union(*a) == set(range(parts)) and a
    owners = wait_until(balanced, 60, "6 partitions spread 2/2/2 over 3 consumers")
    produce_ids(bootstrap, topic, n, parts)
    total = lambda: sum(map(len, seen))  # noqa: E731
    wait_until(lambda: all(consume_batch_and_commit(c, s) for c, s in zip(consumers, seen))
               and total() >= n, 180, "60,000 records consumed")
    # A little longer: nothing more may arrive (no duplicates in flight).
    for _ in range(10):
        for c, s in zip(consumers, seen):
            consume_batch_and_commit(c, s)
    ids = sorted(i for s in seen for i, _ in s)
    assert ids == list(range(n)), "records lost or consumed twice"
    for i, s in enumerate(seen):
        assert {p for _, p in s} == owners[i], "a record came from a partition not assigned"
        assert len(s) == n // 3, [len(x) for x in seen]
    assert [assigned(c) for c in consumers] == owners, "the group rebalanced"
    for c in consumers:
        c.close()


@FAST_GROUPS
def test_acceptance_sigkill_member_partitions_move_nothing_skipped(strom):
    """Acceptance 2: SIGKILL one of three member processes; within session.timeout.ms
    plus a rebalance its partitions go to the other two, and every record is consumed
    (re-delivery only of what the killed member had not committed)."""
    import os
    import signal
    import sys
    import threading
    from pathlib import Path
    bootstrap = strom.bootstrap
    topic, parts, n = "acc2", 6, 30_000
    ck_create_topic(bootstrap, topic, parts)
    script = str(Path(__file__).with_name("group_member_proc.py"))
    procs, state, lock = [], [], threading.Lock()

    def reader(i, p):
        for line in p.stdout:
            with lock:
                s = state[i]
                if line.startswith("ASSIGNED"):
                    rest = line.split(" ", 1)[1].strip()
                    s["assigned"] = {int(x) for x in rest.split(",") if x}
                elif line.startswith("RECORD"):
                    _, rid, part = line.split()
                    s["pending"].append((int(rid), int(part)))
                elif line.startswith("COMMITTED"):
                    s["committed"].extend(s["pending"])
                    s["pending"].clear()
    try:
        for i in range(3):
            state.append({"assigned": set(), "pending": [], "committed": []})
            p = subprocess.Popen([sys.executable, script, bootstrap, "g-acc2", topic],
                                 stdout=subprocess.PIPE, text=True)
            procs.append(p)
            threading.Thread(target=reader, args=(i, p), daemon=True).start()

        def snapshot():
            with lock:
                return [set(s["assigned"]) for s in state]

        wait_until(lambda: all(len(a) == 2 for a in snapshot())
                   and set().union(*snapshot()) == set(range(parts)), 60, "2/2/2 assignment")
        produce_ids(bootstrap, topic, n // 2, parts)

        def processed():
            with lock:
                return sum(len(s["committed"]) + len(s["pending"]) for s in state)
        wait_until(lambda: processed() >= n // 4, 60, "a quarter of the records processed")
        victim_parts = snapshot()[2]
        os.kill(procs[2].pid, signal.SIGKILL)
        procs[2].wait(10)
        killed_at = time.monotonic()
        # The second half arrives after the kill: the victim's partitions hold records
        # only the survivors can consume.
        produce_ids(bootstrap, topic, n // 2, parts, start=n // 2)
        survivors = lambda: snapshot()[:2]  # noqa: E731
        wait_until(lambda: set().union(*survivors()) == set(range(parts)), 30,
                   "the survivors own every partition")
        moved_after = time.monotonic() - killed_at
        # session.timeout.ms (6 s) plus a rebalance.
        assert moved_after < 6 + 5, f"partitions moved only after {moved_after:.1f}s"
        assert victim_parts <= set().union(*survivors())

        def all_seen():
            with lock:
                ids = {i for s in state for i, _ in s["committed"] + s["pending"]}
            return len(ids) == n
        wait_until(all_seen, 120, "every record consumed by the survivors")
        with lock:
            killed_committed = {i for i, _ in state[2]["committed"]}
            by_survivors = [i for s in state[:2] for i, _ in s["committed"] + s["pending"]]
            everything = {i for s in state for i, _ in s["committed"] + s["pending"]}
        assert everything == set(range(n)), "records skipped"
        # At-least-once from the last commit: what the killed member committed is never
        # delivered again.
        assert not (killed_committed & set(by_survivors)), "committed records re-delivered"
        assert {p for i, p in [(i, i % parts) for i in by_survivors]} >= victim_parts
    finally:
        for p in procs:
            if p.poll() is None:
                p.terminate()
                p.wait(10)


@FAST_GROUPS
def test_acceptance_admin_client_groups(strom):
    """Acceptance 5: DescribeGroups/ListGroups/DeleteGroups through confluent-kafka's
    AdminClient; OffsetDelete through kafka-python (confluent-kafka 2.x has no
    OffsetDelete call)."""
    from confluent_kafka import ConsumerGroupState, TopicPartition
    from confluent_kafka.admin import AdminClient
    from kafka.admin import KafkaAdminClient
    from kafka.structs import TopicPartition as KTP
    bootstrap = strom.bootstrap
    ck_create_topic(bootstrap, "adm-a", 2)
    ck_create_topic(bootstrap, "adm-b", 2)
    produce_ids(bootstrap, "adm-a", 20, 2)
    c = group_consumer(bootstrap, "g-adm", **{"client.id": "adm-client"})
    c.subscribe(["adm-a"])
    seen = [[]]
    wait_until(lambda: poll_all([c], seen) is not None and len(seen[0]) >= 20, 30, "20 records")
    c.commit(offsets=[TopicPartition("adm-b", 0, 5)], asynchronous=False)
    admin = AdminClient({"bootstrap.servers": bootstrap})

    d = admin.describe_consumer_groups(["g-adm", "g-none"])
    g = d["g-adm"].result(timeout=10)
    assert g.state == ConsumerGroupState.STABLE and not g.is_simple_consumer_group
    assert g.partition_assignor == "range"
    assert len(g.members) == 1 and g.members[0].client_id == "adm-client"
    assert {tp.partition for tp in g.members[0].assignment.topic_partitions} == {0, 1}
    missing = d["g-none"].result(timeout=10)
    assert missing.state == ConsumerGroupState.DEAD, missing

    listed = admin.list_consumer_groups().result(timeout=10)
    assert "g-adm" in {x.group_id for x in listed.valid}
    stable = admin.list_consumer_groups(states={ConsumerGroupState.EMPTY}).result(timeout=10)
    assert "g-adm" not in {x.group_id for x in stable.valid}

    fut = admin.delete_consumer_groups(["g-adm"])["g-adm"]
    with pytest.raises(Exception) as e:
        fut.result(timeout=10)
    assert "NON_EMPTY_GROUP" in str(e.value)

    # OffsetDelete: a subscribed topic is refused, an unsubscribed one is deleted.
    kadmin = KafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=10000)
    res = kadmin.delete_group_offsets("g-adm", [KTP("adm-a", 0), KTP("adm-b", 0)])
    flat = {(tp.topic, tp.partition): str(err) for tp, err in res.items()}
    assert "GroupSubscribedToTopic" in flat[("adm-a", 0)], flat
    assert "NoError" in flat[("adm-b", 0)] or flat[("adm-b", 0)] in ("None", "0"), flat
    offs = admin.list_consumer_group_offsets(
        [__import__("confluent_kafka").ConsumerGroupTopicPartitions("g-adm")])
    got = {(tp.topic, tp.partition): tp.offset for tp in offs["g-adm"].result(timeout=10)
           .topic_partitions}
    assert ("adm-b", 0) not in got and got[("adm-a", 0)] == 10, got

    c.close()
    wait_until(lambda: admin.describe_consumer_groups(["g-adm"])["g-adm"].result(timeout=10)
               .state == ConsumerGroupState.EMPTY, 30, "group Empty after close")
    admin.delete_consumer_groups(["g-adm"])["g-adm"].result(timeout=10)
    listed = admin.list_consumer_groups().result(timeout=10)
    assert "g-adm" not in {x.group_id for x in listed.valid}
    kadmin.close()


@FAST_GROUPS
def test_require_stable_offset_fetch_waits_for_pending_transactional_offsets(strom):
    """OffsetFetch with require_stable (librdkafka sets it for read_committed
    consumers): while a transaction holds offsets for the group, the partition answers
    UNSTABLE_OFFSET_COMMIT (the client retries); once it commits, the offset is there.
    A read_uncommitted consumer does not ask for stability."""
    from confluent_kafka import Consumer, KafkaException, Producer, TopicPartition
    bootstrap = strom.bootstrap
    ck_create_topic(bootstrap, "stable", 1)
    group = "g-stable"
    meta_source = Consumer({"bootstrap.servers": bootstrap, "group.id": group})
    producer = Producer({"bootstrap.servers": bootstrap, "transactional.id": "stable-tx"})
    producer.init_transactions(20)
    producer.begin_transaction()
    producer.produce("stable", value=b"x", partition=0)
    producer.send_offsets_to_transaction([TopicPartition("stable", 0, 42)],
                                         meta_source.consumer_group_metadata(), 20)
    tp = [TopicPartition("stable", 0)]
    stable = Consumer({"bootstrap.servers": bootstrap, "group.id": group,
                       "isolation.level": "read_committed"})
    with pytest.raises(KafkaException) as e:
        stable.committed(tp, timeout=3)
    assert e.value.args[0].name() in ("UNSTABLE_OFFSET_COMMIT", "_TIMED_OUT"), e.value
    loose = Consumer({"bootstrap.servers": bootstrap, "group.id": group,
                      "isolation.level": "read_uncommitted"})
    assert loose.committed(tp, timeout=10)[0].offset < 0
    producer.commit_transaction(20)
    assert wait_until(lambda: stable.committed(tp, timeout=10)[0].offset == 42, 30,
                      "the transactional offset after the commit")
    for c in (stable, loose, meta_source):
        c.close()
