"""kcat (Debian's build, librdkafka 2.0.2) against Strom: metadata listing, produce with
every codec, consume back byte-identically, and reading what confluent-kafka wrote.

kcat runs with librdkafka defaults (`api.version.request=true`, stated explicitly
below; `broker.version.fallback` left alone), so it negotiates versions through
ApiVersions like any modern client.
"""

import json
import random
import re
import shutil
import subprocess
import zlib

import pytest

from strom_helpers import ck_create_topic, ck_produce_all, ck_producer, Rec

KCAT = shutil.which("kcat") or shutil.which("kafkacat")
PARTITIONS = 8
N = 100_000
CODECS = ["none", "gzip", "snappy", "lz4", "zstd"]
FMT = r"%p\t%o\t%K\t%S\t%k%s%h\n"
HEADERS = [("a", b"b"), ("bin", b"x\x7f~")]


def kcat(*args, input_bytes=None, timeout=180, check=True):
    assert KCAT, "kcat is not installed (scripts/test installs it with apt-get)"
    cmd = [KCAT, "-X", "api.version.request=true", *args]
    p = subprocess.run(cmd, input=input_bytes, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                       timeout=timeout)
    if check and p.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} exited {p.returncode}\nstderr:\n"
                             f"{p.stderr.decode(errors='replace')[-4000:]}")
    return p


def parse_kcat_output(out):
    """Parse records printed with FMT: `p\\to\\tklen\\tvlen\\t<key><value><headers>\\n`.
    Key and value are read by length, so any bytes (NUL, \\n, \\t) survive."""
    recs = []
    pos = 0
    n = len(out)
    while pos < n:
        fields = []
        for _ in range(4):
            tab = out.index(b"\t", pos)
            fields.append(int(out[pos:tab]))
            pos = tab + 1
        p, off, klen, vlen = fields
        key = None if klen < 0 else out[pos:pos + klen]
        pos += max(klen, 0)
        value = None if vlen < 0 else out[pos:pos + vlen]
        pos += max(vlen, 0)
        nl = out.index(b"\n", pos)
        headers = out[pos:nl]
        pos = nl + 1
        recs.append((p, off, key, value, headers))
    return recs


def kcat_consume_all(bootstrap, topic, timeout=180):
    p = kcat("-C", "-b", bootstrap, "-t", topic, "-e", "-o", "beginning", "-q", "-f", FMT,
             timeout=timeout)
    by_part = {}
    for p_, off, k, v, h in parse_kcat_output(p.stdout):
        by_part.setdefault(p_, []).append((off, k, v, h))
    return by_part


def kcat_lines(n, seed):
    """Records kcat can express in `-K :` line mode: keys without ':' or newline,
    values without newline (NUL and bytes >= 0x80 included), some empty values."""
    rnd = random.Random(seed)
    allowed = bytes(b for b in range(256) if b not in (0x0A, 0x0D))
    keys, values = [], []
    for i in range(n):
        keys.append(b"k%07d" % i + bytes([0x00, 0xC3, 0xA9, 0xFF]))
        if i % 10 == 1:
            v = b""
        elif i % 10 == 2:
            v = bytes(rnd.choice(allowed) for _ in range(rnd.randint(1, 40)))
        else:
            v = b"v%d:with:colons\x00\xfe" % i + b"z" * (i % 37)
        values.append(v)
    return keys, values


def header_text(headers):
    return b",".join(k.encode() + b"=" + v for k, v in headers)


def header_args():
    out = []
    for k, v in HEADERS:
        out += ["-H", f"{k}={v.decode()}"]
    return out


# -- metadata -------------------------------------------------------------------------

def test_kcat_metadata_list(strom):
    bootstrap, _, broker = strom
    ck_create_topic(bootstrap, "kcat-meta-8", 8)
    ck_create_topic(bootstrap, "kcat-meta-3", 3)

    out = kcat("-L", "-b", bootstrap, timeout=60).stdout.decode()
    print(out)
    brokers = re.findall(r"^\s*broker (\d+) at ([^\s:]+):(\d+)", out, re.M)
    assert brokers == [("1", broker.host, str(broker.port))], out
    assert re.search(r"^\s*1 brokers:", out, re.M), out
    topics = {}
    current = None
    for line in out.splitlines():
        m = re.match(r'\s*topic "([^"]+)" with (\d+) partitions:', line)
        if m:
            current = m.group(1)
            topics[current] = {"count": int(m.group(2)), "parts": {}}
            continue
        m = re.match(r"\s*partition (\d+), leader (-?\d+), replicas: ([\d,]*), isrs: ([\d,]*)", line)
        if m and current:
            topics[current]["parts"][int(m.group(1))] = (int(m.group(2)), m.group(3), m.group(4))
        elif "error" in line.lower() and current:
            raise AssertionError(f"kcat reports an error in metadata: {line}")
    for name, count in (("kcat-meta-8", 8), ("kcat-meta-3", 3)):
        assert name in topics, out
        assert topics[name]["count"] == count
        assert sorted(topics[name]["parts"]) == list(range(count))
        for leader, replicas, isrs in topics[name]["parts"].values():
            assert (leader, replicas, isrs) == (1, "1", "1")

    # Same through kcat's JSON output, for a single topic.
    js = json.loads(kcat("-L", "-J", "-b", bootstrap, "-t", "kcat-meta-8", timeout=60).stdout)
    assert [b["id"] for b in js["brokers"]] == [1]
    assert js["brokers"][0]["name"] == f"{broker.host}:{broker.port}"
    (t,) = js["topics"]
    assert t["topic"] == "kcat-meta-8" and "error" not in t
    assert sorted(p["partition"] for p in t["partitions"]) == list(range(8))
    assert all(p["leader"] == 1 and "error" not in p for p in t["partitions"])


