"""Transactions (issue 5) with confluent-kafka: commit/abort visibility under
read_committed vs read_uncommitted, zombie fencing, a consume-transform-produce
exactly-once loop with a consumer group, timeouts (aborted by the coordinator,
and above transaction.max.timeout.ms)."""

import uuid

import pytest

from strom_helpers import ck_create_topic, wait_until


def txn_producer(bootstrap, tid, **extra):
    from confluent_kafka import Producer
    conf = {"bootstrap.servers": bootstrap, "transactional.id": tid, "linger.ms": 5}
    conf.update(extra)
    return Producer(conf)


def read_all(bootstrap, topic, partitions, isolation, expect_at_least, timeout=30, settle=1.0):
    """Values read from every partition from offset 0, after `expect_at_least`
    arrived and nothing more came for `settle` seconds."""
    import time
    from confluent_kafka import Consumer, TopicPartition
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": f"check-{uuid.uuid4()}",
                  "enable.auto.commit": False, "isolation.level": isolation,
                  "enable.partition.eof": False})
    try:
        c.assign([TopicPartition(topic, p, 0) for p in range(partitions)])
        got = []
        deadline = time.time() + timeout
        quiet_since = time.time()
        while time.time() < deadline:
            m = c.poll(0.2)
            if m is None:
                if len(got) >= expect_at_least and time.time() - quiet_since >= settle:
                    break
                continue
            assert m.error() is None, m.error()
            got.append(m.value().decode())
            quiet_since = time.time()
        return got
    finally:
        c.close()


def test_commit_and_abort_visibility(strom):
    bootstrap, _, _ = strom
    ck_create_topic(bootstrap, "tx-out", 2)
    p = txn_producer(bootstrap, "tx-vis")
    p.init_transactions(20)
    p.begin_transaction()
    for i in range(100):
        p.produce("tx-out", value=f"c1-{i}", partition=i % 2)
    p.commit_transaction(20)
    p.begin_transaction()
    for i in range(50):
        p.produce("tx-out", value=f"a-{i}", partition=i % 2)
    p.flush(20)
    p.abort_transaction(20)
    p.begin_transaction()
    for i in range(30):
        p.produce("tx-out", value=f"c2-{i}", partition=i % 2)
    p.commit_transaction(20)

    committed = read_all(bootstrap, "tx-out", 2, "read_committed", 130)
    assert sorted(committed) == sorted([f"c1-{i}" for i in range(100)] + [f"c2-{i}" for i in range(30)])
    uncommitted = read_all(bootstrap, "tx-out", 2, "read_uncommitted", 180)
    assert len(uncommitted) == 180
    assert {v for v in uncommitted if v.startswith("a-")} == {f"a-{i}" for i in range(50)}


def test_open_transaction_holds_back_read_committed(strom):
    bootstrap, _, _ = strom
    ck_create_topic(bootstrap, "tx-open", 1)
    p = txn_producer(bootstrap, "tx-open-1")
    p.init_transactions(20)
    p.begin_transaction()
    p.produce("tx-open", value="pending", partition=0)
    p.flush(20)
    assert read_all(bootstrap, "tx-open", 1, "read_committed", 0, timeout=3) == []
    assert read_all(bootstrap, "tx-open", 1, "read_uncommitted", 1) == ["pending"]
    p.commit_transaction(20)
    assert read_all(bootstrap, "tx-open", 1, "read_committed", 1) == ["pending"]


def test_zombie_is_fenced(strom):
    from confluent_kafka import KafkaException
    bootstrap, _, _ = strom
    ck_create_topic(bootstrap, "tx-z", 1)
    old = txn_producer(bootstrap, "tx-zombie")
    old.init_transactions(20)
    old.begin_transaction()
    old.produce("tx-z", value="zombie", partition=0)
    old.flush(20)
    new = txn_producer(bootstrap, "tx-zombie")
    new.init_transactions(20)  # fences `old` and aborts its transaction
    new.begin_transaction()
    new.produce("tx-z", value="new", partition=0)
    new.commit_transaction(20)
    with pytest.raises(KafkaException) as e:
        old.produce("tx-z", value="zombie-2", partition=0)
        old.commit_transaction(20)
    err = e.value.args[0]
    assert err.fatal() or err.txn_requires_abort() or "fenc" in err.str().lower(), err
    assert read_all(bootstrap, "tx-z", 1, "read_committed", 1) == ["new"]


