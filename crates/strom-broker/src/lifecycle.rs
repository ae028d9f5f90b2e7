//! The broker's life with the active controller (Kafka's
//! `BrokerLifecycleManager`): registration at start-up, heartbeats every
//! `broker.heartbeat.interval.ms` (every 50 ms while registering or fenced,
//! so a restart is unfenced within a few round trips), each bounded well
//! below `broker.session.timeout.ms` so one lost to a hung controller leaves
//! time for the next, re-registration when the controller no longer knows
//! this broker epoch, and controlled shutdown. Also follows the
//! metadata image: every applied change reaches [`Broker::apply_image`]
//! (local logs and partition roles) and the coordinators.
//!
//! Owner: `crate::run`. The heartbeat loop runs on the metadata runtime
//! (`MetadataStore::spawn`), so a busy request path cannot delay it past
//! `broker.session.timeout.ms`.

use std::sync::Arc;
use std::time::Duration;

use strom_metadata::controller_api::{ControllerRequest, ControllerResponse};
use strom_metadata::records::BrokerEndpoint;
use strom_metadata::ProposeError;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tracing::{error, info, warn};
use uuid::Uuid;

use crate::broker::Broker;
use crate::metadata::MetadataError;
use crate::security::SecurityProtocol;

/// Kafka's `broker.heartbeat.interval.ms` default.
const HEARTBEAT_INTERVAL_MS: u64 = 2000;
/// How long start-up waits for a controller to register and unfence this
/// broker before serving anyway (reads work meanwhile; writes need one).
const STARTUP_TIMEOUT: Duration = Duration::from_secs(60);
/// How long controlled shutdown waits for the controller to move this
/// broker's leaderships away.
const CONTROLLED_SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(30);
/// While registering or fenced the broker heartbeats this often rather
/// than every `broker.heartbeat.interval.ms`, as Kafka's lifecycle manager
/// resends at once until caught up and unfenced: a restarted broker rejoins
/// within a few round trips of the controller noticing it caught up.
const FENCED_HEARTBEAT_INTERVAL: Duration = Duration::from_millis(50);
/// Backoff after a heartbeat no controller answered, and the first one
/// after a failed registration (Kafka's lifecycle manager: 100 ms, doubling
/// up to half the session timeout).
const RETRY_BACKOFF: Duration = Duration::from_millis(100);
/// Kafka's error codes the lifecycle acts on.
const STALE_BROKER_EPOCH: i16 = 77;

/// Where the broker stands with the controller.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LifecycleState {
    /// Not registered yet.
    Starting,
    /// Registered, fenced until caught up with the metadata log.
    Recovery,
    /// Registered and unfenced: serving.
    Running,
    /// Controlled shutdown asked for; leaderships are moving away.
    PendingControlledShutdown,
    /// The controller let this broker go (or none answered in time).
    ShuttingDown,
    /// No active controller in this build answers (the interim single-node
    /// mode): the broker serves without a registration.
    NoController,
}

/// The running lifecycle: its state and its tasks.
pub struct Lifecycle {
    broker: Arc<Broker>,
    state: watch::Receiver<LifecycleState>,
    want_shutdown: watch::Sender<bool>,
    heartbeats: JoinHandle<()>,
    follower: JoinHandle<()>,
}

