"""Issue 7 acceptance 1, 2 and 5 on real 3-node clusters (separate `strom server`
processes, SIGKILL, restarts):

1. an idempotent acks=all confluent-kafka producer writes continuously while the
   partition leader, then the new leader, then the active controller are SIGKILLed
   one at a time (each restarted and caught up before the next kill); afterwards a
   consumer reads every acknowledged record exactly once and in order, and the
   producer resumed within a bound after each kill (the measured gaps are printed);
2. with 2 of 3 nodes down, acks=all produce fails with NOT_ENOUGH_REPLICAS and
   nothing acknowledged before is lost when they return;
5. `strom cluster health` reports under-replicated partitions while a node is down
   and none after it caught up, and the brokers' /metrics agree.

And the issue's other faults: a hung (SIGSTOPped) partition leader and active
controller, and all nodes SIGKILLed and restarted at once.
"""

import threading
import time

import pytest

from cluster import FAST, cluster_factory, produce, produce_settled, scrape_metrics  # noqa: F401
from strom_helpers import wait_until

NOT_ENOUGH_REPLICAS = 19
# The issue asks for "resumes within a few seconds"; this bound is only a liveness
# check (the measured figures are printed and reported).
RESUME_BOUND_S = 30.0


class ContinuousProducer:
    """An idempotent acks=all producer writing `seq` values as fast as the
    acknowledgements allow (at most `window` in flight), recording each delivery."""

    def __init__(self, bootstrap, topic, window=200, **extra):
        from confluent_kafka import Producer
        self.topic = topic
        self.window = window
        self.p = Producer({**extra, 
            "bootstrap.servers": bootstrap,
            "acks": "all",
            "enable.idempotence": True,
            "linger.ms": 5,
            # Never give a record up while a leader moves: every one must land.
            "message.timeout.ms": 300000,
            "retry.backoff.ms": 50,
            "retry.backoff.max.ms": 500,
            "topic.metadata.refresh.interval.ms": 1000,
            "reconnect.backoff.max.ms": 500,
        })
        self.acked = []  # (seq, partition, offset, monotonic time)
        self.errors = []
        self.sent = 0
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _on_delivery(self, err, msg):
        with self._lock:
            if err is not None:
                self.errors.append((int(msg.value()), err))
            else:
                self.acked.append((int(msg.value()), msg.partition(), msg.offset(),
                                   time.monotonic()))

    def _run(self):
        while not self._stop.is_set():
            with self._lock:
                in_flight = self.sent - len(self.acked) - len(self.errors)
            if in_flight >= self.window:
                self.p.poll(0.01)
                continue
            try:
                self.p.produce(self.topic, value=b"%010d" % self.sent, partition=0,
                               on_delivery=self._on_delivery)
                self.sent += 1
            except BufferError:
                pass
            self.p.poll(0.001)

    def start(self):
        self._thread.start()
        return self

    def count(self):
        with self._lock:
            return len(self.acked)

    def ack_times(self):
        with self._lock:
            return [a[3] for a in self.acked]

    def stop(self, flush_timeout=120):
        self._stop.set()
        self._thread.join(timeout=30)
        left = self.p.flush(flush_timeout)
        assert left == 0, f"{left} records still undelivered after {flush_timeout}s"


def read_partition(bootstrap, topic, partition, expected, timeout=60):
    """Every record of one partition from offset 0 (read_committed is irrelevant:
    no transactions) until `expected` records arrived: [(offset, value)]."""
    from confluent_kafka import Consumer, TopicPartition
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": "cluster-check",
                  "enable.auto.commit": False, "auto.offset.reset": "earliest"})
    try:
        c.assign([TopicPartition(topic, partition, 0)])
        out = []
        deadline = time.monotonic() + timeout
        while len(out) < expected and time.monotonic() < deadline:
            for m in c.consume(1000, 1.0):
                if m.error() is None:
                    out.append((m.offset(), m.value()))
        return out
    finally:
        c.close()


def wait_resumed(prod, after_count, what, timeout=RESUME_BOUND_S + 30):
    wait_until(lambda: prod.count() > after_count + 20, timeout,
               f"acknowledgements to resume after {what}", 0.05)


