//! The set of log directories and the logs in them (Kafka's `LogManager`).

use std::collections::HashMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use strom_protocol::Offset;
use tracing::{error, info, warn};

use crate::checkpoint;
use crate::cleaner::{clean_log, CleanStats, OffsetMap};
use crate::log::{read_recovery_points, RECOVERY_POINT_CHECKPOINT};
use crate::{Log, LogConfig, LogError, TopicPartition};

const CLEAN_SHUTDOWN: &str = ".kafka_cleanshutdown";
/// Kafka's per-log-dir file of log start offsets above the first segment's
/// base (after DeleteRecords), so they survive a restart.
pub(crate) const LOG_START_CHECKPOINT: &str = "log-start-offset-checkpoint";
/// How often [`LogManager::flush_due`] rewrites the recovery-point
/// checkpoints (Kafka's `log.flush.offset.checkpoint.interval.ms`).
const CHECKPOINT_INTERVAL_MS: i64 = 60_000;
/// Kafka's per-log-dir file of high watermarks: a restarted leader starts
/// from it instead of its log end, so it never shows consumers records its
/// followers may not have (they would be truncated if another replica led).
pub(crate) const HIGH_WATERMARK_CHECKPOINT: &str = "replication-offset-checkpoint";
/// How often [`LogManager::flush_due`] rewrites the high-watermark
/// checkpoints when they changed (Kafka's
/// `replica.high.watermark.checkpoint.interval.ms`).
const HW_CHECKPOINT_INTERVAL_MS: i64 = 5_000;

struct Entry {
    log: Arc<Log>,
    dir_index: usize,
}

/// The directory of the cluster metadata log (`__cluster_metadata-0`),
/// which is not a partition log and is never opened as one.
pub const METADATA_LOG_DIR: &str = "__cluster_metadata-0";

/// Owns the log directories (`log.dirs`) and every partition log in them.
///
/// Created once at broker start; `Send + Sync`, methods take `&self` and
/// block on disk I/O. Lifecycle: `open` → `load_logs` → (`create_log` /
/// `delete_log` / `flush_due`)* → `shutdown`, which leaves the clean-shutdown
/// marker so the next start skips recovery.
pub struct LogManager {
    log_dirs: Vec<PathBuf>,
    default_config: LogConfig,
    /// Per log dir: was the previous shutdown unclean?
    needs_recovery: Vec<bool>,
    logs: RwLock<HashMap<TopicPartition, Entry>>,
    last_checkpoint_ms: Mutex<Option<i64>>,
    /// When the high watermarks were last checkpointed, and what each log
    /// dir's file holds (rewritten only when it would change).
    last_hw_checkpoint: Mutex<(Option<i64>, Vec<Vec<u8>>)>,
    uniq: AtomicU64,
}

impl LogManager {
    /// Creates missing log dirs and consumes their clean-shutdown markers
    /// (deleting them, so a later crash is detected).
    pub fn open(log_dirs: Vec<PathBuf>, default_config: LogConfig) -> Result<LogManager, LogError> {
        if log_dirs.is_empty() {
            return Err(LogError::LogDir("no log directories configured".into()));
        }
        let mut needs_recovery = Vec::with_capacity(log_dirs.len());
        for dir in &log_dirs {
            fs::create_dir_all(dir)?;
            let marker = dir.join(CLEAN_SHUTDOWN);
            if marker.exists() {
                fs::remove_file(&marker)?;
                checkpoint::sync_dir(dir)?;
                needs_recovery.push(false);
            } else {
                let has_logs = fs::read_dir(dir)?.filter_map(|e| e.ok()).any(|e| {
                    e.file_name()
                        .to_str()
                        .and_then(TopicPartition::from_dir_name)
                        .is_some()
                });
                if has_logs {
                    warn!(
                        "{} was not shut down cleanly; logs will be recovered",
                        dir.display()
                    );
                }
                needs_recovery.push(has_logs);
            }
        }
        Ok(LogManager {
            log_dirs,
            default_config,
            needs_recovery,
            logs: RwLock::new(HashMap::new()),
            last_checkpoint_ms: Mutex::new(None),
            last_hw_checkpoint: Mutex::new((None, Vec::new())),
            uniq: AtomicU64::new(0),
        })
    }

