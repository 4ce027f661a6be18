//! `cargo xtask cassandra up | status | link | down`: a multi-data-center Apache Cassandra
//! cluster on this machine (`marquee-cassandra-cluster`), kept running in the background by a
//! keeper process that owns it, so the rig, the drill and a developer's tests can share it.
//!
//! The keeper (`cargo xtask cassandra keep`, started by `up`) writes
//! `target/cassandra/cluster/state.json` (contact points per data center, PIDs, its control
//! port) and answers one-line commands on that port (`status`, `get`, `link <round trip ms> <cut>`,
//! `stop`). `down` asks it to stop, which stops every node by PID and removes the namespaces;
//! a keeper that does not answer is stopped by its PID, and its nodes by theirs.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use marquee_cassandra_cluster::{CassandraCluster, Link, Spec};
use serde::{Deserialize, Serialize};

use crate::process;

#[derive(clap::Subcommand)]
pub(crate) enum CassandraTask {
    /// Start a cluster in the background and print its contact points (a no-op when one runs).
    Up(Topology),
    /// The running cluster: contact points, PIDs, the link, `nodetool status`.
    Status {
        /// The rig's cluster (`cargo xtask rig up` starts one of its own).
        #[arg(long)]
        rig: bool,
    },
    /// Change the link between the data centers.
    Link {
        /// Round-trip time added between data centers, in milliseconds.
        #[arg(long)]
        round_trip_ms: Option<u64>,
        /// Cut the data centers apart (a partition: each keeps serving its own clients).
        #[arg(long, conflicts_with = "heal")]
        cut: bool,
        /// Join them again.
        #[arg(long)]
        heal: bool,
        /// The rig's cluster.
        #[arg(long)]
        rig: bool,
    },
    /// Stop the cluster (every node by PID) and remove its network namespaces.
    Down {
        /// Also remove namespaces left by runs that were killed (`mqc*` with no process).
        #[arg(long)]
        stale: bool,
    },
    /// Run a cluster in the foreground until `stop` arrives on its control port, or SIGTERM
    /// or Ctrl-C (what `up` starts; the rig starts one of its own).
    #[command(hide = true)]
    Keep {
        #[command(flatten)]
        topology: Topology,
        /// Where its nodes and `state.json` go (default `target/cassandra/cluster`).
        #[arg(long)]
        dir: Option<PathBuf>,
    },
}

/// The shape of a cluster.
#[derive(clap::Args, Clone, Debug)]
pub(crate) struct Topology {
    /// Data centers, one per region (names as in `[store] replication`).
    #[arg(long, value_delimiter = ',', default_values = ["us-east", "eu-west"])]
    pub(crate) data_centers: Vec<String>,
    /// Nodes per data center.
    #[arg(long, default_value_t = 1)]
    pub(crate) nodes: usize,
    /// Hint window (`max_hint_window`) in seconds.
    #[arg(long, default_value_t = 3 * 3600)]
    pub(crate) hint_window_secs: u64,
    /// Each node's heap, in MiB: tests give every case a keyspace of its own, and each
    /// table holds memory.
    #[arg(long, default_value_t = 2048)]
    pub(crate) heap_mib: u32,
}

impl Topology {
    pub(crate) fn spec(&self, dir: Option<PathBuf>) -> Spec {
        Spec {
            data_centers: self.data_centers.iter().map(|dc| (dc.clone(), self.nodes)).collect(),
            max_hint_window: Duration::from_secs(self.hint_window_secs),
            heap_mib: self.heap_mib,
            dir,
        }
    }
}

/// What the keeper writes for others to find the cluster.
#[derive(Serialize, Deserialize, Debug)]
pub(crate) struct State {
    pub(crate) keeper_pid: u32,
    pub(crate) control: SocketAddr,
    /// Per data center, its nodes' `address:9042`.
    pub(crate) data_centers: Vec<(String, Vec<String>)>,
    pub(crate) node_pids: Vec<u32>,
}

/// Where the rig's own cluster is kept (`cargo xtask rig up` starts it), under the rig's
/// directory.
pub(crate) fn rig_cluster_dir(rig_dir: &Path) -> PathBuf {
    rig_dir.join("cassandra")
}

/// The directory of the cluster `cargo xtask cassandra up` keeps.
fn shared_dir(root: &Path) -> PathBuf {
    root.join("target/cassandra/cluster")
}

fn state_file(dir: &Path) -> PathBuf {
    dir.join("state.json")
}

