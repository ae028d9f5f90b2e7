//! Producer ids handed out in blocks (Kafka's `ProducerIdManager`): the end
//! of the current block is persisted before any id of it is given out, so
//! after a restart (crash included) the next block starts above every id
//! ever issued. The file `producer-id-block` in the first log dir holds
//! Kafka's checkpoint format with one line: the first id not reserved yet.
//!
//! Owner: [`crate::Broker`]; `Send + Sync`, ids are taken under a mutex and
//! a block reservation (a small atomic file write) happens once per
//! [`BLOCK_SIZE`] ids.

use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use strom_protocol::ProducerId;

/// Ids per reserved block (Kafka's `PRODUCER_ID_BLOCK_SIZE`).
pub const BLOCK_SIZE: i64 = 1000;
const FILE: &str = "producer-id-block";

struct Block {
    next: i64,
    end: i64,
}

/// Issues producer ids that are never reused.
pub struct ProducerIdManager {
    path: PathBuf,
    block: Mutex<Block>,
}

impl ProducerIdManager {
    /// Reads the reservation in `dir` (0 when absent); the first id issued
    /// is the first one not reserved before.
    pub fn open(dir: &Path) -> io::Result<ProducerIdManager> {
        fs::create_dir_all(dir)?;
        let path = dir.join(FILE);
        let reserved = match fs::read_to_string(&path) {
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
            path,
            block: Mutex::new(Block {
                next: reserved,
                end: reserved,
            }),
        })
    }

    /// The next unused producer id.
    pub fn generate(&self) -> io::Result<ProducerId> {
        let mut b = self.block.lock().unwrap_or_else(|e| e.into_inner());
        if b.next >= b.end {
            let end = b.next + BLOCK_SIZE;
            write_atomic(&self.path, format!("0\n1\n{end}\n").as_bytes())?;
            b.end = end;
        }
        let id = b.next;
        b.next += 1;
        Ok(ProducerId(id))
    }
}

fn write_atomic(path: &Path, contents: &[u8]) -> io::Result<()> {
    let tmp = path.with_extension("tmp");
    {
        let mut f = fs::File::create(&tmp)?;
        f.write_all(contents)?;
        f.sync_all()?;
    }
    fs::rename(&tmp, path)?;
    if let Some(p) = path.parent() {
        fs::File::open(p)?.sync_all()?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_never_reused_across_restarts() {
        let dir = tempfile::tempdir().unwrap();
        let m = ProducerIdManager::open(dir.path()).unwrap();
        assert_eq!(m.generate().unwrap(), ProducerId(0));
        assert_eq!(m.generate().unwrap(), ProducerId(1));
        drop(m);
        // a restart (even a crash) skips the rest of the reserved block
        let m = ProducerIdManager::open(dir.path()).unwrap();
        assert_eq!(m.generate().unwrap(), ProducerId(BLOCK_SIZE));
        for _ in 0..BLOCK_SIZE {
            m.generate().unwrap();
        }
        drop(m);
        let m = ProducerIdManager::open(dir.path()).unwrap();
        assert_eq!(m.generate().unwrap(), ProducerId(3 * BLOCK_SIZE));
    }
}
