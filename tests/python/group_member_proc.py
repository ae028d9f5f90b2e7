"""A confluent-kafka group member run as its own process (so a test can
SIGKILL it). Prints one line per event on stdout, flushed:

    ASSIGNED p,p,...        after each (re)assignment
    RECORD id partition     after the record is processed (before its commit)
    COMMITTED               after the synchronous commit of a batch

usage: group_member_proc.py BOOTSTRAP GROUP TOPIC [classic|consumer]
"""

import sys

from confluent_kafka import Consumer, KafkaException


def main():
    bootstrap, group, topic = sys.argv[1:4]
    protocol = sys.argv[4] if len(sys.argv) > 4 else "classic"
    conf = {
        "bootstrap.servers": bootstrap,
        "group.id": group,
        "enable.auto.commit": False,
        "auto.offset.reset": "earliest",
    }
    if protocol == "classic":
        # With the consumer protocol the broker sets both (group.consumer.*).
        conf.update({"session.timeout.ms": 6000, "heartbeat.interval.ms": 300})
    else:
        conf["group.protocol"] = "consumer"
    c = Consumer(conf)

    def on_assign(consumer, parts):
        print("ASSIGNED " + ",".join(str(p.partition) for p in parts), flush=True)

    c.subscribe([topic], on_assign=on_assign,
                on_revoke=lambda consumer, parts: print("ASSIGNED ", flush=True))
    while True:
        msgs = c.consume(num_messages=200, timeout=0.2)
        good = [m for m in msgs if m.error() is None]
        if not good:
            continue
        for m in good:
            print(f"RECORD {int(m.value())} {m.partition()}", flush=True)
        try:
            c.commit(asynchronous=False)
            print("COMMITTED", flush=True)
        except KafkaException as e:
            print(f"COMMIT_FAILED {e.args[0].name()}", flush=True)


if __name__ == "__main__":
    main()