/// The state of the cluster kept in `dir`, if its keeper is alive.
pub(crate) fn running(dir: &Path) -> Option<State> {
    let text = std::fs::read_to_string(state_file(dir)).ok()?;
    let state: State = serde_json::from_str(&text).ok()?;
    process::alive(state.keeper_pid).then_some(state)
}

pub(crate) fn run(root: &Path, task: CassandraTask) -> anyhow::Result<()> {
    let dir = shared_dir(root);
    let chosen = |rig: bool| if rig { rig_cluster_dir(&root.join("target/rig")) } else { dir.clone() };
    match task {
        CassandraTask::Up(topology) => {
            let state = up(root, &topology)?;
            print_state(&state);
            Ok(())
        }
        CassandraTask::Status { rig } => {
            let state = running(&chosen(rig)).context("no cluster is running (cargo xtask cassandra up)")?;
            print_state(&state);
            print!("{}", ask(&state, "status")?);
            Ok(())
        }
        CassandraTask::Link { round_trip_ms, cut, heal, rig } => {
            let state = running(&chosen(rig)).context("no cluster is running (cargo xtask cassandra up)")?;
            print!("{}", set_link(&state, round_trip_ms, cut.then_some(true).or(heal.then_some(false)))?);
            Ok(())
        }
        CassandraTask::Down { stale } => {
            down(&dir)?;
            if stale {
                for name in marquee_cassandra_cluster::remove_stale().map_err(anyhow::Error::msg)? {
                    println!("removed stale namespace {name}");
                }
            }
            Ok(())
        }
        CassandraTask::Keep { topology, dir: own } => keep(&own.unwrap_or(dir), &topology),
    }
}

/// Starts the shared cluster unless one runs; its state either way.
pub(crate) fn up(root: &Path, topology: &Topology) -> anyhow::Result<State> {
    let dir = shared_dir(root);
    if let Some(state) = running(&dir) {
        let names: Vec<&String> = state.data_centers.iter().map(|(dc, _)| dc).collect();
        if names != topology.data_centers.iter().collect::<Vec<_>>() {
            bail!("a cluster of data centers {names:?} runs already; `cargo xtask cassandra down` first");
        }
        return Ok(state);
    }
    crate::system::ensure_java()?;
    let _ = std::fs::remove_file(state_file(&dir));
    let log = dir.join("keeper.log");
    std::fs::create_dir_all(&dir)?;
    std::fs::write(&log, "")?;
    let child = process::spawn_detached(keeper(root, &dir, topology)?, &log, "the Cassandra keeper")?;
    println!("starting Cassandra ({}; log {})", topology.data_centers.join(", "), log.display());
    process::wait_for("the Cassandra cluster", child.id(), &log, Duration::from_secs(300), || {
        running(&dir).is_some()
    })?;
    running(&dir).context("the keeper exited")
}

/// The command that runs a keeper of a cluster shaped `topology` in `dir`.
pub(crate) fn keeper(root: &Path, dir: &Path, topology: &Topology) -> anyhow::Result<Command> {
    let exe = std::env::current_exe().context("locating xtask")?;
    let mut keeper = Command::new(exe);
    keeper.current_dir(root).args(["cassandra", "keep", "--data-centers", &topology.data_centers.join(",")]);
    keeper.args(["--nodes", &topology.nodes.to_string()]);
    keeper.args(["--hint-window-secs", &topology.hint_window_secs.to_string()]);
    keeper.args(["--heap-mib", &topology.heap_mib.to_string()]);
    keeper.arg("--dir").arg(dir);
    Ok(keeper)
}

