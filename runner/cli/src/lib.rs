//! The `waymark` command: `run`, `serve`, `load`, `check`, `history`, `new`,
//! `demo`. The binary (`main.rs`) is a thin shell over [`cli::main`]; the
//! work is done by the crates below it: `waymark-engine` runs journeys,
//! `waymark-load` audits, `waymark-monitor` schedules and delivers.

pub mod cli;
mod cli_load;
mod cli_replay;
mod cli_serve;
mod cli_sinks;
mod cli_watch;
pub mod demo;
pub mod project;

/// Largest body shown per request by `run -v` and `replay -v` (the waterfall
/// shows its first lines).
const VERBOSE_BODY_CAP: usize = 64 * 1024;

// Short names for the crates below, used throughout this one.
use waymark_engine::{RunOptions, Runtime, har};
use waymark_http as http;
use waymark_load as load;
use waymark_monitor::{config, pretty, serve, sinks, store};
use waymark_record as record;
use waymark_record::units;
