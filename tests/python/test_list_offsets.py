"""ListOffsets: earliest, latest, by timestamp and max-timestamp, seen through
kafka-python, confluent-kafka (consumer and admin APIs) and kcat -Q.

Kafka's rule for a timestamp lookup: the earliest offset whose record timestamp is
>= the target, exact to the record even inside a multi-record (or compressed) batch;
none (-1) when every record is older. Records here carry explicit CreateTime
timestamps, 1 s apart, starting 10 minutes ago (inside any retention and
timestamp-skew limit).
"""

import re
import shutil
import subprocess
import time

import pytest

from strom_helpers import ck_admin, ck_consumer, ck_create_topic, ck_producer, kp_consumer, kp_producer

TOPIC = "list-offsets"
N = 10
# partition -> how the N records are written
LAYOUT = {
    0: "one record per batch",
    1: "one uncompressed batch",
    2: "one gzip batch",
    3: "empty",
}
PARTITIONS = len(LAYOUT)
NONMONO_TOPIC = "list-offsets-nonmono"
NONMONO_DELTAS = [10, 50, 30]  # max timestamp at offset 1, not at the end


def base_ts():
    return (int(time.time() * 1000) - 600_000) // 1000 * 1000


def produce_confluent(bootstrap, topic, partition, timestamps, per_batch, codec="none"):
    p = ck_producer(bootstrap, **{"compression.type": codec, "linger.ms": 200})
    acked = []

    def cb(err, msg):
        assert err is None, err
        acked.append((msg.offset(), msg.timestamp()))

    for i, ts in enumerate(timestamps):
        p.produce(topic, key=b"k%d" % i, value=b"v%d" % i, partition=partition, timestamp=ts,
                  on_delivery=cb)
        if per_batch:
            assert p.flush(30) == 0
    assert p.flush(30) == 0
    return acked


def produce_kafka_python(bootstrap, topic, partition, timestamps, per_batch, codec="none"):
    p = kp_producer(bootstrap, compression_type=None if codec == "none" else codec, linger_ms=200)
    try:
        futs = []
        for i, ts in enumerate(timestamps):
            futs.append(p.send(topic, key=b"k%d" % i, value=b"v%d" % i, partition=partition,
                               timestamp_ms=ts))
            if per_batch:
                p.flush(30)
        p.flush(30)
        return [(f.get(30).offset, None) for f in futs]
    finally:
        p.close(timeout=10)


PRODUCERS = {"confluent": produce_confluent, "kafka-python": produce_kafka_python}


def write_layout(bootstrap, client, t0):
    ck_create_topic(bootstrap, TOPIC, PARTITIONS)
    ts = [t0 + 1000 * k for k in range(N)]
    produce = PRODUCERS[client]
    for part, how in LAYOUT.items():
        if how == "empty":
            continue
        acked = produce(bootstrap, TOPIC, part, ts, per_batch=(how == "one record per batch"),
                        codec="gzip" if "gzip" in how else "none")
        assert [o for o, _ in acked] == list(range(N)), f"partition {part} ({how}) acked {acked}"
    ck_create_topic(bootstrap, NONMONO_TOPIC, 2)
    nm = [t0 + d for d in NONMONO_DELTAS]
    produce(bootstrap, NONMONO_TOPIC, 0, nm, per_batch=True)
    produce(bootstrap, NONMONO_TOPIC, 1, nm, per_batch=False)


def cases(t0):
    """(target timestamp, expected offset or None) for a partition holding N records
    at t0, t0+1000, ..."""
    return [
        (t0 - 86_400_000, 0),      # long before the first record
        (t0 - 1, 0),               # just before
        (t0, 0),                   # exactly the first
        (t0 + 1500, 2),            # between records 1 and 2
        (t0 + 3000, 3),            # exactly at record 3
        (t0 + 7999, 8),
        (t0 + 1000 * (N - 1), N - 1),  # exactly the last
        (t0 + 1000 * (N - 1) + 1, None),  # after the last
        (t0 + 86_400_000, None),
    ]


