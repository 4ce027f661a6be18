//! A multi-data-center Apache Cassandra cluster on one machine: what Marquee's ScyllaDB
//! backend is tested against wherever replication between regions matters (lag, partitions,
//! hinted handoff, a lost node), since ScyllaDB itself does not install here and both speak
//! the same CQL and replication model (ARCHITECTURE.md says where they differ).
//!
//! - **Jars** from Maven Central, fetched once by Maven (see [`jars`]).
//! - **One JVM per node**, small heaps for a 2-core machine, `GossipingPropertyFileSnitch`,
//!   one data center per region (names given by the caller), one token per node and no
//!   bootstrap, so a cluster starts in seconds.
//! - **One network namespace per data center** (root only); clients in this namespace reach
//!   every node directly, while nodes reach another data center only through a relay that
//!   adds WAN latency and can cut the link ([`CassandraCluster::set_link`]): a real partition,
//!   in which both sides keep serving their own clients, hints pile up and replay on healing.
//! - **Stopped by PID** (on [`CassandraCluster::stop`], on drop, or a node at a time), its
//!   namespaces removed; nothing is ever stopped by name.

mod jars;
mod network;
mod node;
mod relay;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::{Duration, Instant};

pub use jars::{CASSANDRA_VERSION, ensure as ensure_jars, home as jars_home};
pub use network::remove_stale;
pub use node::CQL_PORT;
pub use relay::Link;

use network::Network;
use relay::Relay;

/// How long a cluster may take to come up (JVMs starting on two cores).
const START_TIMEOUT: Duration = Duration::from_secs(180);

/// Why a cluster could not be started or driven.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct ClusterError(pub String);

pub(crate) fn fail(message: impl Into<String>) -> ClusterError {
    ClusterError(message.into())
}

/// What to start.
#[derive(Clone, Debug)]
pub struct Spec {
    /// Data centers by name, with their number of nodes.
    pub data_centers: Vec<(String, usize)>,
    /// How long a coordinator keeps hints for a replica that is down (`max_hint_window`);
    /// past it, the replica needs a repair.
    pub max_hint_window: Duration,
    /// Each node's heap.
    pub heap_mib: u32,
    /// Where the nodes' files go (kept); a temporary directory when unset.
    pub dir: Option<PathBuf>,
}

impl Spec {
    /// `data_centers` of one node each, with Cassandra's default hint window (3 h).
    pub fn one_node_each(data_centers: &[&str]) -> Spec {
        Spec {
            data_centers: data_centers.iter().map(|dc| ((*dc).to_owned(), 1)).collect(),
            max_hint_window: Duration::from_secs(3 * 3600),
            heap_mib: 640,
            dir: None,
        }
    }
}

/// One node of a running cluster.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeInfo {
    /// Its data center.
    pub data_center: String,
    /// Where clients reach it (`address:9042`).
    pub contact_point: String,
    /// The JVM's PID while it runs.
    pub pid: Option<u32>,
}

struct Node {
    dc: usize,
    index_in_dc: usize,
    dir: PathBuf,
    private: SocketAddr,
    process: Option<Child>,
}

/// A running cluster; its processes stop and its namespaces go when it is dropped.
pub struct CassandraCluster {
    data_centers: Vec<String>,
    nodes: Vec<Node>,
    lib: PathBuf,
    jamm: PathBuf,
    heap_mib: u32,
    relay: Relay,
    network: Network,
    dir: PathBuf,
    _scratch: Option<tempfile::TempDir>,
}

