//! Apache Cassandra from Maven Central: `cassandra-all` at a pinned version and its runtime
//! dependencies, copied once by Maven (`dependency:copy-dependencies`) into
//! `target/cassandra/<version>/lib` and reused by every later run. The Apache distribution
//! tarball is not on Maven Central, so there is no `bin/` or `conf/`: the node's
//! `cassandra.yaml`, logging and JVM flags are written here (see `node`).

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::{ClusterError, fail};

/// The Cassandra release every cluster runs (5.0 runs on the machine's Java 17).
pub const CASSANDRA_VERSION: &str = "5.0.6";

/// Where the jars of [`CASSANDRA_VERSION`] live: `$MARQUEE_CASSANDRA_HOME`, else
/// `target/cassandra/<version>` of this workspace (or of `$CARGO_TARGET_DIR`).
pub fn home() -> PathBuf {
    if let Some(home) = std::env::var_os("MARQUEE_CASSANDRA_HOME") {
        return PathBuf::from(home);
    }
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target"));
    target.join("cassandra").join(CASSANDRA_VERSION)
}

/// The directory of the jars, fetched first if they are not there yet. Several processes
/// may ask at once (tests run in parallel): one fetches under a file lock, the others wait.
pub fn ensure() -> Result<PathBuf, ClusterError> {
    let home = home();
    let lib = home.join("lib");
    let done = home.join("lib.complete");
    if done.exists() {
        return Ok(lib);
    }
    std::fs::create_dir_all(&home).map_err(|e| fail(format!("creating {}: {e}", home.display())))?;
    let lock = File::create(home.join(".lock")).map_err(|e| fail(format!("{}: {e}", home.display())))?;
    lock.lock().map_err(|e| fail(format!("locking {}: {e}", home.display())))?;
    if done.exists() {
        return Ok(lib);
    }
    let pom = home.join("pom.xml");
    std::fs::write(&pom, pom_xml()).map_err(|e| fail(format!("writing {}: {e}", pom.display())))?;
    let partial = home.join("lib.partial");
    let _ = std::fs::remove_dir_all(&partial);
    let out = Command::new("mvn")
        .args(["-q", "-B", "dependency:copy-dependencies", "-DincludeScope=runtime"])
        .arg(format!("-DoutputDirectory={}", partial.display()))
        .arg("-f")
        .arg(&pom)
        .output()
        .map_err(|e| fail(format!("running mvn (Debian's maven) to fetch Cassandra's jars: {e}")))?;
    if !out.status.success() {
        return Err(fail(format!(
            "mvn could not fetch org.apache.cassandra:cassandra-all:{CASSANDRA_VERSION} from Maven Central: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )));
    }
    let _ = std::fs::remove_dir_all(&lib);
    std::fs::rename(&partial, &lib).map_err(|e| fail(format!("moving {}: {e}", partial.display())))?;
    std::fs::write(&done, CASSANDRA_VERSION).map_err(|e| fail(format!("{}: {e}", done.display())))?;
    Ok(lib)
}

fn pom_xml() -> String {
    format!(
        r#"<project xmlns="http://maven.apache.org/POM/4.0.0">
  <modelVersion>4.0.0</modelVersion>
  <groupId>dev.marquee</groupId>
  <artifactId>cassandra-runtime</artifactId>
  <version>1</version>
  <packaging>pom</packaging>
  <dependencies>
    <dependency>
      <groupId>org.apache.cassandra</groupId>
      <artifactId>cassandra-all</artifactId>
      <version>{CASSANDRA_VERSION}</version>
    </dependency>
  </dependencies>
</project>
"#
    )
}

/// The jamm agent Cassandra measures object sizes with (its `-javaagent`).
pub(crate) fn jamm(lib: &Path) -> Result<PathBuf, ClusterError> {
    let entries = std::fs::read_dir(lib).map_err(|e| fail(format!("{}: {e}", lib.display())))?;
    entries
        .filter_map(Result::ok)
        .map(|e| e.path())
        .find(|p| p.file_name().and_then(|n| n.to_str()).is_some_and(|n| n.starts_with("jamm-")))
        .ok_or_else(|| fail(format!("no jamm jar in {}", lib.display())))
}
