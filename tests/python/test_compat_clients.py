"""Issue acceptance 1: kafka-python and confluent-kafka, every codec.

Each (client, codec) pair: create an 8-partition topic with the client's admin API
(CreateTopics), produce keyed records with 2 headers each (binary keys/values, empty
values, one null value; half with an explicit partition, half through the key-hash
partitioner), then assign all 8 partitions from offset 0 and read everything back:
byte-identical key/value/headers, per-partition order = produce order, offsets
contiguous from 0, total count.
"""

import time

import pytest

from strom_helpers import (check_consumed, ck_consume_all, ck_create_topic, ck_produce_all,
                           ck_producer, kp_consume_all, kp_create_topic, kp_produce_all,
                           kp_producer, make_records)

PARTITIONS = 8
CODECS = ["none", "gzip", "snappy", "lz4", "zstd"]

# 100k records per (client, codec). Measured against the debug broker on 2 cores:
# confluent-kafka ~2 s per codec, kafka-python ~7 s (produce ~4.5 s, consume ~2.5 s),
# well under the ~40 s per codec that would call for smaller counts.
COUNTS = {(client, c): 100_000 for client in ("confluent", "kafka-python") for c in CODECS}


@pytest.mark.parametrize("codec", CODECS)
def test_confluent_kafka_roundtrip(strom, codec):
    bootstrap, _, _ = strom
    n = COUNTS[("confluent", codec)]
    topic = f"compat-confluent-{codec}"
    ck_create_topic(bootstrap, topic, PARTITIONS)
    records = make_records(n, PARTITIONS, seed=CODECS.index(codec))

    t0 = time.monotonic()
    producer = ck_producer(bootstrap, **{"compression.type": codec, "batch.num.messages": 10000})
    delivered = ck_produce_all(producer, topic, records)
    t1 = time.monotonic()
    consumed = ck_consume_all(bootstrap, topic, PARTITIONS, n)
    t2 = time.monotonic()
    print(f"confluent-kafka {codec}: produced {n} in {t1 - t0:.1f}s, consumed in {t2 - t1:.1f}s")
    check_consumed(records, delivered, consumed, PARTITIONS)


@pytest.mark.parametrize("codec", CODECS)
def test_kafka_python_roundtrip(strom, codec):
    bootstrap, _, _ = strom
    n = COUNTS[("kafka-python", codec)]
    topic = f"compat-kafka-python-{codec}"
    kp_create_topic(bootstrap, topic, PARTITIONS)
    records = make_records(n, PARTITIONS, seed=1000 + CODECS.index(codec))

    t0 = time.monotonic()
    producer = kp_producer(bootstrap, compression_type=None if codec == "none" else codec)
    try:
        delivered = kp_produce_all(producer, topic, records)
    finally:
        producer.close(timeout=10)
    t1 = time.monotonic()
    consumed = kp_consume_all(bootstrap, topic, PARTITIONS, n)
    t2 = time.monotonic()
    print(f"kafka-python {codec}: produced {n} in {t1 - t0:.1f}s, consumed in {t2 - t1:.1f}s")
    check_consumed(records, delivered, consumed, PARTITIONS)


def test_cross_client_confluent_to_kafka_python(strom):
    """What librdkafka wrote (zstd), kafka-python reads byte-identically, and back."""
    bootstrap, _, _ = strom
    n = 5000
    topic = "compat-cross"
    ck_create_topic(bootstrap, topic, PARTITIONS)
    records = make_records(n, PARTITIONS, seed=77)
    delivered = ck_produce_all(ck_producer(bootstrap, **{"compression.type": "zstd"}), topic, records)
    check_consumed(records, delivered, kp_consume_all(bootstrap, topic, PARTITIONS, n), PARTITIONS)

    topic2 = "compat-cross-2"
    kp_create_topic(bootstrap, topic2, PARTITIONS)
    producer = kp_producer(bootstrap, compression_type="lz4")
    try:
        delivered2 = kp_produce_all(producer, topic2, records)
    finally:
        producer.close(timeout=10)
    check_consumed(records, delivered2, ck_consume_all(bootstrap, topic2, PARTITIONS, n), PARTITIONS)