impl CassandraCluster {
    /// Fetches the jars if needed, starts every node and waits until each answers CQL and
    /// sees every other node up. Blocking: call it off any async runtime's worker
    /// (`spawn_blocking`), or before one.
    pub fn start(spec: &Spec) -> Result<CassandraCluster, ClusterError> {
        let lib = jars::ensure()?;
        let jamm = jars::jamm(&lib)?;
        let (dir, scratch) = match &spec.dir {
            Some(dir) => {
                let _ = std::fs::remove_dir_all(dir);
                std::fs::create_dir_all(dir).map_err(|e| fail(format!("{}: {e}", dir.display())))?;
                (dir.clone(), None)
            }
            None => {
                let scratch = tempfile::Builder::new()
                    .prefix("marquee-cassandra-")
                    .tempdir()
                    .map_err(|e| fail(format!("creating a directory for the cluster: {e}")))?;
                (scratch.path().to_owned(), Some(scratch))
            }
        };
        let sizes: Vec<usize> = spec.data_centers.iter().map(|(_, n)| *n).collect();
        let network = Network::create(&sizes)?;
        let mut routes = Vec::new();
        let mut nodes = Vec::new();
        // The first node of each data center is a seed, named by its public address.
        let seeds: Vec<_> = (0..sizes.len()).map(|dc| network.public(dc, 0)).collect();
        for (dc, (name, count)) in spec.data_centers.iter().enumerate() {
            for index_in_dc in 0..*count {
                let node_dir = dir.join(format!("{name}-{index_in_dc}"));
                let private = network.private(dc, index_in_dc);
                let public = network.public(dc, index_in_dc);
                node::configure(&node::NodeConfig {
                    dir: &node_dir,
                    data_center: name,
                    private,
                    public,
                    seeds: &seeds,
                    token: token(dc, index_in_dc, *count),
                    max_hint_window: spec.max_hint_window,
                })?;
                routes.push((
                    SocketAddr::from((public, node::STORAGE_PORT)),
                    SocketAddr::from((private, node::STORAGE_PORT)),
                ));
                nodes.push(Node {
                    dc,
                    index_in_dc,
                    dir: node_dir,
                    private: SocketAddr::from((private, CQL_PORT)),
                    process: None,
                });
            }
        }
        let relay = Relay::start(&routes)?;
        let mut cluster = CassandraCluster {
            data_centers: spec.data_centers.iter().map(|(name, _)| name.clone()).collect(),
            nodes,
            lib,
            jamm,
            heap_mib: spec.heap_mib,
            relay,
            network,
            dir,
            _scratch: scratch,
        };
        for index in 0..cluster.nodes.len() {
            cluster.spawn(index)?;
        }
        let deadline = Instant::now() + START_TIMEOUT;
        for index in 0..cluster.nodes.len() {
            cluster.wait_for_cql(index, deadline)?;
        }
        cluster.wait_until_all_up_by(deadline)?;
        Ok(cluster)
    }

    /// The data centers' names, in the order given.
    pub fn data_centers(&self) -> &[String] {
        &self.data_centers
    }

    /// Every node, in the order given (data center by data center).
    pub fn nodes(&self) -> Vec<NodeInfo> {
        self.nodes
            .iter()
            .map(|n| NodeInfo {
                data_center: self.data_centers[n.dc].clone(),
                contact_point: n.private.to_string(),
                pid: n.process.as_ref().map(Child::id),
            })
            .collect()
    }

    /// `address:9042` of every node of `data_center` (running or not).
    pub fn contact_points(&self, data_center: &str) -> Vec<String> {
        self.nodes
            .iter()
            .filter(|n| self.data_centers[n.dc] == data_center)
            .map(|n| n.private.to_string())
            .collect()
    }

    /// The cluster's number on this machine (its namespaces are `mqc<number>-<dc>`).
    pub fn number(&self) -> u8 {
        self.network.index()
    }

    /// Where the nodes' files are.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Sets the link between data centers (latency, cut); takes effect at once.
    pub fn set_link(&self, link: Link) {
        self.relay.set(link);
    }

    /// The link between data centers now.
    pub fn link(&self) -> Link {
        self.relay.get()
    }

    /// Stops node `index` cleanly (SIGTERM by PID, SIGKILL after 30 s).
    pub fn stop_node(&mut self, index: usize) -> Result<(), ClusterError> {
        let node = self.nodes.get_mut(index).ok_or_else(|| fail(format!("no node {index}")))?;
        if let Some(process) = node.process.take() {
            terminate(process, Duration::from_secs(30));
        }
        Ok(())
    }

    /// Kills node `index` (SIGKILL by PID): a crash, losing what it had not synced.
    pub fn kill_node(&mut self, index: usize) -> Result<(), ClusterError> {
        let node = self.nodes.get_mut(index).ok_or_else(|| fail(format!("no node {index}")))?;
        if let Some(mut process) = node.process.take() {
            let _ = process.kill();
            let _ = process.wait();
        }
        Ok(())
    }

    /// Starts node `index` again with its data and waits until it answers CQL and sees
    /// every running node up.
    pub fn start_node(&mut self, index: usize) -> Result<(), ClusterError> {
        if self.nodes.get(index).is_none_or(|n| n.process.is_some()) {
            return Err(fail(format!("node {index} does not exist or is running")));
        }
        self.spawn(index)?;
        let deadline = Instant::now() + START_TIMEOUT;
        self.wait_for_cql(index, deadline)?;
        self.wait_until_all_up_by(deadline)
    }

