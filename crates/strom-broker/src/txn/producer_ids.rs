//! Producer ids handed out in blocks (Kafka's `RPCProducerIdManager`): each
//! broker takes a block from the active controller (AllocateProducerIds),
//! which records it in the metadata log before answering, so no two brokers
//! and no two incarnations of one broker ever issue the same id.
//!
//! Upgrade: Strom used to reserve blocks in a `producer-id-block` file in the
//! first log dir (Kafka's checkpoint format, one line: the first id not
//! reserved). That file is read once at start as a floor: while the metadata
//! log's next id is below it, the broker first raises it there (a
//! `ProducerIdsRecord`), so ids never go backwards on upgrade.
//!
//! Owner: [`crate::Broker`]; `Send + Sync`. Ids are taken under an async
//! mutex; the controller is asked once per block.

use std::fs;
use std::io;
use std::path::Path;

use strom_metadata::controller_api::{ControllerRequest, ControllerResponse};
use strom_metadata::records::{MetadataRecord, ProducerIdsRecord};
use strom_protocol::ProducerId;

use crate::broker::Broker;

/// The file of the block reservations before the metadata log held them.
const LEGACY_FILE: &str = "producer-id-block";

struct Block {
    next: i64,
    end: i64,
}

/// Why no producer id could be issued (the client retries: Kafka answers
/// COORDINATOR_LOAD_IN_PROGRESS while no block is available).
#[derive(Debug, thiserror::Error)]
#[error("no producer id block available: {0}")]
pub struct NoBlock(pub String);

/// Issues producer ids that are never reused.
pub struct ProducerIdManager {
    /// The legacy file's reservation: no id below it is issued.
    floor: i64,
    block: tokio::sync::Mutex<Block>,
}

impl ProducerIdManager {
    /// Reads the legacy reservation in `dir` as the floor (0 when absent).
    pub fn open(dir: &Path) -> io::Result<ProducerIdManager> {
        let path = dir.join(LEGACY_FILE);
        let floor = match fs::read_to_string(&path) {
            Ok(s) => s
                .lines()
                .nth(2)
                .and_then(|l| l.trim().parse::<i64>().ok())
                .ok_or_else(|| {
                    io::Error::new(
                        io::ErrorKind::InvalidData,
                        format!("{} is corrupt", path.display()),
                    )
                })?,
            Err(e) if e.kind() == io::ErrorKind::NotFound => 0,
            Err(e) => return Err(e),
        };
        Ok(ProducerIdManager {
            floor,
            block: tokio::sync::Mutex::new(Block { next: 0, end: 0 }),
        })
    }

    /// The first id the legacy file had not reserved.
    pub fn floor(&self) -> i64 {
        self.floor
    }

    /// The next unused producer id, taking a new block from the active
    /// controller when the current one is used up.
    pub async fn generate(&self, broker: &Broker) -> Result<ProducerId, NoBlock> {
        let mut b = self.block.lock().await;
        if b.next >= b.end {
            let (start, len) = self.allocate(broker).await?;
            b.next = start;
            b.end = start + len;
        }
        let id = b.next;
        b.next += 1;
        Ok(ProducerId(id))
    }

    async fn allocate(&self, broker: &Broker) -> Result<(i64, i64), NoBlock> {
        let epoch = broker.broker_epoch();
        if epoch < 0 {
            return Err(NoBlock("this broker is not registered".into()));
        }
        let next = broker
            .metadata
            .quorum()
            .image()
            .producer_ids()
            .next_producer_id;
        if next < self.floor {
            let raise = MetadataRecord::ProducerIds(ProducerIdsRecord {
                broker_id: broker.node_id(),
                broker_epoch: epoch,
                next_producer_id: self.floor,
            });
            broker
                .metadata
                .propose(vec![raise])
                .await
                .map_err(|e| NoBlock(e.to_string()))?;
        }
        let req = ControllerRequest::AllocateProducerIds {
            broker_id: broker.node_id(),
            broker_epoch: epoch,
        };
        match broker.metadata.controller_call(req).await {
            Ok(ControllerResponse::AllocateProducerIds {
                error,
                producer_id_start,
                producer_id_len,
            }) if error.error_code == 0 && producer_id_len > 0 => {
                Ok((producer_id_start, i64::from(producer_id_len)))
            }
            Ok(ControllerResponse::AllocateProducerIds { error, .. }) => Err(NoBlock(
                error
                    .message
                    .unwrap_or_else(|| format!("error {}", error.error_code)),
            )),
            Ok(other) => Err(NoBlock(format!("unexpected answer {other:?}"))),
            Err(e) => Err(NoBlock(e.to_string())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_legacy_reservation_is_the_floor() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(ProducerIdManager::open(dir.path()).unwrap().floor(), 0);
        fs::write(dir.path().join(LEGACY_FILE), "0\n1\n3000\n").unwrap();
        assert_eq!(ProducerIdManager::open(dir.path()).unwrap().floor(), 3000);
        fs::write(dir.path().join(LEGACY_FILE), "garbage").unwrap();
        assert!(ProducerIdManager::open(dir.path()).is_err());
    }
}
