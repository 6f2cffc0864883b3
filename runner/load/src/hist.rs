//! Latency histograms: HdrHistogram in microseconds, 3 significant digits,
//! up to an hour. In JSON a histogram carries its percentiles for readers
//! and the compressed histogram itself, so shards merge exactly.

use std::time::Duration;

use base64::Engine as _;
use hdrhistogram::Histogram;
use hdrhistogram::serialization::{Deserializer, Serializer, V2DeflateSerializer};
use serde::{Deserialize, Serialize};

const HIGHEST_US: u64 = 3_600_000_000;

/// One latency distribution.
#[derive(Clone, Debug)]
pub struct Histo(Histogram<u64>);

impl Default for Histo {
    fn default() -> Self {
        Histo::new()
    }
}

/// A histogram's figures in milliseconds.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Percentiles {
    /// Values recorded.
    pub count: u64,
    /// Arithmetic mean.
    pub mean_ms: f64,
    /// Median.
    pub p50_ms: f64,
    /// 90th percentile.
    pub p90_ms: f64,
    /// 95th percentile.
    pub p95_ms: f64,
    /// 99th percentile.
    pub p99_ms: f64,
    /// Largest value.
    pub max_ms: f64,
}

impl Histo {
    /// Empty.
    pub fn new() -> Self {
        // The bounds are constants that hdrhistogram accepts.
        Histo(
            Histogram::new_with_bounds(1, HIGHEST_US, 3)
                .unwrap_or_else(|_| unreachable!("valid constant bounds")),
        )
    }

    /// Records one value; beyond an hour counts as an hour.
    pub fn record(&mut self, d: Duration) {
        let us = u64::try_from(d.as_micros()).unwrap_or(u64::MAX);
        self.0.saturating_record(us.clamp(1, HIGHEST_US));
    }

    /// Records a value given in milliseconds (as in a result record).
    pub fn record_ms(&mut self, ms: f64) {
        if ms.is_finite() && ms >= 0.0 {
            self.record(Duration::from_secs_f64(ms / 1000.0));
        }
    }

    /// Adds `other`'s values.
    pub fn merge(&mut self, other: &Histo) {
        // Same bounds on both sides, so adding cannot fail.
        let _ = self.0.add(&other.0);
    }

    /// Values recorded.
    pub fn count(&self) -> u64 {
        self.0.len()
    }

    /// The value at quantile `q` (0..1), in ms.
    pub fn quantile_ms(&self, q: f64) -> f64 {
        if self.0.is_empty() {
            return 0.0;
        }
        self.0.value_at_quantile(q) as f64 / 1000.0
    }

    /// Mean, in ms.
    pub fn mean_ms(&self) -> f64 {
        if self.0.is_empty() {
            0.0
        } else {
            self.0.mean() / 1000.0
        }
    }

    /// Count, mean and percentiles.
    pub fn percentiles(&self) -> Percentiles {
        Percentiles {
            count: self.count(),
            mean_ms: round3(self.mean_ms()),
            p50_ms: self.quantile_ms(0.50),
            p90_ms: self.quantile_ms(0.90),
            p95_ms: self.quantile_ms(0.95),
            p99_ms: self.quantile_ms(0.99),
            max_ms: if self.0.is_empty() {
                0.0
            } else {
                self.0.max() as f64 / 1000.0
            },
        }
    }
}

fn round3(v: f64) -> f64 {
    (v * 1000.0).round() / 1000.0
}

#[derive(Serialize, Deserialize)]
struct HistoJson {
    #[serde(flatten)]
    figures: Percentiles,
    /// HdrHistogram V2 (deflate) encoding, base64.
    hdr: String,
}

impl Serialize for Histo {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut bytes = Vec::new();
        V2DeflateSerializer::new()
            .serialize(&self.0, &mut bytes)
            .map_err(|e| serde::ser::Error::custom(format!("histogram: {e:?}")))?;
        HistoJson {
            figures: self.percentiles(),
            hdr: base64::engine::general_purpose::STANDARD.encode(bytes),
        }
        .serialize(s)
    }
}

impl<'de> Deserialize<'de> for Histo {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let j = HistoJson::deserialize(d)?;
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(j.hdr.as_bytes())
            .map_err(|e| serde::de::Error::custom(format!("histogram 'hdr' is not base64: {e}")))?;
        let h: Histogram<u64> = Deserializer::new()
            .deserialize(&mut bytes.as_slice())
            .map_err(|e| {
                serde::de::Error::custom(format!("histogram 'hdr' does not decode: {e:?}"))
            })?;
        let mut out = Histo::new();
        out.0
            .add(&h)
            .map_err(|e| serde::de::Error::custom(format!("histogram out of range: {e:?}")))?;
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_through_json_and_merges_exactly() {
        let mut a = Histo::new();
        let mut b = Histo::new();
        for i in 1..=1000u64 {
            a.record(Duration::from_micros(i * 100));
            b.record(Duration::from_micros(i * 300));
        }
        let text = serde_json::to_string(&a).expect("serializes");
        let back: Histo = serde_json::from_str(&text).expect("deserializes");
        assert_eq!(back.percentiles(), a.percentiles());
        let mut all = back;
        all.merge(&b);
        assert_eq!(all.count(), 2000);
        // p50 of the union: x/0.1 + x/0.3 = 1000 values at or below x = 75 ms.
        let p50 = all.quantile_ms(0.5);
        assert!((p50 - 75.0).abs() < 0.1, "{p50}");
        assert!((all.percentiles().max_ms - 300.0).abs() < 0.3);
    }
}
