//! Traces: the gateway's `tracing` spans exported to an OpenTelemetry collector over OTLP/HTTP.
//!
//! Export must never slow a request down. Finished spans go into a bounded queue with
//! `try_send` (a full queue drops the span and counts it); one task takes them out in batches
//! and posts each batch with a time limit (a slow or absent collector loses that batch,
//! counted, and the next batch tries again). The SDK's own batch processors keep their drop
//! count to themselves, hence this small one in front of the SDK's OTLP exporter.
//!
//! Which spans: every span of Marquee's crates at `debug` and above (the request, its stages,
//! each dataloader batch, store call, Redis round trip and CQL statement, the change
//! follower's claims), whatever `log.filter` says; Marquee's own warnings and errors, as span
//! events. Their attributes name operations, sizes and outcomes, never a user, a token, a
//! query's text or a variable's value (docs/operating.md lists them). Probes and scrapes
//! (`/healthz`, `/readyz`, `/metrics`) are not traced.
//!
//! W3C Trace Context: a request's `traceparent`/`tracestate` become its span's parent
//! ([`request_parent`]), so a trace started at the edge continues through the gateway, and
//! the request's log lines carry the trace id. What a caller sends is only a wish: the
//! gateway keeps `sampling_ratio` of all traces, and of those a caller marked sampled, up to
//! `client_sampled_per_second` more ([`Sampling`]), so no client can make every request a
//! trace, nor hide its requests from the ratio.

use std::num::NonZeroU32;
use std::sync::{Arc, LazyLock};
use std::time::Duration;

use opentelemetry::propagation::Extractor;
use opentelemetry::propagation::TextMapPropagator;
use opentelemetry::trace::{Link, SpanKind, TraceContextExt, TraceId, TracerProvider as _};
use opentelemetry::{Context, KeyValue};
use opentelemetry_http::HeaderExtractor;
use opentelemetry_otlp::{Protocol, WithExportConfig};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::error::OTelSdkResult;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::{
    Sampler, SamplingDecision, SamplingResult, SdkTracer, SdkTracerProvider, ShouldSample, SpanData,
    SpanExporter, SpanProcessor,
};
use prometheus::IntCounterVec;
use tokio::sync::{mpsc, watch};
use tracing_opentelemetry::OpenTelemetrySpanExt;

use crate::config::TelemetryConfig;

/// `trace_spans_total{outcome}`: finished sampled spans `exported`, `dropped_queue_full`
/// (the export queue was full), `dropped_export_failed` (the collector refused the batch, or
/// did not answer in time) or `dropped_stopping` (ended after the gateway began to stop). One
/// per process, registered in every gateway's registry.
pub static SPANS: LazyLock<IntCounterVec> = LazyLock::new(|| {
    IntCounterVec::new(
        prometheus::Opts::new("trace_spans_total", "Finished sampled trace spans, by what became of them"),
        &["outcome"],
    )
    .unwrap_or_else(|e| unreachable!("a constant, valid metric: {e}"))
});

/// Most spans in one export.
const MAX_BATCH: usize = 512;
/// How long a batch gathers after its first span, so a busy gateway sends few large posts.
const GATHER: Duration = Duration::from_millis(500);

/// The running exporter: [`Traces::shutdown`] exports what is queued before the process ends.
pub struct Traces {
    provider: SdkTracerProvider,
    stop: watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
    /// How long a stop may take to post what is queued: an export in flight, then the rest.
    flush: Duration,
}

/// Why traces could not be started.
#[derive(Debug, thiserror::Error)]
#[error("starting trace export to {endpoint}: {message}")]
pub struct TracesError {
    endpoint: String,
    message: String,
}

