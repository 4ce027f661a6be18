//! A Redis Cluster of several masters on free loopback ports, made of Debian's `redis-server`
//! processes: what Marquee's regional cache tier is tested and benchmarked against, and what
//! the local rig runs per region.
//!
//! Every process is started here and stopped by its PID (on [`RedisCluster::stop`], on drop,
//! or one at a time with [`RedisCluster::kill`] to take a master away under traffic); nothing
//! is ever stopped by name. Each node's files live in a directory of its own under the
//! cluster's directory. Without replicas a killed master's slots are unavailable until it is
//! started again ([`RedisCluster::restart`]), which is the outage the cache tier must ride out.
//!
//! A cluster can be secured as a production one is ([`Security`]): TLS only (clients, the
//! cluster bus), with a certificate from a CA made for it, and a password every client must
//! AUTH with, as ElastiCache runs with transit encryption and an AUTH token.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// How long a node or the cluster may take to come up.
const START_TIMEOUT: Duration = Duration::from_secs(20);

/// Why a cluster could not be started.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct ClusterError(pub String);

fn fail(message: impl Into<String>) -> ClusterError {
    ClusterError(message.into())
}

/// How a cluster is secured.
#[derive(Clone, Debug, Default)]
pub struct Security {
    /// Serve TLS only, with a certificate for 127.0.0.1 and these DNS names (the names clients
    /// reach the nodes by), signed by a CA made for the cluster ([`RedisCluster::ca_file`]).
    pub tls_names: Option<Vec<String>>,
    /// The password every client must `AUTH` with (`requirepass`).
    pub password: Option<String>,
}

/// The files of a cluster's TLS: its CA, and the nodes' certificate and key.
struct TlsFiles {
    ca: PathBuf,
    cert: PathBuf,
    key: PathBuf,
}

/// One `redis-server` of the cluster.
struct Node {
    port: u16,
    dir: PathBuf,
    process: Option<Child>,
}

/// A running cluster; its processes stop when it is dropped.
pub struct RedisCluster {
    nodes: Vec<Node>,
    tls: Option<TlsFiles>,
    password: Option<String>,
    _scratch: Option<tempfile::TempDir>,
}

impl RedisCluster {
    /// Starts `masters` nodes (at least 3, as Redis Cluster requires) on free loopback ports
    /// under a temporary directory, and joins them into one cluster with no replicas.
    pub fn start(masters: usize) -> Result<RedisCluster, ClusterError> {
        RedisCluster::start_secured(masters, &Security::default())
    }

    /// [`RedisCluster::start`], secured as `security` says.
    pub fn start_secured(masters: usize, security: &Security) -> Result<RedisCluster, ClusterError> {
        let scratch = tempfile::Builder::new()
            .prefix("marquee-redis-")
            .tempdir()
            .map_err(|e| fail(format!("creating a directory for the cluster: {e}")))?;
        if masters < 3 {
            return Err(fail("a Redis Cluster needs at least 3 masters"));
        }
        let mut cluster = RedisCluster::start_on(&free_ports(masters)?, scratch.path(), security)?;
        cluster._scratch = Some(scratch);
        Ok(cluster)
    }

