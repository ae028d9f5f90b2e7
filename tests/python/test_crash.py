"""Issue acceptance 3: crashes lose nothing that was acknowledged, recovery drops torn
or corrupt tails, and a clean shutdown is clean.

SIGKILL leaves the page cache intact, so every batch the broker acknowledged (it wrote
it before answering) must be readable after the restart at the very offset the
producer was told. Recovery (an unclean start) must truncate the active segment at
the first batch with a bad length or CRC, so garbage never becomes records.
"""

import os
import random
import re
import struct
import time
from pathlib import Path

import pytest

from strom_helpers import ck_consume_all, ck_create_topic, ck_consumer, ck_producer, wait_until

VALUE_RE = re.compile(rb"^rec-(\d{8})$")


def watermarks(bootstrap, topic, partitions):
    from confluent_kafka import TopicPartition
    c = ck_consumer(bootstrap)
    try:
        return [tuple(c.get_watermark_offsets(TopicPartition(topic, p), timeout=15))
                for p in range(partitions)]
    finally:
        c.close()


def produce_sync(bootstrap, topic, partition, values, **conf):
    """Produce values to one partition, wait for every ack; returns the acked offsets."""
    p = ck_producer(bootstrap, **conf)
    out, errs = [], []

    def cb(err, msg):
        (errs.append(err) if err is not None else out.append(msg.offset()))

    for v in values:
        p.produce(topic, key=v, value=v, partition=partition, on_delivery=cb)
    assert p.flush(30) == 0
    assert not errs, errs
    return out


def active_segment(data_dir, topic, partition):
    logs = sorted(Path(data_dir, f"{topic}-{partition}").glob("*.log"))
    assert logs, f"no segment files in {Path(data_dir, f'{topic}-{partition}')}: " \
                 f"{sorted(os.listdir(data_dir))}"
    assert all(re.fullmatch(r"\d{20}\.log", l.name) for l in logs), [l.name for l in logs]
    return logs[-1]


def batches(path):
    """(position, size) of each record batch in a segment file (v2 framing:
    baseOffset int64, batchLength int32, then batchLength bytes)."""
    data = path.read_bytes()
    out, pos = [], 0
    while pos + 12 <= len(data):
        (length,) = struct.unpack_from(">i", data, pos + 8)
        if length <= 0 or pos + 12 + length > len(data):
            break
        out.append((pos, 12 + length))
        pos += 12 + length
    assert pos == len(data), f"{path} has {len(data) - pos} bytes that are not whole batches"
    return out


# -- acked records survive SIGKILL -------------------------------------------------