/// Runs the cluster in this process until told to stop (`stop` on the control port, SIGTERM
/// or Ctrl-C).
fn keep(dir: &Path, topology: &Topology) -> anyhow::Result<()> {
    let cluster =
        CassandraCluster::start(&topology.spec(Some(dir.join("nodes")))).map_err(anyhow::Error::msg)?;
    let control = TcpListener::bind("127.0.0.1:0").context("binding the control port")?;
    let state = State {
        keeper_pid: std::process::id(),
        control: control.local_addr()?,
        data_centers: cluster
            .data_centers()
            .iter()
            .map(|dc| (dc.clone(), cluster.contact_points(dc)))
            .collect(),
        node_pids: cluster.nodes().iter().filter_map(|n| n.pid).collect(),
    };
    // A signal becomes a `stop` on the control port, so the nodes are stopped the one way.
    let control_addr = state.control;
    std::thread::spawn(move || {
        let Ok(runtime) = tokio::runtime::Builder::new_current_thread().enable_all().build() else { return };
        runtime.block_on(async {
            let Ok(mut terminate) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            else {
                return;
            };
            tokio::select! {
                _ = terminate.recv() => {}
                _ = tokio::signal::ctrl_c() => {}
            }
        });
        if let Ok(mut stream) = TcpStream::connect(control_addr) {
            let _ = stream.write_all(b"stop\n");
        }
    });
    let file = state_file(dir);
    std::fs::write(&file, serde_json::to_string_pretty(&state)?)?;
    println!("cluster {} up: {:?}", cluster.number(), state.data_centers);
    for stream in control.incoming() {
        let Ok(mut stream) = stream else { continue };
        let mut line = String::new();
        if BufReader::new(&stream).read_line(&mut line).is_err() {
            continue;
        }
        let words: Vec<&str> = line.split_whitespace().collect();
        let reply = match words.as_slice() {
            ["stop"] => {
                let _ = stream.write_all(b"stopping\n");
                break;
            }
            ["get"] => {
                let link = cluster.link();
                format!("{} {}\n", link.round_trip.as_millis(), link.cut)
            }
            ["status"] => {
                let link = cluster.link();
                let mut text = format!("link: round trip {:?}, cut {}\n", link.round_trip, link.cut);
                text.push_str(&cluster.nodetool(0, &["status"]).unwrap_or_else(|e| e.0));
                text
            }
            ["link", round_trip, cut] => match (round_trip.parse::<u64>(), cut.parse::<bool>()) {
                (Ok(ms), Ok(cut)) => {
                    cluster.set_link(Link { round_trip: Duration::from_millis(ms), cut });
                    format!("link: round trip {ms} ms, cut {cut}\n")
                }
                _ => "usage: link <round trip ms> <true|false>\n".to_owned(),
            },
            _ => "commands: status, get, link <round trip ms> <cut>, stop\n".to_owned(),
        };
        let _ = stream.write_all(reply.as_bytes());
    }
    let _ = std::fs::remove_file(&file);
    drop(cluster);
    println!("cluster stopped");
    Ok(())
}

/// Sends one command to the keeper; its reply.
fn ask(state: &State, command: &str) -> anyhow::Result<String> {
    let mut stream = TcpStream::connect_timeout(&state.control, Duration::from_secs(2))
        .with_context(|| format!("reaching the keeper at {}", state.control))?;
    stream.set_read_timeout(Some(Duration::from_secs(60)))?;
    stream.write_all(format!("{command}\n").as_bytes())?;
    let mut reply = String::new();
    stream.read_to_string(&mut reply)?;
    Ok(reply)
}

/// Changes the link: the round trip when given, cut or healed when given.
pub(crate) fn set_link(
    state: &State,
    round_trip_ms: Option<u64>,
    cut: Option<bool>,
) -> anyhow::Result<String> {
    let now = ask(state, "get")?;
    let (current_ms, current_cut) = now
        .split_once(' ')
        .and_then(|(ms, cut)| Some((ms.parse::<u64>().ok()?, cut.trim().parse::<bool>().ok()?)))
        .with_context(|| format!("the keeper answered `{now}`"))?;
    ask(state, &format!("link {} {}", round_trip_ms.unwrap_or(current_ms), cut.unwrap_or(current_cut)))
}

/// Stops the cluster kept in `dir`, if any.
pub(crate) fn down(dir: &Path) -> anyhow::Result<()> {
    let Some(text) = std::fs::read_to_string(state_file(dir)).ok() else {
        println!("no cluster is running");
        return Ok(());
    };
    let state: State = serde_json::from_str(&text).context("reading the cluster's state")?;
    if ask(&state, "stop").is_ok() {
        let deadline = Instant::now() + Duration::from_secs(90);
        while process::alive(state.keeper_pid) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(200));
        }
    }
    if process::alive(state.keeper_pid) {
        process::signal_and_wait(state.keeper_pid, "KILL", "the Cassandra keeper")?;
    }
    // Nodes a killed keeper left behind.
    for &pid in &state.node_pids {
        if process::alive(pid) {
            process::signal_and_wait(pid, "TERM", "a Cassandra node")?;
        }
    }
    let _ = std::fs::remove_file(state_file(dir));
    println!("cluster stopped");
    Ok(())
}

fn print_state(state: &State) {
    for (dc, points) in &state.data_centers {
        println!("data center {dc}: {}", points.join(", "));
    }
    println!("keeper pid {}, nodes {:?}", state.keeper_pid, state.node_pids);
}