    /// A cluster with one master on each of `ports` (on 127.0.0.1, at least 3), the nodes'
    /// files under `dir` (kept after the cluster stops): for a region file that names its
    /// seeds.
    pub fn start_on(ports: &[u16], dir: &Path, security: &Security) -> Result<RedisCluster, ClusterError> {
        let masters = ports.len();
        if masters < 3 {
            return Err(fail("a Redis Cluster needs at least 3 masters"));
        }
        for &port in ports {
            if TcpListener::bind(("127.0.0.1", port)).is_err() {
                return Err(fail(format!("127.0.0.1:{port} is in use")));
            }
        }
        let tls = match &security.tls_names {
            Some(names) => Some(make_tls(dir, names)?),
            None => None,
        };
        let mut cluster = RedisCluster {
            nodes: Vec::with_capacity(masters),
            tls,
            password: security.password.clone(),
            _scratch: None,
        };
        for &port in ports {
            let node_dir = dir.join(format!("node-{port}"));
            std::fs::create_dir_all(&node_dir)
                .map_err(|e| fail(format!("creating {}: {e}", node_dir.display())))?;
            cluster.nodes.push(Node { port, dir: node_dir, process: None });
        }
        for index in 0..masters {
            cluster.spawn(index)?;
        }
        let mut create = cluster.cli();
        create.arg("--cluster").arg("create");
        for node in &cluster.nodes {
            create.arg(format!("127.0.0.1:{}", node.port));
        }
        create.args(["--cluster-replicas", "0", "--cluster-yes"]);
        let out = create
            .output()
            .map_err(|e| fail(format!("running redis-cli (apt-get install redis-tools): {e}")))?;
        if !out.status.success() {
            return Err(fail(format!(
                "redis-cli --cluster create failed: {}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            )));
        }
        cluster.wait_until_ok()?;
        Ok(cluster)
    }

    /// The CA that signs the nodes' certificate, when the cluster serves TLS.
    pub fn ca_file(&self) -> Option<&Path> {
        self.tls.as_ref().map(|tls| tls.ca.as_path())
    }

    /// `redis-cli`, set up to reach this cluster's nodes (TLS, password).
    fn cli(&self) -> Command {
        let mut cli = Command::new("redis-cli");
        if let Some(tls) = &self.tls {
            cli.arg("--tls").arg("--cacert").arg(&tls.ca);
        }
        if let Some(password) = &self.password {
            cli.env("REDISCLI_AUTH", password);
        }
        cli
    }

    /// Sends one command to the node on `port` and returns the reply's text: over a plain
    /// socket, or through `redis-cli` when the cluster serves TLS only.
    fn command(&self, port: u16, args: &[&str]) -> std::io::Result<String> {
        if self.tls.is_none() && self.password.is_none() {
            return command(port, args);
        }
        let out = self.cli().args(["-h", "127.0.0.1", "-p", &port.to_string()]).args(args).output()?;
        let text = String::from_utf8_lossy(&out.stdout).trim_end().to_owned();
        if !out.status.success() || text.starts_with("Could not connect") || text.is_empty() {
            return Err(std::io::Error::other(format!(
                "redis-cli: {text}{}",
                String::from_utf8_lossy(&out.stderr)
            )));
        }
        // redis-cli prints a simple string without its `+`.
        Ok(match text.as_str() {
            "OK" => "+OK".to_owned(),
            "PONG" => "+PONG".to_owned(),
            _ => text,
        })
    }

    /// `127.0.0.1:port` of every node, the seeds a client needs.
    pub fn seeds(&self) -> Vec<String> {
        self.nodes.iter().map(|n| format!("127.0.0.1:{}", n.port)).collect()
    }

    /// The PIDs of the running nodes.
    pub fn pids(&self) -> Vec<u32> {
        self.nodes.iter().filter_map(|n| n.process.as_ref().map(Child::id)).collect()
    }

    /// Sets `parameter` to `value` on every running node (`CONFIG SET`): for example
    /// `maxmemory` and `maxmemory-policy`, to fill the cluster up.
    pub fn config_set(&self, parameter: &str, value: &str) -> Result<(), ClusterError> {
        for node in self.nodes.iter().filter(|n| n.process.is_some()) {
            let reply = self
                .command(node.port, &["CONFIG", "SET", parameter, value])
                .map_err(|e| fail(format!("CONFIG SET on port {}: {e}", node.port)))?;
            if reply != "+OK" {
                return Err(fail(format!("CONFIG SET {parameter} {value} on port {}: {reply}", node.port)));
            }
        }
        Ok(())
    }

    /// The `INFO section` text of every running node, in node order.
    pub fn info(&self, section: &str) -> Result<Vec<String>, ClusterError> {
        self.nodes
            .iter()
            .filter(|n| n.process.is_some())
            .map(|node| {
                self.command(node.port, &["INFO", section])
                    .map_err(|e| fail(format!("INFO on port {}: {e}", node.port)))
            })
            .collect()
    }

    /// Kills node `index` (SIGKILL by PID): its slots stop answering.
    pub fn kill(&mut self, index: usize) -> Result<(), ClusterError> {
        let node = self.nodes.get_mut(index).ok_or_else(|| fail(format!("no node {index}")))?;
        if let Some(mut process) = node.process.take() {
            process.kill().map_err(|e| fail(format!("killing node {index}: {e}")))?;
            let _ = process.wait();
        }
        Ok(())
    }

    /// Freezes node `index` (SIGSTOP by PID): it keeps its connections but answers nothing,
    /// like a node behind a network that drops packets, until [`RedisCluster::thaw`].
    pub fn freeze(&mut self, index: usize) -> Result<(), ClusterError> {
        self.signal(index, "-STOP")
    }

    /// Lets a frozen node run again (SIGCONT by PID).
    pub fn thaw(&mut self, index: usize) -> Result<(), ClusterError> {
        self.signal(index, "-CONT")
    }

    fn signal(&self, index: usize, signal: &str) -> Result<(), ClusterError> {
        let node = self.nodes.get(index).ok_or_else(|| fail(format!("no node {index}")))?;
        let process = node.process.as_ref().ok_or_else(|| fail(format!("node {index} is not running")))?;
        let status = Command::new("kill")
            .args([signal, &process.id().to_string()])
            .status()
            .map_err(|e| fail(format!("signalling node {index}: {e}")))?;
        if status.success() { Ok(()) } else { Err(fail(format!("kill {signal} failed for node {index}"))) }
    }

    /// Starts node `index` again (it rejoins with its saved cluster state) and waits until the
    /// cluster is whole.
    pub fn restart(&mut self, index: usize) -> Result<(), ClusterError> {
        self.spawn(index)?;
        self.wait_until_ok()
    }

    /// Stops every node by PID (SIGTERM, then SIGKILL if one lingers).
    pub fn stop(&mut self) {
        for node in &mut self.nodes {
            if let Some(mut process) = node.process.take() {
                let _ = Command::new("kill").arg(process.id().to_string()).status();
                let deadline = Instant::now() + Duration::from_secs(5);
                while Instant::now() < deadline {
                    if let Ok(Some(_)) = process.try_wait() {
                        break;
                    }
                    std::thread::sleep(Duration::from_millis(20));
                }
                let _ = process.kill();
                let _ = process.wait();
            }
        }
    }

    fn spawn(&mut self, index: usize) -> Result<(), ClusterError> {
        let node = self.nodes.get(index).ok_or_else(|| fail(format!("no node {index}")))?;
        let log = std::fs::File::create(node.dir.join("redis.log"))
            .map_err(|e| fail(format!("creating {}: {e}", node.dir.display())))?;
        let mut server = Command::new("redis-server");
        match &self.tls {
            None => server.args(["--bind", "127.0.0.1", "--port", &node.port.to_string()]),
            Some(tls) => server
                .args(["--bind", "127.0.0.1", "--port", "0", "--tls-port", &node.port.to_string()])
                .args(["--tls-cluster", "yes", "--tls-replication", "yes", "--tls-auth-clients", "no"])
                .arg("--tls-cert-file")
                .arg(&tls.cert)
                .arg("--tls-key-file")
                .arg(&tls.key)
                .arg("--tls-ca-cert-file")
                .arg(&tls.ca),
        };
        if let Some(password) = &self.password {
            server.args(["--requirepass", password, "--masterauth", password]);
        }
        let process = server
            .args(["--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf"])
            .args(["--cluster-node-timeout", "2000"])
            .args(["--save", "", "--appendonly", "no", "--protected-mode", "no", "--daemonize", "no"])
            .arg("--dir")
            .arg(&node.dir)
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| fail(format!("starting redis-server (apt-get install redis-server): {e}")))?;
        let port = node.port;
        self.nodes[index].process = Some(process);
        let deadline = Instant::now() + START_TIMEOUT;
        while !self.command(port, &["PING"]).is_ok_and(|reply| reply == "+PONG") {
            if Instant::now() > deadline {
                return Err(fail(format!("redis-server on port {port} did not answer PING")));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(())
    }

    /// Waits until every running node reports `cluster_state:ok`.
    fn wait_until_ok(&self) -> Result<(), ClusterError> {
        let deadline = Instant::now() + START_TIMEOUT;
        for node in self.nodes.iter().filter(|n| n.process.is_some()) {
            loop {
                let info = self.command(node.port, &["CLUSTER", "INFO"]).unwrap_or_default();
                if info.contains("cluster_state:ok") {
                    break;
                }
                if Instant::now() > deadline {
                    return Err(fail(format!("node on port {} reports: {info}", node.port)));
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        Ok(())
    }
}

impl Drop for RedisCluster {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A CA for the cluster and the nodes' certificate (127.0.0.1, localhost and `names`), as PEM
/// files under `dir`; a cluster started again in the same directory keeps the ones it has, so
/// clients that trust its CA reconnect.
fn make_tls(dir: &Path, names: &[String]) -> Result<TlsFiles, ClusterError> {
    let kept = TlsFiles { ca: dir.join("ca.pem"), cert: dir.join("node.pem"), key: dir.join("node.key") };
    if [&kept.ca, &kept.cert, &kept.key].iter().all(|file| file.is_file()) {
        return Ok(kept);
    }
    let bad = |e: rcgen::Error| fail(format!("making the cluster's certificates: {e}"));
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).map_err(bad)?;
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca_params.distinguished_name.push(rcgen::DnType::CommonName, "Marquee Redis test CA");
    let ca_key = rcgen::KeyPair::generate().map_err(bad)?;
    let ca = ca_params.self_signed(&ca_key).map_err(bad)?;
    let mut subject = vec!["127.0.0.1".to_owned(), "localhost".to_owned()];
    subject.extend(names.iter().cloned());
    let node_params = rcgen::CertificateParams::new(subject).map_err(bad)?;
    let node_key = rcgen::KeyPair::generate().map_err(bad)?;
    let issuer = rcgen::Issuer::new(ca_params, ca_key);
    let node = node_params.signed_by(&node_key, &issuer).map_err(bad)?;
    std::fs::create_dir_all(dir).map_err(|e| fail(format!("creating {}: {e}", dir.display())))?;
    let files = TlsFiles { ca: dir.join("ca.pem"), cert: dir.join("node.pem"), key: dir.join("node.key") };
    for (path, pem) in
        [(&files.ca, ca.pem()), (&files.cert, node.pem()), (&files.key, node_key.serialize_pem())]
    {
        std::fs::write(path, pem).map_err(|e| fail(format!("writing {}: {e}", path.display())))?;
    }
    Ok(files)
}

/// `count` loopback ports that are free, each with its cluster bus port (port + 10000) free
/// too.
fn free_ports(count: usize) -> Result<Vec<u16>, ClusterError> {
    let mut ports = Vec::with_capacity(count);
    let mut held = Vec::new();
    for _ in 0..200 {
        if ports.len() == count {
            break;
        }
        let listener =
            TcpListener::bind("127.0.0.1:0").map_err(|e| fail(format!("finding a free port: {e}")))?;
        let port = listener.local_addr().map_err(|e| fail(e.to_string()))?.port();
        if port > 55_535 {
            continue;
        }
        if let Ok(bus) = TcpListener::bind(("127.0.0.1", port + 10_000)) {
            ports.push(port);
            held.push((listener, bus));
        }
    }
    if ports.len() < count {
        return Err(fail("no free loopback ports for the cluster"));
    }
    Ok(ports)
}

/// Sends one command in RESP and returns the reply's text (a simple string as `+OK`, a bulk
/// string's contents as is).
fn command(port: u16, args: &[&str]) -> std::io::Result<String> {
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_millis(500))?;
    stream.set_read_timeout(Some(Duration::from_secs(2)))?;
    let mut request = format!("*{}\r\n", args.len());
    for arg in args {
        request.push_str(&format!("${}\r\n{arg}\r\n", arg.len()));
    }
    stream.write_all(request.as_bytes())?;
    let mut reader = BufReader::new(stream);
    let mut first = String::new();
    reader.read_line(&mut first)?;
    let first = first.trim_end().to_owned();
    match first.strip_prefix('$') {
        Some(len) => {
            let len: usize = len.parse().map_err(|_| std::io::Error::other("bad bulk length"))?;
            let mut body = vec![0; len];
            reader.read_exact(&mut body)?;
            Ok(String::from_utf8_lossy(&body).into_owned())
        }
        None => Ok(first),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn three_masters_serve_every_slot_and_a_killed_one_comes_back() {
        let mut cluster = RedisCluster::start(3).expect("cluster");
        assert_eq!(cluster.seeds().len(), 3);
        let ports: Vec<u16> = cluster.nodes.iter().map(|n| n.port).collect();
        let slots = command(ports[0], &["CLUSTER", "INFO"]).expect("info");
        assert!(slots.contains("cluster_slots_assigned:16384"), "{slots}");
        let pid = cluster.pids()[1];
        cluster.kill(1).expect("kill");
        assert!(command(ports[1], &["PING"]).is_err(), "node 1 is gone");
        assert!(!Path::new(&format!("/proc/{pid}")).exists(), "its process is gone");
        cluster.restart(1).expect("restart");
        assert_eq!(command(ports[1], &["PING"]).expect("ping"), "+PONG");
        let pids = cluster.pids();
        drop(cluster);
        for pid in pids {
            assert!(!Path::new(&format!("/proc/{pid}")).exists(), "{pid} stopped with the cluster");
        }
    }
}
