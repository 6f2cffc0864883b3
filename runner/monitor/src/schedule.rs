//! When a journey is due: cron with seconds, or a fixed interval.

use std::fmt;
use std::str::FromStr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use chrono::{DateTime, Utc};

/// A journey's schedule.
#[derive(Clone)]
pub enum Schedule {
    /// A cron expression with seconds (6 or 7 fields), in UTC.
    Cron {
        /// As written.
        expr: String,
        /// Parsed.
        parsed: Box<cron::Schedule>,
    },
    /// Every this long. Journeys on the same interval are spread over it
    /// by a stable hash of their name, so a thousand `every = "1m"`
    /// journeys do not all start in the same second (as Prometheus spreads
    /// its scrapes).
    Every(Duration),
}

impl fmt::Debug for Schedule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Schedule::Cron { expr, .. } => write!(f, "cron \"{expr}\""),
            Schedule::Every(d) => write!(f, "every {}", humantime::format_duration(*d)),
        }
    }
}

impl PartialEq for Schedule {
    fn eq(&self, other: &Self) -> bool {
        match (self, other) {
            (Schedule::Cron { expr: a, .. }, Schedule::Cron { expr: b, .. }) => a == b,
            (Schedule::Every(a), Schedule::Every(b)) => a == b,
            _ => false,
        }
    }
}

/// A cron expression that cannot be a schedule.
#[derive(Debug, thiserror::Error)]
pub enum CronError {
    /// Five fields, as classic cron: ours has seconds first.
    #[error("'{0}' has 5 fields; waymark's cron has seconds first (6 fields), e.g. \"0 {0}\"")]
    FiveFields(String),
    /// Not a cron expression.
    #[error("'{expr}' is not a cron expression with seconds: {reason}")]
    Syntax {
        /// As written.
        expr: String,
        /// Why, on one line.
        reason: String,
    },
    /// Valid, but no time ever matches (e.g. 30 February).
    #[error("'{0}' never fires")]
    Never(String),
}

impl Schedule {
    /// Parses a cron expression with seconds; a 5-field one gets a hint.
    pub fn cron(expr: &str) -> Result<Schedule, CronError> {
        let fields = expr.split_whitespace().count();
        if fields == 5 {
            return Err(CronError::FiveFields(expr.to_string()));
        }
        let parsed = cron::Schedule::from_str(expr).map_err(|e| CronError::Syntax {
            expr: expr.to_string(),
            reason: cron_reason(expr, &e),
        })?;
        // An expression that can never fire (e.g. 30 February) would leave the
        // journey silent forever.
        if parsed.upcoming(Utc).next().is_none() {
            return Err(CronError::Never(expr.to_string()));
        }
        Ok(Schedule::Cron {
            expr: expr.to_string(),
            parsed: Box::new(parsed),
        })
    }

    /// The first tick strictly after `after`. `name` places an `every`
    /// journey within its interval.
    pub fn next_after(&self, after: SystemTime, name: &str) -> Option<SystemTime> {
        match self {
            Schedule::Cron { parsed, .. } => {
                let dt: DateTime<Utc> = after.into();
                parsed.after(&dt).next().map(SystemTime::from)
            }
            Schedule::Every(every) => {
                let period = every.as_nanos().max(1);
                let offset = phase(name) % period;
                let now = after.duration_since(UNIX_EPOCH).ok()?.as_nanos();
                // The next t > now with t ≡ offset (mod period).
                // u128 nanoseconds hold any Duration times two; a tick past
                // what SystemTime can say is no tick (`None`), not a panic.
                let k = (now.saturating_sub(offset)) / period + 1;
                let t = k.checked_mul(period)?.checked_add(offset)?;
                let t = if t > now.saturating_add(period) {
                    t - period
                } else {
                    t
                };
                let secs = u64::try_from(t / 1_000_000_000).ok()?;
                let nanos = u32::try_from(t % 1_000_000_000).ok()?;
                UNIX_EPOCH.checked_add(Duration::new(secs, nanos))
            }
        }
    }
}

