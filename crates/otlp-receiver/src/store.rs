//! Shared, thread-safe storage of everything the receiver has accepted.

use std::sync::{Mutex, MutexGuard, PoisonError};

use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::KeyValue;
use opentelemetry_proto::tonic::resource::v1::Resource;

use crate::received::{ReceivedLog, ReceivedMetric, ReceivedSpan, service_name};
use crate::{Signal, Transport};

#[derive(Debug, Default)]
pub(crate) struct Store {
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    spans: Vec<ReceivedSpan>,
    logs: Vec<ReceivedLog>,
    metrics: Vec<ReceivedMetric>,
    /// `requests[signal.index()][transport.index()]`
    requests: [[usize; 2]; 3],
}

/// Splits an optional resource into `(service.name, attributes)`.
fn resource_parts(resource: Option<Resource>) -> (String, Vec<KeyValue>) {
    let attributes = resource.map(|r| r.attributes).unwrap_or_default();
    (service_name(&attributes), attributes)
}

impl Store {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub(crate) fn record_traces(&self, request: ExportTraceServiceRequest, transport: Transport) {
        let mut spans = Vec::new();
        for resource_spans in request.resource_spans {
            let (service_name, resource) = resource_parts(resource_spans.resource);
            for scope_spans in resource_spans.scope_spans {
                let scope = scope_spans.scope.unwrap_or_default();
                spans.extend(scope_spans.spans.into_iter().map(|span| ReceivedSpan {
                    service_name: service_name.clone(),
                    resource: resource.clone(),
                    scope: scope.clone(),
                    span,
                }));
            }
        }
        let mut state = self.lock();
        state.spans.append(&mut spans);
        state.requests[Signal::Traces.index()][transport.index()] += 1;
    }

    pub(crate) fn record_logs(&self, request: ExportLogsServiceRequest, transport: Transport) {
        let mut logs = Vec::new();
        for resource_logs in request.resource_logs {
            let (service_name, resource) = resource_parts(resource_logs.resource);
            for scope_logs in resource_logs.scope_logs {
                let scope = scope_logs.scope.unwrap_or_default();
                logs.extend(
                    scope_logs
                        .log_records
                        .into_iter()
                        .map(|record| ReceivedLog {
                            service_name: service_name.clone(),
                            resource: resource.clone(),
                            scope: scope.clone(),
                            record,
                        }),
                );
            }
        }
        let mut state = self.lock();
        state.logs.append(&mut logs);
        state.requests[Signal::Logs.index()][transport.index()] += 1;
    }

    pub(crate) fn record_metrics(
        &self,
        request: ExportMetricsServiceRequest,
        transport: Transport,
    ) {
        let mut metrics = Vec::new();
        for resource_metrics in request.resource_metrics {
            let (service_name, resource) = resource_parts(resource_metrics.resource);
            for scope_metrics in resource_metrics.scope_metrics {
                let scope = scope_metrics.scope.unwrap_or_default();
                metrics.extend(
                    scope_metrics
                        .metrics
                        .into_iter()
                        .map(|metric| ReceivedMetric {
                            service_name: service_name.clone(),
                            resource: resource.clone(),
                            scope: scope.clone(),
                            metric,
                        }),
                );
            }
        }
        let mut state = self.lock();
        state.metrics.append(&mut metrics);
        state.requests[Signal::Metrics.index()][transport.index()] += 1;
    }

    pub(crate) fn spans(&self) -> Vec<ReceivedSpan> {
        self.lock().spans.clone()
    }

    pub(crate) fn logs(&self) -> Vec<ReceivedLog> {
        self.lock().logs.clone()
    }

    pub(crate) fn metrics(&self) -> Vec<ReceivedMetric> {
        self.lock().metrics.clone()
    }

    pub(crate) fn requests(&self, signal: Signal, transport: Transport) -> usize {
        self.lock().requests[signal.index()][transport.index()]
    }

    pub(crate) fn clear(&self) {
        *self.lock() = State::default();
    }
}