# -- produce with every codec and consume back -------------------------------------

@pytest.mark.parametrize("codec", CODECS)
def test_kcat_produce_consume_keyed(strom, codec):
    bootstrap, _, _ = strom
    topic = f"kcat-{codec}"
    ck_create_topic(bootstrap, topic, PARTITIONS)
    keys, values = kcat_lines(N, seed=CODECS.index(codec))
    payload = b"".join(k + b":" + v + b"\n" for k, v in zip(keys, values))

    args = ["-P", "-b", bootstrap, "-t", topic, "-K", ":", *header_args()]
    if codec != "none":
        args += ["-z", codec]
    kcat(*args, input_bytes=payload)

    consumed = kcat_consume_all(bootstrap, topic)
    index_of = {k: i for i, k in enumerate(keys)}
    seen = set()
    total = 0
    for p, recs in consumed.items():
        assert 0 <= p < PARTITIONS
        assert [r[0] for r in recs] == list(range(len(recs))), f"partition {p}: offsets not contiguous"
        last_i = -1
        for off, k, v, h in recs:
            assert k in index_of, f"p{p}@{off}: unknown key {k!r}"
            i = index_of[k]
            assert i not in seen, f"key {k!r} consumed twice"
            seen.add(i)
            assert i > last_i, f"p{p}@{off}: record {i} after {last_i}: not in produce order"
            last_i = i
            assert v == values[i], f"p{p}@{off}: value {v!r} != {values[i]!r}"
            assert h == header_text(HEADERS), f"p{p}@{off}: headers {h!r}"
            # librdkafka's default partitioner (consistent_random) is CRC-32 of the key.
            assert p == zlib.crc32(k) % PARTITIONS, f"key {k!r} on partition {p}"
        total += len(recs)
    assert total == N, f"consumed {total} of {N}"


def test_kcat_produce_explicit_partition(strom):
    bootstrap, _, _ = strom
    topic = "kcat-explicit"
    ck_create_topic(bootstrap, topic, PARTITIONS)
    expected = {}
    for p, codec in ((0, "none"), (5, "lz4"), (7, "zstd"), (5, "snappy")):
        keys, values = kcat_lines(10_000, seed=p * 10 + len(codec))
        keys = [b"p%d-%s-" % (p, codec.encode()) + k for k in keys]
        payload = b"".join(k + b":" + v + b"\n" for k, v in zip(keys, values))
        args = ["-P", "-b", bootstrap, "-t", topic, "-p", str(p), "-K", ":", *header_args()]
        if codec != "none":
            args += ["-z", codec]
        kcat(*args, input_bytes=payload)
        expected.setdefault(p, []).extend(zip(keys, values))
    consumed = kcat_consume_all(bootstrap, topic)
    assert sorted(consumed) == sorted(expected)
    for p, recs in consumed.items():
        assert [r[0] for r in recs] == list(range(len(expected[p])))
        assert [(k, v) for _, k, v, _ in recs] == expected[p], f"partition {p} differs"


def test_kcat_reads_confluent_kafka_records(strom):
    """Records written by confluent-kafka (binary keys/values with NUL and newlines, a null
    value, per-record headers, zstd) read back byte-identically by kcat."""
    bootstrap, _, _ = strom
    topic = "kcat-from-confluent"
    ck_create_topic(bootstrap, topic, PARTITIONS)
    rnd = random.Random(5)
    records = []
    for i in range(20_000):
        key = b"ck-%d\n\t\x00" % i
        if i == 11:
            value = None
        elif i % 7 == 0:
            value = b""
        else:
            value = rnd.randbytes(rnd.randint(1, 200))
        records.append(Rec(i, key, value, [("seq", b"%d" % i), ("src", b"confluent")],
                           i % PARTITIONS if i % 2 else None))
    delivered = ck_produce_all(ck_producer(bootstrap, **{"compression.type": "zstd"}), topic, records)
    consumed = kcat_consume_all(bootstrap, topic)
    by_pos = {delivered[r.i]: r for r in records}
    total = 0
    for p, recs in consumed.items():
        assert [r[0] for r in recs] == list(range(len(recs))), f"partition {p}: offsets not contiguous"
        for off, k, v, h in recs:
            r = by_pos[(p, off)]
            assert (k, v) == (r.key, r.value), f"p{p}@{off}: {(k, v)!r:.100} != {(r.key, r.value)!r:.100}"
            assert h == header_text(r.headers), f"p{p}@{off}: headers {h!r}"
        total += len(recs)
    assert total == len(records)
