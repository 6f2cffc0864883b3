//! Runs one journey against one base URL and prints its record as JSON:
//! `cargo run -p waymark-engine --example run -- JOURNEY.wasm http://127.0.0.1:8080`.
//! The allow-list is the base URL's host, as `waymark run` makes it.

use std::sync::Arc;
use waymark_engine::http::{AllowList, HttpConfig};
use waymark_engine::{RunOptions, Runtime};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let (wasm, base) = match (args.next(), args.next()) {
        (Some(w), Some(b)) => (w, b),
        _ => return Err("usage: run JOURNEY.wasm BASE_URL".into()),
    };
    let host = url::Url::parse(&base)?
        .host_str()
        .unwrap_or_default()
        .to_string();
    let runtime = Runtime::new(None)?;
    let journey = runtime.load_file(wasm.as_ref())?;
    let http = HttpConfig::new(AllowList::parse(&[host])?, None)?;
    let mut opts = RunOptions::new(Arc::new(http));
    opts.vars.insert("base_url".into(), base);
    let record = runtime.run(&journey, &opts).await;
    println!("{}", serde_json::to_string_pretty(&record)?);
    std::process::exit(record.status.exit_code());
}
