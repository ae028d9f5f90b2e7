"""A consume-transform-produce loop as its own process (acceptance 2 of
issue 5): copies `in_topic` to `out_topic` with a transactional producer and
send_offsets_to_transaction, aborting one transaction in ten on purpose (the 3rd, 13th, ...)
(flushed first, so the aborted copies are in the log) and reprocessing it.

Usage: ctp_proc.py BOOTSTRAP IN OUT GROUP TRANSACTIONAL_ID PARTITIONS [PAUSE_AT]

With PAUSE_AT=k, the k-th transaction is produced and flushed, then the
process prints PAUSED and waits forever (the test SIGKILLs it there, in
the middle of a transaction). Exits 0 once every input partition is copied.
Prints one line per finished transaction: COMMIT n / ABORT n."""

import sys
import time

from confluent_kafka import Consumer, Producer, TopicPartition, OFFSET_BEGINNING


def main():
    bootstrap, src, dst, group, tid, parts = sys.argv[1:7]
    parts = int(parts)
    pause_at = int(sys.argv[7]) if len(sys.argv) > 7 else -1
    producer = Producer({"bootstrap.servers": bootstrap, "transactional.id": tid,
                         "linger.ms": 20, "batch.num.messages": 10000})
    # fences an earlier incarnation and aborts its open transaction
    producer.init_transactions(30)
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": group,
                         "enable.auto.commit": False, "isolation.level": "read_committed",
                         "enable.partition.eof": False})
    tps = [TopicPartition(src, p) for p in range(parts)]
    committed = consumer.committed(tps, timeout=30)
    start = [TopicPartition(src, tp.partition, tp.offset if tp.offset >= 0 else OFFSET_BEGINNING)
             for tp in committed]
    consumer.assign(start)
    ends = {p: consumer.get_watermark_offsets(TopicPartition(src, p), timeout=10)[1]
            for p in range(parts)}
    print("START", " ".join(str(tp.offset) for tp in committed), flush=True)
    # next offset to copy per partition (librdkafka's position() is unset
    # for partitions nothing was consumed from yet)
    pos = {tp.partition: tp.offset if tp.offset >= 0 else
           consumer.get_watermark_offsets(TopicPartition(src, tp.partition), timeout=10)[0]
           for tp in committed}
    txn_no = 0
    while not all(pos[p] >= ends[p] for p in range(parts)):
        msgs = [m for m in consumer.consume(2000, 1.0) if m.error() is None]
        if not msgs:
            continue
        before = dict(pos)
        for m in msgs:
            pos[m.partition()] = m.offset() + 1
        txn_no += 1
        producer.begin_transaction()
        for m in msgs:
            producer.produce(dst, key=m.key(), value=b"copy-" + m.value(), partition=m.partition())
        producer.send_offsets_to_transaction(
            [TopicPartition(src, p, o) for p, o in pos.items()],
            consumer.consumer_group_metadata(), 30)
        if txn_no == pause_at:
            assert producer.flush(30) == 0
            print("PAUSED", txn_no, flush=True)
            while True:
                time.sleep(1)  # waiting for SIGKILL
        if txn_no % 10 == 3:
            assert producer.flush(30) == 0
            producer.abort_transaction(30)
            for p in {m.partition() for m in msgs}:
                consumer.seek(TopicPartition(src, p, before[p]))
            pos = before
            print("ABORT", len(msgs), flush=True)
        else:
            producer.commit_transaction(30)
            print("COMMIT", len(msgs), flush=True)
    consumer.close()
    print("DONE", flush=True)


if __name__ == "__main__":
    main()