def test_consume_transform_produce_exactly_once(strom):
    from confluent_kafka import Consumer, Producer, TopicPartition
    bootstrap, _, _ = strom
    ck_create_topic(bootstrap, "ctp-in", 2)
    ck_create_topic(bootstrap, "ctp-out", 2)
    src = Producer({"bootstrap.servers": bootstrap, "enable.idempotence": True})
    n = 2000
    for i in range(n):
        src.produce("ctp-in", value=str(i), partition=i % 2)
    assert src.flush(30) == 0

    group = "ctp-group"
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": group,
                         "enable.auto.commit": False, "auto.offset.reset": "earliest",
                         "isolation.level": "read_committed"})
    consumer.subscribe(["ctp-in"])
    producer = txn_producer(bootstrap, "ctp-tx")
    producer.init_transactions(20)
    copied, txn_no = 0, 0
    import time
    deadline = time.time() + 90
    while copied < n and time.time() < deadline:
        msgs = consumer.consume(200, 1.0)
        msgs = [m for m in msgs if m.error() is None]
        if not msgs:
            continue
        producer.begin_transaction()
        for m in msgs:
            producer.produce("ctp-out", value=f"copy-{m.value().decode()}", partition=m.partition())
        producer.send_offsets_to_transaction(
            consumer.position(consumer.assignment()), consumer.consumer_group_metadata(), 20)
        txn_no += 1
        if txn_no % 3 == 0:
            # abort on purpose: rewind and process these again (flushed
            # first: librdkafka purges unsent records on abort)
            assert producer.flush(20) == 0
            producer.abort_transaction(20)
            for tp in {(m.topic(), m.partition()) for m in msgs}:
                first = min(m.offset() for m in msgs if (m.topic(), m.partition()) == tp)
                consumer.seek(TopicPartition(tp[0], tp[1], first))
        else:
            producer.commit_transaction(20)
            copied += len(msgs)
    consumer.close()
    assert copied == n, f"copied {copied} of {n}"

    out = read_all(bootstrap, "ctp-out", 2, "read_committed", n)
    assert sorted(out) == sorted(f"copy-{i}" for i in range(n)), "each input exactly once"
    assert len(read_all(bootstrap, "ctp-out", 2, "read_uncommitted", n)) > n, "aborted copies are in the log"

    # the committed group offsets are the end of the input
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": group})
    committed = c.committed([TopicPartition("ctp-in", 0), TopicPartition("ctp-in", 1)], timeout=10)
    assert sorted(tp.offset for tp in committed) == [n // 2, n // 2]
    c.close()


@pytest.mark.strom_config(**{"transaction.abort.timed.out.transaction.cleanup.interval.ms": 200})
def test_open_transaction_past_its_timeout_is_aborted(strom):
    from confluent_kafka import KafkaException
    bootstrap, _, _ = strom
    ck_create_topic(bootstrap, "tx-to", 1)
    p = txn_producer(bootstrap, "tx-timeout", **{"transaction.timeout.ms": 1500})
    p.init_transactions(20)
    p.begin_transaction()
    p.produce("tx-to", value="late", partition=0)
    p.flush(20)
    # the coordinator aborts it: the partition becomes stable again
    other = txn_producer(bootstrap, "tx-other")
    other.init_transactions(20)
    other.begin_transaction()
    other.produce("tx-to", value="other", partition=0)
    other.commit_transaction(20)
    assert read_all(bootstrap, "tx-to", 1, "read_committed", 1, timeout=20) == ["other"]
    with pytest.raises(KafkaException):
        p.commit_transaction(10)


@pytest.mark.strom_config(**{"transaction.max.timeout.ms": 5000})
def test_timeout_above_maximum_is_refused(strom):
    from confluent_kafka import KafkaException
    bootstrap, _, _ = strom
    p = txn_producer(bootstrap, "tx-too-long", **{"transaction.timeout.ms": 60000})
    with pytest.raises(KafkaException) as e:
        p.init_transactions(20)
    assert "INVALID_TRANSACTION_TIMEOUT" in str(e.value) or "timeout" in str(e.value).lower()


def _read_fast(bootstrap, topic, partitions, isolation):
    """Every value of `topic` up to its high watermarks (read_committed stops
    at the last stable offset, which equals them once no transaction is open)."""
    from confluent_kafka import Consumer, TopicPartition
    import time
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": f"check-{uuid.uuid4()}",
                  "enable.auto.commit": False, "isolation.level": isolation,
                  "enable.partition.eof": True})
    try:
        ends = [c.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1]
                for p in range(partitions)]
        c.assign([TopicPartition(topic, p, 0) for p in range(partitions)])
        got, eof = [], set(p for p in range(partitions) if ends[p] == 0)
        deadline = time.time() + 60
        while len(eof) < partitions and time.time() < deadline:
            for m in c.consume(10000, 0.5):
                if m.error() is not None:
                    assert m.error().code() == -191, m.error()  # _PARTITION_EOF
                    if m.offset() >= ends[m.partition()]:
                        eof.add(m.partition())
                    continue
                got.append(m.value())
        assert len(eof) == partitions, f"did not reach the end of {topic}"
        return got
    finally:
        c.close()


