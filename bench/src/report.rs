//! Results: `results.json` (everything measured), `report.md` (the tables a reader wants) and
//! SVG plots of latency and throughput over time, all in one output directory.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;

use anyhow::Context;
use plotters::prelude::*;
use serde::Serialize;

use crate::load::{LoadSpec, Percentiles, Recorder, SecondStats};
use crate::targets::GatewayCounters;

/// The machine a run was measured on.
#[derive(Clone, Debug, Serialize)]
pub struct Machine {
    /// Logical CPUs.
    pub cores: usize,
    /// CPU model.
    pub cpu: String,
    /// Memory, GiB.
    pub memory_gib: f64,
}

impl Machine {
    /// This machine.
    pub fn this() -> Machine {
        let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        let cpu = cpuinfo
            .lines()
            .find(|l| l.starts_with("model name"))
            .and_then(|l| l.split_once(':'))
            .map_or_else(|| "unknown".to_owned(), |(_, v)| v.trim().to_owned());
        let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
        let kib: f64 = meminfo
            .lines()
            .find(|l| l.starts_with("MemTotal:"))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0.0);
        Machine {
            cores: std::thread::available_parallelism().map_or(0, usize::from),
            cpu,
            memory_gib: (kib / 1024.0 / 1024.0 * 10.0).round() / 10.0,
        }
    }
}

/// What one target did.
#[derive(Clone, Debug, Serialize)]
pub struct TargetResult {
    /// Name.
    pub name: String,
    /// Offered rate, requests per second (`None`: closed-loop saturation).
    pub offered_rate: Option<f64>,
    /// Connections of a closed-loop saturation run.
    pub saturation_connections: Option<usize>,
    /// Requests sent.
    pub sent: u64,
    /// Requests completed (any outcome).
    pub completed: u64,
    /// Successful requests per second.
    pub throughput: f64,
    /// Latency of every completed request.
    pub latency: Percentiles,
    /// Latency per request kind (successful requests).
    pub per_op: BTreeMap<&'static str, Percentiles>,
    /// Failures by kind.
    pub errors: BTreeMap<String, u64>,
    /// Gateway counter deltas over the run (gateways only).
    pub counters: Option<GatewayCounters>,
    /// `store_calls_total` per request.
    pub store_calls_per_request: Option<f64>,
    /// Database statements per request (a backend that counts them: ScyllaDB).
    pub store_statements_per_request: Option<f64>,
    /// Database round trips waited for per request.
    pub store_round_trips_per_request: Option<f64>,
    /// Response-cache hits / lookups.
    pub response_hit_ratio: Option<f64>,
    /// Entity-cache (L1) hits / lookups.
    pub entity_hit_ratio: Option<f64>,
    /// Per-second series.
    pub seconds: Vec<SecondStats>,
}

impl TargetResult {
    /// Summarises `recorder` for `name`.
    pub fn new(name: &str, spec: &LoadSpec, recorder: &Recorder, counters: Option<GatewayCounters>) -> Self {
        let requests = counters.map(|c| c.graphql_requests).filter(|n| *n > 0.0);
        TargetResult {
            name: name.to_owned(),
            offered_rate: spec.saturate.is_none().then_some(spec.rate),
            saturation_connections: spec.saturate,
            sent: recorder.sent,
            completed: recorder.completed(),
            throughput: recorder.throughput(),
            latency: recorder.latency(),
            per_op: recorder.per_op(),
            errors: recorder.errors(),
            store_calls_per_request: counters.zip(requests).map(|(c, n)| c.store_calls / n),
            store_statements_per_request: counters
                .zip(requests)
                .filter(|(c, _)| c.store_statements > 0.0)
                .map(|(c, n)| c.store_statements / n),
            store_round_trips_per_request: counters
                .zip(requests)
                .filter(|(c, _)| c.store_statements > 0.0)
                .map(|(c, n)| c.store_round_trips / n),
            response_hit_ratio: counters
                .map(|c| (c.response_hits, c.response_hits + c.response_misses))
                .filter(|(_, lookups)| *lookups > 0.0)
                .map(|(hits, lookups)| hits / lookups),
            entity_hit_ratio: counters
                .map(|c| (c.entity_hits, c.entity_hits + c.entity_misses))
                .filter(|(_, lookups)| *lookups > 0.0)
                .map(|(hits, lookups)| hits / lookups),
            counters,
            seconds: recorder.seconds(),
        }
    }

