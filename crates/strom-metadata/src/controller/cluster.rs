//! Brokers: registration, heartbeats, sessions, fencing and controlled
//! shutdown (Kafka's `ClusterControlManager` and `BrokerHeartbeatManager`).
//!
//! ```text
//!  RegisterBroker ──▶ registered, fenced ──heartbeat, caught up──▶ unfenced (live)
//!        ▲                   ▲                                       │  │
//!        │                   └──── session expired / want_fence ─────┘  │ want_shutdown
//!        │                                                              ▼
//!   new incarnation ◀──── process exits ◀── should_shutdown ◀── in controlled shutdown
//! ```
//!
//! Every change of liveness is proposed together with the partition
//! changes it implies ([`ControllerState::reconcile_partitions`] on the
//! projected image), so no committed state has a fenced leader with a live
//! ISR member to take over.

use std::time::Instant;

use uuid::Uuid;

use super::{project, ControllerState, Ctx, Outcome, Session};
use crate::controller_api::{error_codes as ec, ApiError, ControllerResponse};
use crate::records::*;
use crate::NodeId;

impl ControllerState {
    fn touch(&mut self, broker_id: NodeId, now: Instant) {
        let s = self.sessions.entry(broker_id).or_insert(Session {
            last_contact: now,
            heard: true,
            shutdown_offset: None,
            registration_offset: None,
        });
        s.last_contact = now;
        s.heard = true;
    }

    fn session_live(&self, broker_id: NodeId, now: Instant) -> bool {
        self.sessions.get(&broker_id).is_some_and(|s| {
            s.heard && now.duration_since(s.last_contact) < self.config.session_timeout
        })
    }

    pub(super) fn registered_at(&mut self, broker_id: NodeId, index: u64) {
        if let Some(s) = self.sessions.get_mut(&broker_id) {
            s.registration_offset = Some(index);
        }
    }

    pub(super) fn controlled_shutdown_started(&mut self, broker_id: NodeId, index: u64) {
        if let Some(s) = self.sessions.get_mut(&broker_id) {
            s.shutdown_offset = Some(index);
        }
    }

    /// Kafka's BrokerRegistration. The broker epoch is a value above every
    /// epoch and log index so far — the index the registration record is
    /// about to get, as Kafka uses the record's offset — so epochs only grow
    /// and "has the broker applied its own registration" is
    /// `current_metadata_offset >= broker_epoch`.
    pub(super) fn register_broker(
        &mut self,
        ctx: &Ctx,
        broker_id: NodeId,
        incarnation_id: Uuid,
        endpoints: Vec<BrokerEndpoint>,
        rack: Option<String>,
        observer_addr: Option<String>,
    ) -> Outcome {
        let answer = |error, broker_epoch| ControllerResponse::RegisterBroker {
            error,
            broker_epoch,
        };
        if broker_id < 0 {
            return Outcome::answer(answer(
                ApiError::new(
                    ec::INVALID_REQUEST,
                    format!("Invalid broker id {broker_id}"),
                ),
                -1,
            ));
        }
        let observer = observer_addr.map(|addr| (broker_id, addr));
        if let Some(b) = ctx.image.broker(broker_id) {
            if b.incarnation_id == incarnation_id {
                // A retry of the same process (its answer was lost): same epoch.
                self.touch(broker_id, ctx.now);
                let mut out = Outcome::answer(answer(ApiError::NONE, b.broker_epoch));
                out.observer = observer;
                return out;
            }
            // Two processes with one node.id: refuse the newcomer while the
            // registered one is alive. A broker that stopped cleanly (fenced
            // or shut down) or went silent may be replaced at once.
            if !b.fenced && !b.in_controlled_shutdown && self.session_live(broker_id, ctx.now) {
                return Outcome::answer(answer(
                    ApiError::new(
                        ec::DUPLICATE_BROKER_REGISTRATION,
                        format!(
                            "Another broker is registered with that broker id {broker_id} \
                             (incarnation {}).",
                            b.incarnation_id
                        ),
                    ),
                    -1,
                ));
            }
        }
        let max_epoch = ctx
            .image
            .brokers()
            .map(|b| b.broker_epoch)
            .max()
            .unwrap_or(0);
        let broker_epoch = (ctx.applied_index as i64 + 1).max(max_epoch + 1);
        let mut records = vec![MetadataRecord::RegisterBroker(RegisterBrokerRecord {
            broker_id,
            incarnation_id,
            broker_epoch,
            endpoints,
            rack,
            fenced: true,
            in_controlled_shutdown: false,
        })];
        // The old incarnation's leaderships move (its replacement starts
        // fenced and may have lost an unflushed tail).
        records.extend(self.reconcile_partitions(&project(ctx.image, &records)));
        self.sessions.insert(
            broker_id,
            Session {
                last_contact: ctx.now,
                heard: true,
                shutdown_offset: None,
                registration_offset: None,
            },
        );
        tracing::info!(broker_id, broker_epoch, %incarnation_id, "broker registered");
        let mut out = Outcome::with_records(answer(ApiError::NONE, broker_epoch), records);
        out.observer = observer;
        out.registered = Some(broker_id);
        out
    }

