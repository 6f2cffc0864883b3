//! The journey of `tests/replay.rs`: a price quote whose check has a bug
//! (it wants "EUR" where the service says "eur"), which the build fixes when
//! `WAYMARK_TEST_FIXED` is set at compile time. It puts a random number and
//! the wall clock in its URL, so a replay that saw other values would ask
//! for a request the recording does not hold; it sends a secret.
//!
//! vars: `base_url`, `path` (default `/quote`); secret: `token`.
use std::hash::{BuildHasher, Hasher};
use std::time::{SystemTime, UNIX_EPOCH};

use waymark_sdk::{Result, check, check_detail, http, log, step, vars};

const FIXED: bool = option_env!("WAYMARK_TEST_FIXED").is_some();

fn run() -> Result<()> {
    let base = vars::require("base_url")?;
    let path = vars::get_or("path", "/quote");
    let token = vars::require("token")?;
    // std's hash keys come from the host's random source.
    let nonce = std::collections::hash_map::RandomState::new()
        .build_hasher()
        .finish();
    let now_ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis())
        .unwrap_or(0);
    log::info(format!("nonce {nonce} clock {now_ms}"));
    step("quote", || -> Result<()> {
        let resp = http::get(format!("{base}{path}?nonce={nonce}&t={now_ms}"))
            .bearer(&token)
            .send()?;
        check("status is 200", resp.status == 200);
        let body = String::from_utf8_lossy(&resp.body).into_owned();
        let eur = if FIXED {
            body.to_ascii_lowercase().contains("\"currency\":\"eur\"")
        } else {
            body.contains("\"currency\":\"EUR\"")
        };
        check_detail("currency is EUR", eur, body);
        Ok(())
    })
}

waymark_sdk::journey!(run);
