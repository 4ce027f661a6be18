//! What the rig's DNS health checks see, for Terraform: before `cargo xtask terraform` plans or
//! applies `terraform/environments/local`, each region's health URL is fetched through its
//! edge (as PowerDNS's `ifurlup` does) and the answers are passed as `region_health`, so the
//! traffic policy returns traffic only to a region that would pass its check. In production
//! the traffic stack asks Route 53's health checkers the same question.

use std::io::{Read as _, Write as _};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;
use serde::Deserialize;

/// How long one probe may take: PowerDNS's own check gives up after 2 s.
const PROBE_TIMEOUT: Duration = Duration::from_secs(2);

#[derive(Deserialize)]
struct TrafficInputs {
    zone: String,
    edge_port: u16,
    health_path: String,
    regions: Vec<RegionInputs>,
}

#[derive(Deserialize)]
struct RegionInputs {
    name: String,
    edge: std::net::IpAddr,
}

/// Probes every region of the rig described in `rig_dir/regions.json` and writes what it saw
/// to `rig_dir/region-health.tfvars.json`; `None` when there is no rig (no regions.json).
pub(crate) fn probe(rig_dir: &Path) -> anyhow::Result<Option<PathBuf>> {
    let inputs = match std::fs::read(rig_dir.join("regions.json")) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e).context("reading the rig's regions.json"),
    };
    let inputs: TrafficInputs = serde_json::from_slice(&inputs).context("parsing the rig's regions.json")?;
    let host = format!("api.{}", inputs.zone);
    let health: serde_json::Map<String, serde_json::Value> = inputs
        .regions
        .iter()
        .map(|region| {
            let edge = SocketAddr::new(region.edge, inputs.edge_port);
            (region.name.clone(), healthy(edge, &host, &inputs.health_path).into())
        })
        .collect();
    let file = rig_dir.join("region-health.tfvars.json");
    let vars = serde_json::json!({ "region_health": health });
    std::fs::write(&file, serde_json::to_vec_pretty(&vars)?).context("writing region-health.tfvars.json")?;
    Ok(Some(file))
}

/// Whether `GET http://host{path}` sent to `edge` answers 200 within [`PROBE_TIMEOUT`].
fn healthy(edge: SocketAddr, host: &str, path: &str) -> bool {
    let ask = || -> std::io::Result<bool> {
        let mut stream = TcpStream::connect_timeout(&edge, PROBE_TIMEOUT)?;
        stream.set_read_timeout(Some(PROBE_TIMEOUT))?;
        stream.set_write_timeout(Some(PROBE_TIMEOUT))?;
        // One write: a request split over several segments can meet a server that answers
        // after the first and closes with the rest unread, which resets the connection.
        let request = format!("GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n");
        stream.write_all(request.as_bytes())?;
        let mut head = [0u8; 12];
        stream.read_exact(&mut head)?;
        Ok(head.starts_with(b"HTTP/1.") && &head[8..12] == b" 200")
    };
    ask().unwrap_or(false)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One HTTP answer on a loopback port, after the whole request head has arrived, then closed.
    fn answer_once(status: &'static str) -> SocketAddr {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = listener.local_addr().expect("addr");
        std::thread::spawn(move || {
            if let Ok((mut stream, _)) = listener.accept() {
                let mut request = Vec::new();
                let mut chunk = [0u8; 512];
                while !request.windows(4).any(|w| w == b"\r\n\r\n") {
                    match stream.read(&mut chunk) {
                        Ok(0) | Err(_) => break,
                        Ok(n) => request.extend_from_slice(&chunk[..n]),
                    }
                }
                let _ =
                    stream.write_all(format!("HTTP/1.1 {status}\r\ncontent-length: 0\r\n\r\n").as_bytes());
            }
        });
        addr
    }

    #[test]
    fn only_a_200_from_the_edge_is_healthy() {
        assert!(healthy(answer_once("200 OK"), "api.marquee.test", "/readyz/region"));
        assert!(!healthy(answer_once("503 Service Unavailable"), "api.marquee.test", "/readyz/region"));
        // Nothing listens there once the listener is dropped.
        let closed = std::net::TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("addr");
        assert!(!healthy(closed, "api.marquee.test", "/readyz/region"));
    }

    #[test]
    fn every_region_of_the_rig_is_probed_and_written_for_terraform() {
        let dir = tempfile_dir();
        assert!(probe(&dir).expect("probe").is_none(), "no rig, nothing to pass");
        let up = answer_once("200 OK");
        let regions = serde_json::json!({
            "zone": "marquee.test", "edge_port": up.port(), "health_path": "/readyz/region",
            "regions": [{ "name": "us-east", "edge": "127.0.0.1" }, { "name": "eu-west", "edge": "127.0.0.2" }],
        });
        std::fs::write(dir.join("regions.json"), regions.to_string()).expect("write");
        let file = probe(&dir).expect("probe").expect("a rig");
        let vars: serde_json::Value =
            serde_json::from_slice(&std::fs::read(file).expect("read")).expect("json");
        assert_eq!(vars, serde_json::json!({ "region_health": { "us-east": true, "eu-west": false } }));
        let _ = std::fs::remove_dir_all(&dir);
    }

    fn tempfile_dir() -> PathBuf {
        let dir = std::env::temp_dir().join(format!("marquee-rig-health-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("temp dir");
        dir
    }
}
