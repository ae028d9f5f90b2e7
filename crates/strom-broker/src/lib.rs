//! The Strom broker: listeners, connections, request handlers and the
//! partitions this node hosts.
//!
//! Entry point: [`run`] opens the logs, binds the listeners and serves until
//! the shutdown future resolves, then closes every log cleanly.

pub mod admin;
pub mod broker;
pub mod config;
pub mod errors;
pub mod fetch_session;
pub mod group;
pub mod group_lag;
pub mod handlers;
pub mod lifecycle;
pub mod metadata;
pub mod metrics;
pub mod network;
pub mod partition;
pub mod quota;
pub mod replica_manager;
pub mod replication;
pub mod security;
pub mod topic;
pub mod topic_admin;
pub mod txn;

use std::future::Future;
use std::time::Duration;

pub use broker::Broker;
pub use config::BrokerConfig;
use tracing::{info, warn};

/// Why the broker could not start or stop cleanly.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error(transparent)]
    Topic(#[from] broker::TopicError),
    #[error(transparent)]
    Io(#[from] std::io::Error),
    #[error("storage: {0}")]
    Storage(#[from] strom_storage::LogError),
    #[error(transparent)]
    Tls(#[from] security::tls::TlsConfigError),
    #[error(transparent)]
    Metadata(#[from] metadata::MetadataError),
}

/// Runs a broker until `shutdown` resolves: start-up (recovery included),
/// serving, then a clean shutdown that flushes every log and writes the
/// clean-shutdown marker.
pub async fn run(
    mut config: BrokerConfig,
    shutdown: impl Future<Output = ()>,
) -> Result<(), ServerError> {
    for key in &config.ignored {
        warn!(key = %key, "config key not used by Strom; ignored");
    }
    // Certificates are loaded once, before recovery: a bad TLS setting stops
    // the start at once.
    let tls = security::tls::load_listeners(&config)?;
    config.quorum.tls = security::tls::controller_tls(&config)?;
    let started = std::time::Instant::now();
    let broker = tokio::task::spawn_blocking(move || Broker::open(config))
        .await
        .expect("broker start-up task panicked")?;
    // Bound before registering so the registration carries the real ports;
    // connections wait in the backlog until the broker serves (as Kafka).
    let listeners = network::bind_listeners(&broker).await?;
    let lifecycle = lifecycle::start(&broker).await?;
    broker.groups.startup(&broker).await;
    broker.transactions.startup(&broker).await;
    let admin = admin::bind(&broker).await?;
    let admin_addr = admin.as_ref().and_then(|l| l.local_addr().ok());
    if let Some(a) = admin_addr {
        info!(address = %a, "admin listener (/metrics, /health)");
    }
    let c = &broker.config;
    info!(
        node_id = c.node_id,
        listeners = ?c.listeners.iter().map(|l| format!("{}://{}:{}", l.name, l.host, l.port)).collect::<Vec<_>>(),
        admin = ?admin_addr.map(|a| a.to_string()),
        log_dirs = ?c.log_dirs,
        partitions = broker.replicas.partition_count(),
        config = ?c.raw,
        startup_ms = started.elapsed().as_millis() as u64,
        "strom broker started"
    );

    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let mut tasks = Vec::new();
    for (name, l) in listeners {
        tasks.push(tokio::spawn(network::serve(
            broker.clone(),
            l,
            name.clone(),
            tls.get(&name).cloned(),
            stop_rx.clone(),
        )));
    }
    if let Some(l) = admin {
        tasks.push(tokio::spawn(admin::serve(
            broker.clone(),
            l,
            stop_rx.clone(),
        )));
    }
    let flusher = {
        let broker = broker.clone();
        let mut stop = stop_rx.clone();
        let period = Duration::from_millis(broker.config.log_flush_scheduler_interval_ms.max(1));
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(period);
            loop {
                tokio::select! {
                    _ = tick.tick() => {
                        let b = broker.clone();
                        let _ = tokio::task::spawn_blocking(move || b.flush_due()).await;
                    }
                    _ = stop.changed() => return,
                }
            }
        })
    };

    let log_tasks = topic_admin::spawn_log_tasks(broker.clone(), stop_rx.clone());
    let txn_timer = {
        let broker = broker.clone();
        let mut stop = stop_rx.clone();
        let period =
            Duration::from_millis(broker.config.txn.abort_timed_out_interval_ms.max(1) as u64);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(period);
            loop {
                tokio::select! {
                    _ = tick.tick() => { broker.transactions.abort_timed_out(&broker).await; }
                    _ = stop.changed() => return,
                }
            }
        })
    };

    shutdown.await;
    info!("shutting down");
    // Leaderships move away while this broker still serves.
    lifecycle.shutdown().await;
    let _ = stop_tx.send(true);
    for t in tasks {
        let _ = t.await;
    }
    let _ = flusher.await;
    let _ = txn_timer.await;
    for t in log_tasks {
        let _ = t.await;
    }
    let b = broker.clone();
    tokio::task::spawn_blocking(move || b.shutdown())
        .await
        .expect("shutdown task panicked")?;
    info!("clean shutdown complete");
    Ok(())
}