def test_leader_and_controller_kills_lose_nothing(cluster_factory):
    c = cluster_factory(n=3)
    topic = "failover"
    c.create_topic(topic, 1, 3, {"min.insync.replicas": "2"})
    c.wait_isr(topic, 0, 3)
    prod = ContinuousProducer(c.bootstrap, topic).start()
    wait_until(lambda: prod.count() > 200, 60, "the first acknowledgements")

    gaps = []
    for what in ("partition leader", "new partition leader", "active controller"):
        victim = c.controller_id() if what == "active controller" else c.leader_of(topic, 0)
        before = prod.count()
        t_kill = time.monotonic()
        c.node(victim).kill9()
        wait_resumed(prod, before, f"SIGKILL of the {what} (node {victim})")
        times = prod.ack_times()
        # The longest silence between acknowledgements around the kill.
        around = [t for t in times if t >= t_kill - 5]
        gap = max((b - a for a, b in zip(around, around[1:])), default=0.0)
        first_after = min(t for t in times if t > t_kill) - t_kill
        gaps.append((what, victim, round(gap, 2), round(first_after, 2)))
        c.node(victim).restart()
        c.wait_isr(topic, 0, 3, timeout=90)
        wait_until(lambda: prod.count() > len(times) + 50, 60, "acknowledgements after the restart")

    prod.stop()
    print("\nfailover gaps (what, node, longest ack gap s, first ack after kill s):")
    for g in gaps:
        print("  ", g)
    assert not prod.errors, f"{len(prod.errors)} delivery errors, first {prod.errors[:3]}"
    for what, victim, gap, _ in gaps:
        assert gap < RESUME_BOUND_S, f"producer stalled {gap}s after killing the {what}"

    acked = sorted(prod.acked, key=lambda a: a[2])
    records = read_partition(c.bootstrap, topic, 0, len(acked))
    values = [int(v) for _, v in records]
    assert len(values) == len(set(values)), "a record was written twice"
    assert values == sorted(values), "records out of order"
    by_offset = dict(records)
    for seq, _, offset, _ in acked:
        assert by_offset.get(offset) == b"%010d" % seq, (
            f"acknowledged seq {seq} at offset {offset} reads back as {by_offset.get(offset)!r}")
    assert len(records) == prod.sent, "the log holds exactly the records produced"


def test_two_of_three_down_refuses_acks_all_and_keeps_acknowledged(cluster_factory):
    # One voter (node 1) keeps the metadata quorum alive while brokers 2 and 3 are
    # down, so the controller can take them out of the ISR: then min.insync.replicas
    # refuses acks=all writes with NOT_ENOUGH_REPLICAS. (With 2 of 3 voters down the
    # metadata is frozen and such a write can only time out.)
    c = cluster_factory(n=3, voters=1)
    topic = "minisr"
    c.create_topic(topic, 1, 3, {"min.insync.replicas": "2"})
    c.wait_isr(topic, 0, 3)
    values = [b"before-%05d" % i for i in range(500)]
    leader = c.leader_of(topic, 0)
    for i in range(0, len(values), 100):
        err, _ = produce_settled(c.node(leader).bootstrap, topic, 0, values[i:i + 100])
        assert err == 0, f"acks=all produce with a full ISR failed: error {err}"

    for victim in (2, 3):
        c.node(victim).kill9()
    assert c.leader_of(topic, 0) == 1
    c.wait_isr(topic, 0, 1, timeout=60)
    errs = set()
    for _ in range(3):
        err, _ = produce(c.node(1).bootstrap, topic, 0, [b"refused"])
        errs.add(err)
    assert errs == {NOT_ENOUGH_REPLICAS}, f"acks=all with ISR {{1}} answered {errs}"
    assert scrape_metrics(c.node(1))["kafka_server_replicamanager_underminisrpartitioncount"] == 1

    # confluent-kafka sees the same code in its delivery report
    from confluent_kafka import KafkaError, Producer
    p = Producer({"bootstrap.servers": c.node(1).bootstrap, "acks": "all", "retries": 0})
    out = []
    p.produce(topic, value=b"refused too", partition=0, on_delivery=lambda e, m: out.append(e))
    assert p.flush(30) == 0
    assert out[0] is not None and out[0].code() == KafkaError.NOT_ENOUGH_REPLICAS, out

    # acks=1 is not held to min.insync.replicas
    err, _ = produce_settled(c.node(1).bootstrap, topic, 0, [b"acks-1"], acks=1)
    assert err == 0

    for victim in (2, 3):
        c.node(victim).restart()
    c.wait_isr(topic, 0, 3, timeout=90)
    err, _ = produce_settled(c.node(c.leader_of(topic, 0)).bootstrap, topic, 0, [b"after"])
    assert err == 0
    wait_until(lambda: sum(scrape_metrics(n)["kafka_server_replicamanager_underminisrpartitioncount"]
                           for n in c.running()) == 0, 30, "UnderMinIsrPartitionCount to clear")
    got = [v for _, v in read_partition(c.bootstrap, topic, 0, len(values) + 2)]
    assert got == values + [b"acks-1", b"after"], "acknowledged records lost or refused ones kept"
    # every replica holds the same log
    for n in (2, 3):
        wait_until(lambda: c.node(n).log_bytes(topic, 0) == c.node(1).log_bytes(topic, 0), 30,
                   f"node {n}'s log to equal node 1's")


