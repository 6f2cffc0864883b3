//! Durations and sizes written for people: `30s`, `64MiB`.

use std::time::Duration;

/// A duration or size that does not read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UnitError {
    /// Not a duration.
    #[error("'{text}' is not a duration like 30s or 500ms: {reason}")]
    Duration {
        /// What was written.
        text: String,
        /// humantime's reason.
        reason: String,
    },
    /// Not a number followed by a unit.
    #[error("'{0}' is not a size like 64MiB")]
    Size(String),
    /// A unit this parser does not know.
    #[error("'{text}': unknown size unit '{unit}' (use KiB, MiB, GiB)")]
    SizeUnit {
        /// What was written.
        text: String,
        /// The unit.
        unit: String,
    },
    /// More bytes than this machine can count.
    #[error("'{0}' is too large")]
    TooLarge(String),
}

/// `t + d`, or the farthest instant this machine can count when a user's
/// duration (a timeout of a million years, say) goes past it: a setting
/// that large means "never", not a panic.
pub fn later(t: std::time::Instant, d: Duration) -> std::time::Instant {
    t.checked_add(d).or_else(|| t.checked_add(FAR)).unwrap_or(t)
}

/// As [`later`], for wall-clock times.
pub fn later_wall(t: std::time::SystemTime, d: Duration) -> std::time::SystemTime {
    t.checked_add(d).or_else(|| t.checked_add(FAR)).unwrap_or(t)
}

/// About 136 years: past any run, and within every platform's clocks.
const FAR: Duration = Duration::from_secs(u32::MAX as u64);

/// Parse `30s`, `1m30s`, `250ms`.
pub fn parse_duration(s: &str) -> Result<Duration, UnitError> {
    humantime::parse_duration(s).map_err(|e| UnitError::Duration {
        text: s.to_string(),
        reason: e.to_string(),
    })
}

/// Parse `64MiB`, `512KiB`, `1GiB`, `1000000` (bytes).
pub fn parse_size(s: &str) -> Result<usize, UnitError> {
    let t = s.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: usize = num.parse().map_err(|_| UnitError::Size(s.to_string()))?;
    let mult: usize = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "kib" | "k" => 1 << 10,
        "mib" | "m" => 1 << 20,
        "gib" | "g" => 1 << 30,
        "kb" => 1000,
        "mb" => 1_000_000,
        "gb" => 1_000_000_000,
        other => {
            return Err(UnitError::SizeUnit {
                text: s.to_string(),
                unit: other.to_string(),
            });
        }
    };
    n.checked_mul(mult)
        .ok_or_else(|| UnitError::TooLarge(s.to_string()))
}

/// `bytes` as [`parse_size`] reads it back: `64MiB`, `512KiB`, `1000`.
pub fn format_size(bytes: u64) -> String {
    for (unit, shift) in [("GiB", 30), ("MiB", 20), ("KiB", 10)] {
        if bytes >= 1 << shift && bytes.is_multiple_of(1 << shift) {
            return format!("{}{unit}", bytes >> shift);
        }
    }
    bytes.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn huge_durations_saturate() {
        let now = std::time::Instant::now();
        let never = later(now, Duration::MAX);
        assert!(never > now + Duration::from_secs(100 * 365 * 86_400));
        assert_eq!(
            later(now, Duration::from_secs(1)),
            now + Duration::from_secs(1)
        );
        let wall = std::time::SystemTime::now();
        assert!(later_wall(wall, Duration::MAX) > wall);
    }

    #[test]
    fn sizes_parse() {
        assert_eq!(parse_size("64MiB"), Ok(64 << 20));
        assert_eq!(parse_size("512 KiB"), Ok(512 << 10));
        assert_eq!(parse_size("1000"), Ok(1000));
        assert!(
            parse_size("64 parsecs")
                .unwrap_err()
                .to_string()
                .contains("unknown size unit")
        );
        assert!(parse_size("MiB").is_err());
        for n in [64 << 20, 512 << 10, 3 << 30, 1000, 1536] {
            assert_eq!(parse_size(&format_size(n as u64)), Ok(n));
        }
    }
}
