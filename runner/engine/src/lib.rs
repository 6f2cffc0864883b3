//! Runs Waymark journeys: Wasm components that target the `journey` world
//! (`wit/journey.wit`), each in a sandbox of its own with a phase-timed HTTP
//! client, limits on CPU, memory and wall time, and a record of what happened.
//!
//! This crate is the part to embed: it depends on wasmtime, the HTTP client
//! and the record, and on nothing of the command line, the history store or
//! the sinks.
//!
//! ```no_run
//! use std::sync::Arc;
//! use waymark_engine::http::{AllowList, HttpConfig};
//! use waymark_engine::{RunOptions, Runtime};
//!
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! let runtime = Runtime::new(None)?; // no compile cache
//! let journey = runtime.load_file("health.wasm".as_ref())?;
//! let mut http = HttpConfig::new(AllowList::parse(&["127.0.0.1"])?, None)?;
//! http.max_requests = 10;
//! let mut opts = RunOptions::new(Arc::new(http));
//! opts.vars.insert("base_url".into(), "http://127.0.0.1:8080".into());
//! let record = runtime.run(&journey, &opts).await;
//! println!("{} in {} ms", record.status.as_str(), record.duration.as_millis());
//! # Ok(())
//! # }
//! ```
//!
//! `examples/run.rs` is the same as a program.

pub mod har;
mod host;
mod outcome;
mod recorder;
mod runtime;
mod script;
pub mod tape;
mod user;
mod wasi_http;

/// Host bindings generated from `wit/` (the one source of truth).
pub mod bindings {
    wasmtime::component::bindgen!({
        path: "../../wit",
        world: "journey",
        imports: { default: async },
        exports: { default: async },
    });
}

/// Host bindings of the script runtimes' world (`wit/script.wit`): the
/// journey world's interfaces are the ones above.
pub(crate) mod script_bindings {
    wasmtime::component::bindgen!({
        path: "../../wit",
        world: "script-runtime",
        imports: { default: async },
        exports: { default: async },
        with: {
            "waymark:journey/http": crate::bindings::waymark::journey::http,
            "waymark:journey/report": crate::bindings::waymark::journey::report,
            "waymark:journey/vars": crate::bindings::waymark::journey::vars,
        },
    });
}

pub use outcome::{Observer, Verdict};
pub use runtime::{
    DEFAULT_CACHE_LIMIT, DEFAULT_LOCATION, DEFAULT_MAX_RECORD, DEFAULT_MEMORY_LIMIT,
    DEFAULT_TIMEOUT, EngineError, FullRun, InstantiateError, LoadError, LoadedJourney, RunOptions,
    Runtime,
};
pub use script::Language;
pub use user::{InstanceMode, VirtualUser};
pub use waymark_http as http;
pub use waymark_record as record;
