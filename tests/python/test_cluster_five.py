"""Issue 7 acceptance 6: a 5-node cluster with 3 controller voters (nodes 1-3) and
2 broker-only nodes (4, 5) keeps serving produce and consume on RF 3,
min.insync.replicas=2 topics with any one node killed — a broker-only node, a
partition leader, the active controller — and keeps creating topics with a voter
down.
"""

import time

from cluster import cluster_factory  # noqa: F401 (fixture)
from strom_helpers import wait_until

TOPIC = "five"
PARTITIONS = 4


def produce_batch(c, tag, n=200):
    from confluent_kafka import Producer
    p = Producer({"bootstrap.servers": c.running_bootstrap(), "acks": "all",
                  "enable.idempotence": True, "message.timeout.ms": 60000})
    errors = []
    values = [b"%s-%05d" % (tag, i) for i in range(n)]
    for i, v in enumerate(values):
        p.produce(TOPIC, value=v, partition=i % PARTITIONS,
                  on_delivery=lambda e, m: e is not None and errors.append(e))
    assert p.flush(90) == 0, f"{tag!r}: records undelivered"
    assert not errors, f"{tag!r}: delivery errors {errors[:3]}"
    return values


def consume_all(c, expected):
    from confluent_kafka import Consumer, TopicPartition
    cons = Consumer({"bootstrap.servers": c.running_bootstrap(), "group.id": "five-check",
                     "enable.auto.commit": False, "auto.offset.reset": "earliest"})
    try:
        cons.assign([TopicPartition(TOPIC, p, 0) for p in range(PARTITIONS)])
        out = []
        deadline = time.monotonic() + 60
        while len(out) < len(expected) and time.monotonic() < deadline:
            out += [m.value() for m in cons.consume(1000, 1.0) if m.error() is None]
        return out
    finally:
        cons.close()


def replica_report(c, written):
    """Per partition: its state and how many of each batch's records every node's
    log holds (for a failure message)."""
    tags = sorted({v.rsplit(b"-", 1)[0] for v in written})
    lines = []
    for p in range(PARTITIONS):
        lines.append(f"{TOPIC}-{p}: (leader, replicas, isr) = {c.partition_state(TOPIC, p)}")
        for node in c.nodes.values():
            try:
                log = node.log_bytes(TOPIC, p)
            except OSError:
                continue
            counts = {t.decode(): log.count(t + b"-") for t in tags}
            lines.append(f"  node {node.node_id}: {counts}")
    return "\n".join(lines)


def test_five_nodes_serve_with_any_one_killed(cluster_factory):
    c = cluster_factory(n=5, voters=3)
    assert not c.node(4).voter and not c.node(5).voter
    c.create_topic(TOPIC, PARTITIONS, 3, {"min.insync.replicas": "2"})
    for p in range(PARTITIONS):
        c.wait_isr(TOPIC, p, 3)
    written = produce_batch(c, b"start")

    victims = [
        ("broker-only node", lambda: 5),
        ("leader of partition 0", lambda: c.leader_of(TOPIC, 0)),
        ("active controller", lambda: c.controller_id()),
    ]
    for what, pick in victims:
        victim = pick()
        c.node(victim).kill9()
        tag = b"without-%d" % victim
        written += produce_batch(c, tag)
        got = consume_all(c, written)
        assert sorted(got) == sorted(written), (
            f"with the {what} (node {victim}) down: {len(got)} records read, {len(written)} "
            f"written\n{replica_report(c, written)}")
        if c.node(victim).voter:
            name = f"created-without-{victim}"
            c.create_topic(name, 2, 3)
            md = c.any_metadata([name])
            assert all(len(p[2]) == 3 and victim not in p[2] for p in md.topics[name][1].values()), (
                f"{name}: replicas placed on the dead node or not 3: {md.topics[name]}")
        c.node(victim).restart()
        for p in range(PARTITIONS):
            c.wait_isr(TOPIC, p, 3, timeout=90)
    # one voter down was covered above only if the controller was a voter; make sure
    # CreateTopics worked with some voter down
    assert any(t.startswith("created-without-") for t in c.any_metadata().topics)
    wait_until(lambda: set(c.any_metadata([]).brokers) == {1, 2, 3, 4, 5}, 60, "all 5 brokers back")
