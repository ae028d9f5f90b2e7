"""min.insync.replicas on one node (issue 7), seen through confluent-kafka and
kafka-python: a topic whose min.insync.replicas exceeds its ISR (one node: the
leader alone) refuses acks=all writes with NOT_ENOUGH_REPLICAS and appends
nothing; acks=1 writes go through. The config is validated (>= 1) and described.
"""

import pytest

from strom_helpers import ck_admin, ck_consumer, ck_create_topic, ck_producer, kp_producer

TOPIC = "misr"


def produce_one(producer, topic, value):
    """Produce one record and flush; returns the delivery report's (error, offset)."""
    out = []
    producer.produce(topic, value=value, partition=0,
                     on_delivery=lambda err, msg: out.append((err, msg.offset())))
    assert producer.flush(15) == 0, "delivery report did not come"
    return out[0]


def watermarks(bootstrap, topic):
    c = ck_consumer(bootstrap, **{"group.id": "misr-check"})
    try:
        from confluent_kafka import TopicPartition
        return c.get_watermark_offsets(TopicPartition(topic, 0), timeout=10)
    finally:
        c.close()


def test_min_insync_replicas_confluent_and_kafka_python(strom):
    from confluent_kafka import KafkaError, KafkaException
    from confluent_kafka.admin import ConfigResource, NewTopic

    bootstrap, _, _ = strom
    admin = ck_admin(bootstrap)

    # validated: at least 1
    fs = admin.create_topics([NewTopic("misr-bad", 1, 1, config={"min.insync.replicas": "0"})],
                             request_timeout=15)
    with pytest.raises(KafkaException) as e:
        fs["misr-bad"].result(timeout=20)
    assert e.value.args[0].code() == KafkaError.INVALID_CONFIG

    ck_create_topic(bootstrap, TOPIC, 1, {"min.insync.replicas": "2"})
    res = ConfigResource(ConfigResource.Type.TOPIC, TOPIC)
    described = admin.describe_configs([res])[res].result(timeout=20)
    assert described["min.insync.replicas"].value == "2"

    # acks=all without retries: the delivery report carries the broker's error
    err, _ = produce_one(ck_producer(bootstrap, acks="all", retries=0), TOPIC, b"refused")
    assert err is not None and err.code() == KafkaError.NOT_ENOUGH_REPLICAS, err
    assert watermarks(bootstrap, TOPIC) == (0, 0), "a refused acks=all write appended nothing"

    # kafka-python sees the same error
    from kafka.errors import NotEnoughReplicasError
    kp = kp_producer(bootstrap, acks="all", retries=0)
    try:
        with pytest.raises(NotEnoughReplicasError):
            kp.send(TOPIC, value=b"refused too", partition=0).get(timeout=15)
    finally:
        kp.close()
    assert watermarks(bootstrap, TOPIC) == (0, 0)

    # acks=1 is not held to min.insync.replicas
    err, offset = produce_one(ck_producer(bootstrap, acks="1"), TOPIC, b"accepted")
    assert err is None and offset == 0, err
    assert watermarks(bootstrap, TOPIC) == (0, 1)

    # lowering it (IncrementalAlterConfigs) lets acks=all through at once
    from confluent_kafka.admin import AlterConfigOpType, ConfigEntry
    res = ConfigResource(ConfigResource.Type.TOPIC, TOPIC, incremental_configs=[
        ConfigEntry("min.insync.replicas", "1", incremental_operation=AlterConfigOpType.SET)])
    admin.incremental_alter_configs([res])[res].result(timeout=20)
    err, offset = produce_one(ck_producer(bootstrap, acks="all", retries=0), TOPIC, b"now accepted")
    assert err is None and offset == 1, err