@pytest.mark.parametrize("client", sorted(PRODUCERS))
def test_list_offsets(strom, client):
    bootstrap, _, _ = strom
    t0 = base_ts()
    write_layout(bootstrap, client, t0)
    from kafka import TopicPartition as KTP
    from confluent_kafka import TopicPartition as CTP
    from confluent_kafka.admin import OffsetSpec

    failures = []

    def expect(what, got, want):
        if got != want:
            failures.append(f"{what}: got {got!r}, want {want!r}")

    # --- kafka-python: beginning_offsets / end_offsets / offsets_for_times --------------
    kc = kp_consumer(bootstrap)
    try:
        tps = [KTP(TOPIC, p) for p in LAYOUT]
        begin = kc.beginning_offsets(tps, timeout_ms=15000)
        end = kc.end_offsets(tps, timeout_ms=15000)
        for p, how in LAYOUT.items():
            n = 0 if how == "empty" else N
            expect(f"kafka-python beginning_offsets p{p} ({how})", begin[KTP(TOPIC, p)], 0)
            expect(f"kafka-python end_offsets p{p} ({how})", end[KTP(TOPIC, p)], n)
            for target, want in cases(t0):
                if how == "empty":
                    want = None
                r = kc.offsets_for_times({KTP(TOPIC, p): target}, timeout_ms=15000)[KTP(TOPIC, p)]
                got = None if r is None else (r.offset, r.timestamp)
                expect(f"kafka-python offsets_for_times p{p} ({how}) ts=t0{target - t0:+d}", got,
                       None if want is None else (want, t0 + 1000 * want))
        for p in (0, 1):
            tp = KTP(NONMONO_TOPIC, p)
            for delta, want in ((0, 0), (20, 1), (40, 1), (50, 1), (51, None)):
                r = kc.offsets_for_times({tp: t0 + delta}, timeout_ms=15000)[tp]
                expect(f"kafka-python offsets_for_times nonmono p{p} ts=t0+{delta}",
                       None if r is None else r.offset, want)
    finally:
        kc.close()

    # --- confluent-kafka consumer: get_watermark_offsets / offsets_for_times ---------
    cc = ck_consumer(bootstrap)
    try:
        for p, how in LAYOUT.items():
            n = 0 if how == "empty" else N
            expect(f"confluent get_watermark_offsets p{p} ({how})",
                   tuple(cc.get_watermark_offsets(CTP(TOPIC, p), timeout=15)), (0, n))
            targets = cases(t0)
            # A partition may appear only once per request: ask one target at a time.
            for target, want in targets:
                (r,) = cc.offsets_for_times([CTP(TOPIC, p, target)], timeout=15)
                assert r.error is None, r.error
                if how == "empty" or want is None:
                    want = -1
                expect(f"confluent offsets_for_times p{p} ({how}) ts=t0{target - t0:+d}", r.offset, want)
    finally:
        cc.close()

    # --- confluent-kafka admin: list_offsets earliest/latest/max_timestamp/for_timestamp
    admin = ck_admin(bootstrap)

    def admin_offset(topic, p, spec):
        fut = admin.list_offsets({CTP(topic, p): spec}, request_timeout=15)[CTP(topic, p)]
        info = fut.result(timeout=20)
        return info.offset, info.timestamp

    for p, how in LAYOUT.items():
        n = 0 if how == "empty" else N
        expect(f"admin earliest p{p}", admin_offset(TOPIC, p, OffsetSpec.earliest())[0], 0)
        expect(f"admin latest p{p}", admin_offset(TOPIC, p, OffsetSpec.latest())[0], n)
        expect(f"admin for_timestamp(t0+3000) p{p}",
               admin_offset(TOPIC, p, OffsetSpec.for_timestamp(t0 + 3000)),
               (-1, -1) if how == "empty" else (3, t0 + 3000))
        if how != "empty":
            expect(f"admin max_timestamp p{p} ({how})",
                   admin_offset(TOPIC, p, OffsetSpec.max_timestamp()), (N - 1, t0 + 1000 * (N - 1)))
    for p in (0, 1):
        expect(f"admin max_timestamp nonmono p{p}",
               admin_offset(NONMONO_TOPIC, p, OffsetSpec.max_timestamp()), (1, t0 + 50))

    # --- kcat -Q (librdkafka 2.0.2's offsets_for_times) ------------------------------
    kcat = shutil.which("kcat")
    assert kcat, "kcat is not installed"
    for target, want in ((t0 - 1, 0), (t0 + 4500, 5), (t0 + 1000 * N, -1)):
        out = subprocess.run([kcat, "-Q", "-b", bootstrap, "-t", f"{TOPIC}:1:{target}"],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=60)
        text = out.stdout.decode(errors="replace")
        m = re.search(r"\[1\]\s+offset\s+(-?\d+)", text)
        expect(f"kcat -Q p1 ts=t0{target - t0:+d}",
               int(m.group(1)) if m else f"unparsed: {text!r} / {out.stderr[-500:]!r}", want)

    assert not failures, "ListOffsets mismatches:\n  " + "\n  ".join(failures)
