//! One network namespace per data center (iproute2), joined to this namespace by a veth pair.
//!
//! Cluster `c`'s data center `d` is the namespace `mqc<c>-<d>`; its nodes own the private
//! addresses `10.<110+c>.<d+1>.<n+1>` there, and this namespace reaches them over the veth
//! (the gateway side is `.254`), so clients here talk to every node directly. Each node's
//! *public* address `10.<160+c>.<d+1>.<n+1>` is an address of this namespace, where the relay
//! (see `relay`) listens: nodes of another data center reach a node only through it, since this
//! namespace does not forward between the veths. That relay is where the link between data
//! centers gets its latency and its cuts: this kernel has no `netem` qdisc
//! (`CONFIG_NET_SCH_NETEM` is not set), so `tc` cannot delay packets.
//!
//! Cluster numbers are claimed by creating the first namespace (`ip netns add` fails when it
//! exists), so concurrent test processes never share one.

use std::net::Ipv4Addr;
use std::process::Command;

use crate::{ClusterError, fail};

/// How many clusters may run at once on one machine.
const MAX_CLUSTERS: u8 = 40;

/// The namespaces and links of one cluster, removed on drop.
pub(crate) struct Network {
    index: u8,
    namespaces: Vec<String>,
}

fn ip(args: &[&str]) -> Result<(), ClusterError> {
    let out =
        Command::new("ip").args(args).output().map_err(|e| fail(format!("running ip (iproute2): {e}")))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(fail(format!("ip {}: {}", args.join(" "), String::from_utf8_lossy(&out.stderr).trim())))
    }
}

impl Network {
    /// Namespaces for data centers of `nodes[d]` nodes each.
    pub(crate) fn create(nodes: &[usize]) -> Result<Network, ClusterError> {
        if nodes.is_empty() || nodes.len() > 9 || nodes.iter().any(|&n| n == 0 || n > 9) {
            return Err(fail("1 to 9 data centers of 1 to 9 nodes each"));
        }
        let mut claimed = None;
        let mut last_error = String::new();
        for index in 0..MAX_CLUSTERS {
            match ip(&["netns", "add", &namespace(index, 0)]) {
                Ok(()) => {
                    claimed = Some(index);
                    break;
                }
                Err(error) => last_error = error.0,
            }
        }
        let index = claimed.ok_or_else(|| {
            fail(format!(
                "no free cluster number (network namespaces need root; last error: {last_error}); \
                 `cargo xtask cassandra down --stale` removes ones left by killed runs"
            ))
        })?;
        let mut network = Network { index, namespaces: vec![namespace(index, 0)] };
        for (dc, &count) in nodes.iter().enumerate() {
            network.add_data_center(dc, count)?;
        }
        Ok(network)
    }

    fn add_data_center(&mut self, dc: usize, nodes: usize) -> Result<(), ClusterError> {
        let ns = namespace(self.index, dc);
        if dc > 0 {
            ip(&["netns", "add", &ns])?;
            self.namespaces.push(ns.clone());
        }
        let (host, inner) = (format!("mqc{}d{dc}h", self.index), format!("mqc{}d{dc}n", self.index));
        ip(&["link", "add", &host, "type", "veth", "peer", "name", &inner, "netns", &ns])?;
        ip(&["addr", "add", &format!("{}/24", self.gateway(dc)), "dev", &host])?;
        for node in 0..nodes {
            ip(&["addr", "add", &format!("{}/32", self.public(dc, node)), "dev", &host])?;
        }
        ip(&["link", "set", &host, "up"])?;
        let exec = |args: &[&str]| {
            let mut all = vec!["netns", "exec", ns.as_str(), "ip"];
            all.extend_from_slice(args);
            ip(&all)
        };
        exec(&["link", "set", "lo", "up"])?;
        for node in 0..nodes {
            exec(&["addr", "add", &format!("{}/24", self.private(dc, node)), "dev", &inner])?;
        }
        exec(&["link", "set", &inner, "up"])?;
        exec(&["route", "add", "default", "via", &self.gateway(dc).to_string()])?;
        Ok(())
    }

    /// The cluster's number on this machine.
    pub(crate) fn index(&self) -> u8 {
        self.index
    }

    /// The namespace of data center `dc`.
    pub(crate) fn namespace(&self, dc: usize) -> String {
        namespace(self.index, dc)
    }

    /// A node's address inside its data center (where it listens; what clients use).
    pub(crate) fn private(&self, dc: usize, node: usize) -> Ipv4Addr {
        Ipv4Addr::new(10, 110 + self.index, dc as u8 + 1, node as u8 + 1)
    }

    /// A node's address for other data centers: the relay's listener for it.
    pub(crate) fn public(&self, dc: usize, node: usize) -> Ipv4Addr {
        Ipv4Addr::new(10, 160 + self.index, dc as u8 + 1, node as u8 + 1)
    }

    fn gateway(&self, dc: usize) -> Ipv4Addr {
        Ipv4Addr::new(10, 110 + self.index, dc as u8 + 1, 254)
    }
}

impl Drop for Network {
    fn drop(&mut self) {
        // Removing a namespace removes its end of the veth, which removes the pair.
        for ns in &self.namespaces {
            let _ = ip(&["netns", "delete", ns]);
        }
    }
}

fn namespace(index: u8, dc: usize) -> String {
    format!("mqc{index}-{dc}")
}

/// Removes the namespaces of clusters whose processes are all gone (left behind by a run
/// that was killed before it could clean up); returns their names.
pub fn remove_stale() -> Result<Vec<String>, ClusterError> {
    let out = Command::new("ip")
        .args(["netns", "list"])
        .output()
        .map_err(|e| fail(format!("running ip netns list: {e}")))?;
    let mut removed = Vec::new();
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let Some(name) = line.split_whitespace().next() else { continue };
        if !name.starts_with("mqc") {
            continue;
        }
        let pids = Command::new("ip").args(["netns", "pids", name]).output();
        if pids.is_ok_and(|p| p.stdout.iter().all(u8::is_ascii_whitespace)) {
            ip(&["netns", "delete", name])?;
            removed.push(name.to_owned());
        }
    }
    Ok(removed)
}