impl Traces {
    /// Starts the export task (on the current Tokio runtime) and returns the tracer the
    /// `tracing` layer creates spans with; `None` when `config` sets no endpoint.
    pub fn start(config: &TelemetryConfig, region: &str) -> Result<Option<(Traces, SdkTracer)>, TracesError> {
        let Some(endpoint) = &config.otlp_endpoint else { return Ok(None) };
        let url = format!("{}/v1/traces", endpoint.trim_end_matches('/'));
        let fail = |message: String| TracesError { endpoint: url.clone(), message };
        let mut exporter = opentelemetry_otlp::SpanExporter::builder()
            .with_http()
            .with_protocol(Protocol::HttpBinary)
            .with_endpoint(url.clone())
            .with_timeout(config.export_timeout_ms.get())
            .build()
            .map_err(|e| fail(e.to_string()))?;
        let service = config.service_name.clone().unwrap_or_else(|| format!("marquee-gateway-{region}"));
        let resource = Resource::builder()
            .with_service_name(service)
            .with_attribute(KeyValue::new("cloud.region", region.to_owned()))
            .build();
        exporter.set_resource(&resource);
        let (spans, queued) = mpsc::channel(config.queue_spans);
        let (stop, stopping) = watch::channel(false);
        let task = tokio::spawn(export(exporter, queued, stopping, config.export_timeout_ms.get()));
        let provider = SdkTracerProvider::builder()
            .with_resource(resource)
            .with_sampler(Sampling::new(config.sampling_ratio, config.client_sampled_per_second))
            .with_span_processor(Queue { spans })
            .build();
        let tracer = provider.tracer("marquee-gateway");
        for outcome in ["exported", "dropped_queue_full", "dropped_export_failed", "dropped_stopping"] {
            SPANS.with_label_values(&[outcome]);
        }
        let flush = config.export_timeout_ms.get() * 2 + Duration::from_secs(1);
        Ok(Some((Traces { provider, stop, task, flush }, tracer)))
    }

    /// Exports the spans still queued (within twice the export timeout, and a second), then
    /// stops exporting.
    pub async fn shutdown(self) {
        let limit = self.flush;
        // Spans that end from here on are not exported: the queue is being emptied.
        let _ = self.stop.send(true);
        if tokio::time::timeout(limit, self.task).await.is_err() {
            tracing::warn!("trace export did not finish in {limit:?}; the spans still queued are lost");
        }
        // The provider's processor only queues; nothing in it can block.
        let _ = self.provider.shutdown();
    }
}

/// The span processor: queues each finished sampled span without waiting.
#[derive(Debug)]
struct Queue {
    spans: mpsc::Sender<SpanData>,
}

impl SpanProcessor for Queue {
    fn on_start(&self, _span: &mut opentelemetry_sdk::trace::Span, _cx: &Context) {}

    fn on_end(&self, span: SpanData) {
        if !span.span_context.is_sampled() {
            return;
        }
        match self.spans.try_send(span) {
            Ok(()) => {}
            Err(mpsc::error::TrySendError::Full(_)) => SPANS.with_label_values(&["dropped_queue_full"]).inc(),
            Err(mpsc::error::TrySendError::Closed(_)) => SPANS.with_label_values(&["dropped_stopping"]).inc(),
        }
    }

    fn force_flush(&self) -> OTelSdkResult {
        Ok(())
    }

    fn shutdown_with_timeout(&self, _timeout: Duration) -> OTelSdkResult {
        Ok(())
    }
}

/// The export task: batches of up to [`MAX_BATCH`] spans, each given `limit`.
async fn export(
    exporter: opentelemetry_otlp::SpanExporter,
    mut queued: mpsc::Receiver<SpanData>,
    mut stopping: watch::Receiver<bool>,
    limit: Duration,
) {
    let mut batch = Vec::with_capacity(MAX_BATCH);
    loop {
        let stop = tokio::select! {
            biased;
            _ = stopping.wait_for(|stop| *stop) => true,
            n = queued.recv_many(&mut batch, MAX_BATCH) => n == 0,
        };
        if !stop {
            let gathered = tokio::time::sleep(GATHER);
            tokio::pin!(gathered);
            while batch.len() < MAX_BATCH {
                let room = MAX_BATCH - batch.len();
                tokio::select! {
                    biased;
                    _ = stopping.wait_for(|stop| *stop) => break,
                    () = &mut gathered => break,
                    n = queued.recv_many(&mut batch, room) => if n == 0 { break },
                }
            }
            send(&exporter, &mut batch, limit).await;
            if !*stopping.borrow() {
                continue;
            }
        }
        // Whatever was queued before the stop goes out, then nothing more.
        queued.close();
        loop {
            let room = MAX_BATCH - batch.len();
            let n = queued.recv_many(&mut batch, room).await;
            if n == 0 || batch.len() >= MAX_BATCH {
                send(&exporter, &mut batch, limit).await;
            }
            if n == 0 {
                return;
            }
        }
    }
}

