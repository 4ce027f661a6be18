//! The AWS stacks' boundaries, checked from their files (the AWS provider cannot be
//! downloaded here, so no plan can show them): a drain changes the traffic stack's records and
//! nothing else because nothing else can take part in one. Only the traffic stack uses the
//! traffic policy, takes `drained_regions` or `traffic_percent`, or declares Route 53 and
//! CloudFront resources; the region stack declares none of them and reads no other stack's
//! state; each stack keeps its state under a key of its own.

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::{Context, bail};

/// The traffic stack's root and module.
const TRAFFIC: [&str; 2] = ["terraform/environments/aws/traffic", "terraform/modules/aws-traffic"];
/// The region stack's root and module.
const REGION: [&str; 2] = ["terraform/environments/aws/region", "terraform/modules/aws-region"];
/// What takes part in a drain.
const TRAFFIC_ONLY: [&str; 6] = [
    "traffic-policy",
    "aws-traffic",
    "drained_regions",
    "traffic_percent",
    "resource \"aws_route53_",
    "resource \"aws_cloudfront_",
];
/// What a region is made of, which the traffic stack must never declare.
const REGION_ONLY: [&str; 5] = [
    "resource \"aws_lb",
    "resource \"aws_ecs_",
    "resource \"aws_elasticache_",
    "resource \"aws_instance\"",
    "resource \"aws_security_group\"",
];

/// Checks the boundaries under `root`; the error lists every breach.
pub(crate) fn check(root: &Path) -> anyhow::Result<()> {
    let mut breaches = Vec::new();
    for dir in REGION {
        for (file, text) in tf_files(&root.join(dir))? {
            for needle in TRAFFIC_ONLY.iter().chain(["terraform_remote_state"].iter()) {
                if text.contains(needle) {
                    breaches.push(format!("{file}: a region stack mentions `{needle}`"));
                }
            }
        }
    }
    for dir in TRAFFIC {
        for (file, text) in tf_files(&root.join(dir))? {
            for needle in REGION_ONLY {
                if text.contains(needle) {
                    breaches.push(format!("{file}: the traffic stack declares `{needle}…`"));
                }
            }
        }
    }
    let mut keys: BTreeMap<String, String> = BTreeMap::new();
    for stack in ["shared", "region", "traffic"] {
        let dir = root.join("terraform/environments/aws").join(stack);
        let mut found = 0;
        for entry in std::fs::read_dir(&dir).with_context(|| format!("reading {}", dir.display()))? {
            let path = entry?.path();
            if !path.to_string_lossy().ends_with(".s3.tfbackend") {
                continue;
            }
            found += 1;
            let text = std::fs::read_to_string(&path)?;
            let key = text
                .lines()
                .find_map(|l| {
                    l.trim().strip_prefix("key").map(|v| v.trim().trim_start_matches('=').trim().to_owned())
                })
                .with_context(|| format!("{}: no key", path.display()))?;
            if !text.contains("use_lockfile = true") {
                breaches.push(format!("{}: state locking (use_lockfile) is off", path.display()));
            }
            if let Some(other) = keys.insert(key.clone(), path.display().to_string()) {
                breaches.push(format!("{} and {other} share the state {key}", path.display()));
            }
        }
        if found == 0 {
            breaches.push(format!("{}: no backend file", dir.display()));
        }
    }
    if !breaches.is_empty() {
        bail!("the AWS stacks' boundaries are breached:\n  {}", breaches.join("\n  "));
    }
    println!("stacks: a drain can only change the traffic stack; {} states, each its own", keys.len());
    Ok(())
}

/// Every `.tf` file of `dir` (not its subdirectories), as (path, its lines of code).
fn tf_files(dir: &Path) -> anyhow::Result<Vec<(String, String)>> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).with_context(|| format!("reading {}", dir.display()))? {
        let path = entry?.path();
        if path.extension().is_some_and(|e| e == "tf") {
            let text =
                std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
            // Comments may name the other stack; code may not.
            let code: Vec<&str> = text
                .lines()
                .filter(|l| !(l.trim_start().starts_with('#') || l.trim_start().starts_with("//")))
                .collect();
            files.push((path.display().to_string(), code.join("\n")));
        }
    }
    Ok(files)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_checked_in_stacks_keep_their_boundaries() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("workspace");
        check(root).expect("boundaries");
    }

    #[test]
    fn a_region_stack_that_takes_part_in_a_drain_is_caught() {
        let dir = std::env::temp_dir().join(format!("marquee-stacks-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let real = Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("workspace");
        for sub in REGION.iter().chain(TRAFFIC.iter()).chain(["terraform/environments/aws/shared"].iter()) {
            std::fs::create_dir_all(dir.join(sub)).expect("dir");
            for entry in std::fs::read_dir(real.join(sub)).expect("read") {
                let path = entry.expect("entry").path();
                if path.is_file() {
                    std::fs::copy(&path, dir.join(sub).join(path.file_name().expect("name"))).expect("copy");
                }
            }
        }
        check(&dir).expect("a copy keeps them");
        let region = dir.join("terraform/environments/aws/region/main.tf");
        let text = std::fs::read_to_string(&region).expect("read");
        std::fs::write(&region, format!("{text}\nvariable \"drained_regions\" {{}}\n")).expect("write");
        let error = check(&dir).expect_err("a region that drains").to_string();
        assert!(error.contains("mentions `drained_regions`"), "{error}");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
