"""Issue 7: reassignment onto a broker added to a running cluster, preferred-leader
election, and replication factor checks — through `strom cluster reassign`,
`strom cluster elect-leaders` (AlterPartitionReassignments, ListPartitionReassignments,
ElectLeaders) and confluent-kafka's admin client.
"""

import json

import pytest

from cluster import cluster_factory, produce, produce_settled  # noqa: F401 (fixture)
from strom_helpers import wait_until


def test_reassign_onto_an_added_broker_copies_the_data_first(cluster_factory, tmp_path):
    from confluent_kafka.admin import AdminClient, NewTopic
    c = cluster_factory(n=3)
    topic = "moving"
    admin = AdminClient({"bootstrap.servers": c.bootstrap})
    admin.create_topics([NewTopic(topic, 1, replica_assignment=[[1, 2]])],
                        request_timeout=30)[topic].result(timeout=30)
    c.wait_isr(topic, 0, 2)
    leader = c.leader_of(topic, 0)
    values = [b"moving-%05d" % i for i in range(3000)]
    for i in range(0, len(values), 500):
        err, _ = produce_settled(c.node(leader).bootstrap, topic, 0, values[i:i + 500])
        assert err == 0

    new = c.add_node()
    assert new.node_id == 4
    c.wait_brokers([1, 2, 3, 4])

    plan = tmp_path / "plan.json"
    plan.write_text(json.dumps({"version": 1, "partitions": [
        {"topic": topic, "partition": 0, "replicas": [4, 2], "log_dirs": ["any", "any"]}]}))
    r = c.cli("cluster", "reassign", "--json-file", str(plan), "--execute")
    assert f"Started the reassignment of {topic}-0" in r.stdout, r.stdout

    def verified():
        return c.cli("cluster", "reassign", "--json-file", str(plan), "--verify",
                     check=False).returncode == 0
    wait_until(verified, 90, "the reassignment to complete (--verify)", 0.5)
    assert not c.cli_json("cluster", "reassign", "--list"), "a reassignment is still listed"
    leader, replicas, isr = c.partition_state(topic, 0)
    assert replicas == [4, 2] and sorted(isr) == [2, 4] and leader in (2, 4), (leader, replicas, isr)
    # the new replica holds exactly the leader's data
    wait_until(lambda: new.log_bytes(topic, 0) == c.node(2).log_bytes(topic, 0), 30,
               "node 4's log to equal node 2's")
    assert values[-1] in new.log_bytes(topic, 0)
    # the removed replica's log goes away
    wait_until(lambda: not c.node(1).partition_dir(topic, 0).exists(), 30,
               "node 1 to delete its replica")

    # a move onto a registered broker that is down stays in progress: listed,
    # --verify exits 1, --cancel restores the replicas
    c.node(3).kill9()
    c.wait_brokers([1, 2, 4], timeout=60)
    r = c.cli("cluster", "reassign", "--topic", topic, "--partition", "0", "--replicas", "4,2,3")
    assert f"Started the reassignment of {topic}-0" in r.stdout, r.stdout
    listed = c.cli_json("cluster", "reassign", "--list")
    assert listed == [{"topic": topic, "partition": 0, "replicas": [4, 2, 3], "adding": [3],
                       "removing": []}], listed
    r = c.cli("cluster", "reassign", "--topic", topic, "--partition", "0", "--replicas", "4,2,3",
              "--verify", check=False)
    assert r.returncode == 1 and "is still in progress" in r.stdout, r.stdout
    r = c.cli("cluster", "reassign", "--topic", topic, "--partition", "0", "--cancel")
    assert f"Cancelled the reassignment of {topic}-0" in r.stdout, r.stdout
    assert not c.cli_json("cluster", "reassign", "--list")
    assert c.partition_state(topic, 0)[1] == [4, 2]
    c.node(3).restart()
    c.wait_brokers([1, 2, 3, 4], timeout=60)

    # a single partition by flags, and a cancel of something not moving
    r = c.cli("cluster", "reassign", "--topic", topic, "--partition", "0", "--cancel",
              check=False)
    assert r.returncode != 0 and "NoReassignmentInProgress" in r.stdout, r.stdout
    # an unknown broker is refused with Kafka's code
    r = c.cli("cluster", "reassign", "--topic", topic, "--partition", "0", "--replicas", "4,9",
              check=False)
    assert r.returncode != 0 and "InvalidReplicaAssignment" in r.stdout, r.stdout


