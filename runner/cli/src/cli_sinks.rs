//! `waymark run --sink KIND:TARGET`: the sinks a single run sends its
//! record to, without a config file.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::bail;
use sha2::Digest;

use crate::Runtime;
use crate::record::RunRecord;

/// `--sink jsonl:FILE` / `--sink webhook:URL` as sink configs.
pub(crate) fn sink_specs(specs: &[String]) -> anyhow::Result<Vec<crate::sinks::SinkConfig>> {
    use crate::sinks::{SinkConfig, SinkKind, jsonl, otlp, prometheus, webhook};
    let mut out = Vec::new();
    for spec in specs {
        let (kind, target) = spec.split_once(':').ok_or_else(|| {
            anyhow::anyhow!("--sink '{spec}': expected jsonl:FILE or webhook:URL")
        })?;
        let kind = match kind {
            "jsonl" => SinkKind::Jsonl(jsonl::JsonlConfig {
                path: PathBuf::from(target),
                max_size: 0,
                keep: jsonl::DEFAULT_KEEP,
            }),
            "webhook" => {
                let target = crate::config::http_url(target)
                    .map_err(|e| anyhow::anyhow!("--sink '{spec}': {e}"))?;
                SinkKind::Webhook(webhook::WebhookConfig {
                    url: target.to_string(),
                    events: vec!["run".into()],
                    slack: false,
                    headers: Default::default(),
                    secret: std::env::var("WAYMARK_WEBHOOK_SECRET").ok(),
                    timeout: webhook::DEFAULT_TIMEOUT,
                })
            }
            "otlp" => {
                let target = crate::config::http_url(target)
                    .map_err(|e| anyhow::anyhow!("--sink '{spec}': {e}"))?;
                SinkKind::Otlp(otlp::OtlpConfig {
                    endpoint: target.to_string(),
                    headers: Default::default(),
                    timeout: webhook::DEFAULT_TIMEOUT,
                    service_name: otlp::DEFAULT_SERVICE_NAME.into(),
                })
            }
            "remote_write" => {
                let target = crate::config::http_url(target)
                    .map_err(|e| anyhow::anyhow!("--sink '{spec}': {e}"))?;
                // Pushed once, as the run ends.
                SinkKind::Prometheus(prometheus::PrometheusConfig {
                    listen: None,
                    remote_write: Some(target.to_string()),
                    push_interval: Duration::from_secs(3600),
                })
            }
            other => bail!(
                "--sink '{spec}': unknown kind '{other}' (use jsonl:FILE, webhook:URL, otlp:URL or remote_write:URL)"
            ),
        };
        // The spool is kept per target, so a record waits for its own receiver.
        let digest = hex::encode(&sha2::Sha256::digest(target.as_bytes())[..6]);
        out.push(SinkConfig {
            name: format!("{}-{digest}", spec.split(':').next().unwrap_or("sink")),
            queue: 16,
            spool_max: waymark_monitor::sinks::DEFAULT_SPOOL_MAX,
            kind,
        });
    }
    Ok(out)
}

/// Sends `rec` to `configs`, waiting up to 10 s; says on stderr what could not go.
pub(crate) fn send_to_sinks(
    configs: &[crate::sinks::SinkConfig],
    rec: &RunRecord,
) -> anyhow::Result<()> {
    use std::sync::atomic::Ordering;
    let spool = Runtime::default_cache_dir().map(|d| d.join("spool"));
    let mut exposed = crate::sinks::Exposed::default();
    let sinks = crate::sinks::start_all(configs, spool.as_deref(), &mut exposed)?;
    let d = Arc::new(crate::sinks::Delivery {
        record: rec.clone(),
        final_attempt: true,
    });
    for s in &sinks {
        s.send(d.clone());
    }
    let reports: Vec<(String, u64, u64)> = std::thread::scope(|scope| {
        let handles: Vec<_> = sinks
            .into_iter()
            .map(|s| {
                scope.spawn(move || {
                    let name = s.name().to_string();
                    // Counted before close returns: close consumes the sink.
                    let stats = s.stats_handle();
                    s.close(Duration::from_secs(10));
                    (
                        name,
                        stats.spooled.load(Ordering::SeqCst),
                        stats.dropped.load(Ordering::SeqCst),
                    )
                })
            })
            .collect();
        handles.into_iter().filter_map(|h| h.join().ok()).collect()
    });
    for (name, spooled, dropped) in reports {
        if spooled > 0 {
            eprintln!(
                "waymark: sink {name}: receiver unreachable; the record is kept in {} and goes out with the next run using this sink",
                spool
                    .as_ref()
                    .map_or("the spool".into(), |p| p.join(&name).display().to_string())
            );
        }
        if dropped > 0 {
            eprintln!("waymark: sink {name}: the record could not be delivered");
        }
    }
    Ok(())
}
