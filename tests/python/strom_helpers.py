"""Client-side helpers shared by the compatibility tests: record generation, topic
creation and "consume everything" loops for kafka-python and confluent-kafka.

Consumers never join a group (Strom has no group coordinator yet): they `assign`
partitions explicitly and never commit.
"""

import random
import time

CONFLUENT_GROUP_ID = "strom-compat-assign-only"  # required by confluent-kafka, never used to commit


def wait_until(cond, timeout, what, interval=0.05):
    """Poll `cond()` until truthy; returns its value or raises with `what`."""
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = cond()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what} (last: {last!r})")


# -- records ---------------------------------------------------------------------

class Rec:
    __slots__ = ("i", "key", "value", "headers", "partition")

    def __init__(self, i, key, value, headers, partition):
        self.i, self.key, self.value, self.headers, self.partition = i, key, value, headers, partition


def make_records(n, partitions, seed, explicit_every=2):
    """`n` keyed records with 2 headers each: distinct keys, values that include
    binary bytes (NUL, 0xff, non-UTF-8), empty values and one null value (tombstone).
    Every `explicit_every`-th record names its partition explicitly; the others go
    through the client's key-hash partitioner (partition None)."""
    rnd = random.Random(seed)
    out = []
    for i in range(n):
        key = b"key-%07d-" % i + bytes([i & 0xFF, (i >> 8) & 0xFF, 0x00, 0xFF])
        kind = i % 10
        if i == 3:
            value = None
        elif kind == 1:
            value = b""
        elif kind in (2, 5):
            value = bytes([0x00, 0xFF, 0xFE]) + rnd.randbytes(rnd.randint(1, 300))
        elif kind == 7:
            value = ("värde-%d-ü€" % i).encode("utf-8") + b"\n\r\t"
        else:
            value = b"value-%d-" % i + b"x" * (i % 64)
        headers = [("seq", b"%d" % i), ("bin", bytes([i & 0xFF, 0x00, 0xFF]) + (b"" if i % 3 else b"h"))]
        partition = (i // explicit_every) % partitions if explicit_every and i % explicit_every == 0 else None
        out.append(Rec(i, key, value, headers, partition))
    return out


def norm_headers(h):
    """Headers as a list of (str, bytes) tuples in wire order; None -> []."""
    if not h:
        return []
    return [(k if isinstance(k, str) else k.decode(), v) for k, v in h]


def check_consumed(records, delivered, consumed, partitions):
    """records: produced Rec list (produce order); delivered: {i: (partition, offset)} from
    acks; consumed: {partition: [(offset, key, value, headers)]}. Asserts byte identity,
    per-partition produce order, contiguous offsets from 0 and the total count."""
    assert len(delivered) == len(records), f"{len(records) - len(delivered)} records were not acked"
    by_pos = {}
    per_part_produce = {p: [] for p in range(partitions)}
    for r in records:
        p, off = delivered[r.i]
        if r.partition is not None:
            assert p == r.partition, f"record {r.i} asked for partition {r.partition}, acked on {p}"
        by_pos[(p, off)] = r
        per_part_produce[p].append((off, r.i))
    total = 0
    for p in range(partitions):
        # Acked offsets within a partition must increase in produce order.
        offs = [o for o, _ in per_part_produce[p]]
        assert offs == sorted(offs), f"partition {p}: acked offsets are not in produce order"
        assert offs == list(range(len(offs))), (
            f"partition {p}: acked offsets not contiguous from 0: first {offs[:5]}, "
            f"len {len(offs)}, last {offs[-5:]}")
        got = consumed.get(p, [])
        got_offsets = [g[0] for g in got]
        assert got_offsets == list(range(len(got))), (
            f"partition {p}: consumed offsets not contiguous from 0 "
            f"(first {got_offsets[:5]}, last {got_offsets[-5:]}, n={len(got)})")
        assert len(got) == len(offs), f"partition {p}: consumed {len(got)} records, produced {len(offs)}"
        for off, key, value, headers in got:
            r = by_pos[(p, off)]
            assert key == r.key, f"p{p}@{off}: key {key!r} != {r.key!r} (record {r.i})"
            assert value == r.value, f"p{p}@{off}: value {value!r:.80} != {r.value!r:.80} (record {r.i})"
            assert norm_headers(headers) == r.headers, (
                f"p{p}@{off}: headers {headers!r} != {r.headers!r} (record {r.i})")
        total += len(got)
    assert total == len(records)


# -- confluent-kafka ---------------------------------------------------------------

def ck_admin(bootstrap):
    from confluent_kafka.admin import AdminClient
    return AdminClient({"bootstrap.servers": bootstrap})


def ck_create_topic(bootstrap, topic, partitions, config=None):
    from confluent_kafka.admin import NewTopic
    admin = ck_admin(bootstrap)
    fs = admin.create_topics([NewTopic(topic, num_partitions=partitions, replication_factor=1,
                                       config=config or {})], operation_timeout=10, request_timeout=15)
    fs[topic].result(timeout=20)
    ck_wait_topic(admin, topic, partitions)
    return admin


def ck_wait_topic(admin, topic, partitions, timeout=20):
    def ready():
        md = admin.list_topics(topic, timeout=5)
        t = md.topics.get(topic)
        if t is None or t.error is not None or len(t.partitions) != partitions:
            return False
        return all(pm.leader >= 0 for pm in t.partitions.values())
    wait_until(ready, timeout, f"metadata for {topic} with {partitions} partitions and leaders")


def ck_producer(bootstrap, **extra):
    from confluent_kafka import Producer
    conf = {
        "bootstrap.servers": bootstrap,
        "enable.idempotence": False,  # Strom has no InitProducerId yet
        "linger.ms": 5,
        "acks": "all",
        "queue.buffering.max.messages": 500000,
        "queue.buffering.max.kbytes": 1048576,
    }
    conf.update(extra)
    return Producer(conf)


def ck_produce_all(producer, topic, records, timestamps=None, flush_timeout=120):
    """Produce `records` in order; returns {i: (partition, offset)} from delivery reports,
    raising on any delivery error."""
    delivered, errors = {}, []

    def cb_for(i):
        def cb(err, msg):
            if err is not None:
                errors.append((i, err))
            else:
                delivered[i] = (msg.partition(), msg.offset())
        return cb

    for r in records:
        kwargs = dict(key=r.key, value=r.value, headers=r.headers, on_delivery=cb_for(r.i))
        if r.partition is not None:
            kwargs["partition"] = r.partition
        if timestamps is not None:
            kwargs["timestamp"] = timestamps[r.i]
        while True:
            try:
                producer.produce(topic, **kwargs)
                break
            except BufferError:
                producer.poll(0.05)
        producer.poll(0)
    remaining = producer.flush(flush_timeout)
    assert remaining == 0, f"{remaining} messages still undelivered after {flush_timeout}s"
    assert not errors, f"{len(errors)} delivery errors, first: {errors[:3]}"
    return delivered


def ck_consumer(bootstrap, **extra):
    from confluent_kafka import Consumer
    conf = {
        "bootstrap.servers": bootstrap,
        "group.id": CONFLUENT_GROUP_ID,
        "enable.auto.commit": False,
        "enable.auto.offset.store": False,
        "auto.offset.reset": "earliest",
        "enable.partition.eof": False,
    }
    conf.update(extra)
    return Consumer(conf)


def ck_consume_all(bootstrap, topic, partitions, expected_total, timeout=120, **extra):
    """assign() every partition from offset 0 and read until `expected_total` records
    arrived (or timeout). Returns {partition: [(offset, key, value, headers)]}."""
    from confluent_kafka import TopicPartition
    c = ck_consumer(bootstrap, **extra)
    try:
        c.assign([TopicPartition(topic, p, 0) for p in range(partitions)])
        got = {p: [] for p in range(partitions)}
        n = 0
        deadline = time.monotonic() + timeout
        while n < expected_total and time.monotonic() < deadline:
            for m in c.consume(num_messages=10000, timeout=0.5):
                if m.error() is not None:
                    raise AssertionError(f"consumer error: {m.error()}")
                got[m.partition()].append((m.offset(), m.key(), m.value(), m.headers()))
                n += 1
        assert n >= expected_total, f"consumed {n} of {expected_total} records within {timeout}s"
        # Nothing beyond what was produced: a short extra poll must stay empty.
        extra_msgs = c.consume(num_messages=100, timeout=0.5)
        assert not extra_msgs, f"{len(extra_msgs)} unexpected extra records after the end"
        return got
    finally:
        c.close()


# -- kafka-python ------------------------------------------------------------------

def kp_create_topic(bootstrap, topic, partitions):
    from kafka.admin import KafkaAdminClient, NewTopic
    admin = KafkaAdminClient(bootstrap_servers=bootstrap, client_id="strom-compat-admin")
    try:
        admin.create_topics([NewTopic(topic, num_partitions=partitions, replication_factor=1)],
                            timeout_ms=15000)
    finally:
        admin.close()
    # Wait until a plain client sees every partition with a leader.
    from kafka import KafkaConsumer
    c = KafkaConsumer(bootstrap_servers=bootstrap, group_id=None, enable_auto_commit=False)
    try:
        wait_until(lambda: len(c.partitions_for_topic(topic) or ()) == partitions, 20,
                   f"kafka-python metadata for {topic}")
    finally:
        c.close()


def kp_producer(bootstrap, **extra):
    from kafka import KafkaProducer
    conf = dict(
        bootstrap_servers=bootstrap,
        # kafka-python 3.x defaults to enable_idempotence=True; Strom has no InitProducerId yet.
        enable_idempotence=False,
        acks="all",
        linger_ms=5,
        batch_size=256 * 1024,
        max_block_ms=120000,
    )
    conf.update(extra)
    return KafkaProducer(**conf)


def kp_produce_all(producer, topic, records, timestamps=None, timeout=300):
    futures = []
    for r in records:
        futures.append(producer.send(topic, key=r.key, value=r.value, headers=r.headers,
                                     partition=r.partition,
                                     timestamp_ms=None if timestamps is None else timestamps[r.i]))
    producer.flush(timeout=timeout)
    delivered = {}
    for r, f in zip(records, futures):
        md = f.get(timeout=timeout)
        delivered[r.i] = (md.partition, md.offset)
    return delivered


def kp_consumer(bootstrap, **extra):
    from kafka import KafkaConsumer
    conf = dict(bootstrap_servers=bootstrap, group_id=None, enable_auto_commit=False,
                auto_offset_reset="earliest", max_poll_records=5000)
    conf.update(extra)
    return KafkaConsumer(**conf)


def kp_consume_all(bootstrap, topic, partitions, expected_total, timeout=300, **extra):
    from kafka import TopicPartition
    c = kp_consumer(bootstrap, **extra)
    try:
        tps = [TopicPartition(topic, p) for p in range(partitions)]
        c.assign(tps)
        for tp in tps:
            c.seek(tp, 0)
        got = {p: [] for p in range(partitions)}
        n = 0
        deadline = time.monotonic() + timeout
        while n < expected_total and time.monotonic() < deadline:
            for tp, recs in c.poll(timeout_ms=500).items():
                for m in recs:
                    got[tp.partition].append((m.offset, m.key, m.value, m.headers))
                    n += 1
        assert n >= expected_total, f"consumed {n} of {expected_total} records within {timeout}s"
        extra_recs = sum(len(v) for v in c.poll(timeout_ms=500).values())
        assert extra_recs == 0, f"{extra_recs} unexpected extra records after the end"
        return got
    finally:
        c.close()
