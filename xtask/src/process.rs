//! Processes xtask runs: commands it waits for (`run`, `check`, `output`, each echoed), and
//! processes it starts and leaves running (the benchmark's peer, the rig's parts), started
//! in a process group of their own, so a Ctrl-C meant for cargo does not reach them, and
//! stopped by PID, never by name.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

/// CI builds once from a clean clone: incremental compilation would only add gigabytes of
/// session files to a disk that may be small.
pub(crate) const CI_INCREMENTAL: &str = "0";

/// Runs `program` in `root`, echoing it; fails unless it exits successfully.
pub(crate) fn run(root: &Path, program: &str, args: &[&str]) -> anyhow::Result<()> {
    let mut command = Command::new(program);
    command.args(args).current_dir(root).env("CARGO_INCREMENTAL", CI_INCREMENTAL);
    check(command, &format!("{program} {}", args.join(" ")))
}

/// Runs `command`, echoing `what`; fails unless it exits successfully.
pub(crate) fn check(mut command: Command, what: &str) -> anyhow::Result<()> {
    println!("$ {what}");
    let status = command.status().with_context(|| format!("running `{what}`"))?;
    if !status.success() {
        bail!("`{what}` failed ({status})");
    }
    Ok(())
}

/// What `program` prints, run in `root`; fails unless it exits successfully.
pub(crate) fn output(root: &Path, program: &str, args: &[&str]) -> anyhow::Result<String> {
    let out = Command::new(program)
        .args(args)
        .current_dir(root)
        .output()
        .with_context(|| format!("running {program}"))?;
    if !out.status.success() {
        bail!("`{program} {}` failed: {}", args.join(" "), String::from_utf8_lossy(&out.stderr));
    }
    String::from_utf8(out.stdout).context("output is not UTF-8")
}

/// Starts `command` detached from the terminal's process group, with no stdin and its output
/// appended to `log`.
pub(crate) fn spawn_detached(mut command: Command, log: &Path, what: &str) -> anyhow::Result<Child> {
    if let Some(dir) = log.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .with_context(|| format!("opening {}", log.display()))?;
    command.stdin(Stdio::null()).stdout(file.try_clone()?).stderr(file);
    std::os::unix::process::CommandExt::process_group(&mut command, 0);
    command.spawn().with_context(|| format!("starting {what}"))
}

/// Polls `ready` every 100 ms until it holds, `pid` exits, or `timeout` passes.
pub(crate) fn wait_for(
    what: &str,
    pid: u32,
    log: &Path,
    timeout: Duration,
    mut ready: impl FnMut() -> bool,
) -> anyhow::Result<()> {
    let deadline = Instant::now() + timeout;
    loop {
        if ready() {
            return Ok(());
        }
        if !alive(pid) {
            bail!("{what} exited; see {}", log.display());
        }
        if Instant::now() > deadline {
            bail!("{what} was not ready within {} s; see {}", timeout.as_secs(), log.display());
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

pub(crate) fn read_pid(path: &Path) -> Option<u32> {
    std::fs::read_to_string(path).ok()?.trim().parse().ok()
}

/// Whether `pid` runs (a zombie does not).
pub(crate) fn alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .is_ok_and(|stat| stat.rsplit(')').next().is_some_and(|rest| !rest.trim_start().starts_with('Z')))
}

/// Sends `signal` to `pid` and waits up to a minute for it to exit.
pub(crate) fn signal_and_wait(pid: u32, signal: &str, name: &str) -> anyhow::Result<()> {
    if !alive(pid) {
        return Ok(());
    }
    let mut kill = Command::new("kill");
    kill.arg(format!("-{signal}")).arg(pid.to_string());
    check(kill, &format!("kill -{signal} {pid} ({name})"))?;
    let deadline = Instant::now() + Duration::from_secs(60);
    while alive(pid) {
        if Instant::now() > deadline {
            bail!("{name} (pid {pid}) is still running 60 s after SIG{signal}");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    Ok(())
}

/// Whether something accepts TCP connections on `addr`.
pub(crate) fn listening(addr: SocketAddr) -> bool {
    TcpStream::connect_timeout(&addr, Duration::from_millis(500)).is_ok()
}

/// The status of `GET path` on `addr` (HTTP/1.1, one connection), if it answered.
pub(crate) fn http_status(addr: SocketAddr, path: &str) -> Option<u16> {
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(2)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    let request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).ok()?;
    let mut head = [0u8; 12];
    stream.read_exact(&mut head).ok()?;
    std::str::from_utf8(head.get(9..12)?).ok()?.parse().ok()
}
