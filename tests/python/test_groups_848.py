"""KIP-848 consumer groups (`group.protocol=consumer`) against Strom with
confluent-kafka's librdkafka (>= 2.10 speaks ConsumerGroupHeartbeat).

The broker runs with a short consumer session timeout and heartbeat interval
so membership changes are quick; every wait polls a condition.
"""

import pytest

from strom_helpers import ck_create_topic, wait_until
from test_groups import produce_ids

FAST_848 = pytest.mark.strom_config(**{
    "group.initial.rebalance.delay.ms": "100",
    "group.consumer.heartbeat.interval.ms": "300",
    "group.consumer.session.timeout.ms": "6000",
})


def new_consumer(bootstrap, group, **extra):
    from confluent_kafka import Consumer
    conf = {
        "bootstrap.servers": bootstrap,
        "group.id": group,
        "group.protocol": "consumer",
        "enable.auto.commit": False,
        "auto.offset.reset": "earliest",
    }
    conf.update(extra)
    return Consumer(conf)


def assigned(c):
    return {tp.partition for tp in c.assignment()}


def poll_commit(consumers, seen):
    for i, c in enumerate(consumers):
        m = c.poll(0.05)
        if m is None or m.error() is not None:
            continue
        seen[i].append(int(m.value()))
        c.commit(message=m, asynchronous=False)
    return True


def test_librdkafka_supports_the_consumer_protocol():
    import confluent_kafka
    version = tuple(int(x) for x in confluent_kafka.libversion()[0].split(".")[:2])
    assert version >= (2, 10), confluent_kafka.libversion()


@FAST_848
def test_two_consumers_share_then_one_takes_all(strom):
    from confluent_kafka import TopicPartition
    from confluent_kafka.admin import AdminClient
    bootstrap = strom.bootstrap
    topic, parts, n = "kip848", 6, 1200
    ck_create_topic(bootstrap, topic, parts)
    produce_ids(bootstrap, topic, n, parts)
    a = new_consumer(bootstrap, "g-848")
    b = new_consumer(bootstrap, "g-848")
    a.subscribe([topic])
    b.subscribe([topic])
    both = [a, b]
    seen = [[], []]

    def split():
        poll_commit(both, seen)
        x, y = assigned(a), assigned(b)
        return len(x) == 3 and len(y) == 3 and not (x & y) and (x, y)
    wait_until(split, 60, "a 3/3 split of 6 partitions")
    wait_until(lambda: poll_commit(both, seen) and len(seen[0]) + len(seen[1]) >= n // 2, 60,
               "half of the records")

    admin = AdminClient({"bootstrap.servers": bootstrap})
    listed = admin.list_consumer_groups().result(timeout=10)
    mine = [g for g in listed.valid if g.group_id == "g-848"]
    assert len(mine) == 1, listed.valid
    assert mine[0].type.name == "CONSUMER", mine[0]

    b.close()  # leaves with epoch -1: a takes every partition
    wait_until(lambda: poll_commit([a], seen) and assigned(a) == set(range(parts)), 60,
               "the survivor owns every partition")
    wait_until(lambda: poll_commit([a], seen) and len(set(seen[0] + seen[1])) >= n, 60,
               "every record consumed")
    ids = seen[0] + seen[1]
    assert sorted(set(ids)) == list(range(n)), "records lost"
    committed = a.committed([TopicPartition(topic, p) for p in range(parts)], timeout=10)
    assert sum(tp.offset for tp in committed) == n, committed

    # The broker restarts: committed offsets remain, the consumer rejoins and
    # sees what is produced next without re-reading anything.
    member_id = a.memberid()
    strom.kill9()
    strom.restart()
    # The group was rebuilt from its records: still a consumer group with the
    # same member (it heartbeats on with its epoch, no rejoin).
    admin = AdminClient({"bootstrap.servers": bootstrap})
    listed = admin.list_consumer_groups().result(timeout=10)
    mine = [g for g in listed.valid if g.group_id == "g-848"]
    assert len(mine) == 1 and mine[0].type.name == "CONSUMER", listed.valid
    desc = admin.describe_consumer_groups(["g-848"])["g-848"].result(timeout=10)
    assert [m.member_id for m in desc.members] == [member_id], desc
    produce_ids(bootstrap, topic, 60, parts, start=n)
    before = len(seen[0])
    wait_until(lambda: poll_commit([a], seen) and len(seen[0]) >= before + 60, 60,
               "records after the restart")
    after = seen[0][before:]
    assert sorted(after) == list(range(n, n + 60)), after
    a.close()
    fresh = new_consumer(bootstrap, "g-848")
    got = fresh.committed([TopicPartition(topic, p) for p in range(parts)], timeout=10)
    assert sum(tp.offset for tp in got) == n + 60, got
    fresh.close()