/// Posts `batch` (emptying it) and counts the outcome.
async fn send(exporter: &opentelemetry_otlp::SpanExporter, batch: &mut Vec<SpanData>, limit: Duration) {
    if batch.is_empty() {
        return;
    }
    let n = batch.len() as u64;
    let spans = std::mem::replace(batch, Vec::with_capacity(MAX_BATCH));
    match tokio::time::timeout(limit, exporter.export(spans)).await {
        Ok(Ok(())) => SPANS.with_label_values(&["exported"]).inc_by(n),
        outcome => {
            SPANS.with_label_values(&["dropped_export_failed"]).inc_by(n);
            let error = match outcome {
                Ok(Err(e)) => e.to_string(),
                _ => format!("no answer in {limit:?}"),
            };
            report_failure(&error);
        }
    }
}

/// Logs a failed export, at most once a minute (a collector that is down would otherwise
/// write a line per batch). The export task runs in no span, so the warning is not exported.
fn report_failure(error: &str) {
    use std::sync::Mutex;
    use std::time::Instant;
    static LAST: Mutex<Option<Instant>> = Mutex::new(None);
    let Ok(mut last) = LAST.lock() else { return };
    if last.is_none_or(|at| at.elapsed() >= Duration::from_secs(60)) {
        *last = Some(Instant::now());
        drop(last);
        tracing::warn!(%error, "trace export failed; spans are dropped and counted in trace_spans_total until the collector answers");
    }
}

/// The W3C trace context a request arrived with (`traceparent`, and `tracestate` up to 512
/// bytes, the size the spec asks vendors to keep), empty when it carries none or one that is
/// not the spec's lowercase hex form.
pub fn request_parent(headers: &axum::http::HeaderMap) -> Context {
    // Checked first: most requests carry none, and then nothing is parsed.
    let Some(parent) = headers.get("traceparent") else { return Context::new() };
    if !well_formed(parent.as_bytes()) {
        return Context::new();
    }
    TraceContextPropagator::new().extract(&Bounded(HeaderExtractor(headers)))
}

/// Whether `value` starts as W3C Trace Context's `traceparent` does: `vv-<32 hex>-<16 hex>-ff`,
/// lowercase (later versions may append fields after a dash).
fn well_formed(value: &[u8]) -> bool {
    let hex = |b: &u8| b.is_ascii_digit() || (b'a'..=b'f').contains(b);
    value.len() >= 55
        && (value.len() == 55 || value[55] == b'-')
        && value[..55]
            .iter()
            .enumerate()
            .all(|(i, b)| if matches!(i, 2 | 35 | 52) { *b == b'-' } else { hex(b) })
}

/// The headers, with a `tracestate` over 512 bytes left out.
struct Bounded<'a>(HeaderExtractor<'a>);

impl Extractor for Bounded<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).filter(|value| key != "tracestate" || value.len() <= 512)
    }

    fn keys(&self) -> Vec<&str> {
        self.0.keys()
    }
}

/// The sampler: a trace the gateway starts is kept at `sampling_ratio`; one whose caller sent
/// `traceparent` is kept at the same ratio, and when the caller marked it sampled, also while
/// such traces stay within `client_sampled_per_second` (a token bucket per gateway). Spans
/// within a trace follow its root's decision.
#[derive(Clone, Debug)]
struct Sampling {
    ratio: Sampler,
    asked: Option<Arc<AskedToSample>>,
}

/// The bucket of caller-marked traces kept beyond the ratio.
struct AskedToSample(governor::DefaultDirectRateLimiter);

impl std::fmt::Debug for AskedToSample {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AskedToSample")
    }
}

impl Sampling {
    fn new(ratio: f64, asked_per_second: u32) -> Sampling {
        let asked = NonZeroU32::new(asked_per_second).map(|rate| {
            Arc::new(AskedToSample(governor::RateLimiter::direct(governor::Quota::per_second(rate))))
        });
        Sampling { ratio: Sampler::TraceIdRatioBased(ratio), asked }
    }
}

