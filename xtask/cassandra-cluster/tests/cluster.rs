//! The cluster harness itself, on real JVMs: two data centers meet through the relay, a cut
//! makes each side see the other down (a partition, not a crash), and healing brings it back.

use std::time::{Duration, Instant};

use marquee_cassandra_cluster::{CassandraCluster, Link, Spec};

/// `nodetool status` of node `index`, until `done` holds for it (or fails after `within`).
fn status_until(
    cluster: &CassandraCluster,
    index: usize,
    within: Duration,
    done: impl Fn(&str) -> bool,
) -> String {
    let deadline = Instant::now() + within;
    loop {
        let status = cluster.nodetool(index, &["status"]).expect("nodetool status");
        if done(&status) {
            return status;
        }
        assert!(Instant::now() < deadline, "nodetool status never matched:\n{status}");
        std::thread::sleep(Duration::from_secs(1));
    }
}

#[test]
fn two_data_centers_meet_through_the_relay_and_see_a_cut_as_a_partition() {
    let mut cluster =
        CassandraCluster::start(&Spec::one_node_each(&["us-east", "eu-west"])).expect("cluster");
    let nodes = cluster.nodes();
    assert_eq!(nodes.len(), 2);
    assert_eq!(cluster.contact_points("eu-west"), vec![nodes[1].contact_point.clone()]);
    let status = cluster.nodetool(0, &["status"]).expect("status");
    assert!(status.contains("Datacenter: us-east") && status.contains("Datacenter: eu-west"), "{status}");
    assert_eq!(status.lines().filter(|l| l.starts_with("UN ")).count(), 2, "{status}");

    cluster.set_link(Link { round_trip: Duration::from_millis(150), cut: false });
    cluster.set_link(Link { round_trip: Duration::from_millis(150), cut: true });
    // Each side marks the other down (gossip's failure detector), and stays up itself.
    for index in [0, 1] {
        status_until(&cluster, index, Duration::from_secs(60), |s| {
            s.lines().filter(|l| l.starts_with("DN ")).count() == 1
                && s.lines().filter(|l| l.starts_with("UN ")).count() == 1
        });
    }
    cluster.set_link(Link { round_trip: Duration::from_millis(150), cut: false });
    for index in [0, 1] {
        status_until(&cluster, index, Duration::from_secs(60), |s| {
            s.lines().filter(|l| l.starts_with("UN ")).count() == 2
        });
    }
    let pids: Vec<u32> = cluster.nodes().iter().filter_map(|n| n.pid).collect();
    cluster.stop();
    for pid in pids {
        assert!(!std::path::Path::new(&format!("/proc/{pid}")).exists(), "node {pid} still running");
    }
}