def admin_view(bootstrap):
    from confluent_kafka.admin import AdminClient
    admin = AdminClient({"bootstrap.servers": bootstrap})
    d = admin.describe_consumer_groups(["g-848-rx"])["g-848-rx"].result(timeout=10)
    return d.partition_assignor, [(m.member_id, m.assignment.topic_partitions) for m in d.members]


@FAST_848
def test_regex_subscription_with_range_assignor(strom):
    """A regex subscription (sent as SubscribedTopicRegex) with the server-side `range`
    assignor: matching topics are assigned, a topic created later is picked up, and a
    topic that does not match is not."""
    from confluent_kafka.admin import AdminClient
    bootstrap = strom.bootstrap
    for t in ("rx-a", "rx-b", "other"):
        ck_create_topic(bootstrap, t, 2)
    a = new_consumer(bootstrap, "g-848-rx", **{"group.remote.assignor": "range"})
    b = new_consumer(bootstrap, "g-848-rx", **{"group.remote.assignor": "range"})
    a.subscribe(["^rx-.*"])
    b.subscribe(["^rx-.*"])

    def owned():
        for c in (a, b):
            c.poll(0.05)
        return [{(tp.topic, tp.partition) for tp in c.assignment()} for c in (a, b)]

    want = {(t, p) for t in ("rx-a", "rx-b") for p in range(2)}
    # range: each member gets one partition of each topic.
    got = wait_until(lambda: (lambda o: o[0] | o[1] == want and not (o[0] & o[1])
                              and len(o[0]) == 2 and o)(owned()), 60, "rx-a and rx-b split")
    assert {t for t, _ in got[0]} == {"rx-a", "rx-b"}, (got, admin_view(bootstrap))
    ck_create_topic(bootstrap, "rx-c", 2)
    want |= {("rx-c", 0), ("rx-c", 1)}
    wait_until(lambda: (lambda o: o[0] | o[1] == want and not (o[0] & o[1]))(owned()), 60,
               "rx-c picked up")
    admin = AdminClient({"bootstrap.servers": bootstrap})
    desc = admin.describe_consumer_groups(["g-848-rx"])["g-848-rx"].result(timeout=10)
    assert desc.partition_assignor == "range" and len(desc.members) == 2, desc
    a.close()
    b.close()


@FAST_848
def test_sigkilled_member_expires_after_the_session_timeout(strom):
    """A consumer-protocol member process is SIGKILLed: after
    group.consumer.session.timeout.ms (6 s here) its partitions go to the survivor,
    and every record is consumed."""
    import os
    import signal
    import subprocess
    import sys
    import threading
    import time
    from pathlib import Path
    bootstrap = strom.bootstrap
    topic, parts, n = "kip848-kill", 6, 6000
    ck_create_topic(bootstrap, topic, parts)
    script = str(Path(__file__).with_name("group_member_proc.py"))
    state, lock, procs = [], threading.Lock(), []

    def reader(i, p):
        for line in p.stdout:
            with lock:
                if line.startswith("RECORD"):
                    state[i]["ids"].add(int(line.split()[1]))
    try:
        for i in range(2):
            state.append({"ids": set()})
            p = subprocess.Popen([sys.executable, script, bootstrap, "g-848-kill", topic,
                                  "consumer"], stdout=subprocess.PIPE, text=True)
            procs.append(p)
            threading.Thread(target=reader, args=(i, p), daemon=True).start()
        admin_holder = []

        def members():
            from confluent_kafka.admin import AdminClient
            if not admin_holder:
                admin_holder.append(AdminClient({"bootstrap.servers": bootstrap}))
            d = admin_holder[0].describe_consumer_groups(["g-848-kill"])["g-848-kill"]
            try:
                g = d.result(timeout=10)
            except Exception:
                return None
            return [len(m.assignment.topic_partitions) for m in g.members]
        wait_until(lambda: members() == [3, 3], 60, "two members with 3 partitions each")
        produce_ids(bootstrap, topic, n // 2, parts)
        wait_until(lambda: len(state[1]["ids"]) > 0, 60, "the victim consumes")
        os.kill(procs[1].pid, signal.SIGKILL)
        procs[1].wait(10)
        killed = time.monotonic()
        produce_ids(bootstrap, topic, n // 2, parts, start=n // 2)
        wait_until(lambda: members() == [6], 30, "the survivor owns all 6 partitions")
        took = time.monotonic() - killed
        assert 5 <= took < 6 + 5, f"membership changed after {took:.1f}s"
        wait_until(lambda: len(state[0]["ids"] | state[1]["ids"]) == n, 60,
                   "every record consumed")
    finally:
        for p in procs:
            if p.poll() is None:
                p.terminate()
                p.wait(10)
