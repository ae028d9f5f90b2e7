"""Issue 7 acceptance 4: group and transaction coordinators fail over with the
leaders of their `__consumer_offsets` / `__transaction_state` partitions.

- A consumer group commits offsets; the node leading its `__consumer_offsets`
  partition (its coordinator) is SIGKILLed; the offsets are still there (read
  through the new coordinator) and the group consumes the rest exactly once.
- A transactional copy (read_committed consumer → transactional producer with
  `send_offsets_to_transaction`) keeps going while its transaction coordinator is
  SIGKILLed mid-way; the output holds every input record exactly once.
"""

import time

from cluster import cluster_factory, find_coordinator  # noqa: F401 (fixture)
from strom_helpers import wait_until

INTERNAL = {
    "offsets.topic.num.partitions": "3",
    "transaction.state.log.num.partitions": "3",
}
N = 600


def coordinator(c, key, key_type):
    def ask():
        for node in c.running():
            try:
                err, node_id = find_coordinator(node.bootstrap, key, key_type)
            except OSError:
                continue
            if err == 0 and node_id in c.nodes and c.nodes[node_id].is_running():
                return node_id
        return None
    return wait_until(ask, 60, f"a live coordinator for {key!r}", 0.2)


def abort(producer, attempts=3):
    """abort_transaction, again while it fails with a retriable error (the
    coordinator is moving)."""
    from confluent_kafka import KafkaException
    for i in range(attempts):
        try:
            producer.abort_transaction(20)
            return
        except KafkaException as e:
            if not e.args[0].retriable() or i == attempts - 1:
                raise


def fill(c, topic, n, partitions):
    from confluent_kafka import Producer
    p = Producer({"bootstrap.servers": c.bootstrap, "acks": "all", "enable.idempotence": True})
    for i in range(n):
        p.produce(topic, value=b"in-%06d" % i, partition=i % partitions)
    assert p.flush(60) == 0


def test_group_offsets_survive_the_coordinator_kill(cluster_factory):
    from confluent_kafka import Consumer, TopicPartition
    c = cluster_factory(n=3, overrides=INTERNAL)
    topic = "grp-in"
    c.create_topic(topic, 3, 3)
    fill(c, topic, N, 3)
    group = "failover-group"
    conf = {"bootstrap.servers": c.bootstrap, "group.id": group, "enable.auto.commit": False,
            "auto.offset.reset": "earliest", "session.timeout.ms": 6000,
            "heartbeat.interval.ms": 500}

    consumer = Consumer(conf)
    consumer.subscribe([topic])
    seen = []
    deadline = time.monotonic() + 60
    while len(seen) < N // 2 and time.monotonic() < deadline:
        for m in consumer.consume(50, 1.0):
            if m.error() is None:
                seen.append(m.value())
    assert len(seen) >= N // 2, "the group did not consume"
    committed = consumer.commit(asynchronous=False)
    consumer.close()
    want = {(tp.partition, tp.offset) for tp in committed}
    assert sum(max(o, 0) for _, o in want) == len(seen), want

    victim = coordinator(c, group, 0)
    c.node(victim).kill9()
    # the offsets come back from the new coordinator
    new = coordinator(c, group, 0)
    assert new != victim

    def offsets():
        probe = Consumer(dict(conf, **{"bootstrap.servers": c.running_bootstrap()}))
        try:
            got = probe.committed([TopicPartition(topic, p) for p in range(3)], timeout=10)
            return {(tp.partition, tp.offset) for tp in got if tp.error is None}
        except Exception:  # noqa: BLE001 (the coordinator is moving: ask again)
            return None
        finally:
            probe.close()
    wait_until(lambda: offsets() == want, 60, f"committed offsets {sorted(want)} after failover", 0.5)

    consumer = Consumer(dict(conf, **{"bootstrap.servers": c.running_bootstrap()}))
    consumer.subscribe([topic])
    deadline = time.monotonic() + 90
    while len(seen) < N and time.monotonic() < deadline:
        for m in consumer.consume(100, 1.0):
            if m.error() is None:
                seen.append(m.value())
    consumer.commit(asynchronous=False)
    consumer.close()
    assert sorted(seen) == sorted(b"in-%06d" % i for i in range(N)), (
        f"{len(seen)} records consumed, {len(set(seen))} distinct (want {N} exactly once)")
    c.node(victim).restart()


def test_transactional_copy_survives_the_coordinator_kill(cluster_factory):
    from confluent_kafka import Consumer, KafkaException, Producer, TopicPartition
    c = cluster_factory(n=3, overrides=INTERNAL)
    src, dst = "txn-in", "txn-out"
    c.create_topic(src, 2, 3)
    c.create_topic(dst, 2, 3, {"min.insync.replicas": "2"})
    fill(c, src, N, 2)
    group, txn_id = "copier", "copier-txn"
    cconf = {"bootstrap.servers": c.bootstrap, "group.id": group, "enable.auto.commit": False,
             "auto.offset.reset": "earliest", "isolation.level": "read_committed",
             "session.timeout.ms": 6000, "heartbeat.interval.ms": 500}
    consumer = Consumer(cconf)
    consumer.subscribe([src])
    producer = Producer({"bootstrap.servers": c.bootstrap, "transactional.id": txn_id,
                         "transaction.timeout.ms": 60000, "message.timeout.ms": 60000})
    producer.init_transactions(60)

    copied = killed = 0
    victim = None
    aborts = 0
    deadline = time.monotonic() + 100
    while copied < N and time.monotonic() < deadline:
        msgs = [m for m in consumer.consume(50, 1.0) if m.error() is None]
        if not msgs:
            continue
        if copied >= N // 3 and not killed:
            victim = coordinator(c, txn_id, 1)
            c.node(victim).kill9()
            killed = time.monotonic()
        try:
            producer.begin_transaction()
            for m in msgs:
                producer.produce(dst, value=m.value(), partition=m.partition())
            producer.send_offsets_to_transaction(
                consumer.position(consumer.assignment()), consumer.consumer_group_metadata(), 20)
            producer.commit_transaction(20)
            copied += len(msgs)
        except KafkaException as e:
            err = e.args[0]
            if err.txn_requires_abort():
                abort(producer)
                aborts += 1
            elif not err.retriable():
                raise
            # rewind to what the group committed and copy again
            committed = consumer.committed(consumer.assignment(), timeout=30)
            for tp in committed:
                consumer.seek(TopicPartition(src, tp.partition, max(tp.offset, 0)))
            copied = sum(max(tp.offset, 0) for tp in committed)
    assert killed, "the coordinator was never killed (nothing copied?)"
    assert copied >= N, f"copied {copied} of {N} within the time limit"
    consumer.close()
    print(f"\ntransaction coordinator node {victim} killed; {aborts} transactions aborted")

    reader = Consumer({"bootstrap.servers": c.running_bootstrap(), "group.id": "verify",
                       "enable.auto.commit": False, "auto.offset.reset": "earliest",
                       "isolation.level": "read_committed"})
    reader.assign([TopicPartition(dst, p, 0) for p in range(2)])
    out = []
    deadline = time.monotonic() + 60
    while len(out) < N and time.monotonic() < deadline:
        out += [m.value() for m in reader.consume(500, 1.0) if m.error() is None]
    # a little longer: anything beyond N would be a duplicate
    out += [m.value() for m in reader.consume(500, 2.0) if m.error() is None]
    reader.close()
    assert sorted(out) == sorted(b"in-%06d" % i for i in range(N)), (
        f"{len(out)} records in the output, {len(set(out))} distinct (want {N} exactly once)")
    producer.flush(10)
    c.node(victim).restart()
