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
//! follower's reads), whatever `log.filter` says; events only at `warn` and above, as span
//! events. Their attributes name operations, sizes and outcomes, never a user, a token, a
//! query's text or a variable's value (docs/operating.md lists them).
//!
//! W3C Trace Context: a request's `traceparent`/`tracestate` become its span's parent
//! ([`request_parent`]), so a trace started at the edge continues through the gateway, and
//! the request's log lines carry the trace id.

use std::sync::LazyLock;
use std::time::Duration;

use opentelemetry::propagation::TextMapPropagator;
use opentelemetry::trace::{TraceContextExt, TraceId, TracerProvider as _};
use opentelemetry::{Context, KeyValue};
use opentelemetry_http::HeaderExtractor;
use opentelemetry_otlp::{Protocol, WithExportConfig};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::error::OTelSdkResult;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::{
    Sampler, SdkTracer, SdkTracerProvider, SpanData, SpanExporter, SpanProcessor,
};
use prometheus::IntCounterVec;
use tokio::sync::{mpsc, watch};
use tracing_opentelemetry::OpenTelemetrySpanExt;

use crate::config::TelemetryConfig;

/// `trace_spans_total{outcome}`: finished sampled spans `exported`, `dropped_queue_full`
/// (the export queue was full) or `dropped_export_failed` (the collector refused the batch,
/// or did not answer in time). One per process, registered in every gateway's registry.
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
            .with_sampler(Sampler::ParentBased(Box::new(Sampler::TraceIdRatioBased(config.sampling_ratio))))
            .with_span_processor(Queue { spans })
            .build();
        let tracer = provider.tracer("marquee-gateway");
        for outcome in ["exported", "dropped_queue_full", "dropped_export_failed"] {
            SPANS.with_label_values(&[outcome]);
        }
        Ok(Some((Traces { provider, stop, task }, tracer)))
    }

    /// Exports the spans still queued (within `limit`), then stops exporting.
    pub async fn shutdown(self, limit: Duration) {
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
        if self.spans.try_send(span).is_err() {
            SPANS.with_label_values(&["dropped_queue_full"]).inc();
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
            n = queued.recv_many(&mut batch, MAX_BATCH) => n == 0,
            _ = stopping.wait_for(|stop| *stop) => true,
        };
        if stop {
            // Whatever was queued before the stop goes out, then nothing more.
            queued.close();
            while queued.recv_many(&mut batch, MAX_BATCH).await > 0 {
                if batch.len() >= MAX_BATCH {
                    send(&exporter, &mut batch, limit).await;
                }
            }
            send(&exporter, &mut batch, limit).await;
            return;
        }
        let gathered = tokio::time::sleep(GATHER);
        tokio::pin!(gathered);
        while batch.len() < MAX_BATCH {
            let room = MAX_BATCH - batch.len();
            tokio::select! {
                () = &mut gathered => break,
                n = queued.recv_many(&mut batch, room) => if n == 0 { break },
            }
        }
        send(&exporter, &mut batch, limit).await;
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
            // Not `warn!`: a warning inside the export task would be exported in turn.
            report_failure(&error);
        }
    }
}

/// Logs a failed export (at `info`, so it is not exported itself), at most once a minute (a collector that is down would
/// otherwise write a line per batch).
fn report_failure(error: &str) {
    use std::sync::Mutex;
    use std::time::Instant;
    static LAST: Mutex<Option<Instant>> = Mutex::new(None);
    let Ok(mut last) = LAST.lock() else { return };
    if last.is_none_or(|at| at.elapsed() >= Duration::from_secs(60)) {
        *last = Some(Instant::now());
        drop(last);
        tracing::info!(target: "marquee_gateway::traces::export", %error, "trace export failed; spans are dropped and counted in trace_spans_total until the collector answers");
    }
}

/// The W3C trace context a request arrived with (`traceparent`, `tracestate`), empty when it
/// carries none or an invalid one.
pub fn request_parent(headers: &axum::http::HeaderMap) -> Context {
    // Checked first: most requests carry none, and then nothing is parsed.
    if !headers.contains_key("traceparent") {
        return Context::new();
    }
    TraceContextPropagator::new().extract(&HeaderExtractor(headers))
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
