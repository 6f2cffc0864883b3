//! Scheduled monitoring with Waymark: `waymark.toml` ([`config`]), the
//! schedules ([`schedule`]), the runner of `waymark serve` ([`serve`]), the
//! run history ([`store`]) and the sinks records go to ([`sinks`]).
//!
//! Data flows one way: config → schedule → engine (`waymark-engine`) →
//! record → sinks and store.

pub mod clock;
pub mod config;
pub mod pretty;
pub mod schedule;
pub mod serve;
pub mod sinks;
mod spans;
pub mod store;
mod telemetry;
pub mod ui;