    /// Runs `nodetool args` against node `index`.
    pub fn nodetool(&self, index: usize, args: &[&str]) -> Result<String, ClusterError> {
        let node = self.nodes.get(index).ok_or_else(|| fail(format!("no node {index}")))?;
        node::nodetool(&self.lib, &self.network.namespace(node.dc), jmx_port(node), args)
    }

    /// Stops every node by PID.
    pub fn stop(&mut self) {
        for node in &mut self.nodes {
            if let Some(process) = node.process.take() {
                terminate(process, Duration::from_secs(20));
            }
        }
    }

    fn spawn(&mut self, index: usize) -> Result<(), ClusterError> {
        let node = &self.nodes[index];
        let namespace = self.network.namespace(node.dc);
        let process =
            node::spawn(&self.lib, &self.jamm, &namespace, &node.dir, self.heap_mib, jmx_port(node))?;
        self.nodes[index].process = Some(process);
        Ok(())
    }

    fn wait_for_cql(&mut self, index: usize, deadline: Instant) -> Result<(), ClusterError> {
        loop {
            let node = &mut self.nodes[index];
            if std::net::TcpStream::connect_timeout(&node.private, Duration::from_millis(200)).is_ok() {
                return Ok(());
            }
            let exited = node.process.as_mut().map(|p| p.try_wait());
            if let Some(Ok(Some(status))) = exited {
                node.process = None;
                return Err(fail(format!(
                    "Cassandra node {} exited ({status}) before serving CQL:\n{}",
                    node.private,
                    node::log_tail(&node.dir)
                )));
            }
            if Instant::now() > deadline {
                return Err(fail(format!(
                    "Cassandra node {} did not serve CQL within {START_TIMEOUT:?}:\n{}",
                    node.private,
                    node::log_tail(&node.dir)
                )));
            }
            std::thread::sleep(Duration::from_millis(250));
        }
    }

    /// Waits until every running node sees every running node Up and Normal (after a cut
    /// heals, or a node restarts): gossip has met across data centers.
    pub fn wait_until_all_up(&self) -> Result<(), ClusterError> {
        self.wait_until_all_up_by(Instant::now() + START_TIMEOUT)
    }

    fn wait_until_all_up_by(&self, deadline: Instant) -> Result<(), ClusterError> {
        let running: Vec<usize> =
            (0..self.nodes.len()).filter(|&i| self.nodes[i].process.is_some()).collect();
        for &index in &running {
            loop {
                let status = self.nodetool(index, &["status"]).unwrap_or_default();
                let up = status.lines().filter(|l| l.starts_with("UN ")).count();
                if up >= running.len() {
                    break;
                }
                if Instant::now() > deadline {
                    return Err(fail(format!(
                        "node {} sees {up} of {} nodes up:\n{status}",
                        self.nodes[index].private,
                        running.len()
                    )));
                }
                std::thread::sleep(Duration::from_millis(500));
            }
        }
        Ok(())
    }
}

impl Drop for CassandraCluster {
    fn drop(&mut self) {
        self.stop();
    }
}

fn jmx_port(node: &Node) -> u16 {
    node::JMX_PORT + node.index_in_dc as u16
}

/// SIGTERM by PID, then SIGKILL if the JVM is still there after `grace`.
fn terminate(mut process: Child, grace: Duration) {
    let _ = Command::new("kill").arg(process.id().to_string()).status();
    let deadline = Instant::now() + grace;
    while Instant::now() < deadline {
        if let Ok(Some(_)) = process.try_wait() {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = process.kill();
    let _ = process.wait();
}

/// Node `index` of `count` in data center `dc`: an even share of the Murmur3 ring, offset
/// per data center so no two nodes share a token.
fn token(dc: usize, index: usize, count: usize) -> i128 {
    let span: i128 = 1 << 64;
    i128::from(i64::MIN) + span / count as i128 * index as i128 + 100 * dc as i128
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_spread_each_data_center_over_the_ring_without_clashing() {
        let tokens: Vec<i128> = (0..2).flat_map(|dc| (0..3).map(move |i| token(dc, i, 3))).collect();
        assert!(tokens.iter().all(|&t| t >= i128::from(i64::MIN) && t <= i128::from(i64::MAX)));
        let mut unique = tokens.clone();
        unique.sort_unstable();
        unique.dedup();
        assert_eq!(unique.len(), tokens.len());
        assert_eq!(token(0, 0, 1), i128::from(i64::MIN));
    }
}
