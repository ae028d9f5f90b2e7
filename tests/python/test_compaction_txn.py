"""Compaction of a topic written by transactions (issues 3/5), with confluent-kafka:
committed and aborted transactions (and plain writes) on the same keys, then the log
cleaner runs; a read_committed and a read_uncommitted consumer both see exactly the
latest committed value of every key — an aborted value never shadows a committed one,
and the aborted data is gone from the log — before and after a broker restart.

Background work is polled for (bounded), never slept for: the cleaner runs every 200 ms.
"""

import uuid

import pytest

from strom_helpers import ck_create_topic, ck_producer, wait_until

FAST_BACKGROUND = {
    "log.retention.check.interval.ms": 200,
    "log.cleaner.backoff.ms": 200,
}

TOPIC = "txn-compacted"
KEYS = [f"k{i:02d}" for i in range(20)]


def txn_producer(bootstrap, tid):
    from confluent_kafka import Producer
    p = Producer({"bootstrap.servers": bootstrap, "transactional.id": tid, "linger.ms": 5})
    p.init_transactions(20)
    return p


def in_txn(p, items, commit):
    p.begin_transaction()
    for k, v in items:
        p.produce(TOPIC, key=k, value=v, partition=0)
    p.flush(20)
    if commit:
        p.commit_transaction(20)
    else:
        p.abort_transaction(20)


def read_to_end(bootstrap, isolation, timeout=30):
    """{key: value} and the offsets read from offset 0 until the consumer reports the
    end of the partition (the high watermark, or the last stable offset)."""
    import time
    from confluent_kafka import Consumer, KafkaError, TopicPartition
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": f"check-{uuid.uuid4()}",
                  "enable.auto.commit": False, "isolation.level": isolation,
                  "enable.partition.eof": True})
    try:
        c.assign([TopicPartition(TOPIC, 0, 0)])
        got, offsets = {}, []
        deadline = time.monotonic() + timeout
        while True:
            assert time.monotonic() < deadline, f"{isolation} consumer did not reach the end"
            m = c.poll(0.5)
            if m is None:
                continue
            if m.error():
                assert m.error().code() == KafkaError._PARTITION_EOF, m.error()
                return got, offsets
            got[m.key().decode()] = m.value().decode()
            offsets.append(m.offset())
    finally:
        c.close()


def kp_read_to_end(bootstrap, isolation, timeout=30):
    """kafka-python: {key: value} read from offset 0 until its position reaches the end
    offset (it steps over emptied batches and markers)."""
    import time
    from kafka import KafkaConsumer, TopicPartition
    c = KafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False,
                      isolation_level=isolation)
    tp = TopicPartition(TOPIC, 0)
    try:
        c.assign([tp])
        c.seek(tp, 0)
        end = c.end_offsets([tp])[tp]
        got = {}
        deadline = time.monotonic() + timeout
        while c.position(tp) < end:
            assert time.monotonic() < deadline, f"kafka-python stuck at {c.position(tp)} of {end}"
            for recs in c.poll(timeout_ms=500).values():
                got.update((r.key.decode(), r.value.decode()) for r in recs)
        return got
    finally:
        c.close()


