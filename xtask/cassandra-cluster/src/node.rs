//! One Cassandra node: its `cassandra.yaml`, rack file and logging written into its
//! directory, and the JVM started inside its data center's namespace (`ip netns exec` execs
//! `java`, so the child's PID is the JVM's).

use std::fmt::Write as _;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::{ClusterError, fail};

/// CQL's port on every node.
pub const CQL_PORT: u16 = 9042;
/// Internode messaging's port (the relay listens on the same port of the public address).
pub(crate) const STORAGE_PORT: u16 = 7000;
/// JMX of a data center's first node, on its namespace's own loopback (where `nodetool`
/// runs); the n-th node of the data center uses the n-th port after it.
pub(crate) const JMX_PORT: u16 = 7199;

/// Packages Cassandra 5.0 reaches into on Java 17 (its `jvm17-server.options`).
const EXPORTS: &[&str] = &[
    "java.base/jdk.internal.misc",
    "java.base/jdk.internal.ref",
    "java.base/sun.nio.ch",
    "java.management.rmi/com.sun.jmx.remote.internal.rmi",
    "java.rmi/sun.rmi.registry",
    "java.rmi/sun.rmi.server",
    "java.sql/java.sql",
    "java.base/java.lang.ref",
    "jdk.unsupported/sun.misc",
];
const OPENS: &[&str] = &[
    "java.base/java.lang.module",
    "java.base/jdk.internal.loader",
    "java.base/jdk.internal.ref",
    "java.base/jdk.internal.reflect",
    "java.base/jdk.internal.math",
    "java.base/jdk.internal.module",
    "java.base/jdk.internal.util.jar",
    "jdk.management/com.sun.management.internal",
    "java.base/sun.nio.ch",
    "java.base/java.io",
    "java.base/java.nio",
    "java.base/java.util.concurrent",
    "java.base/java.util",
    "java.base/java.util.concurrent.atomic",
    "java.base/java.lang",
    "java.base/java.math",
    "java.base/java.lang.reflect",
    "java.base/java.net",
];

/// What a node is configured with.
pub(crate) struct NodeConfig<'a> {
    pub(crate) dir: &'a Path,
    pub(crate) data_center: &'a str,
    pub(crate) private: Ipv4Addr,
    pub(crate) public: Ipv4Addr,
    pub(crate) seeds: &'a [Ipv4Addr],
    pub(crate) token: i128,
    pub(crate) max_hint_window: Duration,
}

/// Writes a node's configuration files into its directory.
pub(crate) fn configure(config: &NodeConfig<'_>) -> Result<(), ClusterError> {
    let dir = config.dir;
    for sub in ["data", "commitlog", "hints", "saved_caches", "cdc_raw"] {
        std::fs::create_dir_all(dir.join(sub)).map_err(|e| fail(format!("{}: {e}", dir.display())))?;
    }
    let seeds: Vec<String> = config.seeds.iter().map(|s| format!("{s}:{STORAGE_PORT}")).collect();
    let d = dir.display();
    let mut yaml = String::new();
    // One token per node, evenly spread per data center (offset per data center, as tokens
    // must be unique across the ring): every node can start at once, none bootstraps.
    let _ = write!(
        yaml,
        "cluster_name: marquee\n\
         num_tokens: 1\n\
         initial_token: {token}\n\
         auto_bootstrap: false\n\
         partitioner: org.apache.cassandra.dht.Murmur3Partitioner\n\
         data_file_directories: [{d}/data]\n\
         commitlog_directory: {d}/commitlog\n\
         hints_directory: {d}/hints\n\
         saved_caches_directory: {d}/saved_caches\n\
         cdc_raw_directory: {d}/cdc_raw\n\
         commitlog_sync: periodic\n\
         commitlog_sync_period: 10000ms\n\
         seed_provider:\n  - class_name: org.apache.cassandra.locator.SimpleSeedProvider\n    parameters:\n      - seeds: \"{seeds}\"\n\
         listen_address: {private}\n\
         broadcast_address: {public}\n\
         rpc_address: {private}\n\
         native_transport_port: {CQL_PORT}\n\
         storage_port: {STORAGE_PORT}\n\
         endpoint_snitch: GossipingPropertyFileSnitch\n\
         hinted_handoff_enabled: true\n\
         max_hint_window: {hint_ms}ms\n\
         auto_snapshot: false\n\
         memtable_allocation_type: unslabbed_heap_buffers\n\
         concurrent_compactors: 1\n",
        token = config.token,
        seeds = seeds.join(","),
        private = config.private,
        public = config.public,
        hint_ms = config.max_hint_window.as_millis(),
    );
    write(dir, "cassandra.yaml", &yaml)?;
    // prefer_local: nodes of one data center talk over their private addresses; only other
    // data centers go through the public ones (the relay).
    write(
        dir,
        "cassandra-rackdc.properties",
        &format!("dc={}\nrack=rack1\nprefer_local=true\n", config.data_center),
    )?;
    write(
        dir,
        "logback.xml",
        &format!(
            "<configuration>\
             <appender name=\"FILE\" class=\"ch.qos.logback.core.FileAppender\">\
             <file>{d}/system.log</file>\
             <encoder><pattern>%-5level [%thread] %date{{ISO8601}} %F:%L - %msg%n</pattern></encoder>\
             </appender><root level=\"INFO\"><appender-ref ref=\"FILE\"/></root></configuration>\n"
        ),
    )?;
    Ok(())
}

