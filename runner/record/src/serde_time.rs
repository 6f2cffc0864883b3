//! The record's JSON forms of time: durations as milliseconds with
//! microsecond precision, instants as RFC 3339 in UTC.

use std::time::{Duration, SystemTime};

use serde::{Deserialize, Deserializer, Serializer, de::Error as _};

/// Milliseconds with microsecond precision, the record's unit since 0.1.
pub fn as_millis(d: Duration) -> f64 {
    (d.as_micros() as f64) / 1000.0
}

/// The inverse of [`as_millis`]; `None` for negative, NaN or endless values.
pub fn from_millis(ms: f64) -> Option<Duration> {
    let ns = (ms * 1e6).round();
    // 2^64 ns is 584 years: no record holds more.
    if !ns.is_finite() || ns < 0.0 || ns >= u64::MAX as f64 {
        return None;
    }
    Some(Duration::from_nanos(ns as u64))
}

/// `Duration` ⇄ a number of milliseconds.
pub mod millis {
    use super::*;

    /// Writes milliseconds.
    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_f64(as_millis(*d))
    }

    /// Reads milliseconds.
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        let ms = f64::deserialize(d)?;
        from_millis(ms).ok_or_else(|| D::Error::custom(format!("{ms} is not a duration in ms")))
    }
}

/// `SystemTime` ⇄ `2026-12-02T18:57:01.123Z`.
pub mod rfc3339_millis {
    use super::*;

    /// Writes RFC 3339 with milliseconds.
    pub fn serialize<S: Serializer>(t: &SystemTime, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(&humantime::format_rfc3339_millis(*t))
    }

    /// Reads any RFC 3339 instant in UTC.
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<SystemTime, D::Error> {
        let text = std::borrow::Cow::<str>::deserialize(d)?;
        humantime::parse_rfc3339_weak(&text).map_err(|e| D::Error::custom(format!("'{text}': {e}")))
    }
}

/// `Option<SystemTime>` ⇄ `2026-12-02T18:57:01.123Z` or null.
pub mod rfc3339_millis_opt {
    use super::*;

    /// Writes RFC 3339 with milliseconds, or null.
    pub fn serialize<S: Serializer>(t: &Option<SystemTime>, s: S) -> Result<S::Ok, S::Error> {
        match t {
            Some(t) => s.collect_str(&humantime::format_rfc3339_millis(*t)),
            None => s.serialize_none(),
        }
    }

    /// Reads an RFC 3339 instant in UTC, or null.
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<SystemTime>, D::Error> {
        super::rfc3339_seconds_opt::deserialize(d)
    }
}

/// `Option<SystemTime>` ⇄ `2027-01-01T00:00:00Z` or null.
pub mod rfc3339_seconds_opt {
    use super::*;

    /// Writes RFC 3339 in whole seconds, or null.
    pub fn serialize<S: Serializer>(t: &Option<SystemTime>, s: S) -> Result<S::Ok, S::Error> {
        match t {
            Some(t) => s.collect_str(&humantime::format_rfc3339_seconds(*t)),
            None => s.serialize_none(),
        }
    }

    /// Reads an RFC 3339 instant in UTC, or null.
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<SystemTime>, D::Error> {
        let text = Option::<std::borrow::Cow<str>>::deserialize(d)?;
        text.map(|text| {
            humantime::parse_rfc3339_weak(&text)
                .map_err(|e| D::Error::custom(format!("'{text}': {e}")))
        })
        .transpose()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn milliseconds_round_trip_at_microsecond_precision() {
        for us in [0u64, 1, 999, 1_234, 1_234_567, 86_400_000_000] {
            let d = Duration::from_micros(us);
            assert_eq!(from_millis(as_millis(d)), Some(d), "{us} µs");
        }
        assert_eq!(from_millis(-1.0), None);
        assert_eq!(from_millis(f64::NAN), None);
        assert_eq!(from_millis(f64::INFINITY), None);
        assert_eq!(from_millis(1e30), None);
    }
}