def health(c):
    r = c.cli("cluster", "health", "--json", check=False)
    import json
    return r.returncode, json.loads(r.stdout)


def metric_sums(c):
    under = offline = active = 0
    for node in c.running():
        m = scrape_metrics(node)
        under += m.get("kafka_server_replicamanager_underreplicatedpartitions", 0)
        offline += m.get("kafka_controller_kafkacontroller_offlinepartitionscount", 0)
        active += m.get("kafka_controller_kafkacontroller_activecontrollercount", 0)
    return int(under), int(offline), int(active)


def test_health_and_metrics_show_under_replicated_while_a_node_is_down(cluster_factory):
    c = cluster_factory(n=3)
    topic = "health"
    c.create_topic(topic, 3, 3)
    for p in range(3):
        c.wait_isr(topic, p, 3)
    rc, h = health(c)
    assert rc == 0 and h["healthy"] and h["under_replicated_count"] == 0, h
    assert metric_sums(c) == (0, 0, 1)

    # a follower of partition 0 that is not the controller (the quorum stays put)
    leader = c.leader_of(topic, 0)
    controller = c.controller_id()
    victim = next(i for i in (1, 2, 3) if i not in (leader, controller))
    # an RF 1 partition on the victim goes offline with it
    from confluent_kafka.admin import AdminClient, NewTopic
    admin = AdminClient({"bootstrap.servers": c.bootstrap})
    admin.create_topics([NewTopic("lonely", 1, replica_assignment=[[victim]])],
                        request_timeout=30)["lonely"].result(timeout=30)
    assert c.leader_of("lonely", 0) == victim
    c.node(victim).kill9()

    def under_replicated():
        rc, h = health(c)
        return (rc, h) if rc != 0 and h["under_replicated_count"] >= 1 else None
    rc, h = wait_until(under_replicated, 60, "health to report under-replicated partitions", 0.5)
    assert not h["healthy"]
    assert f"{topic}-0" in h["under_replicated"], h
    wait_until(lambda: health(c)[1]["offline"] == ["lonely-0"], 30, "lonely-0 to be offline")
    # the leaders' gauges count the same partitions, once each; the active
    # controller alone counts the offline ones
    wait_until(lambda: metric_sums(c)[:2] == (health(c)[1]["under_replicated_count"], 1), 30,
               "UnderReplicatedPartitions and OfflinePartitionsCount summed over the brokers "
               "to equal health's counts")
    assert metric_sums(c)[2] == 1, "exactly one active controller"
    offline = c.cli_json("cluster", "partitions", "--offline")
    assert [(p["topic"], p["partition"], p["leader"]) for p in offline] == [("lonely", 0, -1)]
    listed = c.cli_json("cluster", "partitions", "--under-replicated", "--topic", topic)
    assert {p["partition"] for p in listed} >= {0}
    assert all(victim in p["out_of_sync"] and p["offline_replicas"] == [victim]
               for p in listed), listed

    c.node(victim).restart()
    for p in range(3):
        c.wait_isr(topic, p, 3, timeout=90)
    wait_until(lambda: health(c)[0] == 0, 60, "health to be healthy again", 0.5)
    rc, h = health(c)
    assert h["under_replicated_count"] == 0 and h["offline_count"] == 0, h
    wait_until(lambda: metric_sums(c) == (0, 0, 1), 30, "the gauges to clear")


