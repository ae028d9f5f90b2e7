"""Topic administration through the clients' admin APIs: CreateTopics (and its
TOPIC_ALREADY_EXISTS error), DescribeCluster, DeleteTopics, and topic auto-creation by
Metadata following `auto.create.topics.enable` / `num.partitions`.
"""

from pathlib import Path

import pytest

from strom_helpers import ck_admin, ck_create_topic, ck_producer, ck_wait_topic, wait_until


def produce_one(bootstrap, topic, partition=None, **conf):
    p = ck_producer(bootstrap, **conf)
    res = {}

    def cb(err, msg):
        res["err"], res["p"], res["off"] = err, msg.partition(), msg.offset()

    kwargs = {} if partition is None else {"partition": partition}
    p.produce(topic, key=b"k", value=b"v", on_delivery=cb, **kwargs)
    p.flush(30)
    return res


def test_confluent_admin_create_describe_delete(strom):
    from confluent_kafka import KafkaError, KafkaException
    from confluent_kafka.admin import NewTopic
    bootstrap, data_dir, broker = strom
    admin = ck_create_topic(bootstrap, "adm-a", 8)

    fs = admin.create_topics([NewTopic("adm-a", num_partitions=8, replication_factor=1)],
                             request_timeout=15)
    with pytest.raises(KafkaException) as exc:
        fs["adm-a"].result(timeout=20)
    assert exc.value.args[0].code() == KafkaError.TOPIC_ALREADY_EXISTS, exc.value

    cluster = admin.describe_cluster(request_timeout=15).result(timeout=20)
    assert [(n.id, n.host, n.port) for n in cluster.nodes] == [(1, broker.host, broker.port)]
    assert cluster.controller is not None and cluster.controller.id == 1
    assert cluster.cluster_id, "DescribeCluster returned no cluster id"

    assert produce_one(bootstrap, "adm-a", partition=7)["off"] == 0
    assert produce_one(bootstrap, "adm-a", partition=7)["off"] == 1
    assert Path(data_dir, "adm-a-7").is_dir()

    admin.delete_topics(["adm-a"], request_timeout=15)["adm-a"].result(timeout=20)
    wait_until(lambda: "adm-a" not in admin.list_topics(timeout=5).topics, 20,
               "adm-a to disappear from metadata")
    wait_until(lambda: not Path(data_dir, "adm-a-7").exists(), 20, "adm-a-7 to be removed from disk")

    # Re-created under the same name, it is a new, empty topic.
    ck_create_topic(bootstrap, "adm-a", 2)
    assert produce_one(bootstrap, "adm-a", partition=1)["off"] == 0


def test_kafka_python_admin_create_describe_delete(strom):
    from kafka.admin import KafkaAdminClient, NewTopic
    from kafka.errors import TopicAlreadyExistsError
    bootstrap, data_dir, broker = strom
    admin = KafkaAdminClient(bootstrap_servers=bootstrap)
    try:
        admin.create_topics([NewTopic("adm-kp", num_partitions=3, replication_factor=1)],
                            timeout_ms=15000)
        wait_until(lambda: "adm-kp" in admin.list_topics(), 20, "adm-kp in list_topics()")
        with pytest.raises(TopicAlreadyExistsError):
            admin.create_topics([NewTopic("adm-kp", num_partitions=3, replication_factor=1)],
                                timeout_ms=15000)
        desc = admin.describe_cluster()
        brokers = [(b["broker_id"], b["host"], b["port"]) for b in desc["brokers"]]
        assert brokers == [(1, broker.host, broker.port)], desc
        assert desc["controller_id"] == 1, desc
        admin.delete_topics(["adm-kp"], timeout_ms=15000)
        wait_until(lambda: "adm-kp" not in admin.list_topics(), 20, "adm-kp gone from list_topics()")
    finally:
        admin.close()


@pytest.mark.strom_config(**{"num.partitions": 3})
def test_metadata_auto_creates_with_num_partitions(strom):
    bootstrap, data_dir, _ = strom
    res = produce_one(bootstrap, "auto-created")
    assert res["err"] is None and res["off"] == 0, res
    ck_wait_topic(ck_admin(bootstrap), "auto-created", 3)
    assert sorted(p.name for p in Path(data_dir).glob("auto-created-*")) == \
        ["auto-created-0", "auto-created-1", "auto-created-2"]


@pytest.mark.strom_config(**{"auto.create.topics.enable": "false"})
def test_no_auto_create_when_disabled(strom):
    from confluent_kafka import KafkaError
    bootstrap, data_dir, _ = strom
    md = ck_admin(bootstrap).list_topics("not-there", timeout=10)
    t = md.topics.get("not-there")
    assert t is not None and t.error is not None and \
        t.error.code() == KafkaError.UNKNOWN_TOPIC_OR_PART, t
    res = produce_one(bootstrap, "not-there", **{"message.timeout.ms": 3000})
    assert res.get("err") is not None, f"produce to a missing topic succeeded: {res}"
    assert not list(Path(data_dir).glob("not-there-*"))
    # Explicit creation still works.
    ck_create_topic(bootstrap, "not-there", 1)
    assert produce_one(bootstrap, "not-there")["off"] == 0