def test_preferred_leader_election_after_a_restart(cluster_factory):
    from confluent_kafka.admin import AdminClient, NewTopic
    c = cluster_factory(n=3, overrides={"auto.leader.rebalance.enable": "false"})
    topic = "pref"
    admin = AdminClient({"bootstrap.servers": c.bootstrap})
    admin.create_topics([NewTopic(topic, 2, replica_assignment=[[1, 2, 3], [2, 3, 1]])],
                        request_timeout=30)[topic].result(timeout=30)
    assert c.leader_of(topic, 0) == 1
    c.wait_isr(topic, 0, 3)
    c.node(1).kill9()
    moved = c.leader_of(topic, 0, exclude=(1,), timeout=60)
    assert moved in (2, 3)
    c.node(1).restart()
    c.wait_isr(topic, 0, 3, timeout=90)
    assert c.leader_of(topic, 0) == moved, "leadership moved back without an election"

    # every partition: only the one off its preferred leader is listed (Kafka leaves
    # out ELECTION_NOT_NEEDED when no partitions are named)
    out = c.cli_json("cluster", "elect-leaders", "--election-type", "PREFERRED",
                     "--all-topic-partitions")
    assert out["elected"] == [f"{topic}-0"] and not out["failed"], out
    assert c.leader_of(topic, 0) == 1
    # named partitions already led by their preferred replica: ELECTION_NOT_NEEDED
    r = c.cli("cluster", "elect-leaders", "--preferred", "--topic", topic, "--partition", "1")
    assert f"Valid replica already elected for partitions {topic}-1" in r.stdout, r.stdout
    c.node(2).kill9()
    assert c.leader_of(topic, 1, exclude=(2,), timeout=60) != 2
    c.node(2).restart()
    c.wait_isr(topic, 1, 3, timeout=90)
    r = c.cli("cluster", "elect-leaders", "--election-type", "preferred", "--topic", topic,
              "--partition", "1")
    assert f"Successfully completed leader election (PREFERRED) for partitions {topic}-1" in r.stdout
    assert c.leader_of(topic, 1) == 2
    # unknown partition: Kafka's UNKNOWN_TOPIC_OR_PARTITION, exit 1
    r = c.cli("cluster", "elect-leaders", "--preferred", "--topic", topic, "--partition", "7",
              check=False)
    assert r.returncode == 1 and "UnknownTopicOrPartition" in r.stdout, r.stdout


def test_unclean_election_brings_an_offline_partition_back(cluster_factory):
    """The last ISR member dies: the partition is offline, and stays so when an
    out-of-sync replica returns (unclean.leader.election.enable is off) until
    `strom cluster elect-leaders --election-type UNCLEAN` makes it leader; the old
    leader then truncates to the new leader's log (what only it had is lost, as
    Kafka warns). Replicas on broker-only node 4 (the leader) and voter 1, so that
    the metadata quorum (voters 1-3) keeps a majority throughout."""
    from confluent_kafka.admin import AdminClient, NewTopic
    c = cluster_factory(n=4, voters=3)
    topic = "unclean"
    admin = AdminClient({"bootstrap.servers": c.bootstrap})
    admin.create_topics([NewTopic(topic, 1, replica_assignment=[[4, 1]])],
                        request_timeout=30)[topic].result(timeout=30)
    c.wait_isr(topic, 0, 2)
    assert c.leader_of(topic, 0) == 4
    assert produce_settled(c.node(4).bootstrap, topic, 0, [b"both-%d" % i for i in range(100)])[0] == 0
    c.node(1).kill9()
    c.wait_isr(topic, 0, 1, timeout=60)
    assert produce_settled(c.node(4).bootstrap, topic, 0, [b"only-4-%d" % i for i in range(10)])[0] == 0
    c.node(4).kill9()
    wait_until(lambda: c.partition_state(topic, 0)[0] == -1, 60, f"{topic}-0 to go offline")
    c.node(1).restart()
    c.wait_brokers([1, 2, 3], timeout=60)
    # node 1 is not in the ISR: no clean election brings it back (the preferred
    # replica, 4, is down: Kafka's PREFERRED_LEADER_NOT_AVAILABLE)
    assert c.partition_state(topic, 0)[0] == -1
    r = c.cli("cluster", "elect-leaders", "--preferred", "--topic", topic, "--partition", "0",
              check=False)
    assert r.returncode == 1 and "PreferredLeaderNotAvailable" in r.stdout, r.stdout
    r = c.cli("cluster", "elect-leaders", "--election-type", "UNCLEAN", "--topic", topic,
              "--partition", "0")
    assert f"Successfully completed leader election (UNCLEAN) for partitions {topic}-0" in r.stdout
    assert c.leader_of(topic, 0) == 1
    # the new leader takes writes once it has applied the election
    errors = []

    def written():
        err = produce(c.node(1).bootstrap, topic, 0, [b"after"], acks=1)[0]
        errors.append(err)
        return err == 0
    wait_until(written, 30, "the unclean leader to take a write", 0.2)
    c.node(4).restart()
    c.wait_isr(topic, 0, 2, timeout=90)
    wait_until(lambda: c.node(4).log_bytes(topic, 0) == c.node(1).log_bytes(topic, 0), 30,
               "node 4's log to equal the unclean leader's")
    log = c.node(4).log_bytes(topic, 0)
    assert b"only-4-" not in log and b"both-99" in log and b"after" in log


