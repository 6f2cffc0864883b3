//! A sink's records waiting on disk: appended to `current.jsonl` (by the
//! scheduler side when the queue is full, or by the worker at shutdown);
//! the worker renames it to `draining-*.jsonl` and sends it from there,
//! keeping its place in `*.done` so a restart does not resend much.
//!
//! The spool is bounded: `current.jsonl` becomes a `draining-*` segment
//! once it holds an eighth of the bound (16 MiB at most, so the reader's
//! memory stays small), and when the files pass the bound the oldest
//! segments go, counted. A process killed mid-write leaves at most a torn
//! last line, which the next start cuts off before appending.

use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use serde::Serialize;
use serde::de::DeserializeOwned;

use super::{DeliverError, Delivery};

/// The dead-letter file stops growing here and starts afresh, keeping the
/// one before as `dead-letter.1.jsonl`.
const DEAD_LETTER_MAX: u64 = 64 << 20;

/// Records of type `T` (a sink's [`Delivery`], the history writer's entries).
pub struct Spool<T = Delivery> {
    dir: PathBuf,
    max: u64,
    append_lock: Mutex<()>,
    reading: Mutex<Option<Draining>>,
    /// The segment the reader holds, which eviction leaves alone (a lock of
    /// its own: `append` may not wait on `reading`, which waits on it).
    reading_file: Mutex<Option<PathBuf>>,
    items: std::marker::PhantomData<fn() -> T>,
}

struct Draining {
    file: PathBuf,
    lines: Vec<String>,
    pos: usize,
}

/// Records taken from the spool, to be committed once delivered.
pub struct Chunk<T = Delivery> {
    pub items: Vec<Arc<T>>,
    end: usize,
}

impl<T: Serialize + DeserializeOwned> Spool<T> {
    /// The spool in `dir`, holding at most about `max` bytes.
    pub fn open(dir: &Path, max: u64) -> Result<Spool<T>, DeliverError> {
        std::fs::create_dir_all(dir).map_err(DeliverError::file("create the spool", dir))?;
        let current = dir.join("current.jsonl");
        cut_torn_tail(&current)?;
        Ok(Spool {
            dir: dir.to_path_buf(),
            max,
            append_lock: Mutex::new(()),
            reading: Mutex::new(None),
            reading_file: Mutex::new(None),
            items: std::marker::PhantomData,
        })
    }

    fn segment_max(&self) -> u64 {
        (self.max / 8).clamp(64 << 10, 16 << 20)
    }

