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


LAG_TOPIC = "metrics-lag"
LAG_GROUP = "metrics-lag-readers"


def strom_cli(bootstrap, *args, as_json=True):
    import json
    import subprocess
    from conftest import STROM_BIN
    argv = [str(STROM_BIN), *args] + (["--json"] if as_json else [])
    out = subprocess.run(argv, env={"STROM_BROKERS": bootstrap},
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, f"strom {args}: {out.stderr}"
    return json.loads(out.stdout) if as_json else out.stdout


def test_lag_metrics_match_group_describe(strom):
    """A consumer reads part of a topic and commits; the broker's lag series agree
    with `strom group describe`, and follow a later commit."""
    from confluent_kafka import TopicPartition
    from strom_helpers import ck_consumer, wait_until

    bootstrap, _, broker = strom
    ck_create_topic(bootstrap, LAG_TOPIC, PARTITIONS)
    records = make_records(900, PARTITIONS, seed=7)
    ck_produce_all(ck_producer(bootstrap), LAG_TOPIC, records)

    # Read 100 records of partition 0 and 140 of partition 1 (each holds >= 150), commit what was read;
    # partition 2 is never committed.
    c = ck_consumer(bootstrap, **{"group.id": LAG_GROUP})
    reads = {0: 100, 1: 140}
    c.assign([TopicPartition(LAG_TOPIC, p, 0) for p in reads])
    got = {0: 0, 1: 0}

    def poll_some():
        m = c.poll(0.5)
        if m is not None and m.error() is None and got[m.partition()] < reads[m.partition()]:
            got[m.partition()] += 1
            if got[m.partition()] == reads[m.partition()]:
                c.pause([TopicPartition(LAG_TOPIC, m.partition())])
        return got == reads
    wait_until(poll_some, 60, "the consumer's reads", interval=0)
    c.commit(offsets=[TopicPartition(LAG_TOPIC, p, n) for p, n in reads.items()],
             asynchronous=False)

    def lag_series():
        out, families = samples(scrape(broker)[1])
        lag = {(dict(k)["partition"]): v for (n, k), v in out.items()
               if n == "kafka_consumergroup_lag" and dict(k).get("group") == LAG_GROUP}
        cur = {(dict(k)["partition"]): v for (n, k), v in out.items()
               if n == "kafka_consumergroup_current_offset" and dict(k).get("group") == LAG_GROUP}
        assert families.get("kafka_consumergroup_lag") == "gauge"
        return lag, cur

    describe = strom_cli(bootstrap, "group", "describe", LAG_GROUP)[0]
    described = {str(p["partition"]): p for p in describe["partitions"]
                 if p["topic"] == LAG_TOPIC and p["committed"] is not None}
    assert set(described) == {"0", "1"}
    lag, cur = lag_series()
    assert lag == {p: d["lag"] for p, d in described.items()}
    assert cur == {p: d["committed"] for p, d in described.items()}
    assert sum(lag.values()) == describe["total_lag"]
    out, _ = samples(scrape(broker)[1])
    per_partition = {str(p): int(value(out, "kafka_log_log_logendoffset", topic=LAG_TOPIC,
                                       partition=str(p))) for p in range(PARTITIONS)}
    assert sum(per_partition.values()) == len(records)
    assert lag == {"0": per_partition["0"] - 100, "1": per_partition["1"] - 140}
    assert lag["0"] > 0 and lag["1"] > 0

    # A later commit (partition 1 read to its end) shows in the next scrape.
    c.commit(offsets=[TopicPartition(LAG_TOPIC, 1, per_partition["1"])], asynchronous=False)
    c.close()
    lag, cur = lag_series()
    assert lag["1"] == 0 and cur["1"] == per_partition["1"]
    describe = strom_cli(bootstrap, "group", "describe", LAG_GROUP)[0]
    assert sum(lag.values()) == describe["total_lag"]

    # Deleting the group removes its series.
    strom_cli(bootstrap, "group", "delete", LAG_GROUP, as_json=False)
    lag, cur = lag_series()
    assert lag == {} and cur == {}