def test_replication_factor_above_the_live_brokers_is_refused(cluster_factory):
    from confluent_kafka import KafkaError, KafkaException
    from confluent_kafka.admin import AdminClient, NewTopic
    c = cluster_factory(n=3)
    admin = AdminClient({"bootstrap.servers": c.bootstrap})
    fs = admin.create_topics([NewTopic("rf4", 1, 4)], request_timeout=30)
    with pytest.raises(KafkaException) as e:
        fs["rf4"].result(timeout=30)
    assert e.value.args[0].code() == KafkaError.INVALID_REPLICATION_FACTOR
    assert "rf4" not in c.any_metadata().topics
    # RF 3 spreads over all three with a leader each
    c.create_topic("rf3", 3, 3)
    md = c.any_metadata(["rf3"])
    for p, (err, leader, replicas, isr) in md.topics["rf3"][1].items():
        assert err == 0 and sorted(replicas) == [1, 2, 3] and leader == replicas[0], (p, replicas)
    leaders = {md.topics["rf3"][1][p][1] for p in range(3)}
    assert leaders == {1, 2, 3}, f"leaders not balanced: {leaders}"


AUTHORIZER = "org.apache.kafka.metadata.authorizer.StandardAuthorizer"


@pytest.mark.strom_config(**{"authorizer.class.name": AUTHORIZER})
def test_cluster_admin_apis_need_cluster_alter_and_describe(strom):
    """Without ACLs, User:ANONYMOUS may neither elect leaders nor move or list
    reassignments (CLUSTER Alter / Describe): Kafka's CLUSTER_AUTHORIZATION_FAILED."""
    import subprocess
    from cluster import STROM_BIN

    def cli(*args):
        return subprocess.run([str(STROM_BIN), "cluster", *args, "-b", strom.bootstrap],
                              capture_output=True, text=True, timeout=60)

    for args in (("elect-leaders", "--preferred", "--all-topic-partitions"),
                 ("elect-leaders", "--unclean", "--topic", "t", "--partition", "0"),
                 ("reassign", "--topic", "t", "--partition", "0", "--replicas", "1"),
                 ("reassign", "--list")):
        r = cli(*args)
        assert r.returncode != 0, (args, r.stdout)
        assert "ClusterAuthorizationFailed" in r.stdout + r.stderr, (args, r.stdout, r.stderr)


def test_single_node_election_and_reassignment_answers(strom):
    """The same commands on the embedded single node: nothing to elect, nothing
    moving, an unknown broker refused."""
    import subprocess
    from cluster import STROM_BIN
    from strom_helpers import ck_create_topic

    def cli(*args):
        return subprocess.run([str(STROM_BIN), "cluster", *args, "-b", strom.bootstrap],
                              capture_output=True, text=True, timeout=60)

    ck_create_topic(strom.bootstrap, "single", 2)
    r = cli("elect-leaders", "--preferred", "--topic", "single", "--partition", "1")
    assert r.returncode == 0 and "Valid replica already elected for partitions single-1" in r.stdout, (
        r.stdout, r.stderr)
    r = cli("reassign", "--list", "--json")
    assert r.returncode == 0 and json.loads(r.stdout) == [], (r.stdout, r.stderr)
    r = cli("reassign", "--topic", "single", "--partition", "0", "--replicas", "1,2")
    assert r.returncode != 0 and "InvalidReplicaAssignment" in r.stdout, (r.stdout, r.stderr)
    r = cli("reassign", "--topic", "single", "--partition", "0", "--replicas", "1", "--verify")
    assert r.returncode == 0 and "Reassignment of partition single-0 is completed." in r.stdout
