//! The `alertmanager` sink: an alert per failing journey, posted to
//! Alertmanager's v2 API when the journey's run ends failing (after its
//! retries), re-sent while it fires (as Prometheus does, with `endsAt` a few
//! intervals ahead so a dead runner's alerts expire), and resolved with
//! `endsAt` = now when the journey passes again.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use serde_json::json;

use super::webhook::failed_at;
use super::{Deliver, DeliverError, Delivery};
mod config;
pub(crate) use config::read;
pub use config::*;
use waymark_record::Status;

pub struct Alertmanager {
    cfg: AlertmanagerConfig,
    agent: ureq::Agent,
    /// (journey, location) → the alert as last sent, while firing.
    firing: BTreeMap<(String, String), serde_json::Value>,
    last_resend: Instant,
}

fn rfc3339(t: SystemTime) -> String {
    humantime::format_rfc3339_millis(t).to_string()
}

impl Alertmanager {
    pub fn new(cfg: AlertmanagerConfig) -> Alertmanager {
        let agent = super::http_agent(cfg.timeout);
        Alertmanager {
            cfg,
            agent,
            firing: BTreeMap::new(),
            last_resend: Instant::now(),
        }
    }

    fn ends_at(&self) -> String {
        rfc3339(SystemTime::now() + self.cfg.resend_interval * 4)
    }

    fn post(&self, alerts: &[serde_json::Value]) -> Result<(), DeliverError> {
        if alerts.is_empty() {
            return Ok(());
        }
        let url = format!("{}/api/v2/alerts", self.cfg.url.trim_end_matches('/'));
        let body = serde_json::to_vec(alerts)?;
        super::post(
            &self.agent,
            &url,
            &[("content-type", "application/json")],
            &body,
        )
    }

    fn alert(&self, d: &Delivery) -> serde_json::Value {
        let r = &d.record;
        let (step, check) = failed_at(r);
        let link = self.cfg.link.as_ref().map(|l| {
            l.replace("{journey}", &r.journey)
                .replace("{run_id}", &r.run_id)
        });
        let mut annotations = json!({
            "summary": format!("journey {} is failing in {}", r.journey, r.location),
            "description": r.error.as_ref().map(|e| e.message.clone()).unwrap_or_default(),
            "run_id": r.run_id,
        });
        if let Some(s) = step {
            annotations["failing_step"] = json!(s);
        }
        if let Some(c) = check {
            annotations["failing_check"] = json!(c);
        }
        let mut labels = json!({
            "alertname": "WaymarkJourneyFailing",
            "journey": r.journey,
            "location": r.location,
            "severity": self.cfg.severity,
        });
        for (k, v) in &self.cfg.labels {
            labels[k] = json!(v);
        }
        let mut a = json!({
            "labels": labels,
            "annotations": annotations,
            "startsAt": humantime::format_rfc3339_millis(r.started_at).to_string(),
            "endsAt": self.ends_at(),
        });
        if let Some(l) = link {
            a["generatorURL"] = json!(l);
        }
        a
    }
}

impl Deliver for Alertmanager {
    fn deliver(&mut self, batch: &[Arc<Delivery>]) -> Result<(), DeliverError> {
        let mut firing = self.firing.clone();
        let mut out = Vec::new();
        for d in batch.iter().filter(|d| d.final_attempt) {
            let r = &d.record;
            let key = (r.journey.clone(), r.location.clone());
            if r.status == Status::Pass {
                if let Some(mut a) = firing.remove(&key) {
                    a["endsAt"] = json!(rfc3339(SystemTime::now()));
                    out.push(a);
                }
            } else if r.maintenance.is_some() {
                // Held: a failure inside a maintenance window fires nothing.
                continue;
            } else {
                // Each failing run updates what the alert points at (run id,
                // message, failing step and check); it started with the first.
                let mut a = self.alert(d);
                if let Some(first) = firing.get(&key) {
                    a["startsAt"] = first["startsAt"].clone();
                }
                firing.insert(key, a.clone());
                out.push(a);
            }
        }
        self.post(&out)?;
        self.firing = firing;
        Ok(())
    }

    fn tick(&mut self) -> Result<(), DeliverError> {
        if self.firing.is_empty() || self.last_resend.elapsed() < self.cfg.resend_interval {
            return Ok(());
        }
        let ends = self.ends_at();
        let alerts: Vec<serde_json::Value> = self
            .firing
            .values()
            .map(|a| {
                let mut a = a.clone();
                a["endsAt"] = json!(ends);
                a
            })
            .collect();
        self.last_resend = Instant::now();
        self.post(&alerts)
    }
}

/// Default re-send interval, as Prometheus's `resend_delay` is 1m.
pub const DEFAULT_RESEND: Duration = Duration::from_secs(60);