impl ShouldSample for Sampling {
    fn should_sample(
        &self,
        parent_context: Option<&Context>,
        trace_id: TraceId,
        name: &str,
        span_kind: &SpanKind,
        attributes: &[KeyValue],
        links: &[Link],
    ) -> SamplingResult {
        let parent =
            parent_context.filter(|cx| cx.has_active_span()).map(|cx| cx.span().span_context().clone());
        let by_ratio = || {
            self.ratio.should_sample(None, trace_id, name, span_kind, attributes, links).decision
                == SamplingDecision::RecordAndSample
        };
        let keep = match &parent {
            Some(parent) if !parent.is_remote() => parent.is_sampled(),
            Some(parent) if parent.is_sampled() => {
                by_ratio() || self.asked.as_ref().is_some_and(|bucket| bucket.0.check().is_ok())
            }
            _ => by_ratio(),
        };
        SamplingResult {
            decision: if keep { SamplingDecision::RecordAndSample } else { SamplingDecision::Drop },
            attributes: Vec::new(),
            trace_state: parent.map(|p| p.trace_state().clone()).unwrap_or_default(),
        }
    }
}

/// Makes `parent` the parent of `span` (when traces are exported) and returns the trace id
/// the request's log lines carry: the exported trace's, or else the one the client sent.
pub fn adopt(span: &tracing::Span, parent: Context) -> Option<TraceId> {
    let sent = parent.span().span_context().trace_id();
    // Fails only when no trace layer is installed, or the span is disabled.
    let _ = span.set_parent(parent);
    let own = span.context().span().span_context().trace_id();
    [own, sent].into_iter().find(|id| *id != TraceId::INVALID)
}

#[cfg(test)]
mod tests {
    use opentelemetry::trace::{SpanContext, SpanId, TraceFlags, TraceState};

    use super::*;

    fn remote(sampled: bool) -> Context {
        let flags = if sampled { TraceFlags::SAMPLED } else { TraceFlags::default() };
        Context::new().with_remote_span_context(SpanContext::new(
            TraceId::from(7_u128),
            SpanId::from(9_u64),
            flags,
            true,
            TraceState::default(),
        ))
    }

    fn kept(sampling: &Sampling, parent: Option<&Context>, trace: u128) -> bool {
        sampling.should_sample(parent, TraceId::from(trace), "s", &SpanKind::Server, &[], &[]).decision
            == SamplingDecision::RecordAndSample
    }

    #[test]
    fn callers_asking_for_traces_get_a_few_a_second_beyond_the_ratio_and_never_hide_from_it() {
        let none = Sampling::new(0.0, 3);
        let asked = (0..100).filter(|i| kept(&none, Some(&remote(true)), *i)).count();
        assert_eq!(asked, 3, "the bucket's burst, then nothing more this second");
        assert!((0..100).all(|i| !kept(&none, Some(&remote(false)), i)));
        assert!((0..100).all(|i| !kept(&none, None, i)));
        let all = Sampling::new(1.0, 0);
        assert!((0..100).all(|i| kept(&all, Some(&remote(false)), i)), "a caller cannot opt out");
        assert!((0..100).all(|i| kept(&all, None, i)));
    }

    #[test]
    fn traceparent_must_be_the_specs_lowercase_hex_form() {
        let good = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        assert!(well_formed(good.as_bytes()));
        assert!(well_formed(format!("{good}-later-fields").as_bytes()));
        for bad in [
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00F067AA0BA902B7-01",
            "00-1-2-01",
            "00-+bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01x",
            "",
        ] {
            assert!(!well_formed(bad.as_bytes()), "{bad}");
        }
        let mut headers = axum::http::HeaderMap::new();
        headers.insert("traceparent", good.parse().expect("value"));
        headers.insert("tracestate", format!("a={}", "x".repeat(600)).parse().expect("value"));
        let parent = request_parent(&headers);
        assert_eq!(
            parent.span().span_context().trace_id(),
            TraceId::from_hex("4bf92f3577b34da6a3ce929d0e0e4736").expect("hex")
        );
        assert_eq!(
            parent.span().span_context().trace_state().header(),
            "",
            "an oversized tracestate is left out"
        );
    }
}
