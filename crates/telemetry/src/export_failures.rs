//! What a service says when its OTLP exporter cannot reach the endpoint: one
//! warning that names the endpoint and the way to turn export off or to the
//! console, then at most one line a minute per signal while it stays down.
//!
//! The SDK and the OTLP exporter report every failed export themselves,
//! several lines a second and without the endpoint; [`is_replaced`] keeps
//! those out of the logs, and a [`FailureReport`] says it instead: told each
//! attempt by the span queue, which wraps the trace exporter, and by the
//! [`Reported`] wrapper of the metric and log exporters.

use std::num::NonZeroU32;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::error::OTelSdkResult;
use opentelemetry_sdk::logs::{LogBatch, LogExporter};
use opentelemetry_sdk::metrics::Temporality;
use opentelemetry_sdk::metrics::data::ResourceMetrics;
use opentelemetry_sdk::metrics::exporter::PushMetricExporter;
use tracing::Metadata;

use crate::config::{Signal, TelemetryConfig};

/// Whether `metadata` is one of the OTLP exporter's own reports on its
/// exports (failures, retries, throttling) or the SDK's of a failed export,
/// which [`Reported`] replaces, or of a failed shutdown, which
/// `Telemetry::shutdown` sums up in one line.
pub(crate) fn is_replaced(metadata: &Metadata<'_>) -> bool {
    let name = metadata.name();
    metadata.target() == "opentelemetry-otlp"
        || (metadata.target() == "opentelemetry_sdk"
            && (name.ends_with(".ExportError") || name.contains("Shutdown")))
}

/// The failures of one signal's exports, reported once, then once a minute.
#[derive(Debug)]
pub(crate) struct FailureReport {
    signal: Signal,
    endpoint: String,
    /// Lets one line through a minute.
    lines: DefaultDirectRateLimiter,
    failed_since_last_line: AtomicU64,
    down: AtomicBool,
}

impl FailureReport {
    pub(crate) fn new(signal: Signal, config: &TelemetryConfig) -> Self {
        Self {
            signal,
            endpoint: config.endpoint(signal).to_owned(),
            lines: RateLimiter::direct(Quota::per_minute(NonZeroU32::MIN)),
            failed_since_last_line: AtomicU64::new(0),
            down: AtomicBool::new(false),
        }
    }

    pub(crate) fn report(&self, result: &OTelSdkResult) {
        let (signal, endpoint) = (self.signal.name(), &self.endpoint);
        let Err(error) = result else {
            if self.down.swap(false, Ordering::Relaxed) {
                tracing::info!("exporting {signal} to {endpoint} again");
            }
            return;
        };
        let failed = self.failed_since_last_line.fetch_add(1, Ordering::Relaxed) + 1;
        if self.lines.check().is_err() {
            return;
        }
        self.failed_since_last_line.store(0, Ordering::Relaxed);
        if self.down.swap(true, Ordering::Relaxed) {
            tracing::warn!(
                "still cannot export {signal} to {endpoint}: {failed} attempts failed since the last message ({error})"
            );
        } else {
            let variable = format!("OTEL_{}_EXPORTER", signal.to_ascii_uppercase());
            tracing::warn!(
                "cannot export {signal} to {endpoint} ({error}); is a collector listening there? \
                 {variable}=console prints them instead, OTEL_SDK_DISABLED=true exports nothing; \
                 until it answers, this is said at most once a minute"
            );
        }
    }
}

/// A metric or log exporter whose failures are reported.
#[derive(Debug)]
pub(crate) struct Reported<E> {
    inner: E,
    report: FailureReport,
}

impl<E> Reported<E> {
    pub(crate) fn new(inner: E, signal: Signal, config: &TelemetryConfig) -> Self {
        let report = FailureReport::new(signal, config);
        Self { inner, report }
    }

    fn report(&self, result: OTelSdkResult) -> OTelSdkResult {
        self.report.report(&result);
        result
    }
}

impl<E: PushMetricExporter> PushMetricExporter for Reported<E> {
    async fn export(&self, metrics: &ResourceMetrics) -> OTelSdkResult {
        self.report(self.inner.export(metrics).await)
    }

    fn force_flush(&self) -> OTelSdkResult {
        self.inner.force_flush()
    }

    fn shutdown_with_timeout(&self, timeout: Duration) -> OTelSdkResult {
        self.inner.shutdown_with_timeout(timeout)
    }

    fn temporality(&self) -> Temporality {
        self.inner.temporality()
    }
}

impl<E: LogExporter> LogExporter for Reported<E> {
    async fn export(&self, batch: LogBatch<'_>) -> OTelSdkResult {
        self.report(self.inner.export(batch).await)
    }

    fn shutdown_with_timeout(&self, timeout: Duration) -> OTelSdkResult {
        self.inner.shutdown_with_timeout(timeout)
    }

    fn set_resource(&mut self, resource: &Resource) {
        self.inner.set_resource(resource);
    }
}