/// Registers this broker and waits until the controller unfences it (at
/// most a minute, then serves anyway with a clear log line); starts the
/// heartbeats and the image follower. Fails only when this node's log dirs
/// belong to another cluster.
pub async fn start(broker: &Arc<Broker>) -> Result<Lifecycle, MetadataError> {
    let (state_tx, mut state) = watch::channel(LifecycleState::Starting);
    let (want_shutdown, want_rx) = watch::channel(false);
    let heartbeats = broker
        .metadata
        .spawn(heartbeat_loop(broker.clone(), state_tx, want_rx));
    let follower = tokio::spawn(follow_image(broker.clone(), state.clone()));
    let started = tokio::time::Instant::now();
    let ready = tokio::time::timeout(STARTUP_TIMEOUT, async {
        state
            .wait_for(|s| matches!(s, LifecycleState::Running | LifecycleState::NoController))
            .await
            .map(|_| ())
    })
    .await;
    if ready.is_err() {
        error!(
            state = ?*state.borrow(),
            waited_s = STARTUP_TIMEOUT.as_secs(),
            "no active controller registered and unfenced this broker; serving anyway (metadata writes fail until a controller answers)"
        );
    } else {
        // Serve only with the image that unfenced this broker applied (its
        // leaderships are elected in the same batch).
        start_applying(broker).await;
        info!(
            broker_epoch = broker.broker_epoch(),
            ms = started.elapsed().as_millis() as u64,
            "broker registered with the controller"
        );
    }
    // The log's cluster id must match the one of this node's log dirs (a
    // broker-only node learns it only once registered).
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        if let Some(id) = broker.metadata.log_cluster_id() {
            broker.metadata.adopt_cluster_id(&id)?;
            break;
        }
        if tokio::time::Instant::now() >= deadline {
            warn!("the metadata log has no cluster id yet; meta.properties is left as it is");
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Ok(Lifecycle {
        broker: broker.clone(),
        state,
        want_shutdown,
        heartbeats,
        follower,
    })
}

impl Lifecycle {
    /// Where the broker stands now.
    pub fn state(&self) -> LifecycleState {
        *self.state.borrow()
    }

    /// Kafka's controlled shutdown: heartbeats ask to shut down until the
    /// controller has moved this broker's leaderships and answers
    /// `should_shutdown` (or a timeout passes), then the tasks stop.
    pub async fn shutdown(mut self) {
        let enabled = self
            .broker
            .config
            .raw
            .get("controlled.shutdown.enable")
            .is_none_or(|v| v.trim().eq_ignore_ascii_case("true"));
        let registered = matches!(
            *self.state.borrow(),
            LifecycleState::Running | LifecycleState::Recovery
        );
        if enabled && registered {
            info!("controlled shutdown: asking the controller to move leaderships");
            let _ = self.want_shutdown.send(true);
            let state = &mut self.state;
            let done = tokio::time::timeout(CONTROLLED_SHUTDOWN_TIMEOUT, async {
                state
                    .wait_for(|s| *s == LifecycleState::ShuttingDown)
                    .await
                    .map(|_| ())
            })
            .await;
            match done {
                Ok(_) => info!("controlled shutdown complete"),
                Err(_) => warn!(
                    waited_s = CONTROLLED_SHUTDOWN_TIMEOUT.as_secs(),
                    "controlled shutdown did not complete; stopping anyway"
                ),
            }
        }
        self.heartbeats.abort();
        self.follower.abort();
    }
}

/// The endpoints this broker registers: every advertised (non-controller)
/// listener with its bound port.
fn endpoints(broker: &Broker) -> Vec<BrokerEndpoint> {
    broker
        .advertised_listeners()
        .into_iter()
        .map(|l| BrokerEndpoint {
            name: l.name,
            host: l.host,
            port: l.port,
            security_protocol: match l.security_protocol {
                SecurityProtocol::Plaintext => 0,
                SecurityProtocol::Ssl => 1,
                SecurityProtocol::SaslPlaintext => 2,
                SecurityProtocol::SaslSsl => 3,
            },
        })
        .collect()
}

/// A broker-only node's controller listener, where the controller
/// replicates the metadata log to it as an observer.
fn observer_addr(broker: &Broker) -> Option<String> {
    let q = &broker.config.quorum;
    if q.controller {
        return None;
    }
    let bound = broker.metadata.quorum().local_addr();
    let host = q
        .controller_addr
        .rsplit_once(':')
        .map_or("127.0.0.1", |(h, _)| h);
    Some(format!("{host}:{}", bound.port()))
}

fn heartbeat_interval(broker: &Broker) -> Duration {
    let ms = broker
        .config
        .raw
        .get("broker.heartbeat.interval.ms")
        .and_then(|v| v.trim().parse::<u64>().ok())
        .unwrap_or(HEARTBEAT_INTERVAL_MS);
    Duration::from_millis(ms.max(1))
}

/// How long one heartbeat (or registration) waits for the controller: two
/// heartbeat intervals (at least a second), never more than half of
/// `broker.session.timeout.ms`, so a heartbeat lost to a hung controller
/// leaves time for another before the session expires.
fn request_timeout(broker: &Broker, interval: Duration) -> Duration {
    let session = broker
        .config
        .quorum
        .controller_policy
        .broker_session_timeout;
    (interval * 2)
        .max(Duration::from_secs(1))
        .min(session / 2)
        .max(Duration::from_millis(100))
}

/// Whether the answer means no controller exists in this build: this node
/// leads the quorum, so it would be the active controller, and it answers
/// `Unavailable`.
fn no_controller(broker: &Broker, e: &ProposeError) -> bool {
    matches!(e, ProposeError::Unavailable(_)) && broker.metadata.quorum().is_leader()
}

async fn heartbeat_loop(
    broker: Arc<Broker>,
    state: watch::Sender<LifecycleState>,
    want_shutdown: watch::Receiver<bool>,
) {
    let incarnation_id = Uuid::new_v4();
    let interval = heartbeat_interval(&broker);
    let timeout = request_timeout(&broker, interval);
    let max_backoff = (broker
        .config
        .quorum
        .controller_policy
        .broker_session_timeout
        / 2)
    .max(RETRY_BACKOFF);
    // Registration attempts refused or unanswered in a row.
    let mut failures = 0u32;
    let register_backoff = |failures: &mut u32| {
        let d = RETRY_BACKOFF
            .saturating_mul(1 << (*failures).min(10))
            .min(max_backoff);
        *failures += 1;
        d
    };
    let quorum = broker.metadata.quorum();
    let rack = broker
        .config
        .raw
        .get("broker.rack")
        .map(|r| r.trim().to_string());
    'register: loop {
        let req = ControllerRequest::RegisterBroker {
            broker_id: broker.node_id(),
            incarnation_id,
            endpoints: endpoints(&broker),
            rack: rack.clone(),
            observer_addr: observer_addr(&broker),
        };
        match quorum.controller_call_with_timeout(req, timeout).await {
            Ok(ControllerResponse::RegisterBroker {
                error,
                broker_epoch,
            }) if error.error_code == 0 => {
                failures = 0;
                broker.set_broker_epoch(broker_epoch);
                info!(broker_epoch, %incarnation_id, "registered with the active controller");
                state.send_replace(LifecycleState::Recovery);
            }
            Ok(ControllerResponse::RegisterBroker { error, .. }) => {
                // DUPLICATE_BROKER_REGISTRATION while the previous
                // incarnation's session lasts, among others: try again.
                // (until the old session expires: retried with a backoff so
                // the restart registers soon after that).
                warn!(error_code = error.error_code, message = ?error.message, "broker registration refused; retrying");
                tokio::time::sleep(register_backoff(&mut failures)).await;
                continue 'register;
            }
            Ok(other) => {
                warn!(answer = ?other, "unexpected answer to the broker registration");
                tokio::time::sleep(register_backoff(&mut failures)).await;
                continue 'register;
            }
            Err(e) if no_controller(&broker, &e) => {
                info!("no active controller in this node's quorum; serving without a broker registration");
                state.send_replace(LifecycleState::NoController);
                return;
            }
            Err(e) => {
                warn!(error = %e, "broker registration: no controller answered; retrying");
                tokio::time::sleep(register_backoff(&mut failures)).await;
                continue 'register;
            }
        }
        loop {
            let shutting_down = *want_shutdown.borrow();
            let applied = broker
                .metadata
                .image()
                .applied_index
                .map_or(-1, |i| i as i64);
            let req = ControllerRequest::BrokerHeartbeat {
                broker_id: broker.node_id(),
                broker_epoch: broker.broker_epoch(),
                current_metadata_offset: applied,
                want_fence: false,
                want_shutdown: shutting_down,
            };
            let mut answered = false;
            match quorum.controller_call_with_timeout(req, timeout).await {
                Ok(ControllerResponse::BrokerHeartbeat {
                    error,
                    is_fenced,
                    should_shutdown,
                    ..
                }) => {
                    if error.error_code == STALE_BROKER_EPOCH {
                        warn!(
                            broker_epoch = broker.broker_epoch(),
                            "the controller no longer knows this broker epoch; registering again"
                        );
                        continue 'register;
                    }
                    answered = error.error_code == 0;
                    if error.error_code != 0 {
                        warn!(error_code = error.error_code, message = ?error.message, "broker heartbeat refused");
                    } else if should_shutdown && shutting_down {
                        state.send_replace(LifecycleState::ShuttingDown);
                        return;
                    } else if shutting_down {
                        state.send_replace(LifecycleState::PendingControlledShutdown);
                    } else if is_fenced {
                        state.send_if_modified(|s| {
                            let was = *s;
                            *s = LifecycleState::Recovery;
                            was != *s
                        });
                    } else if *state.borrow() != LifecycleState::Running {
                        // Running once this node's image shows the unfencing.
                        wait_unfenced_here(&broker).await;
                        state.send_replace(LifecycleState::Running);
                    }
                }
                Ok(other) => warn!(answer = ?other, "unexpected answer to a broker heartbeat"),
                Err(e) => warn!(error = %e, "broker heartbeat not answered"),
            }
            // A shutdown request goes out at once, not at the next tick.
            let mut w = want_shutdown.clone();
            let wait = if !answered {
                interval.min(RETRY_BACKOFF)
            } else if shutting_down {
                interval.min(Duration::from_millis(200))
            } else if *state.borrow() != LifecycleState::Running {
                interval.min(FENCED_HEARTBEAT_INTERVAL)
            } else {
                interval
            };
            let _ = tokio::time::timeout(wait, w.wait_for(|w| *w && !shutting_down)).await;
        }
    }
}

