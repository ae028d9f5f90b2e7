"""Replication over a secured inter-broker listener (issue 7): three nodes whose
`inter.broker.listener.name` is an INTERNAL listener speaking SSL with client
certificates required, SASL_SSL with PLAIN, or SASL_PLAINTEXT with SCRAM-SHA-512.
The followers' replica fetchers must connect to the leader with that protocol (the
broker's own key/trust stores as the client side, the inter-broker user from the
listener's JAAS line); confluent-kafka produces acks=all over the same listener and
all three replicas end up with identical logs.

The harness's PLAINTEXT listener stays (its readiness and Metadata probes use it);
no follower uses it: a fetcher that fell back to PLAINTEXT would find no INTERNAL
connection it can speak, and the logs would never match.
"""

from cryptography.x509.oid import NameOID

import certs
from cluster import HOST, cluster_factory, cluster_port  # noqa: F401 (fixture)
from strom_helpers import wait_until

TOPIC = "secured"
MESSAGES = 200


def _pki(d):
    """A CA and one certificate for every broker, valid for TLS servers and clients
    (a broker is both: the leader serves, the follower presents it for mTLS)."""
    d.mkdir(parents=True, exist_ok=True)
    ca_key = certs._key()
    ca_name = certs._name((NameOID.COMMON_NAME, "Strom Cluster CA"))
    ca = certs._cert(ca_name, ca_key, ca_name, ca_key, ca=True)
    broker_key = certs._key()
    broker = certs._cert(certs._name((NameOID.COMMON_NAME, "broker")), broker_key, ca_name,
                         ca_key, server=True, client=True)
    client_key = certs._key()
    client = certs._cert(certs._name((NameOID.COMMON_NAME, "alice")), client_key, ca_name,
                         ca_key, client=True)
    files = {
        "ca": (certs._pem_cert(ca)),
        "broker": certs._pem_key(broker_key) + certs._pem_cert(broker) + certs._pem_cert(ca),
        "client_cert": certs._pem_cert(client),
        "client_key": certs._pem_key(client_key),
    }
    out = {}
    for name, data in files.items():
        p = d / f"{name}.pem"
        p.write_bytes(data)
        out[name] = str(p)
    return out


def _secured_cluster(cluster_factory, protocol, extra):
    """Three nodes whose inter-broker listener INTERNAL speaks `protocol`."""
    c = cluster_factory(n=3, start=False)
    internal = {}
    for i, node in c.nodes.items():
        q = cluster_port()
        internal[i] = q
        node.overrides.update({
            "listeners": f"PLAINTEXT://{HOST}:{node.port},CONTROLLER://{HOST}:"
                         f"{node.controller_port},INTERNAL://{HOST}:{q}",
            "advertised.listeners": f"PLAINTEXT://{HOST}:{node.advertised_port},"
                                    f"INTERNAL://{HOST}:{q}",
            "listener.security.protocol.map":
                f"PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT,INTERNAL:{protocol}",
            "inter.broker.listener.name": "INTERNAL",
            **extra,
        })
    c.start()
    return c, ",".join(f"{HOST}:{q}" for q in internal.values())


def _produce_and_compare(c, bootstrap, client_conf):
    from confluent_kafka import Producer
    c.create_topic(TOPIC, partitions=1, rf=3)
    p = Producer({"bootstrap.servers": bootstrap, "acks": "all", "linger.ms": 5,
                  "enable.idempotence": True, **client_conf})
    errors = []

    def report(err, _msg):
        if err is not None:
            errors.append(err)

    for i in range(MESSAGES):
        p.produce(TOPIC, value=f"secured-{i}".encode(), callback=report)
    assert p.flush(60) == 0, "messages left unacknowledged"
    assert errors == []

    def identical():
        logs = [c.node(i).log_bytes(TOPIC, 0) for i in (1, 2, 3)]
        return logs[0] and all(log == logs[0] for log in logs) and \
            logs[0].count(b"secured-") == MESSAGES
    wait_until(identical, 30, "three identical replicas of every acknowledged record")
    c.wait_isr(TOPIC, 0, 3)


def test_replication_over_ssl_with_client_certificates(cluster_factory, tmp_path):
    pki = _pki(tmp_path / "pki")
    c, bootstrap = _secured_cluster(cluster_factory, "SSL", {
        "listener.name.internal.ssl.keystore.location": pki["broker"],
        "listener.name.internal.ssl.truststore.location": pki["ca"],
        "listener.name.internal.ssl.client.auth": "required",
    })
    _produce_and_compare(c, bootstrap, {
        "security.protocol": "SSL",
        "ssl.ca.location": pki["ca"],
        "ssl.certificate.location": pki["client_cert"],
        "ssl.key.location": pki["client_key"],
    })


