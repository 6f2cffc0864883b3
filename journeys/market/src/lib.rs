//! A "market" journey modelled on an exchange app: list the active trading
//! pairs, then fetch prices for the first few, with checks on both.
//!
//! vars: `base_url`, optional `pairs` (how many prices to fetch, default 3).
use serde::Deserialize;
use waymark_sdk::{Result, check_detail, check_eq, http, log, step, vars};

#[derive(Deserialize)]
struct Pairs {
    pairs: Vec<Pair>,
}

#[derive(Deserialize)]
struct Pair {
    symbol: String,
    status: String,
}

#[derive(Deserialize)]
struct Price {
    symbol: String,
    bid: f64,
    ask: f64,
}

fn run() -> Result<()> {
    let base = vars::require("base_url")?;
    let wanted: usize = vars::get_or("pairs", "3").parse()?;

    let active = step("list pairs", || -> Result<Vec<String>> {
        let resp = http::get(format!("{base}/pairs")).send()?;
        check_eq("status is 200", resp.status, 200);
        let pairs: Pairs = resp.json()?;
        let active: Vec<String> = pairs
            .pairs
            .into_iter()
            .filter(|p| p.status == "active")
            .map(|p| p.symbol)
            .collect();
        check_detail(
            "has active pairs",
            active.len() >= wanted,
            format!("{} active", active.len()),
        );
        Ok(active)
    })?;

    step("prices", || -> Result<()> {
        for symbol in active.iter().take(wanted) {
            let resp = http::get(format!("{base}/prices/{symbol}")).send()?;
            check_eq(&format!("{symbol} status is 200"), resp.status, 200);
            let price: Price = resp.json()?;
            check_eq(
                &format!("{symbol} symbol echoed"),
                price.symbol.as_str(),
                symbol.as_str(),
            );
            check_detail(
                &format!("{symbol} bid <= ask"),
                price.bid > 0.0 && price.bid <= price.ask,
                format!("bid {:.2} ask {:.2}", price.bid, price.ask),
            );
            log::info(format!("{symbol}: {:.2} / {:.2}", price.bid, price.ask));
        }
        Ok(())
    })
}

waymark_sdk::journey!(run);