@pytest.mark.parametrize("mode", [
    "defaults",
    # fsync before every ack (Strom's durable mode): same guarantees, another code path.
    pytest.param("flush-always", marks=pytest.mark.strom_config(**{"strom.flush.mode": "always"})),
    # 16 KiB segments: the acked records span many rolled segments.
    pytest.param("small-segments", marks=pytest.mark.strom_config(**{"log.segment.bytes": 16384})),
])
def test_kill9_keeps_every_acknowledged_record(strom, mode):
    bootstrap, data_dir, broker = strom
    topic, partitions = "crash-acked", 2
    ck_create_topic(bootstrap, topic, partitions)

    conf = {"acks": "all", "linger.ms": 5, "message.timeout.ms": 30000}
    if mode == "small-segments":
        conf["batch.size"] = 4096  # a batch larger than segment.bytes is RECORD_LIST_TOO_LARGE
    producer = ck_producer(bootstrap, **conf)
    acked = {}          # n -> (partition, offset)
    failed = {}
    outstanding = [0]

    def cb_for(n):
        def cb(err, msg):
            outstanding[0] -= 1
            if err is None:
                acked[n] = (msg.partition(), msg.offset())
            else:
                failed[n] = err
        return cb

    target_acked = 5000
    n = 0
    t_start = time.monotonic()
    deadline = t_start + 60
    # Keep producing right up to the kill, so batches are in flight when it happens.
    while len(acked) < target_acked:
        assert time.monotonic() < deadline, f"only {len(acked)} acks in 60s, failures: {list(failed.items())[:3]}"
        if outstanding[0] >= 2000:  # bound what is in flight, keep serving callbacks
            producer.poll(0.01)
            continue
        v = b"rec-%08d" % n
        try:
            producer.produce(topic, key=v, value=v, partition=n % partitions, on_delivery=cb_for(n))
            outstanding[0] += 1
            n += 1
        except BufferError:
            pass
        producer.poll(0)
    failed_before_kill = dict(failed)
    broker.kill9()
    sent = n
    # Whatever is still queued or in flight was never acknowledged: drop it, collect reports.
    producer.purge(in_queue=True, in_flight=True, blocking=True)
    producer.flush(10)
    del producer
    # With a live broker and retries, nothing may fail before the kill.
    assert not failed_before_kill, (
        f"{len(failed_before_kill)} deliveries failed while the broker was up, e.g. "
        f"{sorted(failed_before_kill.items())[:3]}")
    segments = sorted(Path(data_dir, f"{topic}-0").glob("*.log"))
    print(f"{mode}: sent {sent}, acked {len(acked)} in {time.monotonic() - t_start:.2f}s before "
          f"SIGKILL, not acked {len(failed)}, "
          f"{len(segments)} segment(s) in {topic}-0")
    if mode == "small-segments":
        assert len(segments) > 2, f"expected rolled segments with log.segment.bytes=16384: {segments}"

    broker.restart()
    marks = watermarks(bootstrap, topic, partitions)
    for p, (low, high) in enumerate(marks):
        max_acked = max((off for q, off in acked.values() if q == p), default=-1)
        assert low == 0 and high >= max_acked + 1, (
            f"partition {p}: watermarks {low, high} after restart, highest acked offset {max_acked}")

    consumed = ck_consume_all(bootstrap, topic, partitions, sum(h for _, h in marks))
    seen = set()
    for p in range(partitions):
        recs = consumed[p]
        assert [r[0] for r in recs] == list(range(marks[p][1])), f"partition {p}: offsets not contiguous"
        for off, key, value, _ in recs:
            m = VALUE_RE.match(value or b"")
            assert m and key == value, f"p{p}@{off}: garbage record key={key!r} value={value!r}"
            num = int(m.group(1))
            assert num < sent and num % partitions == p, f"p{p}@{off}: record {num} does not belong here"
            assert num not in seen, f"record {num} stored twice"
            seen.add(num)
    for num, (p, off) in acked.items():
        got = consumed[p][off][2] if off < len(consumed[p]) else None
        assert got == b"rec-%08d" % num, f"acked record {num} at p{p}@{off}: read {got!r}"

    # Producing continues at the old end.
    for p in range(partitions):
        v = b"rec-%08d" % (sent + p)
        (off,) = produce_sync(bootstrap, topic, p, [v])
        assert off == marks[p][1], f"partition {p}: new record at {off}, log end was {marks[p][1]}"
    after = ck_consume_all(bootstrap, topic, partitions, sum(h for _, h in marks) + partitions)
    for p in range(partitions):
        assert after[p][-1][0] == marks[p][1] and after[p][-1][2] == b"rec-%08d" % (sent + p)


# -- torn and corrupt tails are truncated on recovery -------------------------------

def _tail_random(seg):
    return random.Random(1234).randbytes(1500)


def _tail_half_batch(seg):
    pos, size = batches(seg)[0]
    return seg.read_bytes()[pos:pos + 30]


def _tail_zeros(seg):
    return bytes(4096)


def _tail_bad_crc(seg):
    """A whole, well-framed copy of the last batch at the next offset, one payload byte
    flipped: the length is plausible, only the CRC-32C tells it is corrupt."""
    data = seg.read_bytes()
    pos, size = batches(seg)[-1]
    b = bytearray(data[pos:pos + size])
    base, = struct.unpack_from(">q", b, 0)
    last_delta, = struct.unpack_from(">i", b, 23)
    struct.pack_into(">q", b, 0, base + last_delta + 1)
    b[-1] ^= 0x5A
    return bytes(b)


TAILS = {"random-garbage": _tail_random, "half-batch": _tail_half_batch,
         "zeros": _tail_zeros, "bad-crc-batch": _tail_bad_crc}


