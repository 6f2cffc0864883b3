//! Where finished runs go besides the history: each sink has its own
//! thread and queue, so a slow file never holds up the scheduler.

use std::fs::OpenOptions;
use std::io::{BufWriter, Write};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
use std::thread::JoinHandle;

use crate::config::SinkConfig;
use crate::record::RunRecord;

/// Records a sink may have waiting before new ones are dropped (and counted).
const QUEUE: usize = 10_000;

/// A running sink.
pub struct Sink {
    name: String,
    tx: mpsc::SyncSender<Option<Arc<RunRecord>>>,
    thread: Option<JoinHandle<()>>,
    dropped: Arc<AtomicU64>,
}

/// A sink could not start.
#[derive(Debug, thiserror::Error)]
#[error("sink {name}: {message}")]
pub struct SinkError {
    /// Which sink.
    pub name: String,
    /// Why.
    pub message: String,
}

trait Deliver: Send {
    fn deliver(&mut self, rec: &RunRecord) -> std::io::Result<()>;
    fn flush(&mut self) -> std::io::Result<()>;
}

struct Pretty;

impl Deliver for Pretty {
    fn deliver(&mut self, rec: &RunRecord) -> std::io::Result<()> {
        let mut out = std::io::stdout().lock();
        writeln!(out, "{}", crate::pretty::render(rec, false))?;
        out.flush()
    }
    fn flush(&mut self) -> std::io::Result<()> {
        std::io::stdout().flush()
    }
}

struct Jsonl(Box<dyn Write + Send>);

impl Deliver for Jsonl {
    fn deliver(&mut self, rec: &RunRecord) -> std::io::Result<()> {
        serde_json::to_writer(&mut self.0, rec)?;
        self.0.write_all(b"\n")?;
        // One line per run, whole, as soon as the run ends: `tail -f` shows it.
        self.0.flush()
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.0.flush()
    }
}

impl Sink {
    /// Opens the sink's file (if any) and starts its thread.
    pub fn start(config: &SinkConfig) -> Result<Sink, SinkError> {
        let (name, mut out): (String, Box<dyn Deliver>) = match config {
            SinkConfig::Pretty => ("pretty".into(), Box::new(Pretty)),
            SinkConfig::Jsonl { path } if path == &PathBuf::from("-") => (
                "jsonl:-".into(),
                Box::new(Jsonl(Box::new(std::io::stdout()))),
            ),
            SinkConfig::Jsonl { path } => {
                let name = format!("jsonl:{}", path.display());
                let file = OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(path)
                    .map_err(|e| SinkError {
                        name: name.clone(),
                        message: format!("cannot open {}: {e}", path.display()),
                    })?;
                (name, Box::new(Jsonl(Box::new(BufWriter::new(file)))))
            }
        };
        let (tx, rx) = mpsc::sync_channel::<Option<Arc<RunRecord>>>(QUEUE);
        let thread_name = name.clone();
        let thread = std::thread::Builder::new()
            .name(format!("waymark-sink-{}", name.split(':').next().unwrap_or("")))
            .spawn(move || {
                while let Ok(Some(rec)) = rx.recv() {
                    if let Err(e) = out.deliver(&rec) {
                        tracing::error!(sink = %thread_name, error = %e, run_id = %rec.run_id, "could not deliver a run");
                    }
                }
                if let Err(e) = out.flush() {
                    tracing::error!(sink = %thread_name, error = %e, "could not flush");
                }
            })
            .map_err(|e| SinkError {
                name: name.clone(),
                message: format!("cannot start its thread: {e}"),
            })?;
        Ok(Sink {
            name,
            tx,
            thread: Some(thread),
            dropped: Arc::new(AtomicU64::new(0)),
        })
    }

    /// Queues `rec`; never waits. A full queue drops the record and counts it.
    pub fn send(&self, rec: Arc<RunRecord>) {
        if self.tx.try_send(Some(rec)).is_err() {
            let n = self.dropped.fetch_add(1, Ordering::Relaxed) + 1;
            tracing::warn!(sink = %self.name, dropped = n, "sink queue full: a run was not delivered");
        }
    }

    /// Delivers everything queued, flushes, and stops.
    pub fn close(mut self) {
        // A blocking send: the queue drains ahead of the stop mark.
        let _ = self.tx.send(None);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
