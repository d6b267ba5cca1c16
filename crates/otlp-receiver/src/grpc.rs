//! OTLP/gRPC: the generated `opentelemetry-proto` tonic services.

use std::sync::Arc;

use opentelemetry_proto::tonic::collector::logs::v1::logs_service_server::{
    LogsService, LogsServiceServer,
};
use opentelemetry_proto::tonic::collector::logs::v1::{
    ExportLogsServiceRequest, ExportLogsServiceResponse,
};
use opentelemetry_proto::tonic::collector::metrics::v1::metrics_service_server::{
    MetricsService, MetricsServiceServer,
};
use opentelemetry_proto::tonic::collector::metrics::v1::{
    ExportMetricsServiceRequest, ExportMetricsServiceResponse,
};
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use tokio::net::TcpListener;
use tonic::transport::Server;
use tonic::transport::server::TcpIncoming;
use tonic::{Request, Response, Status};

use crate::store::Store;
use crate::{MAX_MESSAGE_SIZE, Transport};

/// Implements all three OTLP collector services on top of the shared store.
#[derive(Debug, Clone)]
struct Collector(Arc<Store>);

#[tonic::async_trait]
impl TraceService for Collector {
    async fn export(
        &self,
        request: Request<ExportTraceServiceRequest>,
    ) -> Result<Response<ExportTraceServiceResponse>, Status> {
        self.0.record_traces(request.into_inner(), Transport::Grpc);
        Ok(Response::new(ExportTraceServiceResponse::default()))
    }
}

#[tonic::async_trait]
impl MetricsService for Collector {
    async fn export(
        &self,
        request: Request<ExportMetricsServiceRequest>,
    ) -> Result<Response<ExportMetricsServiceResponse>, Status> {
        self.0.record_metrics(request.into_inner(), Transport::Grpc);
        Ok(Response::new(ExportMetricsServiceResponse::default()))
    }
}

#[tonic::async_trait]
impl LogsService for Collector {
    async fn export(
        &self,
        request: Request<ExportLogsServiceRequest>,
    ) -> Result<Response<ExportLogsServiceResponse>, Status> {
        self.0.record_logs(request.into_inner(), Transport::Grpc);
        Ok(Response::new(ExportLogsServiceResponse::default()))
    }
}

/// Serves the three gRPC services on `listener` until the task is aborted.
pub(crate) async fn serve(listener: TcpListener, store: Arc<Store>) {
    let collector = Collector(store);
    let incoming = TcpIncoming::from(listener).with_nodelay(Some(true));
    let result = Server::builder()
        .add_service(
            TraceServiceServer::new(collector.clone()).max_decoding_message_size(MAX_MESSAGE_SIZE),
        )
        .add_service(
            MetricsServiceServer::new(collector.clone())
                .max_decoding_message_size(MAX_MESSAGE_SIZE),
        )
        .add_service(LogsServiceServer::new(collector).max_decoding_message_size(MAX_MESSAGE_SIZE))
        .serve_with_incoming(incoming)
        .await;
    if let Err(error) = result {
        eprintln!("otlp-receiver: gRPC server stopped: {error}");
    }
}