def check_exactly_once(c, topic, prod):
    acked = sorted(prod.acked, key=lambda a: a[2])
    records = read_partition(c.bootstrap, topic, 0, len(acked))
    values = [int(v) for _, v in records]
    assert len(values) == len(set(values)), "a record was written twice"
    assert values == sorted(values), "records out of order"
    by_offset = dict(records)
    for seq, _, offset, _ in acked:
        assert by_offset.get(offset) == b"%010d" % seq, (
            f"acknowledged seq {seq} at offset {offset} reads back as {by_offset.get(offset)!r}")
    assert len(records) == prod.sent


def test_hung_leader_is_fenced_and_rejoins_as_follower(cluster_factory):
    """SIGSTOP of the partition leader (sockets open, nothing answered): the
    controller fences it after broker.session.timeout.ms, the producer moves to the
    new leader; after SIGCONT the old leader follows and its log equals the leader's.
    Then the same for a hung active controller: the voters elect another and the
    cluster keeps creating topics and electing leaders."""
    c = cluster_factory(n=3)
    topic = "hung"
    controller = c.controller_id()
    victim = next(i for i in (1, 2, 3) if i != controller)
    others = [i for i in (1, 2, 3) if i != victim]
    from confluent_kafka.admin import AdminClient, NewTopic
    admin = AdminClient({"bootstrap.servers": c.bootstrap})
    admin.create_topics([NewTopic(topic, 1, replica_assignment=[[victim] + others],
                                  config={"min.insync.replicas": "2"})],
                        request_timeout=30)[topic].result(timeout=30)
    assert c.leader_of(topic, 0) == victim
    c.wait_isr(topic, 0, 3)
    # A hung broker never answers the requests in flight to it: the client gives
    # them up after its timeouts (librdkafka: request.timeout.ms 30 s,
    # socket.timeout.ms 60 s) — shorter here, as a client wanting fast failover sets.
    prod = ContinuousProducer(c.bootstrap, topic, **{"request.timeout.ms": 5000,
                                                     "socket.timeout.ms": 5000}).start()
    wait_until(lambda: prod.count() > 200, 60, "the first acknowledgements")
    before = prod.count()
    t_stop = time.monotonic()
    c.node(victim).sigstop()
    try:
        new_leader = c.leader_of(topic, 0, among=others, exclude=(victim,), timeout=60)
        elected = time.monotonic() - t_stop
        wait_resumed(prod, before, f"SIGSTOP of the leader (node {victim})")
        times = [t for t in prod.ack_times() if t >= t_stop - 1]
        gap = max((b - a for a, b in zip(times, times[1:])), default=0.0)
        print(f"\nhung leader {victim}: node {new_leader} leads after {elected:.2f}s, "
              f"longest gap between acknowledgements {gap:.2f}s")
        assert gap < RESUME_BOUND_S
    finally:
        c.node(victim).sigcont()
    c.wait_isr(topic, 0, 3, timeout=90)
    prod.stop()
    assert not prod.errors, prod.errors[:3]
    check_exactly_once(c, topic, prod)
    leader = c.leader_of(topic, 0)
    wait_until(lambda: c.node(victim).log_bytes(topic, 0) == c.node(leader).log_bytes(topic, 0),
               30, f"node {victim}'s log to equal the leader's")

    # a hung active controller
    t_stop = time.monotonic()
    c.node(controller).sigstop()
    try:
        rest = [i for i in (1, 2, 3) if i != controller]
        new_controller = wait_until(
            lambda: {quorum_leader_or_none(c.node(i)) for i in rest} == {quorum_leader_or_none(
                c.node(rest[0]))} and quorum_leader_or_none(c.node(rest[0])) in rest
            and quorum_leader_or_none(c.node(rest[0])),
            60, "a new active controller", 0.2)
        moved = time.monotonic() - t_stop
        admin = AdminClient({"bootstrap.servers": ",".join(c.node(i).bootstrap for i in rest)})
        admin.create_topics([NewTopic("while-hung", 1, 2)], request_timeout=60)[
            "while-hung"].result(timeout=60)
        created = time.monotonic() - t_stop
        print(f"hung controller {controller}: node {new_controller} took over after "
              f"{moved:.2f}s, CreateTopics done after {created:.2f}s")
        assert created < 60
    finally:
        c.node(controller).sigcont()
    c.wait_brokers([1, 2, 3], timeout=60)


