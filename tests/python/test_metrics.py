"""The admin listener: /metrics parsed by the Prometheus Python client's own text
parser, its counters checked against what confluent-kafka wrote and read; /health.

Strom stores producer batches verbatim, so bytes-in must equal the bytes in the
partition's segment files on disk, which this test reads itself.
"""

import urllib.request

from prometheus_client.parser import text_string_to_metric_families

from strom_helpers import ck_consume_all, ck_create_topic, ck_produce_all, ck_producer, make_records

TOPIC = "metrics-t"
PARTITIONS = 3
N = 5000


def scrape(broker, path="/metrics"):
    with urllib.request.urlopen(f"http://{broker.host}:{broker.admin_port}{path}", timeout=10) as r:
        return r.status, r.read().decode()


def samples(text):
    """{(sample name, frozenset(labels)): value} over every family."""
    out = {}
    families = {}
    for fam in text_string_to_metric_families(text):
        families[fam.name] = fam.type
        for s in fam.samples:
            out[(s.name, frozenset(s.labels.items()))] = s.value
    return out, families


def value(out, name, **labels):
    return out.get((name, frozenset(labels.items())))


def segment_bytes(data_dir, topic, partitions):
    total = 0
    for p in range(partitions):
        for f in (data_dir / f"{topic}-{p}").glob("*.log"):
            total += f.stat().st_size
    return total


def test_health(strom):
    status, body = scrape(strom, "/health")
    assert status == 200
    assert body.strip() == "ready"


def test_counters_match_what_confluent_kafka_wrote(strom):
    bootstrap, data_dir, broker = strom
    ck_create_topic(bootstrap, TOPIC, PARTITIONS)
    records = make_records(N, PARTITIONS, seed=6)
    ck_produce_all(ck_producer(bootstrap, **{"compression.type": "lz4"}), TOPIC, records)

    out, families = samples(scrape(broker)[1])
    assert families["kafka_server_brokertopicmetrics_messagesin"] == "counter"
    assert families["kafka_network_requestmetrics_totaltimems"] == "histogram"
    assert value(out, "kafka_server_brokertopicmetrics_messagesin_total", topic=TOPIC) == N
    bytes_in = value(out, "kafka_server_brokertopicmetrics_bytesin_total", topic=TOPIC)
    assert bytes_in == segment_bytes(data_dir, TOPIC, PARTITIONS)
    log_size = sum(value(out, "kafka_log_log_size", topic=TOPIC, partition=str(p))
                   for p in range(PARTITIONS))
    assert log_size == bytes_in
    end_offsets = sum(value(out, "kafka_log_log_logendoffset", topic=TOPIC, partition=str(p))
                      for p in range(PARTITIONS))
    assert end_offsets == N
    assert value(out, "kafka_network_requestmetrics_totaltimems_count", request="Produce") >= 1
    assert value(out, "kafka_server_replicamanager_underreplicatedpartitions") == 0
    assert value(out, "kafka_controller_kafkacontroller_activecontrollercount") == 1
    assert value(out, "kafka_controller_kafkacontroller_offlinepartitionscount") == 0
    assert value(out, "kafka_server_replicamanager_leadercount") == \
        value(out, "kafka_server_replicamanager_partitioncount")
    assert value(out, "kafka_server_brokertopicmetrics_bytesout_total", topic=TOPIC) == 0

    # Reading everything once sends every stored byte at least once.
    ck_consume_all(bootstrap, TOPIC, PARTITIONS, N)
    out, _ = samples(scrape(broker)[1])
    bytes_out = value(out, "kafka_server_brokertopicmetrics_bytesout_total", topic=TOPIC)
    assert bytes_out >= bytes_in
    assert value(out, "kafka_network_requestmetrics_totaltimems_count", request="Fetch") >= 1