/// Waits (a few seconds at most) until this node's image shows its own
/// registration unfenced.
async fn wait_unfenced_here(broker: &Broker) {
    let (me, epoch) = (broker.node_id(), broker.broker_epoch());
    let mut rx = broker.metadata.quorum().subscribe();
    let wait = async {
        loop {
            let unfenced = rx
                .borrow_and_update()
                .image
                .broker(me)
                .is_some_and(|b| b.broker_epoch == epoch && !b.fenced);
            if unfenced || rx.changed().await.is_err() {
                return;
            }
        }
    };
    let _ = tokio::time::timeout(Duration::from_secs(5), wait).await;
}

/// From registration on, the image's registrations drive the partitions.
async fn start_applying(broker: &Arc<Broker>) {
    let b = broker.clone();
    let done = tokio::task::spawn_blocking(move || b.start_applying_image()).await;
    if let Ok(Err(e)) = done {
        error!(error = %e, "cannot apply the metadata image to the hosted partitions");
    }
}

/// Applies every change of the metadata image to the hosted partitions
/// (logs created and deleted, leader/follower roles) and the coordinators.
/// Runs on the broker's runtime (the replica manager starts its fetchers
/// from here); registrations drive the partitions once this broker has
/// registered.
async fn follow_image(broker: Arc<Broker>, mut state: watch::Receiver<LifecycleState>) {
    let mut rx = broker.metadata.quorum().subscribe();
    // The heartbeat task drops its end when it stops (no controller).
    let mut state_open = true;
    loop {
        tokio::select! {
            changed = rx.changed() => if changed.is_err() { return },
            changed = state.changed(), if state_open => state_open = changed.is_ok(),
        }
        let registered = *state.borrow_and_update() != LifecycleState::Starting;
        let b = broker.clone();
        let applied = tokio::task::spawn_blocking(move || {
            if registered {
                b.start_applying_image()
            } else {
                b.apply_image()
            }
        });
        match applied.await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                error!(error = %e, "cannot apply the metadata image to the hosted partitions")
            }
            Err(e) => error!(error = %e, "applying the metadata image panicked"),
        }
        broker.on_partition_leadership().await;
    }
}
