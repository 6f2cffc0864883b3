//! The `webhook` sink: a JSON POST per event, signed with HMAC-SHA256.
//!
//! Events: `failing` (a journey's run ends failing after a pass, or as its
//! first run), `recovered` (a pass after failing), `failure` (every failed
//! run), `run` (every attempt). Signature: `X-Waymark-Signature: v1=HEX`,
//! HEX = HMAC-SHA256(secret, TIMESTAMP + "." + BODY) with TIMESTAMP the
//! `X-Waymark-Timestamp` header (Unix seconds), so a receiver can check both
//! the sender and the freshness.

use std::collections::HashMap;
use std::sync::Arc;

use hmac::{Hmac, Mac};
use serde_json::json;
use sha2::Sha256;

use super::{Deliver, DeliverError, Delivery};
mod config;
pub(crate) use config::read;
pub use config::*;
use waymark_record::{RunRecord, Status};

pub struct Webhook {
    cfg: WebhookConfig,
    agent: ureq::Agent,
    /// journey → failing, as of the last delivered run.
    failing: HashMap<String, bool>,
}

/// The step and check a failed run failed at, for people and for labels.
pub fn failed_at(r: &RunRecord) -> (Option<String>, Option<String>) {
    let step = r
        .steps
        .iter()
        .find(|s| s.status != Status::Pass)
        .map(|s| s.name.clone());
    let check = r
        .steps
        .iter()
        .flat_map(|s| s.checks.iter())
        .find(|c| !c.passed)
        .map(|c| c.name.clone());
    (step, check)
}

/// Signs `body` as the webhook sink does; receivers can reuse it in tests.
pub fn signature(secret: &str, timestamp: &str, body: &[u8]) -> String {
    let mut mac = match Hmac::<Sha256>::new_from_slice(secret.as_bytes()) {
        Ok(m) => m,
        // HMAC takes keys of any length; this cannot happen.
        Err(_) => return String::new(),
    };
    mac.update(timestamp.as_bytes());
    mac.update(b".");
    mac.update(body);
    format!("v1={}", hex::encode(mac.finalize().into_bytes()))
}

impl Webhook {
    pub fn new(cfg: WebhookConfig) -> Webhook {
        let agent = super::http_agent(cfg.timeout);
        Webhook {
            cfg,
            agent,
            failing: HashMap::new(),
        }
    }

    fn body(&self, event: &str, d: &Delivery) -> Vec<u8> {
        let r = &d.record;
        let (step, check) = failed_at(r);
        let v = if self.cfg.slack {
            let icon = match event {
                "recovered" => ":large_green_circle:",
                "run" if r.status == Status::Pass => ":white_check_mark:",
                _ => ":red_circle:",
            };
            let what = match event {
                "failing" => "is failing",
                "recovered" => "recovered",
                "failure" => "failed",
                _ => r.status.as_str(),
            };
            let mut text = format!("{icon} *{}* {what} in {}", r.journey, r.location);
            if let Some(e) = &r.error {
                text.push_str(&format!(": {}", e.message));
            }
            if let Some(s) = &step {
                text.push_str(&format!(" (step \"{s}\")"));
            }
            json!({ "text": text })
        } else {
            json!({
                "event": event,
                "journey": r.journey,
                "location": r.location,
                "run_id": r.run_id,
                "attempt": r.attempt,
                "status": r.status,
                "started_at": humantime::format_rfc3339_millis(r.started_at).to_string(),
                "duration_ms": waymark_record::serde_time::as_millis(r.duration),
                "error": r.error,
                "failing_step": step,
                "failing_check": check,
                "record": r,
            })
        };
        serde_json::to_vec(&v).unwrap_or_default()
    }

    fn post(&self, body: &[u8]) -> Result<(), DeliverError> {
        let mut headers: Vec<(&str, &str)> = vec![("content-type", "application/json")];
        headers.extend(
            self.cfg
                .headers
                .iter()
                .map(|(k, v)| (k.as_str(), v.as_str())),
        );
        let signed = self.cfg.secret.as_ref().map(|secret| {
            let ts = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs())
                .to_string();
            let sig = signature(secret, &ts, body);
            (ts, sig)
        });
        if let Some((ts, sig)) = &signed {
            headers.push(("x-waymark-timestamp", ts));
            headers.push(("x-waymark-signature", sig));
        }
        super::post(&self.agent, &self.cfg.url, &headers, body)
    }
}

impl Deliver for Webhook {
    fn deliver(&mut self, batch: &[Arc<Delivery>]) -> Result<(), DeliverError> {
        // The state moves only once the whole batch went out, so a retried
        // batch yields the same events again (at least once, never lost).
        let mut failing = self.failing.clone();
        let wants = |e: &str| self.cfg.events.iter().any(|x| x == e);
        for d in batch {
            let r = &d.record;
            if wants("run") {
                self.post(&self.body("run", d))?;
            }
            // A run in a maintenance window raises no alert event and does
            // not change the state the next one is compared with.
            if !d.final_attempt || r.maintenance.is_some() {
                continue;
            }
            let now = r.status != Status::Pass;
            let before = failing.get(&r.journey).copied();
            if now && wants("failure") {
                self.post(&self.body("failure", d))?;
            }
            if now && before != Some(true) && wants("failing") {
                self.post(&self.body("failing", d))?;
            }
            if !now && before == Some(true) && wants("recovered") {
                self.post(&self.body("recovered", d))?;
            }
            failing.insert(r.journey.clone(), now);
        }
        self.failing = failing;
        Ok(())
    }

    fn max_batch(&self) -> usize {
        50
    }
}