    /// The configured log directories.
    pub fn log_dirs(&self) -> &[PathBuf] {
        &self.log_dirs
    }

    /// The default log config given at open.
    pub fn default_config(&self) -> &LogConfig {
        &self.default_config
    }

    /// Opens every `<topic>-<partition>` directory of every log dir
    /// (except the metadata log's, [`METADATA_LOG_DIR`]),
    /// recovering them if the last shutdown was unclean. Leftover
    /// `*-delete` directories are removed.
    pub fn load_logs(
        &self,
        config_for: impl Fn(&TopicPartition) -> LogConfig,
    ) -> Result<Vec<(TopicPartition, Arc<Log>)>, LogError> {
        let mut loaded = Vec::new();
        for (i, dir) in self.log_dirs.iter().enumerate() {
            let rps: HashMap<TopicPartition, Offset> = if self.needs_recovery[i] {
                read_recovery_points(&dir.join(RECOVERY_POINT_CHECKPOINT))?
                    .into_iter()
                    .collect()
            } else {
                HashMap::new()
            };
            let starts: HashMap<TopicPartition, Offset> =
                read_recovery_points(&dir.join(LOG_START_CHECKPOINT))?
                    .into_iter()
                    .collect();
            // Without the file (a dir of an earlier version) the high
            // watermark starts at the log end, as it did there; a partition
            // missing from it was created after it was written: start at 0.
            let hw_path = dir.join(HIGH_WATERMARK_CHECKPOINT);
            let hws: Option<HashMap<TopicPartition, Offset>> = hw_path
                .exists()
                .then(|| read_recovery_points(&hw_path))
                .transpose()?
                .map(|v| v.into_iter().collect());
            let mut names: Vec<_> = fs::read_dir(dir)?.filter_map(|e| e.ok()).collect();
            names.sort_by_key(|e| e.file_name());
            for entry in names {
                let Ok(name) = entry.file_name().into_string() else {
                    continue;
                };
                if !entry.file_type()?.is_dir() {
                    continue;
                }
                if name.ends_with("-delete") {
                    info!("removing leftover {}", entry.path().display());
                    fs::remove_dir_all(entry.path())?;
                    continue;
                }
                // The Raft metadata log lives beside the partitions, as in
                // Kafka, but has its own format and recovery (strom-metadata).
                if name == METADATA_LOG_DIR {
                    continue;
                }
                let Some(tp) = TopicPartition::from_dir_name(&name) else {
                    continue;
                };
                if self.logs.read().unwrap().contains_key(&tp) {
                    return Err(LogError::LogDir(format!(
                        "duplicate log for {tp} in {}",
                        dir.display()
                    )));
                }
                let log = Arc::new(Log::open_with_recovery_point(
                    entry.path(),
                    config_for(&tp),
                    self.needs_recovery[i],
                    rps.get(&tp).copied(),
                )?);
                if let Some(o) = starts.get(&tp) {
                    log.restore_log_start(*o);
                }
                if let Some(hws) = &hws {
                    // clamped into [log start, log end]
                    log.update_high_watermark(hws.get(&tp).copied().unwrap_or(Offset(0)));
                }
                self.logs.write().unwrap().insert(
                    tp.clone(),
                    Entry {
                        log: log.clone(),
                        dir_index: i,
                    },
                );
                loaded.push((tp, log));
            }
        }
        Ok(loaded)
    }

    /// Creates the log for `tp` in the log dir holding the fewest partitions,
    /// or returns the existing one.
    pub fn create_log(&self, tp: &TopicPartition, config: LogConfig) -> Result<Arc<Log>, LogError> {
        let mut logs = self.logs.write().unwrap();
        if let Some(e) = logs.get(tp) {
            return Ok(e.log.clone());
        }
        if tp.topic.is_empty()
            || tp.topic.contains('/')
            || tp.topic == "."
            || tp.topic == ".."
            || tp.partition < 0
        {
            return Err(LogError::LogDir(format!("invalid topic partition {tp:?}")));
        }
        let mut counts = vec![0usize; self.log_dirs.len()];
        for e in logs.values() {
            counts[e.dir_index] += 1;
        }
        let dir_index = (0..counts.len()).min_by_key(|&i| counts[i]).unwrap();
        let parent = &self.log_dirs[dir_index];
        let path = parent.join(tp.to_string());
        let log = Arc::new(Log::open_with_recovery_point(path, config, false, None)?);
        checkpoint::sync_dir(parent)?;
        logs.insert(
            tp.clone(),
            Entry {
                log: log.clone(),
                dir_index,
            },
        );
        Ok(log)
    }

