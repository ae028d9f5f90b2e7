//! Small text files replaced atomically: Kafka's checkpoint format
//! (`version\ncount\nentry...\n`), written to a temp file, fsynced, renamed
//! over the old one, and the directory fsynced.

use std::fs::{self, File};
use std::io::{self, Write};
use std::path::Path;

/// Writes `contents` to `path` via temp file + fsync + rename, without
/// syncing the directory (callers that need the rename durable sync it).
pub(crate) fn write_atomic_no_dir_sync(path: &Path, contents: &[u8]) -> io::Result<()> {
    let tmp = tmp_path(path);
    {
        let mut f = File::create(&tmp)?;
        f.write_all(contents)?;
        f.sync_all()?;
    }
    fs::rename(&tmp, path)
}

/// `<path>.tmp`, where the new contents are written before the rename.
fn tmp_path(path: &Path) -> std::path::PathBuf {
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    tmp.into()
}

/// [`write_atomic_no_dir_sync`] then fsync of the parent directory.
pub(crate) fn write_atomic(path: &Path, contents: &[u8]) -> io::Result<()> {
    write_atomic_no_dir_sync(path, contents)?;
    if let Some(parent) = path.parent() {
        sync_dir(parent)?;
    }
    Ok(())
}

/// fsyncs a directory so created/renamed/removed entries are durable.
pub(crate) fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// Renders Kafka's checkpoint format (version 0).
pub(crate) fn render(lines: &[String]) -> Vec<u8> {
    let mut s = format!("0\n{}\n", lines.len());
    for l in lines {
        s.push_str(l);
        s.push('\n');
    }
    s.into_bytes()
}

/// Parses Kafka's checkpoint format into its entry lines. `Ok(None)` if the
/// file does not exist; an error string if it is malformed.
pub(crate) fn parse(path: &Path) -> io::Result<Option<Result<Vec<String>, String>>> {
    let text = match fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) if e.kind() == io::ErrorKind::InvalidData => {
            return Ok(Some(Err("not UTF-8".into())));
        }
        Err(e) => return Err(e),
    };
    let mut lines = text.lines();
    if lines.next().map(str::trim) != Some("0") {
        return Ok(Some(Err("unknown version".into())));
    }
    let Some(Ok(n)) = lines.next().map(|l| l.trim().parse::<usize>()) else {
        return Ok(Some(Err("bad entry count".into())));
    };
    let entries: Vec<String> = lines
        .filter(|l| !l.trim().is_empty())
        .map(str::to_owned)
        .collect();
    if entries.len() != n {
        return Ok(Some(Err(format!(
            "expected {n} entries, found {}",
            entries.len()
        ))));
    }
    Ok(Some(Ok(entries)))
}
