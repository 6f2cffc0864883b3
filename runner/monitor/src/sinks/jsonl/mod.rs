//! The `jsonl` sink: one record per line in a file (rotated by size) or on
//! standard output.

mod config;
pub(crate) use config::read;
pub use config::{DEFAULT_KEEP, JsonlConfig};

use std::fs::{File, OpenOptions};
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::{Deliver, DeliverError, Delivery};

/// One record per line; rotated by size like logrotate: `runs.jsonl` →
/// `runs.jsonl.1` → … → `runs.jsonl.KEEP`.
pub struct Jsonl {
    path: PathBuf,
    out: Option<BufWriter<File>>,
    size: u64,
    max_size: u64,
    keep: u32,
}

impl Jsonl {
    pub fn open(path: &Path, max_size: u64, keep: u32) -> Result<Jsonl, DeliverError> {
        let mut j = Jsonl {
            path: path.to_path_buf(),
            out: None,
            size: 0,
            max_size,
            keep,
        };
        if !j.stdout() {
            j.reopen()?;
        }
        Ok(j)
    }

    fn stdout(&self) -> bool {
        self.path == Path::new("-")
    }

    fn reopen(&mut self) -> Result<(), DeliverError> {
        if let Some(dir) = self.path.parent()
            && !dir.as_os_str().is_empty()
        {
            let _ = std::fs::create_dir_all(dir);
        }
        let f = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.path)
            .map_err(DeliverError::file("open", &self.path))?;
        self.size = f.metadata().map(|m| m.len()).unwrap_or(0);
        self.out = Some(BufWriter::new(f));
        Ok(())
    }

    fn rotate(&mut self) -> Result<(), DeliverError> {
        if let Some(mut o) = self.out.take() {
            o.flush().map_err(DeliverError::file("write", &self.path))?;
        }
        let name = |i: u32| PathBuf::from(format!("{}.{i}", self.path.display()));
        let _ = std::fs::remove_file(name(self.keep));
        for i in (1..self.keep).rev() {
            let _ = std::fs::rename(name(i), name(i + 1));
        }
        std::fs::rename(&self.path, name(1)).map_err(DeliverError::file("rotate", &self.path))?;
        self.reopen()
    }
}

impl Deliver for Jsonl {
    fn deliver(&mut self, batch: &[Arc<Delivery>]) -> Result<(), DeliverError> {
        if self.stdout() {
            let mut out = std::io::stdout().lock();
            for d in batch {
                serde_json::to_writer(&mut out, &d.record)?;
                out.write_all(b"\n").map_err(DeliverError::Stdout)?;
            }
            return out.flush().map_err(DeliverError::Stdout);
        }
        for d in batch {
            let mut line = serde_json::to_vec(&d.record)?;
            line.push(b'\n');
            if self.max_size > 0 && self.size > 0 && self.size + line.len() as u64 > self.max_size {
                self.rotate()?;
            }
            if self.out.is_none() {
                self.reopen()?;
            }
            // reopen() either set the writer or returned its error.
            let Some(out) = self.out.as_mut() else {
                continue;
            };
            out.write_all(&line)
                .map_err(DeliverError::file("write", &self.path))?;
            self.size += line.len() as u64;
        }
        // Whole lines, as soon as the batch ends: `tail -f` shows each run.
        self.flush()
    }

    fn flush(&mut self) -> Result<(), DeliverError> {
        match self.out.as_mut() {
            Some(o) => o.flush().map_err(DeliverError::file("write", &self.path)),
            None => Ok(()),
        }
    }
}