/// The cron crate's reason on one line, in our words: its message spans
/// lines (the expression, a caret, the reason) and says "less than 59"
/// where 59 is allowed.
fn cron_reason(expr: &str, e: &cron::error::Error) -> String {
    let text = e.to_string();
    let reason = text
        .lines()
        .map(str::trim)
        .rfind(|l| !l.is_empty() && *l != expr.trim() && !l.chars().all(|c| c == '^' || c == ' '))
        .unwrap_or("not understood")
        .to_string();
    // "Minutes must be less than 59. ('60' specified.)"
    if let Some((field, rest)) = reason.split_once(" must be less than ")
        && let Some(max) = rest.split('.').next()
        && let Some(given) = rest.split('\'').nth(1)
    {
        return format!("{field} must be at most {max}; '{given}' is outside");
    }
    reason
}

/// Where in its interval a journey falls: a stable, well-spread hash of its
/// name (the same across processes and versions, unlike `DefaultHasher`).
fn phase(name: &str) -> u128 {
    use sha2::{Digest, Sha256};
    let d = Sha256::digest(name.as_bytes());
    let mut b = [0u8; 16];
    b.copy_from_slice(&d[..16]);
    u128::from_le_bytes(b)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(secs: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(secs)
    }

    #[test]
    fn cron_with_seconds() {
        let s = Schedule::cron("*/15 * * * * *").expect("valid");
        assert_eq!(
            s.next_after(at(1_000_000_000), "x"),
            Some(at(1_000_000_005))
        );
        assert_eq!(
            s.next_after(at(1_000_000_005), "x"),
            Some(at(1_000_000_020))
        );
    }

    #[test]
    fn five_fields_get_a_hint() {
        let e = Schedule::cron("*/5 * * * *").unwrap_err().to_string();
        assert!(e.contains("\"0 */5 * * * *\""), "{e}");
        assert!(
            Schedule::cron("0 0 0 30 2 *")
                .unwrap_err()
                .to_string()
                .contains("never fires")
        );
        assert!(Schedule::cron("every minute").is_err());
    }

    #[test]
    fn cron_errors_are_one_line_in_our_words() {
        for (expr, want) in [
            (
                "0 60 * * * *",
                "Minutes must be at most 59; '60' is outside",
            ),
            ("0 0 25 * * *", "Hours must be at most 23; '25' is outside"),
        ] {
            let e = Schedule::cron(expr).unwrap_err().to_string();
            assert!(!e.contains('\n'), "{e}");
            assert!(e.ends_with(want), "{e}");
        }
        // 59 is a minute.
        assert!(Schedule::cron("0 59 * * * *").is_ok());
        let e = Schedule::cron("0 x * * * *").unwrap_err().to_string();
        assert!(!e.contains('\n') && !e.contains('^'), "{e}");
    }

    #[test]
    fn every_is_periodic_with_a_stable_phase() {
        let s = Schedule::Every(Duration::from_secs(60));
        let a = s.next_after(at(1_000_000_000), "login").expect("tick");
        assert!(a > at(1_000_000_000) && a <= at(1_000_000_060));
        let b = s.next_after(a, "login").expect("tick");
        assert_eq!(b.duration_since(a).ok(), Some(Duration::from_secs(60)));
        // Exactly on a tick: the next one, not the same.
        assert_eq!(s.next_after(a, "login"), Some(b));
        // Other names land elsewhere in the minute.
        let phases: std::collections::BTreeSet<u64> = (0..100)
            .map(|i| {
                s.next_after(at(1_000_000_000), &format!("j{i}"))
                    .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
                    .map_or(0, |d| d.as_secs() % 60)
            })
            .collect();
        assert!(phases.len() > 40, "{} distinct seconds", phases.len());
    }

    #[test]
    fn an_interval_past_the_clock_never_ticks_and_does_not_panic() {
        for every in [Duration::MAX, Duration::from_secs(u64::MAX / 2)] {
            let s = Schedule::Every(every);
            let next = s.next_after(at(1_000_000_000), "x");
            assert!(next.is_none_or(|t| t > at(1_000_000_000)), "{next:?}");
        }
    }
}
