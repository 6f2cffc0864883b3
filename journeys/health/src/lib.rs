//! The smallest useful journey: one request to a health endpoint.
//!
//! vars: `base_url` (e.g. `https://api.example.com`), optional `health_path` (default `/health`).
use waymark_sdk::{Result, check, check_detail, http, vars};

fn run() -> Result<()> {
    let base = vars::require("base_url")?;
    let path = vars::get_or("health_path", "/health");
    let resp = http::get(format!("{base}{path}")).send()?;
    check_detail(
        "status is 200",
        resp.status == 200,
        format!("status {}", resp.status),
    );
    check("answers within 1s", resp.timings.total_us < 1_000_000);
    Ok(())
}

waymark_sdk::journey!(run);
