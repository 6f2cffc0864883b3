//! `waymark run --watch DIR`: the edit-run loop. Runs, then waits for a
//! save under DIR and runs again (rebuilt), clearing the screen each time.

use std::io::{IsTerminal, Write};
use std::path::Path;
use std::time::{Duration, SystemTime};

use anyhow::bail;

use crate::record::Status;

/// How often DIR is looked at. Modification times are polled (as `serve`
/// does for `[runner] watch`): nothing to set up, and any file system.
const POLL: Duration = Duration::from_millis(250);
/// An editor saves in several writes; the run waits for them to settle.
const SETTLE: Duration = Duration::from_millis(200);

fn newest(dir: &Path) -> Option<SystemTime> {
    crate::project::newest_source(dir).ok()
}

/// Runs `once` now and after every change under `dir`, until interrupted.
/// A failed build or run is shown and the loop waits for the next save.
pub(crate) fn watch(
    dir: &Path,
    mut once: impl FnMut() -> anyhow::Result<Status>,
) -> anyhow::Result<Status> {
    if !dir.is_dir() {
        bail!("--watch {}: not a directory", dir.display());
    }
    let clear = std::io::stdout().is_terminal();
    loop {
        let seen = newest(dir);
        {
            let mut out = std::io::stdout().lock();
            if clear {
                // Clear the screen and scrollback, cursor home.
                write!(out, "\x1b[2J\x1b[3J\x1b[H")?;
            } else {
                writeln!(
                    out,
                    "── {} ──",
                    humantime::format_rfc3339_seconds(SystemTime::now())
                )?;
            }
            out.flush()?;
        }
        match once() {
            Ok(status) => eprintln!(
                "waymark: {} · watching {} for changes (Ctrl-C to stop)",
                status.as_str(),
                dir.display()
            ),
            Err(e) => eprintln!(
                "waymark: error: {e:#}\nwaymark: watching {} for changes (Ctrl-C to stop)",
                dir.display()
            ),
        }
        loop {
            std::thread::sleep(POLL);
            if newest(dir) != seen {
                std::thread::sleep(SETTLE);
                break;
            }
        }
    }
}
