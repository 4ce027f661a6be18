//! The rig's regions: every `regions/*.toml` with a `[topology]` table, read as the gateway
//! reads it (`gateway --config FILE config` prints the merged configuration), so the rig and
//! the gateways can never disagree about a region, and nothing about a region is written
//! twice.

use std::collections::BTreeSet;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, bail};
use serde::Deserialize;

/// The port of CQL on the rig's Cassandra nodes (each has an address of its own).
const CQL_PORT: u16 = 9042;

/// One region, as the rig needs it.
#[derive(Clone, Debug)]
pub(crate) struct Region {
    /// `region`: the name on every metric, and the region's directory under the rig's.
    pub(crate) name: String,
    /// The region file.
    pub(crate) file: PathBuf,
    /// `[store] local_dc`: the data center its gateways read and write in.
    pub(crate) data_center: String,
    /// `[store] contact_points`: the name of the region's data center's node in the rig's
    /// Cassandra cluster, which the rig's DNS answers with the node's address once it runs
    /// (CQL's port, 9042).
    pub(crate) contact_name: String,
    /// `[redis] seeds`: the ports of the region's Redis Cluster masters, consecutive.
    pub(crate) redis_ports: Vec<u16>,
    /// The seeds' host names (the rig's DNS answers them with 127.0.0.1).
    pub(crate) redis_names: Vec<String>,
    /// `[demo] movies`: the catalog the rig seeds.
    pub(crate) demo_movies: u64,
    /// `[topology]`.
    pub(crate) gateways: Vec<SocketAddr>,
    pub(crate) load_balancer: SocketAddr,
    pub(crate) edge: SocketAddr,
    pub(crate) client_subnets: Vec<String>,
}

/// The part of `gateway config`'s output the rig reads.
#[derive(Deserialize)]
struct Effective {
    region: String,
    store: Store,
    redis: Option<Redis>,
    demo: Demo,
    topology: Option<Topology>,
}

#[derive(Deserialize)]
struct Store {
    backend: String,
    #[serde(default)]
    contact_points: Vec<String>,
    #[serde(default)]
    local_dc: String,
}

#[derive(Deserialize)]
struct Redis {
    seeds: Vec<String>,
}

#[derive(Deserialize)]
struct Demo {
    movies: u64,
}

#[derive(Deserialize)]
struct Topology {
    gateways: Vec<SocketAddr>,
    load_balancer: SocketAddr,
    edge: SocketAddr,
    client_subnets: Vec<String>,
}

/// Reads every region file in `dir` that has a `[topology]`, through `gateway`, and checks
/// that together they describe a rig this machine can run: loopback addresses, a ScyllaDB
/// store, a Redis Cluster on consecutive ports, every edge on one port, no address used twice.
pub(crate) fn load(gateway: &Path, dir: &Path) -> anyhow::Result<Vec<Region>> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .with_context(|| format!("reading {}", dir.display()))?
        .filter_map(|entry| entry.ok().map(|e| e.path()))
        .filter(|path| path.extension().is_some_and(|ext| ext == "toml"))
        .collect();
    files.sort();
    let mut regions = Vec::new();
    for file in files {
        let output = Command::new(gateway)
            .arg("--config")
            .arg(&file)
            .arg("config")
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .output()
            .with_context(|| format!("running {}", gateway.display()))?;
        if !output.status.success() {
            bail!("{}: {}", file.display(), String::from_utf8_lossy(&output.stderr).trim());
        }
        let effective: Effective = serde_json::from_slice(&output.stdout)
            .with_context(|| format!("{}: reading `gateway config`'s output", file.display()))?;
        if let Some(region) = region(&file, effective)? {
            regions.push(region);
        }
    }
    check(&regions)?;
    Ok(regions)
}

