//! The admin HTTP listener (`strom.admin.listener`, default
//! `127.0.0.1:9644`): `/metrics` in Prometheus text format and `/health`.
//!
//! `/health` answers 200 once the broker serves (this listener is bound only
//! after the Kafka listeners, so a 200 means clients can connect).

use std::sync::Arc;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;
use prometheus_client::registry::Registry;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tracing::warn;

use crate::broker::Broker;
use crate::metrics::BrokerMetrics;

/// Binds the admin listener, if one is configured. A bind failure is an
/// error when the address was configured explicitly; on the default address
/// it only costs the metrics endpoint (a warning), so a second broker on one
/// machine still starts.
pub async fn bind(broker: &Arc<Broker>) -> std::io::Result<Option<TcpListener>> {
    let Some(addr) = &broker.config.admin_listener else {
        return Ok(None);
    };
    match TcpListener::bind((addr.host.as_str(), addr.port)).await {
        Ok(l) => Ok(Some(l)),
        Err(e) if !broker.config.admin_listener_explicit => {
            warn!(address = %format!("{}:{}", addr.host, addr.port), error = %e,
                "cannot bind the default admin listener; /metrics and /health are off (set strom.admin.listener)");
            Ok(None)
        }
        Err(e) => Err(std::io::Error::new(
            e.kind(),
            format!(
                "cannot bind strom.admin.listener {}:{}: {e}",
                addr.host, addr.port
            ),
        )),
    }
}

struct AdminState {
    registry: Registry,
}

/// Serves `/metrics` and `/health` until `shutdown` flips to true.
pub async fn serve(
    broker: Arc<Broker>,
    listener: TcpListener,
    mut shutdown: watch::Receiver<bool>,
) {
    let state = Arc::new(AdminState {
        registry: BrokerMetrics::registry(&broker),
    });
    let app = Router::new()
        .route("/metrics", get(metrics))
        .route("/health", get(health))
        .with_state(state);
    let stop = async move {
        let _ = shutdown.wait_for(|s| *s).await;
    };
    if let Err(e) = axum::serve(listener, app)
        .with_graceful_shutdown(stop)
        .await
    {
        warn!(error = %e, "admin listener failed");
    }
}

async fn metrics(State(state): State<Arc<AdminState>>) -> impl IntoResponse {
    let mut body = String::with_capacity(16 * 1024);
    match prometheus_client::encoding::text::encode(&mut body, &state.registry) {
        Ok(()) => (
            StatusCode::OK,
            [(
                header::CONTENT_TYPE,
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
            )],
            body,
        ),
        Err(_) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
            "cannot encode metrics\n".to_string(),
        ),
    }
}

async fn health() -> impl IntoResponse {
    (StatusCode::OK, "ready\n")
}
