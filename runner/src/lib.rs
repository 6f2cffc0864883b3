//! Waymark: runs synthetic user journeys, compiled to Wasm components, in a
//! sandbox with a phase-timed HTTP client, and reports what happened.
//!
//! The binary (`main.rs`) is a thin shell over [`cli::main`]; everything is
//! library code that tests call directly.

pub mod cli;
mod cli_load;
mod cli_serve;
pub mod config;
pub mod demo;
pub mod engine;
pub mod har;
mod host;
pub mod http;
pub mod load;
pub mod pretty;
pub mod project;
pub mod record;
pub mod schedule;
pub mod serve;
pub mod sinks;
pub mod store;
pub mod units;
mod wasi_http;

/// Host bindings generated from `wit/` (the one source of truth).
pub mod bindings {
    wasmtime::component::bindgen!({
        path: "../wit",
        world: "journey",
        imports: { default: async },
        exports: { default: async },
    });
}

pub use engine::{LoadError, LoadedJourney, RunOptions, Runtime};
pub use record::{RunRecord, Status};