def test_replication_over_sasl_ssl_plain(cluster_factory, tmp_path):
    pki = _pki(tmp_path / "pki")
    jaas = ('org.apache.kafka.common.security.plain.PlainLoginModule required '
            'username="broker" password="broker-secret" '
            'user_broker="broker-secret" user_alice="alice-secret";')
    c, bootstrap = _secured_cluster(cluster_factory, "SASL_SSL", {
        "listener.name.internal.ssl.keystore.location": pki["broker"],
        "listener.name.internal.ssl.truststore.location": pki["ca"],
        "listener.name.internal.sasl.enabled.mechanisms": "PLAIN",
        "sasl.mechanism.inter.broker.protocol": "PLAIN",
        "listener.name.internal.plain.sasl.jaas.config": jaas,
    })
    _produce_and_compare(c, bootstrap, {
        "security.protocol": "SASL_SSL",
        "ssl.ca.location": pki["ca"],
        "sasl.mechanisms": "PLAIN",
        "sasl.username": "alice",
        "sasl.password": "alice-secret",
    })


def test_replication_over_sasl_plaintext_scram(cluster_factory):
    from confluent_kafka.admin import (AdminClient, ScramCredentialInfo, ScramMechanism,
                                       UserScramCredentialUpsertion)
    jaas = ('org.apache.kafka.common.security.scram.ScramLoginModule required '
            'username="broker" password="broker-secret";')
    c, bootstrap = _secured_cluster(cluster_factory, "SASL_PLAINTEXT", {
        "listener.name.internal.sasl.enabled.mechanisms": "SCRAM-SHA-512",
        "sasl.mechanism.inter.broker.protocol": "SCRAM-SHA-512",
        "listener.name.internal.scram-sha-512.sasl.jaas.config": jaas,
    })
    # The users come first (Kafka bootstraps them with `kafka-storage format
    # --add-scram`; here through the PLAINTEXT listener's admin API).
    admin = AdminClient({"bootstrap.servers": c.bootstrap})
    ops = [UserScramCredentialUpsertion(u, ScramCredentialInfo(ScramMechanism.SCRAM_SHA_512, 4096),
                                        pw.encode(), b"salt-" + u.encode())
           for u, pw in (("broker", "broker-secret"), ("alice", "alice-secret"))]
    for f in admin.alter_user_scram_credentials(ops).values():
        f.result(timeout=15)
    _produce_and_compare(c, bootstrap, {
        "security.protocol": "SASL_PLAINTEXT",
        "sasl.mechanisms": "SCRAM-SHA-512",
        "sasl.username": "alice",
        "sasl.password": "alice-secret",
    })


def test_a_follower_with_the_wrong_inter_broker_password_does_not_replicate(cluster_factory):
    """The fetcher really authenticates: node 3's inter-broker password is wrong, so
    it never copies the leader's log (and says why in its log)."""
    jaas = ('org.apache.kafka.common.security.plain.PlainLoginModule required '
            'username="broker" password="{pw}" user_broker="broker-secret";')
    c, bootstrap = _secured_cluster(cluster_factory, "SASL_PLAINTEXT", {
        "listener.name.internal.sasl.enabled.mechanisms": "PLAIN",
        "sasl.mechanism.inter.broker.protocol": "PLAIN",
        "listener.name.internal.plain.sasl.jaas.config": jaas.format(pw="broker-secret"),
    })
    # Node 3 restarts with a wrong own password (its server side still knows the user).
    n3 = c.node(3)
    n3.stop()
    n3.overrides["listener.name.internal.plain.sasl.jaas.config"] = jaas.format(pw="wrong")
    n3.start()
    c.wait_brokers()
    from confluent_kafka.admin import AdminClient, NewTopic
    admin = AdminClient({"bootstrap.servers": c.bootstrap})
    topic = NewTopic(TOPIC, 1, replica_assignment=[[1, 2, 3]])
    admin.create_topics([topic])[TOPIC].result(timeout=30)
    assert c.leader_of(TOPIC, 0) == 1
    from cluster import produce_settled
    produce_settled(c.node(1).bootstrap, TOPIC, 0, [b"secured-0"], acks=1)
    wait_until(lambda: c.node(2).log_bytes(TOPIC, 0).count(b"secured-0") == 1, 30,
               "node 2 (right password) replicates")
    wait_until(lambda: "authentication" in n3.stderr_text().lower(), 30,
               "node 3 reports the failed authentication")
    assert n3.log_bytes(TOPIC, 0).count(b"secured-0") == 0