@pytest.mark.parametrize("tail", sorted(TAILS))
@pytest.mark.strom_config(**{"log.segment.bytes": 16384})
def test_recovery_truncates_bad_tail(strom, tail):
    bootstrap, data_dir, broker = strom
    topic = "crash-tail"
    ck_create_topic(bootstrap, topic, 1)
    values = [b"rec-%08d" % i for i in range(1000)]
    offsets = []
    for chunk in range(10):  # 10 produce calls -> several batches
        offsets += produce_sync(bootstrap, topic, 0, values[chunk * 100:(chunk + 1) * 100])
    assert offsets == list(range(1000))

    broker.kill9()
    # 16 KiB segments: the damaged file is the active one after several rolled ones.
    assert len(list(Path(data_dir, f"{topic}-0").glob("*.log"))) > 1
    seg = active_segment(data_dir, topic, 0)
    good_size = seg.stat().st_size
    batches(seg)  # the file holds only whole batches before we touch it
    junk = TAILS[tail](seg)
    with open(seg, "ab") as f:
        f.write(junk)
    print(f"{seg.name}: {good_size} bytes + {len(junk)} bytes of {tail}")

    broker.restart()
    assert watermarks(bootstrap, topic, 1) == [(0, 1000)]
    assert seg.stat().st_size == good_size, (
        f"{seg.name} is {seg.stat().st_size} bytes after recovery, {good_size} before the "
        f"{tail} tail was appended: the tail was not truncated")
    consumed = ck_consume_all(bootstrap, topic, 1, 1000)
    assert [(o, v) for o, _, v, _ in consumed[0]] == list(enumerate(values))

    (off,) = produce_sync(bootstrap, topic, 0, [b"after-recovery"])
    assert off == 1000
    consumed = ck_consume_all(bootstrap, topic, 1, 1001)
    assert consumed[0][-1][0] == 1000 and consumed[0][-1][2] == b"after-recovery"
    assert [v for _, _, v, _ in consumed[0][:1000]] == values

    # The repaired log survives another crash unchanged.
    broker.kill9()
    broker.restart()
    assert watermarks(bootstrap, topic, 1) == [(0, 1001)]
    batches(active_segment(data_dir, topic, 0))


# -- clean shutdown ------------------------------------------------------------------

def test_sigterm_is_a_clean_shutdown(strom):
    bootstrap, data_dir, broker = strom
    topic = "clean-shutdown"
    ck_create_topic(bootstrap, topic, 1)
    values = [b"rec-%08d" % i for i in range(500)]
    assert produce_sync(bootstrap, topic, 0, values) == list(range(500))

    rc = broker.terminate(timeout=20)
    assert rc == 0, f"SIGTERM exit code {rc}"
    marker = Path(data_dir, ".kafka_cleanshutdown")
    assert marker.exists(), f"no .kafka_cleanshutdown in {data_dir}: {sorted(os.listdir(data_dir))}"
    seg = active_segment(data_dir, topic, 0)
    batches(seg)

    broker.restart()
    assert watermarks(bootstrap, topic, 1) == [(0, 500)]
    consumed = ck_consume_all(bootstrap, topic, 1, 500)
    assert [v for _, _, v, _ in consumed[0]] == values

    # A clean start must not leave the previous clean-shutdown marker in force: after
    # it, a crash with a torn tail has to be recovered like any other crash.
    assert produce_sync(bootstrap, topic, 0, [b"rec-%08d" % 500]) == [500]
    broker.kill9()
    seg = active_segment(data_dir, topic, 0)
    good_size = seg.stat().st_size
    with open(seg, "ab") as f:
        f.write(seg.read_bytes()[:30])
    broker.restart()
    assert watermarks(bootstrap, topic, 1) == [(0, 501)]
    assert seg.stat().st_size == good_size, "torn tail after a clean restart + crash was not truncated"
    assert produce_sync(bootstrap, topic, 0, [b"next"]) == [501]


def test_sigint_is_a_clean_shutdown(strom):
    import signal
    bootstrap, data_dir, broker = strom
    rc = broker.terminate(timeout=20, sig=signal.SIGINT)
    assert rc == 0, f"SIGINT exit code {rc}"
    assert Path(data_dir, ".kafka_cleanshutdown").exists()
