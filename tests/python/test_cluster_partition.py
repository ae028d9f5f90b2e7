"""Issue 7 acceptance 3: a network partition isolating a partition leader.

Node 1's Kafka and controller traffic pass through loopback TCP proxies (its
advertised PLAINTEXT port and its controller address are proxies; it reaches the
other voters through proxies too). Cutting them isolates node 1 from the cluster
while the test still reaches it at its real port. Then:

- node 1, still believing it leads, accepts acks=1 writes (the divergent tail) but
  never acknowledges an acks=all write (its followers cannot fetch);
- nodes 2 and 3 fence it, elect a new leader and accept acks=all writes;
- after healing, node 1 learns it lost leadership, truncates its divergent tail and
  its log becomes byte for byte the new leader's.
"""

import time

from cluster import cluster_factory, produce, produce_settled  # noqa: F401 (fixture)
from strom_helpers import wait_until

TOPIC = "split"


def test_isolated_leader_cannot_ack_and_its_divergent_tail_is_truncated(cluster_factory):
    from confluent_kafka import Producer
    from confluent_kafka.admin import AdminClient, NewTopic

    c = cluster_factory(n=3, proxied=[1])
    admin = AdminClient({"bootstrap.servers": c.bootstrap})
    fs = admin.create_topics([NewTopic(TOPIC, 1, replica_assignment=[[1, 2, 3]],
                                       config={"min.insync.replicas": "2"})],
                             request_timeout=30)
    fs[TOPIC].result(timeout=30)
    assert c.leader_of(TOPIC, 0) == 1
    c.wait_isr(TOPIC, 0, 3)

    before = [b"before-%04d" % i for i in range(200)]
    err, _ = produce_settled(c.node(1).bootstrap, TOPIC, 0, before)
    assert err == 0, f"acks=all with a full ISR: error {err}"
    wait_until(lambda: all(c.node(n).log_bytes(TOPIC, 0) == c.node(1).log_bytes(TOPIC, 0)
                           for n in (2, 3)), 30, "the followers to copy the first batch")

    c.isolate(1)
    isolated_at = time.monotonic()
    # The divergent tail: acks=1 writes node 1 takes as the leader it still thinks it is.
    divergent = [b"divergent-%04d" % i for i in range(50)]
    err, _ = produce(c.node(1).bootstrap, TOPIC, 0, divergent, acks=1)
    assert err == 0, f"the isolated leader refused an acks=1 write (error {err})"

    # acks=all to the isolated leader: never a success
    acks_all_errors = []
    for i in range(3):
        err, _ = produce(c.node(1).bootstrap, TOPIC, 0, [b"never-%d" % i], timeout_ms=3000)
        acks_all_errors.append(err)
    assert 0 not in acks_all_errors, f"the isolated leader acknowledged acks=all: {acks_all_errors}"

    # the majority side elects a new leader and takes acks=all writes
    new_leader = c.leader_of(TOPIC, 0, among=[2, 3], exclude=(1,), timeout=60)
    elected_after = time.monotonic() - isolated_at
    majority = f"{c.node(2).bootstrap},{c.node(3).bootstrap}"
    p = Producer({"bootstrap.servers": majority, "acks": "all", "enable.idempotence": True,
                  "message.timeout.ms": 60000})
    after = [b"after-%04d" % i for i in range(200)]
    delivered = []
    for v in after:
        p.produce(TOPIC, value=v, partition=0,
                  on_delivery=lambda e, m: delivered.append(e))
    assert p.flush(90) == 0
    assert delivered and all(e is None for e in delivered), delivered[:3]
    # node 1 still answers acks=all with an error while cut off
    err, _ = produce(c.node(1).bootstrap, TOPIC, 0, [b"never-late"], timeout_ms=2000)
    assert err != 0

    c.heal(1)
    c.wait_isr(TOPIC, 0, 3, timeout=90)
    assert c.leader_of(TOPIC, 0) == new_leader

    def same_log():
        return c.node(1).log_bytes(TOPIC, 0) == c.node(new_leader).log_bytes(TOPIC, 0)
    wait_until(same_log, 60, "node 1's log to equal the new leader's", 0.2)
    log1 = c.node(1).log_bytes(TOPIC, 0)
    assert b"divergent-" not in log1, "the divergent tail survived on node 1"
    assert b"never-" not in log1
    for v in (before[0], before[-1], after[0], after[-1]):
        assert v in log1, f"{v!r} missing from node 1's log"
    other = 2 if new_leader == 3 else 3
    assert c.node(other).log_bytes(TOPIC, 0) == log1
    print(f"\nnew leader {new_leader} elected {elected_after:.1f}s after the isolation")
