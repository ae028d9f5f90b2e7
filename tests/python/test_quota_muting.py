"""Issue 8, quotas "enforced by throttle_time_ms and muting like Kafka": a client that
ignores throttle_time_ms is still held, because the broker reads nothing more from a
throttled connection until the throttle time has passed (KIP-219's channel muting).

librdkafka and kafka-python back off by themselves when they see throttle_time_ms, so
they cannot show the broker's side; this test pipelines raw Metadata requests and times
the answers.
"""

import socket
import struct
import subprocess
import time

from conftest import STROM_BIN

REQUESTS = 40


def metadata_v4(corr, client_id):
    cid = client_id.encode()
    # header v1 (api 3, version 4), topics = null (all), allow_auto_topic_creation = false
    payload = struct.pack(">hhih", 3, 4, corr, len(cid)) + cid + struct.pack(">ib", -1, 0)
    return struct.pack(">i", len(payload)) + payload


def recv_exact(s, n):
    buf = b""
    while len(buf) < n:
        chunk = s.recv(n - len(buf))
        if not chunk:
            raise ConnectionError("closed by the broker")
        buf += chunk
    return buf


def pipelined_answers(port, client_id, enough_throttled=2):
    """Send REQUESTS Metadata v4 at once; returns [(arrival_s, correlation, throttle_ms)]
    up to the answer after the `enough_throttled`th one throttled for 200 ms or more (or
    all of them): short throttles alone would prove little against timing noise."""
    out = []
    with socket.create_connection(("127.0.0.1", port), timeout=60) as s:
        s.sendall(b"".join(metadata_v4(i, client_id) for i in range(REQUESTS)))
        for _ in range(REQUESTS):
            (size,) = struct.unpack(">i", recv_exact(s, 4))
            body = recv_exact(s, size)
            corr, throttle = struct.unpack(">ii", body[:8])
            out.append((time.monotonic(), corr, throttle))
            if sum(1 for _, _, t in out[:-1] if t >= 200) >= enough_throttled:
                break
    return out


def test_a_client_ignoring_throttle_time_is_muted(strom):
    bootstrap, _, broker = strom
    p = subprocess.run([str(STROM_BIN), "-b", bootstrap, "quota", "alter", "--client",
                        "greedy", "--add-config", "request_percentage=0.001"],
                       capture_output=True, text=True, timeout=30)
    assert p.returncode == 0, p.stderr

    # Unthrottled client: all answers come back at once, none throttled.
    calm = pipelined_answers(broker.port, "calm")
    assert [c for _, c, _ in calm] == list(range(REQUESTS))
    assert all(t == 0 for _, _, t in calm), calm
    assert calm[-1][0] - calm[0][0] < 2.0

    # The quota applies once the broker has seen enough of the client's request time
    # (and the new quota has reached the connection's cache): repeat until throttled.
    deadline = time.monotonic() + 20
    while True:
        greedy = pipelined_answers(broker.port, "greedy")
        assert [c for _, c, _ in greedy] == list(range(len(greedy))), "answered in order"
        throttled = [i for i, (_, _, t) in enumerate(greedy[:-1]) if t > 0]
        if sum(1 for i in throttled if greedy[i][2] >= 200) >= 2:
            break
        assert time.monotonic() < deadline, f"too few throttled answers: {greedy}"
    # KIP-219: the throttled answer itself is sent at once (the client learns the
    # throttle time without waiting for it) ...
    for i in throttled:
        if i > 0 and greedy[i - 1][2] == 0:
            assert (greedy[i][0] - greedy[i - 1][0]) * 1000 < max(50, 0.5 * greedy[i][2])
    # ... and then the broker reads nothing more from the connection for that long, so
    # the next answer, though its request was sent long ago, waits the throttle time.
    waits = []
    for i in throttled:
        gap_ms = (greedy[i + 1][0] - greedy[i][0]) * 1000
        waits.append((greedy[i][2], round(gap_ms)))
        assert gap_ms >= 0.8 * greedy[i][2] - 20, (i, greedy[i][2], gap_ms)
    total_throttle = sum(t for t, _ in waits)
    elapsed = greedy[-1][0] - greedy[0][0]
    assert elapsed * 1000 >= 0.8 * total_throttle, (elapsed, waits)
    print(f"{len(throttled)} throttled answers, (throttle_ms, next_answer_after_ms): "
          f"{waits[:8]}")