    /// Closes and removes the log of `tp`: renames its directory to
    /// `<topic>-<partition>.<uniq>-delete`, then deletes it. A no-op if absent.
    pub fn delete_log(&self, tp: &TopicPartition) -> Result<(), LogError> {
        let Some(entry) = self.logs.write().unwrap().remove(tp) else {
            return Ok(());
        };
        entry.log.mark_closed();
        let dir = entry.log.dir().to_path_buf();
        let parent = dir.parent().unwrap_or(Path::new(".")).to_path_buf();
        let uniq = format!(
            "{:x}{:04x}",
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos())
                .unwrap_or(0),
            self.uniq.fetch_add(1, Ordering::Relaxed)
        );
        let doomed = parent.join(format!("{tp}.{uniq}-delete"));
        fs::rename(&dir, &doomed)?;
        checkpoint::sync_dir(&parent)?;
        fs::remove_dir_all(&doomed)?;
        Ok(())
    }

    /// The log of `tp`, if this broker has it.
    pub fn get(&self, tp: &TopicPartition) -> Option<Arc<Log>> {
        self.logs.read().unwrap().get(tp).map(|e| e.log.clone())
    }

    /// Every log this manager holds.
    pub fn all_logs(&self) -> Vec<(TopicPartition, Arc<Log>)> {
        self.logs
            .read()
            .unwrap()
            .iter()
            .map(|(tp, e)| (tp.clone(), e.log.clone()))
            .collect()
    }

    /// Applies `flush.ms` to every log and, every minute, rewrites the
    /// recovery-point checkpoints. Errors are logged, not returned: one bad
    /// log must not stop the others from flushing.
    pub fn flush_due(&self, now_ms: i64) {
        for (tp, log) in self.all_logs() {
            if let Err(e) = log.flush_if_due(now_ms) {
                error!("flushing {tp} failed: {e}");
            }
        }
        let mut last = self.last_checkpoint_ms.lock().unwrap();
        match *last {
            None => *last = Some(now_ms),
            Some(t) if now_ms - t >= CHECKPOINT_INTERVAL_MS => {
                *last = Some(now_ms);
                if let Err(e) = self.write_recovery_checkpoints() {
                    error!("writing recovery-point checkpoints failed: {e}");
                }
            }
            Some(_) => {}
        }
        drop(last);
        let due = {
            let mut hw = self.last_hw_checkpoint.lock().unwrap();
            match hw.0 {
                Some(t) if now_ms - t < HW_CHECKPOINT_INTERVAL_MS => false,
                _ => {
                    hw.0 = Some(now_ms);
                    true
                }
            }
        };
        if due {
            if let Err(e) = self.write_high_watermark_checkpoints() {
                error!("writing high-watermark checkpoints failed: {e}");
            }
        }
    }

    /// One retention pass (Kafka's `log.retention.check.interval.ms` task):
    /// rolls quiet active segments whose `segment.ms` passed, deletes
    /// segments past `retention.ms` / `retention.bytes` or below the log
    /// start offset, removes `.deleted` files whose `file.delete.delay.ms`
    /// passed, and checkpoints log start offsets if any moved. Returns the
    /// number of segments deleted. Errors are logged per log.
    pub fn retention_pass(&self, now_ms: i64) -> usize {
        let mut deleted = 0;
        for (tp, log) in self.all_logs() {
            let res = (|| -> Result<usize, LogError> {
                log.roll_if_due(now_ms)?;
                let n = log.delete_retained_segments(now_ms)?;
                log.delete_expired_files(now_ms)?;
                Ok(n)
            })();
            match res {
                Ok(n) => deleted += n,
                Err(e) => error!("retention of {tp} failed: {e}"),
            }
        }
        if deleted > 0 {
            if let Err(e) = self.write_log_start_checkpoints() {
                error!("writing log start offset checkpoints failed: {e}");
            }
        }
        deleted
    }

    /// DeleteRecords on `tp`: advances its log start offset to `offset`
    /// (≤ high watermark), checkpointed before returning the new one.
    pub fn delete_records(
        &self,
        tp: &TopicPartition,
        offset: Offset,
        now_ms: i64,
    ) -> Result<Offset, LogError> {
        let log = self
            .get(tp)
            .ok_or_else(|| LogError::Closed(tp.to_string()))?;
        let start = log.delete_records_before(offset, now_ms)?;
        self.write_log_start_checkpoints()?;
        Ok(start)
    }

    /// One log-cleaner pass over every compacted log (see
    /// [`crate::cleaner`]); `cancel` stops it between segments.
    pub fn clean_pass(
        &self,
        map: &mut OffsetMap,
        now_ms: i64,
        cancel: &std::sync::atomic::AtomicBool,
    ) -> Vec<(TopicPartition, CleanStats)> {
        let mut out = Vec::new();
        for (tp, log) in self.all_logs() {
            if cancel.load(Ordering::Acquire) {
                break;
            }
            match clean_log(&log, map, now_ms, cancel) {
                Ok(Some(stats)) => out.push((tp, stats)),
                Ok(None) => {}
                Err(e) => error!("cleaning {tp} failed: {e}"),
            }
        }
        out
    }

    /// Renders each log dir's checkpoint of `offset_of` every log in it
    /// (Kafka's `<topic> <partition> <offset>` lines, sorted).
    fn render_offset_checkpoints(&self, offset_of: impl Fn(&Log) -> Offset) -> Vec<Vec<u8>> {
        let logs = self.logs.read().unwrap();
        (0..self.log_dirs.len())
            .map(|i| {
                let mut lines: Vec<String> = logs
                    .iter()
                    .filter(|(_, e)| e.dir_index == i)
                    .map(|(tp, e)| format!("{} {} {}", tp.topic, tp.partition, offset_of(&e.log).0))
                    .collect();
                lines.sort();
                checkpoint::render(&lines)
            })
            .collect()
    }

    /// Writes `file` in every log dir from [`Self::render_offset_checkpoints`].
    fn write_offset_checkpoints(
        &self,
        file: &str,
        offset_of: impl Fn(&Log) -> Offset,
    ) -> Result<(), LogError> {
        for (dir, contents) in self
            .log_dirs
            .iter()
            .zip(self.render_offset_checkpoints(offset_of))
        {
            checkpoint::write_atomic(&dir.join(file), &contents)?;
        }
        Ok(())
    }

    fn write_log_start_checkpoints(&self) -> Result<(), LogError> {
        self.write_offset_checkpoints(LOG_START_CHECKPOINT, Log::log_start_offset)
    }

    fn write_recovery_checkpoints(&self) -> Result<(), LogError> {
        self.write_offset_checkpoints(RECOVERY_POINT_CHECKPOINT, Log::recovery_point)
    }

    /// Rewrites the high-watermark checkpoint of each log dir whose
    /// contents changed since the last write (an idle broker writes nothing).
    fn write_high_watermark_checkpoints(&self) -> Result<(), LogError> {
        let rendered = self.render_offset_checkpoints(Log::high_watermark);
        let mut last = self.last_hw_checkpoint.lock().unwrap();
        last.1.resize(rendered.len(), Vec::new());
        for ((dir, contents), written) in self.log_dirs.iter().zip(rendered).zip(last.1.iter_mut())
        {
            if *written != contents {
                checkpoint::write_atomic(&dir.join(HIGH_WATERMARK_CHECKPOINT), &contents)?;
                *written = contents;
            }
        }
        Ok(())
    }

    /// Closes every log, writes the recovery-point checkpoints and then the
    /// clean-shutdown marker of each log dir (fsynced).
    pub fn shutdown(&self) -> Result<(), LogError> {
        let mut first_err = None;
        for (tp, log) in self.all_logs() {
            if let Err(e) = log.close() {
                error!("closing {tp} failed: {e}");
                first_err.get_or_insert(e);
            }
        }
        if let Some(e) = first_err {
            // without the marker the next start recovers: the safe outcome
            return Err(e);
        }
        self.write_recovery_checkpoints()?;
        self.write_log_start_checkpoints()?;
        self.write_high_watermark_checkpoints()?;
        for dir in &self.log_dirs {
            checkpoint::write_atomic(&dir.join(CLEAN_SHUTDOWN), b"")?;
        }
        Ok(())
    }
}