@pytest.mark.strom_config(**FAST_BACKGROUND)
def test_aborted_values_never_survive_compaction(strom):
    bootstrap, _, broker = strom
    ck_create_topic(bootstrap, TOPIC, 1, {
        "cleanup.policy": "compact", "segment.ms": "500", "min.cleanable.dirty.ratio": "0.01",
        "delete.retention.ms": "1000", "file.delete.delay.ms": "0",
    })
    plain = ck_producer(bootstrap)
    for k in KEYS[:5]:
        plain.produce(TOPIC, key=k, value=f"plain-{k}", partition=0)
    assert plain.flush(20) == 0
    a = txn_producer(bootstrap, "compact-a")
    b = txn_producer(bootstrap, "compact-b")
    in_txn(a, [(k, f"c1-{k}") for k in KEYS], commit=True)
    in_txn(b, [(k, f"aborted1-{k}") for k in KEYS], commit=False)
    in_txn(a, [(k, f"c2-{k}") for k in KEYS[10:15]], commit=True)
    in_txn(b, [(k, f"aborted2-{k}") for k in KEYS[5:20]], commit=False)
    # a plain write after an aborted overwrite of the same key wins
    plain.produce(TOPIC, key=KEYS[19], value="plain-last", partition=0)
    assert plain.flush(20) == 0
    in_txn(b, [(KEYS[19], "aborted3")], commit=False)

    latest = {k: f"c1-{k}" for k in KEYS}
    latest.update({k: f"c2-{k}" for k in KEYS[10:15]})
    latest[KEYS[19]] = "plain-last"
    # before cleaning a read_uncommitted consumer sees the aborted values
    got, _ = read_to_end(bootstrap, "read_uncommitted")
    assert got[KEYS[0]] == f"aborted1-{KEYS[0]}"
    assert read_to_end(bootstrap, "read_committed")[0] == latest

    def cleaned():
        got, offsets = read_to_end(bootstrap, "read_uncommitted")
        # one record per key left: every superseded and aborted value is gone
        return (got, offsets) if got == latest and len(offsets) == len(KEYS) else False

    got, offsets = wait_until(cleaned, 60, "the cleaner to remove superseded and aborted values",
                              interval=0.5)
    assert offsets == sorted(offsets)
    committed, c_offsets = read_to_end(bootstrap, "read_committed")
    assert committed == latest and c_offsets == offsets
    # another client: kafka-python, over the emptied batches and stamped markers
    for isolation in ("read_uncommitted", "read_committed"):
        assert kp_read_to_end(bootstrap, isolation) == latest, isolation

    # the cleaned log, its transaction index and producer state survive a restart
    assert broker.terminate() == 0
    broker.restart()
    for isolation in ("read_uncommitted", "read_committed"):
        got, after = read_to_end(bootstrap, isolation)
        assert got == latest and after == offsets, isolation
    # and the producers go on: a new committed value and an aborted one
    a = txn_producer(bootstrap, "compact-a")
    b = txn_producer(bootstrap, "compact-b")
    in_txn(a, [(KEYS[0], "c3")], commit=True)
    in_txn(b, [(KEYS[0], "aborted4")], commit=False)
    latest[KEYS[0]] = "c3"
    wait_until(lambda: read_to_end(bootstrap, "read_uncommitted")[0] == latest, 60,
               "the cleaner to remove the new aborted value", interval=0.5)
    assert read_to_end(bootstrap, "read_committed")[0] == latest


def offset_commits(bootstrap, group, topic, partition):
    """The offsets of every record left in `__consumer_offsets` (1 partition here) for
    the key (group, topic, partition), read_uncommitted, in log order."""
    import struct
    from confluent_kafka import Consumer, KafkaError, TopicPartition

    def s(x):
        return struct.pack(">h", len(x)) + x.encode()
    key = struct.pack(">h", 1) + s(group) + s(topic) + struct.pack(">i", partition)
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": f"reader-{uuid.uuid4()}",
                  "enable.auto.commit": False, "enable.partition.eof": True})
    try:
        c.assign([TopicPartition("__consumer_offsets", 0, 0)])
        out = []
        while True:
            m = c.poll(10)
            assert m is not None, "no end of __consumer_offsets"
            if m.error():
                assert m.error().code() == KafkaError._PARTITION_EOF, m.error()
                return out
            if m.key() == key and m.value() is not None:
                out.append(struct.unpack(">q", m.value()[2:10])[0])
    finally:
        c.close()


@pytest.mark.strom_config(**FAST_BACKGROUND, **{"offsets.topic.num.partitions": 1,
                                                "offsets.topic.segment.bytes": 200})
def test_aborted_txn_offsets_never_win_compaction_of_consumer_offsets(strom):
    """TxnOffsetCommit: a committed offset, then an aborted one for the same partition;
    once `__consumer_offsets` is compacted (tiny segments) only the committed one is
    left, and the group resumes from it after a restart."""
    from confluent_kafka import Consumer, TopicPartition
    bootstrap, _, broker = strom
    ck_create_topic(bootstrap, "src", 1)
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": "g-txn", "enable.auto.commit": False})
    c.assign([TopicPartition("src", 0, 0)])
    p = txn_producer(bootstrap, "offsets-tx")
    for offset, commit in ((5, True), (9, False)):
        p.begin_transaction()
        p.send_offsets_to_transaction([TopicPartition("src", 0, offset)],
                                      c.consumer_group_metadata(), 20)
        if commit:
            p.commit_transaction(20)
        else:
            p.abort_transaction(20)
    c.close()
    # more offset commits of another group roll the aborted records' segment
    other = Consumer({"bootstrap.servers": bootstrap, "group.id": "g-other",
                      "enable.auto.commit": False})
    for i in range(5):
        other.commit(offsets=[TopicPartition("src", 0, i)], asynchronous=False)
    other.close()

    wait_until(lambda: offset_commits(bootstrap, "g-txn", "src", 0) == [5], 60,
               "the cleaner to leave only the committed transactional offset", interval=0.5)
    assert broker.terminate() == 0
    broker.restart()
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": "g-txn", "enable.auto.commit": False})
    try:
        assert c.committed([TopicPartition("src", 0)], timeout=20)[0].offset == 5
    finally:
        c.close()
