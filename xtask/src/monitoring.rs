//! `regions/monitoring/`: the Prometheus rules SREs alert on. Checked by `cargo xtask ci` with
//! Debian's `promtool` (from the `prometheus` package the rig installs): the rules parse, and
//! each alert fires on the series of its tests that should fire it and on no others.

use std::path::Path;
use std::process::Command;

use crate::process::check;

/// The rules, and the `promtool test rules` files that hold them to their behaviour.
pub(crate) const RULES: &str = "regions/monitoring/rules.yml";
const TESTS: [&str; 2] = ["rules.test.yml", "region-loss.test.yml"];

/// `promtool check rules` and `promtool test rules` over `regions/monitoring/`.
pub(crate) fn check_rules(root: &Path) -> anyhow::Result<()> {
    let mut parse = Command::new("promtool");
    parse.args(["check", "rules", RULES]).current_dir(root);
    check(parse, "promtool check rules regions/monitoring/rules.yml")?;
    let mut tests = Command::new("promtool");
    tests.args(["test", "rules"]).args(TESTS).current_dir(root.join("regions/monitoring"));
    check(tests, "promtool test rules (regions/monitoring)")
}