def test_acceptance_2_ctp_process_sigkilled_mid_transaction_exactly_once(strom):
    """Acceptance 2: a consume-transform-produce process copies 50,000
    records, aborts one transaction in ten, is SIGKILLed in the middle of a
    transaction and restarted with the same transactional.id."""
    import os
    import signal
    import subprocess
    import sys
    from confluent_kafka import Consumer, Producer, TopicPartition
    bootstrap, _, _ = strom
    n, parts = 50_000, 3
    ck_create_topic(bootstrap, "acc2-in", parts)
    ck_create_topic(bootstrap, "acc2-out", parts)
    src = Producer({"bootstrap.servers": bootstrap, "enable.idempotence": True,
                    "linger.ms": 20})
    for i in range(n):
        src.produce("acc2-in", value=str(i).encode(), partition=i % parts)
    assert src.flush(60) == 0

    script = os.path.join(os.path.dirname(__file__), "ctp_proc.py")
    args = [sys.executable, script, bootstrap, "acc2-in", "acc2-out", "acc2-group", "acc2-tx",
            str(parts)]
    first = subprocess.Popen(args + ["6"], stdout=subprocess.PIPE, text=True)
    lines = []
    try:
        for line in first.stdout:
            lines.append(line.split())
            if line.startswith("PAUSED"):
                break
        assert lines and lines[-1][0] == "PAUSED", lines
        first.send_signal(signal.SIGKILL)
        first.wait(10)
    finally:
        if first.poll() is None:
            first.kill()
    # the killed transaction is open: read_committed cannot see past it
    second = subprocess.Popen(args, stdout=subprocess.PIPE, text=True)
    try:
        stdout, _ = second.communicate(timeout=90)
    except subprocess.TimeoutExpired:
        second.kill()
        stdout, _ = second.communicate()
        raise AssertionError(f"restarted loop did not finish: {stdout[-3000:]}")
    assert second.returncode == 0, stdout
    out2 = [l.split() for l in stdout.splitlines()]
    assert out2[-1] == ["DONE"]
    start = [int(x) for x in out2[0][1:]]
    assert sum(start) == sum(int(l[1]) for l in lines if l[0] == "COMMIT"), \
        "the restart resumes from the offsets committed by the committed transactions"
    aborted = sum(int(l[1]) for l in lines + out2 if l[0] == "ABORT")
    assert len([l for l in lines + out2 if l[0] == "ABORT"]) >= 2, \
        "one transaction in ten aborted on purpose, in both runs"

    expected = sorted(b"copy-" + str(i).encode() for i in range(n))
    committed = _read_fast(bootstrap, "acc2-out", parts, "read_committed")
    assert sorted(committed) == expected, "each input exactly once"
    uncommitted = _read_fast(bootstrap, "acc2-out", parts, "read_uncommitted")
    # everything committed, the on-purpose aborts and the killed transaction
    assert len(uncommitted) > n + aborted
    assert set(uncommitted) == set(expected)

    c = Consumer({"bootstrap.servers": bootstrap, "group.id": "acc2-group"})
    got = c.committed([TopicPartition("acc2-in", p) for p in range(parts)], timeout=10)
    assert [tp.offset for tp in got] == [n // parts + (1 if p < n % parts else 0)
                                         for p in range(parts)]
    c.close()