fn region(file: &Path, effective: Effective) -> anyhow::Result<Option<Region>> {
    let Some(topology) = effective.topology else { return Ok(None) };
    let at = file.display();
    if effective.store.backend != "scylla" {
        bail!("{at}: the rig's regions share one keyspace: [store] backend must be \"scylla\"");
    }
    let [contact_point] = effective.store.contact_points.as_slice() else {
        bail!("{at}: the rig serves one contact point per region: give [store] contact_points one address");
    };
    let (contact_host, contact_port) =
        host_port(contact_point).with_context(|| format!("{at}: [store] contact_points: {contact_point}"))?;
    let Some(contact_name) =
        rig_name(contact_host).with_context(|| format!("{at}: [store] contact_points"))?
    else {
        bail!(
            "{at}: [store] contact_points: name the node (cql.<region>.{}): its address is known once it runs",
            super::ZONE
        );
    };
    if contact_port != CQL_PORT {
        bail!(
            "{at}: [store] contact_points: the rig's Cassandra nodes listen on port {CQL_PORT}, not {contact_port}"
        );
    }
    let Some(redis) = effective.redis else {
        bail!("{at}: the rig runs a Redis Cluster per region: set [redis] seeds")
    };
    let mut redis_ports = Vec::new();
    let mut redis_names = Vec::new();
    for seed in &redis.seeds {
        let (host, port) = host_port(seed).with_context(|| format!("{at}: [redis] seeds: {seed}"))?;
        redis_names.extend(rig_name(host).with_context(|| format!("{at}: [redis] seeds"))?);
        redis_ports.push(port);
    }
    let consecutive = redis_ports.windows(2).all(|w| w[0].checked_add(1) == Some(w[1]));
    if redis_ports.len() < 3 || !consecutive {
        bail!("{at}: [redis] seeds: the rig starts three or more masters on consecutive ports of 127.0.0.1");
    }
    if topology.gateways.is_empty() {
        bail!("{at}: [topology] gateways is empty");
    }
    Ok(Some(Region {
        name: effective.region,
        file: file.to_owned(),
        data_center: effective.store.local_dc,
        contact_name,
        redis_ports,
        redis_names,
        demo_movies: effective.demo.movies,
        gateways: topology.gateways,
        load_balancer: topology.load_balancer,
        edge: topology.edge,
        client_subnets: topology.client_subnets,
    }))
}

fn check(regions: &[Region]) -> anyhow::Result<()> {
    if regions.is_empty() {
        bail!("no region file in regions/ has a [topology] table: the rig has nothing to start");
    }
    let mut names = BTreeSet::new();
    let mut addresses = BTreeSet::new();
    for region in regions {
        if !names.insert(&region.name) {
            bail!("two region files name the region {}", region.name);
        }
        let mut own: Vec<SocketAddr> = vec![region.load_balancer, region.edge];
        own.extend(&region.gateways);
        own.extend(region.redis_ports.iter().map(|&p| SocketAddr::from(([127, 0, 0, 1], p))));
        for addr in own {
            if !addr.ip().is_loopback() {
                bail!("{}: {addr} is not a loopback address; the rig runs on loopback only", region.name);
            }
            if !addresses.insert(addr) {
                bail!("{}: {addr} is used twice", region.name);
            }
        }
        for subnet in &region.client_subnets {
            parse_subnet(subnet).with_context(|| format!("{}: [topology] client_subnets", region.name))?;
        }
    }
    let edge_ports: BTreeSet<u16> = regions.iter().map(|r| r.edge.port()).collect();
    if edge_ports.len() > 1 {
        bail!(
            "every region's [topology] edge must listen on the same port (DNS gives clients an address, not a port)"
        );
    }
    Ok(())
}

/// `host:port`.
fn host_port(text: &str) -> anyhow::Result<(&str, u16)> {
    let (host, port) = text.rsplit_once(':').context("expected host:port")?;
    Ok((host, port.parse().context("the port is not a number")?))
}

/// A rig part's host: 127.0.0.1 (no name), or a name in the rig's zone, which its DNS answers
/// with 127.0.0.1.
fn rig_name(host: &str) -> anyhow::Result<Option<String>> {
    match host.parse::<IpAddr>() {
        Ok(ip) if ip == IpAddr::from([127, 0, 0, 1]) => Ok(None),
        Ok(ip) => bail!("the rig's parts listen on 127.0.0.1, not {ip}"),
        Err(_) if host.ends_with(&format!(".{}", super::ZONE)) => Ok(Some(host.to_owned())),
        Err(_) => bail!("{host} is not a name the rig's DNS serves (*.{})", super::ZONE),
    }
}

/// `a.b.c.d/n`, checked.
fn parse_subnet(subnet: &str) -> anyhow::Result<(IpAddr, u8)> {
    let (ip, bits) = subnet.split_once('/').context("expected a.b.c.d/n")?;
    let ip: IpAddr = ip.parse().with_context(|| format!("{subnet}: not an address"))?;
    let bits: u8 = bits.parse().with_context(|| format!("{subnet}: not a prefix length"))?;
    if bits > if ip.is_ipv4() { 32 } else { 128 } {
        bail!("{subnet}: prefix too long");
    }
    Ok((ip, bits))
}