fn write(dir: &Path, name: &str, text: &str) -> Result<(), ClusterError> {
    let path = dir.join(name);
    std::fs::write(&path, text).map_err(|e| fail(format!("writing {}: {e}", path.display())))
}

/// The JVM flags every Cassandra process (node or `nodetool`) needs on Java 17.
fn module_flags(command: &mut Command) {
    for package in EXPORTS {
        command.arg("--add-exports").arg(format!("{package}=ALL-UNNAMED"));
    }
    for package in OPENS {
        command.arg("--add-opens").arg(format!("{package}=ALL-UNNAMED"));
    }
}

fn classpath(lib: &Path) -> String {
    format!("{}/*", lib.display())
}

/// Starts the node configured in `dir` inside `namespace`.
pub(crate) fn spawn(
    lib: &Path,
    jamm: &Path,
    namespace: &str,
    dir: &Path,
    heap_mib: u32,
    jmx_port: u16,
) -> Result<Child, ClusterError> {
    let stdout = std::fs::File::create(dir.join("stdout.log"))
        .map_err(|e| fail(format!("creating {}: {e}", dir.display())))?;
    let mut java = Command::new("ip");
    java.args(["netns", "exec", namespace, "java"]);
    java.arg(format!("-Xms{heap_mib}m")).arg(format!("-Xmx{heap_mib}m"));
    java.args([
        "-Xss512k",
        "-XX:+UseG1GC",
        "-XX:+ExitOnOutOfMemoryError",
        "-Djdk.attach.allowAttachSelf=true",
    ]);
    java.arg(format!("-javaagent:{}", jamm.display()));
    module_flags(&mut java);
    let d = dir.display();
    java.arg(format!("-Dcassandra.config=file://{d}/cassandra.yaml"))
        .arg(format!("-Dcassandra-rackdc.properties=file://{d}/cassandra-rackdc.properties"))
        .arg(format!("-Dlogback.configurationFile={d}/logback.xml"))
        .arg(format!("-Dcassandra.storagedir={d}"))
        .arg(format!("-Dcassandra.jmx.local.port={jmx_port}"))
        .args(["-Dcassandra-foreground=yes", "-Dcassandra.skip_wait_for_gossip_to_settle=0"])
        .args(["-Dcassandra.ring_delay_ms=1000", "-Dcassandra.load_ring_state=true"])
        // Schema changes skip forcing the schema tables to disk (the commit log still has
        // them): tests create a keyspace per case, and each flush costs more as tables grow.
        .arg("-Dcassandra.unsafesystem=true")
        .arg("-cp")
        .arg(classpath(lib))
        .arg("org.apache.cassandra.service.CassandraDaemon")
        .stdin(Stdio::null())
        .stdout(stdout.try_clone().map_err(|e| fail(e.to_string()))?)
        .stderr(stdout);
    java.spawn().map_err(|e| fail(format!("starting java in {namespace} (ip netns exec; needs root): {e}")))
}

/// Runs `nodetool args` against the node of `namespace` (JMX on its loopback).
pub(crate) fn nodetool(
    lib: &Path,
    namespace: &str,
    jmx_port: u16,
    args: &[&str],
) -> Result<String, ClusterError> {
    let mut java = Command::new("ip");
    java.args(["netns", "exec", namespace, "java", "-Xmx128m", "-XX:+UseSerialGC"]);
    module_flags(&mut java);
    let out = java
        .arg("-cp")
        .arg(classpath(lib))
        .arg("org.apache.cassandra.tools.NodeTool")
        .args(["-h", "127.0.0.1", "-p", &jmx_port.to_string()])
        .args(args)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| fail(format!("running nodetool in {namespace}: {e}")))?;
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    if out.status.success() {
        Ok(text)
    } else {
        Err(fail(format!(
            "nodetool {} in {namespace}: {text}{}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr)
        )))
    }
}

/// A node's files, for a message when it fails to start.
pub(crate) fn log_tail(dir: &Path) -> String {
    let mut tail = String::new();
    for name in ["stdout.log", "system.log"] {
        let path: PathBuf = dir.join(name);
        if let Ok(text) = std::fs::read_to_string(&path) {
            let lines: Vec<&str> =
                text.lines().filter(|l| l.contains("ERROR") || l.contains("Exception")).collect();
            let last: Vec<&str> = lines.iter().rev().take(5).rev().copied().collect();
            if !last.is_empty() {
                let _ = writeln!(tail, "{}:\n{}", path.display(), last.join("\n"));
            }
        }
    }
    tail
}