def test_hung_node_leading_both_the_quorum_and_a_partition(cluster_factory):
    """SIGSTOP of the node that is the active controller and a partition's leader:
    the voters elect another controller, which fences the hung broker and moves its
    leadership. Kafka's bound is the election plus broker.session.timeout.ms."""
    from confluent_kafka.admin import AdminClient, NewTopic
    c = cluster_factory(n=3)
    controller = c.controller_id()
    others = [i for i in (1, 2, 3) if i != controller]
    admin = AdminClient({"bootstrap.servers": c.bootstrap})
    admin.create_topics([NewTopic("both", 1, replica_assignment=[[controller] + others],
                                  config={"min.insync.replicas": "2"})],
                        request_timeout=30)["both"].result(timeout=30)
    c.wait_isr("both", 0, 3)
    assert c.leader_of("both", 0) == controller
    t_stop = time.monotonic()
    c.node(controller).sigstop()
    try:
        new_leader = c.leader_of("both", 0, among=others, exclude=(controller,), timeout=90)
        moved = time.monotonic() - t_stop
        print(f"\nhung controller+leader {controller}: node {new_leader} leads after {moved:.2f}s")
        assert moved < 20, f"leadership moved only {moved:.1f}s after the hang"
        err, _ = produce_settled(c.node(new_leader).bootstrap, "both", 0, [b"x"])
        assert err == 0
    finally:
        c.node(controller).sigcont()
    c.wait_isr("both", 0, 3, timeout=90)


def quorum_leader_or_none(node):
    from cluster import quorum_leader
    try:
        return quorum_leader(node.bootstrap)
    except (OSError, ValueError):
        return None


def test_restarting_all_nodes_at_once_keeps_everything(cluster_factory):
    c = cluster_factory(n=3)
    topic = "allrestart"
    c.create_topic(topic, 2, 3, {"min.insync.replicas": "2"})
    values = {p: [b"p%d-%05d" % (p, i) for i in range(1000)] for p in range(2)}
    for p in range(2):
        c.wait_isr(topic, p, 3)
        leader = c.leader_of(topic, p)
        for i in range(0, 1000, 250):
            err, _ = produce_settled(c.node(leader).bootstrap, topic, p, values[p][i:i + 250])
            assert err == 0, f"acks=all produce failed: {err}"
    for node in c.nodes.values():
        node.kill9()
    for node in c.nodes.values():
        node.spawn()
    for node in c.nodes.values():
        node.wait_up()
    c.wait_brokers([1, 2, 3], timeout=90)
    for p in range(2):
        c.wait_isr(topic, p, 3, timeout=90)
        got = [v for _, v in read_partition(c.bootstrap, topic, p, 1000)]
        assert got == values[p], f"partition {p}: {len(got)} of 1000 records after the restart"
        leader = c.leader_of(topic, p)
        err, _ = produce_settled(c.node(leader).bootstrap, topic, p, [b"after"])
        assert err == 0


def test_controlled_shutdown_moves_leadership_first(cluster_factory):
    """SIGTERM of the partition leader: it exits cleanly only after the controller
    moved its leaderships, so the others name a new leader the moment it is gone
    (no waiting for the session to expire) and the producer barely pauses."""
    c = cluster_factory(n=3)
    topic = "controlled"
    c.create_topic(topic, 1, 3, {"min.insync.replicas": "2"})
    c.wait_isr(topic, 0, 3)
    prod = ContinuousProducer(c.bootstrap, topic).start()
    wait_until(lambda: prod.count() > 200, 60, "the first acknowledgements")
    victim = c.leader_of(topic, 0)
    others = [i for i in (1, 2, 3) if i != victim]
    t_term = time.monotonic()
    assert c.node(victim).stop() == 0, "controlled shutdown did not exit cleanly"
    stopped_after = time.monotonic() - t_term
    for i in others:
        leader = c.partition_state(topic, 0, via=i)[0]
        assert leader in others, f"node {i} still names leader {leader} after the clean exit"
    before = prod.count()
    wait_resumed(prod, before, f"the controlled shutdown of node {victim}")
    times = [t for t in prod.ack_times() if t >= t_term - 1]
    gap = max((b - a for a, b in zip(times, times[1:])), default=0.0)
    print(f"\ncontrolled shutdown of leader {victim}: exited after {stopped_after:.2f}s, "
          f"longest gap between acknowledgements {gap:.2f}s")
    c.node(victim).restart()
    c.wait_isr(topic, 0, 3, timeout=90)
    prod.stop()
    assert not prod.errors, prod.errors[:3]
    check_exactly_once(c, topic, prod)