@pytest.mark.parametrize("how", ["sigkill", "sigterm"])
@pytest.mark.parametrize("decision", ["commit", "abort"])
def test_acceptance_3_broker_restart_mid_transaction(strom, how, decision):
    """Acceptance 3: the broker restarts while a transaction with records and
    offsets (send_offsets_to_transaction) is open; afterwards the client
    commits or aborts it and the outcome is all-or-nothing, offsets included."""
    from confluent_kafka import Consumer, KafkaError, KafkaException, TopicPartition
    bootstrap = strom.bootstrap
    ck_create_topic(bootstrap, "acc3-out", 2)
    ck_create_topic(bootstrap, "acc3-in", 2)
    group = f"acc3-{how}-{decision}"
    p = txn_producer(bootstrap, f"acc3-tx-{how}-{decision}")
    p.init_transactions(20)
    # a committed first transaction: its offsets are the baseline
    p.begin_transaction()
    p.produce("acc3-out", value=b"first", partition=0)
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": group,
                  "enable.auto.commit": False})
    meta = c.consumer_group_metadata()
    p.send_offsets_to_transaction([TopicPartition("acc3-in", 0, 5), TopicPartition("acc3-in", 1, 7)],
                                  meta, 20)
    p.commit_transaction(20)
    # the open one
    p.begin_transaction()
    for i in range(100):
        p.produce("acc3-out", value=f"open-{i}".encode(), partition=i % 2)
    p.send_offsets_to_transaction([TopicPartition("acc3-in", 0, 50), TopicPartition("acc3-in", 1, 70)],
                                  meta, 20)
    assert p.flush(20) == 0

    if how == "sigterm":
        assert strom.terminate() == 0
    else:
        strom.kill9()
    strom.restart()

    # still open after the restart: nothing of it is visible to read_committed
    assert _read_fast(bootstrap, "acc3-out", 2, "read_uncommitted").count(b"first") == 1
    assert len(_read_fast(bootstrap, "acc3-out", 2, "read_uncommitted")) == 101
    assert read_all(bootstrap, "acc3-out", 2, "read_committed", 1, timeout=10) == ["first"]
    plain = Consumer({"bootstrap.servers": bootstrap, "group.id": group,
                      "isolation.level": "read_uncommitted"})  # require_stable=false
    assert [tp.offset for tp in plain.committed(
        [TopicPartition("acc3-in", 0), TopicPartition("acc3-in", 1)], timeout=10)] == [5, 7]
    # read_committed asks require_stable=true: the offsets pending in the
    # open transaction (reloaded from the log) answer UNSTABLE_OFFSET_COMMIT,
    # which librdkafka retries until its timeout
    stable = Consumer({"bootstrap.servers": bootstrap, "group.id": group,
                       "isolation.level": "read_committed"})
    with pytest.raises(KafkaException) as e:
        stable.committed([TopicPartition("acc3-in", 0)], timeout=3)
    assert e.value.args[0].code() == KafkaError._TIMED_OUT

    if decision == "commit":
        p.commit_transaction(30)
    else:
        p.abort_transaction(30)

    values = sorted(_read_fast(bootstrap, "acc3-out", 2, "read_committed"))
    offsets = [tp.offset for tp in plain.committed(
        [TopicPartition("acc3-in", 0), TopicPartition("acc3-in", 1)], timeout=10)]
    if decision == "commit":
        assert values == sorted([b"first"] + [f"open-{i}".encode() for i in range(100)])
        assert offsets == [50, 70]
    else:
        assert values == [b"first"]
        assert offsets == [5, 7]
    assert [tp.offset for tp in stable.committed(
        [TopicPartition("acc3-in", 0), TopicPartition("acc3-in", 1)], timeout=10)] == offsets
    stable.close()
    plain.close()
    c.close()

    # and it stays so across another restart (replay of the markers)
    strom.kill9()
    strom.restart()
    again = Consumer({"bootstrap.servers": bootstrap, "group.id": group,
                      "isolation.level": "read_committed"})
    assert [tp.offset for tp in again.committed(
        [TopicPartition("acc3-in", 0), TopicPartition("acc3-in", 1)], timeout=10)] == offsets
    again.close()
    assert sorted(_read_fast(bootstrap, "acc3-out", 2, "read_committed")) == values