    /// Kafka's BrokerHeartbeat: renews the session; unfences a caught-up
    /// broker; fences on request; runs controlled shutdown.
    pub(super) fn broker_heartbeat(
        &mut self,
        ctx: &Ctx,
        broker_id: NodeId,
        broker_epoch: i64,
        current_metadata_offset: i64,
        want_fence: bool,
        want_shutdown: bool,
    ) -> Outcome {
        let Some(b) = ctx
            .image
            .broker(broker_id)
            .filter(|b| b.broker_epoch == broker_epoch)
        else {
            let message = match ctx.image.broker(broker_id) {
                Some(b) => format!(
                    "Expected broker epoch {}, but got broker epoch {broker_epoch}",
                    b.broker_epoch
                ),
                None => format!("No broker registration found for broker {broker_id}"),
            };
            return Outcome::answer(ControllerResponse::BrokerHeartbeat {
                error: ApiError::new(ec::STALE_BROKER_EPOCH, message),
                is_caught_up: false,
                is_fenced: true,
                should_shutdown: false,
            });
        };
        self.touch(broker_id, ctx.now);
        let registration_offset = self
            .sessions
            .get(&broker_id)
            .and_then(|s| s.registration_offset)
            .map_or(b.broker_epoch, |o| o as i64);
        let caught_up = current_metadata_offset >= b.broker_epoch.max(registration_offset);
        let change = |fenced: i8, in_controlled_shutdown: i8| {
            MetadataRecord::BrokerRegistrationChange(BrokerRegistrationChangeRecord {
                broker_id,
                broker_epoch,
                fenced,
                in_controlled_shutdown,
            })
        };
        let mut records = Vec::new();
        let mut shutdown_of = None;
        if want_shutdown && !b.in_controlled_shutdown && !b.fenced {
            tracing::info!(broker_id, "controlled shutdown: moving leadership away");
            records.push(change(0, 1));
            shutdown_of = Some(broker_id);
        } else if want_fence && !b.fenced {
            records.push(change(1, 0));
        } else if !want_fence
            && !want_shutdown
            && b.fenced
            && caught_up
            && !b.in_controlled_shutdown
        {
            tracing::info!(broker_id, broker_epoch, "broker caught up: unfenced");
            records.push(MetadataRecord::UnfenceBroker(UnfenceBrokerRecord {
                id: broker_id,
                epoch: broker_epoch,
            }));
        }
        let next = if records.is_empty() {
            ctx.image.clone()
        } else {
            let after = project(ctx.image, &records);
            records.extend(self.reconcile_partitions(&after));
            project(ctx.image, &records)
        };
        let now = next.broker(broker_id).expect("still registered");
        // Stop once it leads nothing and has applied the change that moved
        // its leaderships away; a fenced broker leads nothing already.
        let should_shutdown = want_shutdown
            && (now.fenced
                || (shutdown_of.is_none()
                    && self
                        .sessions
                        .get(&broker_id)
                        .and_then(|s| s.shutdown_offset)
                        .is_none_or(|o| current_metadata_offset >= o as i64)
                    && !leads_any(&next, broker_id)));
        let mut out = Outcome::with_records(
            ControllerResponse::BrokerHeartbeat {
                error: ApiError::NONE,
                is_caught_up: caught_up,
                is_fenced: now.fenced,
                should_shutdown,
            },
            records,
        );
        out.shutdown_of = shutdown_of;
        out
    }

    /// Fences every unfenced broker whose session expired.
    pub(super) fn expire_sessions(&mut self, ctx: &Ctx) -> Vec<MetadataRecord> {
        let mut records = Vec::new();
        for b in ctx.image.brokers().filter(|b| !b.fenced) {
            let s = self.sessions.entry(b.broker_id).or_insert(Session {
                last_contact: ctx.now,
                heard: false,
                shutdown_offset: None,
                registration_offset: None,
            });
            let silent = ctx.now.duration_since(s.last_contact);
            if silent >= self.config.session_timeout {
                tracing::warn!(
                    broker_id = b.broker_id,
                    silent_ms = silent.as_millis() as u64,
                    "broker session expired: fencing it"
                );
                records.push(MetadataRecord::BrokerRegistrationChange(
                    BrokerRegistrationChangeRecord {
                        broker_id: b.broker_id,
                        broker_epoch: b.broker_epoch,
                        fenced: 1,
                        in_controlled_shutdown: 0,
                    },
                ));
            }
        }
        records
    }
}

fn leads_any(image: &crate::MetadataImage, broker_id: NodeId) -> bool {
    image
        .topics()
        .any(|t| t.partitions.values().any(|p| p.leader == broker_id))
}
