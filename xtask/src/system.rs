//! What the tests and tools need from the machine, installed when missing: Debian packages
//! through apt-get (as root, or with passwordless sudo), and the npm packages of the stock
//! clients the gateway's tests drive.

use std::path::Path;
use std::process::Command;
use std::sync::OnceLock;

use crate::process::check;

/// Debian's Node.js and npm, installed when missing.
pub(crate) fn ensure_node() -> anyhow::Result<()> {
    if installed("node") && installed("npm") {
        return Ok(());
    }
    apt_install(&["nodejs", "npm"])
}

/// Debian's Redis server and `redis-cli` (a Redis Cluster's nodes and its `--cluster create`),
/// installed when missing.
pub(crate) fn ensure_redis() -> anyhow::Result<()> {
    if installed("redis-server") && installed("redis-cli") {
        return Ok(());
    }
    apt_install(&["redis-server", "redis-tools"])
}

/// Java and Maven, which run Apache Cassandra from Maven Central's jars (the test clusters).
pub(crate) fn ensure_java() -> anyhow::Result<()> {
    if installed("java") && installed("mvn") && installed("ip") {
        return Ok(());
    }
    apt_install(&["openjdk-17-jre-headless", "maven", "iproute2"])
}

/// Debian's `faketime`, which runs a test's gateway with its clock behind the others'.
pub(crate) fn ensure_faketime() -> anyhow::Result<()> {
    if installed("faketime") {
        return Ok(());
    }
    apt_install(&["faketime"])
}

/// Whether `program` is on the `PATH`.
pub(crate) fn installed(program: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {program}")])
        .output()
        .is_ok_and(|o| o.status.success())
}

/// Whether the Debian package `name` is installed.
pub(crate) fn package_installed(name: &str) -> bool {
    Command::new("dpkg-query").args(["-W", "-f=${Status}", name]).output().is_ok_and(|o| {
        o.status.success() && String::from_utf8_lossy(&o.stdout).ends_with("install ok installed")
    })
}

/// Installs Debian `packages` (as root, or with passwordless sudo).
pub(crate) fn apt_install(packages: &[&str]) -> anyhow::Result<()> {
    let apt = |args: &[&str]| {
        let mut command = if is_root() {
            Command::new("apt-get")
        } else {
            let mut sudo = Command::new("sudo");
            sudo.args(["-n", "apt-get"]);
            sudo
        };
        command.args(args);
        command
    };
    check(apt(&["update"]), "apt-get update")?;
    let mut install = vec!["install", "-y", "--no-install-recommends"];
    install.extend_from_slice(packages);
    check(apt(&install), &format!("apt-get install {}", packages.join(" ")))
}

/// Whether xtask runs as root (asked once).
pub(crate) fn is_root() -> bool {
    static ROOT: OnceLock<bool> = OnceLock::new();
    *ROOT.get_or_init(|| {
        Command::new("id").arg("-u").output().is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
    })
}

/// What the gateway's client tests run: the stock clients' packages (`gateway/tests/clients`),
/// installed from the lockfile when missing or older than it, and `curl` and `script`, which
/// run the README's examples and a terminal.
pub(crate) fn client_packages(root: &Path) -> anyhow::Result<()> {
    ensure_node()?;
    if !installed("curl") || !installed("script") {
        apt_install(&["curl", "bsdutils"])?;
    }
    let dir = root.join("gateway/tests/clients");
    let installed = dir.join("node_modules/.package-lock.json");
    let stale = match (std::fs::metadata(&installed), std::fs::metadata(dir.join("package-lock.json"))) {
        (Ok(installed), Ok(lock)) => installed.modified()? < lock.modified()?,
        _ => true,
    };
    if stale {
        crate::process::run(&dir, "npm", &["ci", "--no-audit", "--no-fund"])?;
    }
    Ok(())
}