def test_acceptance_4_kafka_python_transactional_producer(strom):
    """Acceptance 4: kafka-python (>= 3.0 has transactions) commits, aborts
    and sends offsets in a transaction against Strom."""
    from kafka import KafkaConsumer, KafkaProducer, TopicPartition as KTP
    from kafka.structs import OffsetAndMetadata
    bootstrap = strom.bootstrap
    ck_create_topic(bootstrap, "kp-tx", 2)
    ck_create_topic(bootstrap, "kp-in", 1)
    p = KafkaProducer(bootstrap_servers=bootstrap, transactional_id="kp-tx-1")
    p.init_transactions()
    p.begin_transaction()
    for i in range(50):
        p.send("kp-tx", value=f"c-{i}".encode(), partition=i % 2)
    p.commit_transaction()
    p.begin_transaction()
    for i in range(20):
        p.send("kp-tx", value=f"a-{i}".encode(), partition=i % 2)
    p.flush()
    p.abort_transaction()
    # offsets in a transaction, with kafka-python's group metadata
    reader = KafkaConsumer(bootstrap_servers=bootstrap, group_id="kp-group",
                           enable_auto_commit=False)
    p.begin_transaction()
    p.send("kp-tx", value=b"with-offsets", partition=0)
    p.send_offsets_to_transaction({KTP("kp-in", 0): OffsetAndMetadata(42, "", -1)}, "kp-group")
    p.commit_transaction()
    p.close()

    committed = read_all(bootstrap, "kp-tx", 2, "read_committed", 51)
    assert sorted(committed) == sorted([f"c-{i}" for i in range(50)] + ["with-offsets"])
    assert len(read_all(bootstrap, "kp-tx", 2, "read_uncommitted", 71)) == 71
    assert reader.committed(KTP("kp-in", 0)) == 42
    reader.close()
    # kafka-python's read_committed consumer agrees
    kc = KafkaConsumer(bootstrap_servers=bootstrap, isolation_level="read_committed",
                       auto_offset_reset="earliest", consumer_timeout_ms=3000)
    kc.assign([KTP("kp-tx", 0), KTP("kp-tx", 1)])
    kc.seek_to_beginning()
    got = [m.value.decode() for m in kc]
    kc.close()
    assert sorted(got) == sorted(committed)


def test_acceptance_5_admin_describe_list_transactions_and_producers(strom):
    """Acceptance 5: DescribeTransactions / ListTransactions /
    DescribeProducers through kafka-python's admin client (confluent-kafka
    2.16's AdminClient has none of them)."""
    from kafka import TopicPartition as KTP
    from kafka.admin import KafkaAdminClient
    bootstrap = strom.bootstrap
    ck_create_topic(bootstrap, "acc5", 2)
    p = txn_producer(bootstrap, "acc5-tx", **{"transaction.timeout.ms": 45000})
    p.init_transactions(20)
    p.begin_transaction()
    for i in range(10):
        p.produce("acc5", value=f"v{i}".encode(), partition=1)
    assert p.flush(20) == 0
    admin = KafkaAdminClient(bootstrap_servers=bootstrap)

    def listing(**filters):
        # kafka-python answers {broker id: [TransactionListing]}
        return [t for ts in admin.list_transactions(**filters).values() for t in ts]
    try:
        listed = [t for t in listing() if t.transactional_id == "acc5-tx"]
        assert len(listed) == 1 and listed[0].state.value == "Ongoing", listed
        pid = listed[0].producer_id
        assert pid >= 0
        assert [t.transactional_id for t in listing(state_filters=["Ongoing"])] \
            == ["acc5-tx"]
        assert [t.transactional_id for t in listing(producer_id_filters=[pid])] \
            == ["acc5-tx"]
        d = admin.describe_transactions(["acc5-tx"])["acc5-tx"]
        assert d.state.value == "Ongoing"
        assert d.producer_id == pid and d.producer_epoch >= 0
        assert d.transaction_timeout_ms == 45000
        assert d.transaction_start_time_ms > 0
        assert set(d.topic_partitions) == {KTP("acc5", 1)}
        states = admin.describe_producers([KTP("acc5", 1), KTP("acc5", 0)])
        active = states[KTP("acc5", 1)].active_producers
        assert [(s.producer_id, s.producer_epoch, s.last_sequence, s.current_transaction_start_offset)
                for s in active] == [(pid, d.producer_epoch, 9, 0)]
        assert states[KTP("acc5", 0)].active_producers == []

        p.commit_transaction(20)
        d = admin.describe_transactions(["acc5-tx"])["acc5-tx"]
        assert d.state.value == "CompleteCommit" and set(d.topic_partitions) == set()
        assert listing(state_filters=["Ongoing"]) == []
        active = admin.describe_producers([KTP("acc5", 1)])[KTP("acc5", 1)].active_producers
        assert [(s.producer_id, s.current_transaction_start_offset) for s in active] == [(pid, -1)]
    finally:
        admin.close()