    /// Appends `items` with why they were refused to the dead-letter file;
    /// returns its path.
    pub fn dead_letter(
        &self,
        items: &[Arc<T>],
        why: &DeliverError,
    ) -> Result<PathBuf, DeliverError> {
        let _g = self
            .append_lock
            .lock()
            .map_err(|_| DeliverError::Poisoned)?;
        let path = self.dir.join("dead-letter.jsonl");
        if std::fs::metadata(&path).is_ok_and(|m| m.len() >= DEAD_LETTER_MAX) {
            let old = self.dir.join("dead-letter.1.jsonl");
            std::fs::rename(&path, &old).map_err(DeliverError::file("rotate", &path))?;
        }
        let at = humantime::format_rfc3339_millis(std::time::SystemTime::now()).to_string();
        let mut buf = Vec::new();
        for d in items {
            #[derive(serde::Serialize)]
            struct Dead<'a, T: Serialize> {
                at: &'a str,
                error: String,
                delivery: &'a T,
            }
            serde_json::to_writer(
                &mut buf,
                &Dead {
                    at: &at,
                    error: why.to_string(),
                    delivery: d.as_ref(),
                },
            )?;
            buf.push(b'\n');
        }
        let mut f = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .map_err(DeliverError::file("open", &path))?;
        f.write_all(&buf)
            .map_err(DeliverError::file("write", &path))?;
        f.sync_data().map_err(DeliverError::file("sync", &path))?;
        Ok(path)
    }

    /// Appends `items`; returns how many older records were dropped to
    /// stay within the bound.
    pub fn append(&self, items: &[Arc<T>]) -> Result<u64, DeliverError> {
        let _g = self
            .append_lock
            .lock()
            .map_err(|_| DeliverError::Poisoned)?;
        let path = self.dir.join("current.jsonl");
        if std::fs::metadata(&path).is_ok_and(|m| m.len() >= self.segment_max()) {
            let to = self.segment_name();
            std::fs::rename(&path, &to).map_err(DeliverError::file("rename", &path))?;
        }
        let mut f = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .map_err(DeliverError::file("open", &path))?;
        let mut buf = Vec::new();
        for d in items {
            serde_json::to_writer(&mut buf, d.as_ref())?;
            buf.push(b'\n');
        }
        f.write_all(&buf)
            .map_err(DeliverError::file("write", &path))?;
        // On disk before we count it as kept.
        f.sync_data().map_err(DeliverError::file("sync", &path))?;
        Ok(self.evict())
    }

    fn segment_name(&self) -> PathBuf {
        self.dir
            .join(format!("draining-{}.jsonl", ulid::Ulid::new()))
    }

    /// Drops the oldest segments until the spool is within its bound
    /// (the one being read stays); returns the records dropped.
    fn evict(&self) -> u64 {
        let Ok(entries) = std::fs::read_dir(&self.dir) else {
            return 0;
        };
        let mut segments: Vec<(PathBuf, u64)> = Vec::new();
        let mut total = 0u64;
        for e in entries.filter_map(Result::ok) {
            let p = e.path();
            let Some(name) = p.file_name().and_then(|n| n.to_str()) else {
                continue;
            };
            let len = e.metadata().map_or(0, |m| m.len());
            if name == "current.jsonl" {
                total += len;
            } else if name.starts_with("draining-") && name.ends_with(".jsonl") {
                total += len;
                segments.push((p, len));
            }
        }
        if total <= self.max {
            return 0;
        }
        segments.sort();
        let reading = self.reading_file.lock().ok().and_then(|r| r.clone());
        let mut dropped = 0u64;
        for (p, len) in segments {
            if total <= self.max {
                break;
            }
            if reading.as_ref() == Some(&p) {
                continue;
            }
            let lines =
                std::fs::read(&p).map_or(0, |b| b.iter().filter(|&&c| c == b'\n').count() as u64);
            let done = std::fs::read_to_string(done_path(&p))
                .ok()
                .and_then(|s| s.trim().parse::<u64>().ok())
                .unwrap_or(0);
            remove(&p);
            total = total.saturating_sub(len);
            dropped += lines.saturating_sub(done);
        }
        if dropped > 0 {
            tracing::warn!(dir = %self.dir.display(), dropped, max_bytes = self.max, "the spool is full; its oldest records were dropped");
        }
        dropped
    }

    /// Up to `max` records, oldest first; none when the spool is empty.
    pub fn take(&self, max: usize) -> Result<Option<Chunk<T>>, DeliverError> {
        let mut reading = self.reading.lock().map_err(|_| DeliverError::Poisoned)?;
        if reading.as_ref().is_none_or(|d| d.pos >= d.lines.len()) {
            if let Some(done) = reading.take() {
                remove(&done.file);
            }
            *reading = self.next_file()?;
            if let Ok(mut f) = self.reading_file.lock() {
                *f = reading.as_ref().map(|d| d.file.clone());
            }
        }
        let Some(d) = reading.as_mut() else {
            return Ok(None);
        };
        let end = (d.pos + max).min(d.lines.len());
        let mut items = Vec::with_capacity(end - d.pos);
        for line in &d.lines[d.pos..end] {
            match serde_json::from_str::<T>(line) {
                Ok(x) => items.push(Arc::new(x)),
                Err(e) => {
                    tracing::error!(file = %d.file.display(), error = %e, "skipping an unreadable spooled record")
                }
            }
        }
        Ok(Some(Chunk { items, end }))
    }

    /// The records of `chunk` were delivered.
    pub fn commit(&self, chunk: Chunk<T>) -> Result<(), DeliverError> {
        let mut reading = self.reading.lock().map_err(|_| DeliverError::Poisoned)?;
        let Some(d) = reading.as_mut() else {
            return Ok(());
        };
        d.pos = chunk.end;
        if d.pos >= d.lines.len() {
            remove(&d.file);
            *reading = None;
            return Ok(());
        }
        let done = done_path(&d.file);
        std::fs::write(&done, d.pos.to_string()).map_err(DeliverError::file("write", &done))
    }

    /// The oldest draining file, or `current.jsonl` made into one.
    fn next_file(&self) -> Result<Option<Draining>, DeliverError> {
        let mut draining: Vec<PathBuf> = std::fs::read_dir(&self.dir)
            .map_err(DeliverError::file("list", &self.dir))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| {
                p.file_name()
                    .and_then(|n| n.to_str())
                    .is_some_and(|n| n.starts_with("draining-") && n.ends_with(".jsonl"))
            })
            .collect();
        draining.sort();
        let file = match draining.into_iter().next() {
            Some(f) => f,
            None => {
                let _g = self
                    .append_lock
                    .lock()
                    .map_err(|_| DeliverError::Poisoned)?;
                let current = self.dir.join("current.jsonl");
                if std::fs::metadata(&current).map_or(true, |m| m.len() == 0) {
                    return Ok(None);
                }
                let to = self.segment_name();
                std::fs::rename(&current, &to).map_err(DeliverError::file("rename", &current))?;
                to
            }
        };
        let f = File::open(&file).map_err(DeliverError::file("open", &file))?;
        let lines: Vec<String> = BufReader::new(f)
            .lines()
            .map_while(Result::ok)
            .filter(|l| !l.trim().is_empty())
            .collect();
        let pos = std::fs::read_to_string(done_path(&file))
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(0);
        Ok(Some(Draining { file, lines, pos }))
    }
}

/// A process killed while appending may leave the last line half written;
/// it is cut off so the next record starts on a line of its own.
fn cut_torn_tail(path: &Path) -> Result<(), DeliverError> {
    let Ok(bytes) = std::fs::read(path) else {
        return Ok(());
    };
    if bytes.last().is_none_or(|&b| b == b'\n') {
        return Ok(());
    }
    let keep = bytes.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
    tracing::warn!(file = %path.display(), bytes = bytes.len() - keep, "cutting a half-written record off the spool (the process was stopped while writing it)");
    let f = OpenOptions::new()
        .write(true)
        .open(path)
        .map_err(DeliverError::file("open", path))?;
    f.set_len(keep as u64)
        .map_err(DeliverError::file("truncate", path))?;
    f.sync_data().map_err(DeliverError::file("sync", path))
}

fn done_path(file: &Path) -> PathBuf {
    file.with_extension("done")
}

fn remove(file: &Path) {
    let _ = std::fs::remove_file(file);
    let _ = std::fs::remove_file(done_path(file));
}