    /// Failed requests.
    pub fn error_count(&self) -> u64 {
        self.errors.values().sum()
    }
}

/// One step of a ramp.
#[derive(Clone, Debug, Serialize)]
pub struct RampStep {
    /// Offered rate.
    pub rate: f64,
    /// What it measured.
    pub result: TargetResult,
    /// Whether it met the SLO with no errors.
    pub within_slo: bool,
}

/// A whole run.
#[derive(Clone, Debug, Serialize)]
pub struct Report {
    /// Title.
    pub title: String,
    /// The exact command line.
    pub command: String,
    /// Where it ran.
    pub machine: Machine,
    /// Workload and load settings, as given.
    pub settings: serde_json::Value,
    /// Per target (for `run` one, for `compare` several).
    pub targets: Vec<TargetResult>,
    /// Ramp steps, for `ramp`.
    pub ramp: Vec<RampStep>,
    /// Conclusion lines (saturation point, ratios).
    pub findings: Vec<String>,
}

impl Report {
    /// Writes `results.json`, `report.md` and the plots into `dir`.
    pub fn write(&self, dir: &Path) -> anyhow::Result<()> {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        std::fs::write(dir.join("results.json"), serde_json::to_vec_pretty(self)?)?;
        let series: Vec<(&str, &[SecondStats])> =
            self.targets.iter().map(|t| (t.name.as_str(), t.seconds.as_slice())).collect();
        plot(&dir.join("latency.svg"), "Latency over time (p50 dashed, p99 solid)", "ms", &series, |s| {
            (s.p50_ms, s.p99_ms)
        })?;
        plot(&dir.join("throughput.svg"), "Successful requests per second", "req/s", &series, |s| {
            (s.ok as f64, s.ok as f64)
        })?;
        std::fs::write(dir.join("report.md"), self.markdown())?;
        Ok(())
    }

