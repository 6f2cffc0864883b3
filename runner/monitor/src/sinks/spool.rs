//! A sink's records waiting on disk: appended to `current.jsonl` (by the
//! scheduler side when the queue is full, or by the worker at shutdown);
//! the worker renames it to `draining-*.jsonl` and sends it from there,
//! keeping its place in `*.done` so a restart does not resend much.

use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use super::{DeliverError, Delivery};

pub struct Spool {
    dir: PathBuf,
    append_lock: Mutex<()>,
    reading: Mutex<Option<Draining>>,
}

struct Draining {
    file: PathBuf,
    lines: Vec<String>,
    pos: usize,
}

/// Records taken from the spool, to be committed once delivered.
pub struct Chunk {
    pub items: Vec<Arc<Delivery>>,
    end: usize,
}

impl Spool {
    pub fn open(dir: &Path) -> Result<Spool, DeliverError> {
        std::fs::create_dir_all(dir).map_err(DeliverError::file("create the spool", dir))?;
        Ok(Spool {
            dir: dir.to_path_buf(),
            append_lock: Mutex::new(()),
            reading: Mutex::new(None),
        })
    }

    pub fn append(&self, items: &[Arc<Delivery>]) -> Result<(), DeliverError> {
        let _g = self
            .append_lock
            .lock()
            .map_err(|_| DeliverError::Poisoned)?;
        let path = self.dir.join("current.jsonl");
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
        f.sync_data().map_err(DeliverError::file("sync", &path))
    }

    /// Up to `max` records, oldest first; none when the spool is empty.
    pub fn take(&self, max: usize) -> Result<Option<Chunk>, DeliverError> {
        let mut reading = self.reading.lock().map_err(|_| DeliverError::Poisoned)?;
        if reading.as_ref().is_none_or(|d| d.pos >= d.lines.len()) {
            if let Some(done) = reading.take() {
                remove(&done.file);
            }
            *reading = self.next_file()?;
        }
        let Some(d) = reading.as_mut() else {
            return Ok(None);
        };
        let end = (d.pos + max).min(d.lines.len());
        let mut items = Vec::with_capacity(end - d.pos);
        for line in &d.lines[d.pos..end] {
            match serde_json::from_str::<Delivery>(line) {
                Ok(x) => items.push(Arc::new(x)),
                Err(e) => {
                    tracing::error!(file = %d.file.display(), error = %e, "skipping an unreadable spooled record")
                }
            }
        }
        Ok(Some(Chunk { items, end }))
    }

    /// The records of `chunk` were delivered.
    pub fn commit(&self, chunk: Chunk) -> Result<(), DeliverError> {
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
                let to = self
                    .dir
                    .join(format!("draining-{}.jsonl", ulid::Ulid::new()));
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

fn done_path(file: &Path) -> PathBuf {
    file.with_extension("done")
}

fn remove(file: &Path) {
    let _ = std::fs::remove_file(file);
    let _ = std::fs::remove_file(done_path(file));
}
