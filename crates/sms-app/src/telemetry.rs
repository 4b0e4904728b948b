//! Logs, and the optional export of traces to an OpenTelemetry collector.
//!
//! Logs go to stderr, filtered by `RUST_LOG`. With `[telemetry] otlp_endpoint` set (and
//! the `otlp` cargo feature built in), the spans of the send path go to that collector
//! over OTLP/HTTP as protobuf, batched on a background thread:
//! - `intake`: one `POST /v1/messages`, with the message id once there is one;
//! - `limit_check`: the per-recipient (`limit = "recipient"`) and the global
//!   (`limit = "global"`) check;
//! - `vendor_call`: one call to a vendor, with the vendor, the outcome and the latency;
//! - `queue_write`: each write to the deferred queue, with what it wrote.
//!
//! Spans carry message ids, vendors and counts, never a phone number. They are at
//! `debug` level, so logs at the default level never show them and cost nothing when
//! no collector is configured.

use anyhow::{Result, bail};
use serde::{Deserialize, Serialize};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer, Registry};

/// Overrides `[telemetry] otlp_endpoint`.
pub const ENV_OTLP_ENDPOINT: &str = "SMS_OTLP_ENDPOINT";

/// `[telemetry]`: where traces go.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TelemetryConfig {
    /// The collector's OTLP/HTTP traces URL, used as is, such as
    /// `http://otel-collector:4318/v1/traces` (`SMS_OTLP_ENDPOINT`). Absent: no export.
    /// Extra headers, such as a vendor's API key, come from `OTEL_EXPORTER_OTLP_HEADERS`.
    pub otlp_endpoint: Option<String>,
    /// The `service.name` the spans are filed under.
    pub service_name: String,
    /// The share of traces kept, from 0 to 1; a trace is kept or dropped whole.
    pub sample_ratio: f64,
    /// How often a batch of spans is sent, in milliseconds.
    pub export_interval_ms: u64,
}

impl Default for TelemetryConfig {
    fn default() -> Self {
        Self {
            otlp_endpoint: None,
            service_name: "sms-gateway".into(),
            sample_ratio: 1.0,
            export_interval_ms: 5000,
        }
    }
}

impl TelemetryConfig {
    /// Checks the values serde cannot; each error names its key.
    pub fn validate(&self) -> Result<()> {
        if !(0.0..=1.0).contains(&self.sample_ratio) {
            bail!(
                "telemetry.sample_ratio: expected a share from 0 to 1, found {}",
                self.sample_ratio
            );
        }
        if self.service_name.trim().is_empty() {
            bail!("telemetry.service_name: expected a name, found an empty string");
        }
        if !(10..=60_000).contains(&self.export_interval_ms) {
            bail!(
                "telemetry.export_interval_ms: expected 10 to 60000, found {}",
                self.export_interval_ms
            );
        }
        let Some(endpoint) = &self.otlp_endpoint else {
            return Ok(());
        };
        if !cfg!(feature = "otlp") {
            bail!(
                "telemetry.otlp_endpoint ({ENV_OTLP_ENDPOINT}): this build cannot export \
                 traces; build sms-app with `--features otlp`, or leave the key out"
            );
        }
        let scheme_ok = endpoint.starts_with("http://") || endpoint.starts_with("https://");
        let host = endpoint.split_once("://").map_or("", |(_, rest)| rest);
        if !scheme_ok || host.is_empty() || endpoint.parse::<axum::http::Uri>().is_err() {
            bail!(
                "telemetry.otlp_endpoint ({ENV_OTLP_ENDPOINT}): expected an http:// or https:// \
                 URL such as http://otel-collector:4318/v1/traces, found {endpoint:?}"
            );
        }
        Ok(())
    }
}

/// A layer of the global subscriber.
type BoxedLayer = Box<dyn Layer<Registry> + Send + Sync>;

/// Keeps the trace exporter running; [`shutdown`](Self::shutdown) sends what is left.
#[derive(Default)]
#[must_use = "dropping the guard without shutdown loses the last batch of spans"]
pub struct Telemetry {
    #[cfg(feature = "otlp")]
    provider: Option<opentelemetry_sdk::trace::SdkTracerProvider>,
}

impl Telemetry {
    /// Sends the spans not yet exported and stops the exporter.
    pub async fn shutdown(self) {
        #[cfg(feature = "otlp")]
        if let Some(provider) = self.provider {
            // The exporter's thread waits for this runtime to send the last batch, so
            // the wait happens off the runtime's own threads.
            let done = tokio::task::spawn_blocking(move || provider.shutdown()).await;
            if let Ok(Err(e)) = done {
                tracing::warn!(error = %e, "could not send the last traces");
            }
        }
    }
}

