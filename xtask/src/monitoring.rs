//! `regions/monitoring/`: the Prometheus rules SREs alert on, and the dashboard they open first.
//! Checked by `cargo xtask ci` with Debian's `promtool` (from the `prometheus` package the rig
//! installs): the rules parse, each alert fires on the series of its tests that should fire it
//! and on no others, and every query of the dashboard is valid PromQL (the rig test runs them
//! against its Prometheus).

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
    check(tests, "promtool test rules (regions/monitoring)")?;
    check_dashboard(root)
}

/// The Grafana dashboard.
pub(crate) const DASHBOARD: &str = "regions/monitoring/dashboard.json";

/// Every PromQL query of the dashboard (its panels' targets and its annotations), with the
/// `$region` variable at "all regions", by where it is: `panel title / refId`.
pub(crate) fn dashboard_queries(root: &Path) -> anyhow::Result<Vec<(String, String)>> {
    let text = std::fs::read_to_string(root.join(DASHBOARD))?;
    let dashboard: serde_json::Value = serde_json::from_str(&text)?;
    let mut queries = Vec::new();
    let mut panels: Vec<&serde_json::Value> =
        dashboard["panels"].as_array().map(|p| p.iter().collect()).unwrap_or_default();
    while let Some(panel) = panels.pop() {
        panels.extend(panel["panels"].as_array().into_iter().flatten());
        for target in panel["targets"].as_array().into_iter().flatten() {
            let expr = target["expr"].as_str().ok_or_else(|| {
                anyhow::anyhow!("{DASHBOARD}: panel {} has a target without a query", panel["title"])
            })?;
            let place = format!("{} / {}", panel["title"].as_str().unwrap_or("?"), target["refId"]);
            queries.push((place, expr.replace("$region", ".*")));
        }
    }
    for annotation in dashboard["annotations"]["list"].as_array().into_iter().flatten() {
        if let Some(expr) = annotation["expr"].as_str() {
            queries.push((format!("annotation {}", annotation["name"]), expr.replace("$region", ".*")));
        }
    }
    anyhow::ensure!(!queries.is_empty(), "{DASHBOARD} holds no query");
    Ok(queries)
}

/// `promtool check rules` over the dashboard's queries, each made a recording rule (a rules
/// file in JSON, which YAML reads): a query that does not parse fails with its panel named.
fn check_dashboard(root: &Path) -> anyhow::Result<()> {
    let queries = dashboard_queries(root)?;
    let rules: Vec<serde_json::Value> = queries
        .iter()
        .enumerate()
        .map(|(i, (_, expr))| serde_json::json!({ "record": format!("dashboard:query_{i}"), "expr": expr }))
        .collect();
    let dir = tempfile::tempdir()?;
    let file = dir.path().join("dashboard-queries.yml");
    std::fs::write(
        &file,
        serde_json::json!({ "groups": [{ "name": "dashboard", "rules": rules }] }).to_string(),
    )?;
    let mut parse = Command::new("promtool");
    parse.args(["check", "rules"]).arg(&file);
    let places: Vec<&str> = queries.iter().map(|(place, _)| place.as_str()).collect();
    check(parse, &format!("promtool check rules over {DASHBOARD}'s queries ({})", places.join("; ")))
}