    /// The Markdown report.
    pub fn markdown(&self) -> String {
        let mut md = String::new();
        let _ = writeln!(md, "# {}\n", self.title);
        let _ = writeln!(md, "Command:\n\n```\n{}\n```\n", self.command);
        let m = &self.machine;
        let _ = writeln!(
            md,
            "Machine: {} logical CPUs ({}), {} GiB memory; the load generator runs on the same machine.\n",
            m.cores, m.cpu, m.memory_gib
        );
        if !self.findings.is_empty() {
            let _ = writeln!(md, "## Findings\n");
            for f in &self.findings {
                let _ = writeln!(md, "- {f}");
            }
            md.push('\n');
        }
        let _ = writeln!(md, "## Targets\n");
        let _ = writeln!(
            md,
            "| target | offered load | ok req/s | p50 ms | p95 ms | p99 ms | max ms | errors | store calls/req | statements/req | round trips/req | response-cache hits | entity-cache hits |"
        );
        let _ = writeln!(md, "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
        for t in &self.targets {
            let _ = writeln!(
                md,
                "| {} | {} | {:.0} | {:.2} | {:.2} | {:.2} | {:.2} | {} | {} | {} | {} | {} | {} |",
                t.name,
                match (t.offered_rate, t.saturation_connections) {
                    (Some(rate), _) => format!("{rate:.0} req/s"),
                    (None, Some(n)) => format!("closed loop, {n} connections"),
                    (None, None) => "-".into(),
                },
                t.throughput,
                t.latency.p50_ms,
                t.latency.p95_ms,
                t.latency.p99_ms,
                t.latency.max_ms,
                errors_cell(&t.errors),
                t.store_calls_per_request.map_or("-".into(), |v| format!("{v:.2}")),
                t.store_statements_per_request.map_or("-".into(), |v| format!("{v:.2}")),
                t.store_round_trips_per_request.map_or("-".into(), |v| format!("{v:.2}")),
                t.response_hit_ratio.map_or("-".into(), |v| format!("{:.1}%", v * 100.0)),
                t.entity_hit_ratio.map_or("-".into(), |v| format!("{:.1}%", v * 100.0)),
            );
        }
        for t in self.targets.iter().filter(|t| t.per_op.len() > 1) {
            let _ = writeln!(md, "\n### {} by request kind (successful requests)\n", t.name);
            let _ = writeln!(md, "| kind | count | p50 ms | p99 ms | max ms |\n|---|---:|---:|---:|---:|");
            for (op, p) in &t.per_op {
                let _ = writeln!(
                    md,
                    "| {op} | {} | {:.2} | {:.2} | {:.2} |",
                    p.count, p.p50_ms, p.p99_ms, p.max_ms
                );
            }
        }
        if !self.ramp.is_empty() {
            let _ = writeln!(md, "\n## Ramp\n");
            let _ = writeln!(md, "| offered req/s | ok req/s | p50 ms | p99 ms | errors | within SLO |");
            let _ = writeln!(md, "|---:|---:|---:|---:|---:|---|");
            for step in &self.ramp {
                let r = &step.result;
                let _ = writeln!(
                    md,
                    "| {:.0} | {:.0} | {:.2} | {:.2} | {} | {} |",
                    step.rate,
                    r.throughput,
                    r.latency.p50_ms,
                    r.latency.p99_ms,
                    errors_cell(&r.errors),
                    if step.within_slo { "yes" } else { "no" }
                );
            }
        }
        let _ = writeln!(md, "\n![latency](latency.svg)\n\n![throughput](throughput.svg)\n");
        let _ = writeln!(
            md,
            "Settings:\n\n```json\n{}\n```",
            serde_json::to_string_pretty(&self.settings).unwrap_or_default()
        );
        md
    }
}

fn errors_cell(errors: &BTreeMap<String, u64>) -> String {
    if errors.is_empty() {
        "0".into()
    } else {
        errors.iter().map(|(k, v)| format!("{v} {k}")).collect::<Vec<_>>().join(", ")
    }
}

const COLOURS: [RGBColor; 6] = [BLUE, RED, GREEN, MAGENTA, CYAN, BLACK];

fn plot(
    path: &Path,
    title: &str,
    unit: &str,
    series: &[(&str, &[SecondStats])],
    value: impl Fn(&SecondStats) -> (f64, f64),
) -> anyhow::Result<()> {
    let seconds = series.iter().map(|(_, s)| s.len()).max().unwrap_or(1).max(1);
    let top =
        series.iter().flat_map(|(_, s)| s.iter().map(|x| value(x).1)).fold(0.0_f64, f64::max).max(1e-3) * 1.1;
    let root = SVGBackend::new(path, (900, 420)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| anyhow::anyhow!("{e}"))?;
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 18))
        .margin(10)
        .x_label_area_size(35)
        .y_label_area_size(60)
        .build_cartesian_2d(0f64..seconds as f64, 0f64..top)
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    chart.configure_mesh().x_desc("seconds").y_desc(unit).draw().map_err(|e| anyhow::anyhow!("{e}"))?;
    for (i, (name, points)) in series.iter().enumerate() {
        let colour = COLOURS[i % COLOURS.len()];
        let solid: Vec<(f64, f64)> = points.iter().map(|s| (s.second as f64, value(s).1)).collect();
        let dashed: Vec<(f64, f64)> = points.iter().map(|s| (s.second as f64, value(s).0)).collect();
        chart
            .draw_series(LineSeries::new(solid, colour.stroke_width(2)))
            .map_err(|e| anyhow::anyhow!("{e}"))?
            .label(*name)
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], colour.stroke_width(2)));
        if dashed.iter().zip(points.iter()).any(|((_, a), s)| (*a - value(s).1).abs() > f64::EPSILON) {
            chart
                .draw_series(DashedLineSeries::new(dashed, 4, 4, colour.stroke_width(1)))
                .map_err(|e| anyhow::anyhow!("{e}"))?;
        }
    }
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw()
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    root.present().map_err(|e| anyhow::anyhow!("{e}"))?;
    Ok(())
}