/// Installs the global subscriber: logs to stderr, as compact lines when `compact`,
/// else as JSON lines, at `default_level` unless `RUST_LOG` says otherwise; and, when
/// `telemetry` names a collector, the trace export. Must run inside the runtime that
/// lives as long as the export.
pub fn init(compact: bool, default_level: &str, telemetry: &TelemetryConfig) -> Result<Telemetry> {
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default_level));
    let logs = tracing_subscriber::fmt::layer().with_writer(std::io::stderr);
    let logs: BoxedLayer = if compact {
        logs.compact().with_filter(filter).boxed()
    } else {
        logs.json().with_filter(filter).boxed()
    };
    let (traces, guard) = traces(telemetry)?;
    let layers: Vec<_> = std::iter::once(logs).chain(traces).collect();
    // A second install (tests start several commands in one process) keeps the first.
    let _ = tracing_subscriber::registry().with(layers).try_init();
    Ok(guard)
}

/// The span layer for the collector, if one is configured.
#[cfg(feature = "otlp")]
fn traces(config: &TelemetryConfig) -> Result<(Option<BoxedLayer>, Telemetry)> {
    let Some(endpoint) = &config.otlp_endpoint else {
        return Ok((None, Telemetry::default()));
    };
    let provider = otlp::provider(endpoint, config)?;
    let layer = otlp::layer(&provider);
    Ok((
        Some(layer),
        Telemetry {
            provider: Some(provider),
        },
    ))
}

#[cfg(not(feature = "otlp"))]
fn traces(_config: &TelemetryConfig) -> Result<(Option<BoxedLayer>, Telemetry)> {
    // `validate` refuses an endpoint in a build without the exporter.
    Ok((None, Telemetry::default()))
}

#[cfg(feature = "otlp")]
mod otlp {
    use std::time::Duration;

    use anyhow::{Context, Result};
    use opentelemetry::trace::TracerProvider as _;
    use opentelemetry_http::{Bytes, HttpClient, HttpError, Request, Response};
    use opentelemetry_otlp::{WithExportConfig, WithHttpConfig};
    use opentelemetry_sdk::Resource;
    use opentelemetry_sdk::trace::{
        BatchConfigBuilder, BatchSpanProcessor, Sampler, SdkTracerProvider,
    };
    use tracing_subscriber::Layer;
    use tracing_subscriber::filter::Targets;

    use super::TelemetryConfig;

    /// How long one export may take.
    const EXPORT_TIMEOUT: Duration = Duration::from_secs(10);

    /// The crates whose spans are exported, at `debug` and above.
    const TRACED: [&str; 5] = [
        "sms_app",
        "sms_failover",
        "sms_store",
        "sms_limit",
        "sms_providers",
    ];

    /// The batch exporter's HTTP client: the app's reqwest client, run on the app's
    /// runtime. The batch processor waits on its own thread without a runtime, so each
    /// request is handed to the runtime and awaited from there.
    #[derive(Debug)]
    struct RuntimeClient {
        client: reqwest::Client,
        runtime: tokio::runtime::Handle,
    }

    #[async_trait::async_trait]
    impl HttpClient for RuntimeClient {
        async fn send_bytes(&self, request: Request<Bytes>) -> Result<Response<Bytes>, HttpError> {
            let request = reqwest::Request::try_from(request)?;
            let client = self.client.clone();
            let response = self
                .runtime
                .spawn(async move {
                    let response = client.execute(request).await?;
                    let mut answer = Response::builder().status(response.status());
                    if let Some(headers) = answer.headers_mut() {
                        *headers = response.headers().clone();
                    }
                    let body = response.bytes().await?;
                    Ok::<_, HttpError>(answer.body(body)?)
                })
                .await??;
            Ok(response)
        }
    }

    pub(super) fn provider(endpoint: &str, config: &TelemetryConfig) -> Result<SdkTracerProvider> {
        let client = RuntimeClient {
            client: reqwest::Client::builder()
                .timeout(EXPORT_TIMEOUT)
                .build()
                .context("telemetry: building the HTTP client")?,
            runtime: tokio::runtime::Handle::try_current()
                .context("telemetry: the exporter needs the async runtime")?,
        };
        let exporter = opentelemetry_otlp::SpanExporter::builder()
            .with_http()
            .with_endpoint(endpoint)
            .with_timeout(EXPORT_TIMEOUT)
            .with_http_client(client)
            .build()
            .context("telemetry.otlp_endpoint")?;
        let batches = BatchConfigBuilder::default()
            .with_scheduled_delay(Duration::from_millis(config.export_interval_ms))
            .build();
        let processor = BatchSpanProcessor::builder(exporter)
            .with_batch_config(batches)
            .build();
        let sampler =
            Sampler::ParentBased(Box::new(Sampler::TraceIdRatioBased(config.sample_ratio)));
        Ok(SdkTracerProvider::builder()
            .with_span_processor(processor)
            .with_sampler(sampler)
            .with_resource(
                Resource::builder()
                    .with_service_name(config.service_name.clone())
                    .build(),
            )
            .build())
    }

    pub(super) fn layer(provider: &SdkTracerProvider) -> super::BoxedLayer {
        let targets = TRACED.iter().fold(Targets::new(), |targets, target| {
            targets.with_target(*target, tracing::Level::DEBUG)
        });
        tracing_opentelemetry::layer()
            .with_tracer(provider.tracer("sms-gateway"))
            .with_filter(targets)
            .boxed()
    }
}
