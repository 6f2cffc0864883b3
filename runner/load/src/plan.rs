//! What a run is asked to do: the model and its ramp, the shard, the rate
//! grammar, the step lengths and the instance mode.

use std::time::Duration;

use crate::InstanceMode;

/// How users arrive.
#[derive(Debug, Clone, PartialEq)]
pub enum Model {
    /// A fixed number of concurrent users per step, each looping the journey.
    Closed {
        /// Users of each step.
        users: Vec<u32>,
    },
    /// Journeys started at a fixed rate per step, whatever the server does.
    Open {
        /// Arrivals per second of each step.
        rates: Vec<f64>,
        /// Most journeys in flight; an arrival beyond it waits for a free
        /// slot (and the wait counts in its latency).
        max_vus: u32,
    },
}

impl Model {
    pub(crate) fn steps(&self) -> usize {
        match self {
            Model::Closed { users } => users.len(),
            Model::Open { rates, .. } => rates.len(),
        }
    }

    /// Each pass's levels, pass after pass: (pass, level).
    pub(crate) fn schedule<T: Copy>(levels: &[T], repeat: u32) -> Vec<(u32, T)> {
        (0..repeat.max(1))
            .flat_map(|p| levels.iter().map(move |&l| (p, l)))
            .collect()
    }

    pub(crate) fn name(&self) -> &'static str {
        match self {
            Model::Closed { .. } => "closed",
            Model::Open { .. } => "open",
        }
    }
}

/// This process's part of a run split over N processes (`--shard I/N`,
/// I from 0 to N−1 as a Kubernetes Indexed Job's completion index).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shard {
    /// 0-based index.
    pub index: u32,
    /// Number of shards.
    pub count: u32,
}

impl Shard {
    /// The whole run.
    pub const WHOLE: Shard = Shard { index: 0, count: 1 };

    /// Parses `I/N`.
    pub fn parse(text: &str) -> Result<Shard, ShardError> {
        let bad = || ShardError(text.to_string());
        let (i, n) = text.split_once('/').ok_or_else(bad)?;
        let index: u32 = i.trim().parse().map_err(|_| bad())?;
        let count: u32 = n.trim().parse().map_err(|_| bad())?;
        if count == 0 || index >= count {
            return Err(bad());
        }
        Ok(Shard { index, count })
    }

    /// This shard's part of `total` whole things (users, iterations): the
    /// parts of all shards add up to `total`.
    pub fn share(&self, total: u64) -> u64 {
        let n = u64::from(self.count);
        total / n + u64::from(u64::from(self.index) < total % n)
    }

    pub(crate) fn label(&self) -> Option<String> {
        (self.count > 1).then(|| format!("{}/{}", self.index, self.count))
    }

    /// Which of the `count` shards owns `key` (a journey's name).
    ///
    /// Rendezvous hashing: every shard scores the key and the highest score
    /// wins. Each replica computes the same answer from the name alone, with
    /// no coordination, on any platform and version (SHA-256, not std's
    /// hasher, which is seeded per process). Changing the count moves only
    /// the keys the added or removed shard wins or held, about 1/count of
    /// them, so the schedules of the rest stay where they were.
    pub fn owner(count: u32, key: &str) -> u32 {
        Shard::owner_among(count, key, |_| true).unwrap_or(0)
    }

    /// As [`Shard::owner`] among the shards `alive` accepts, or none when
    /// it accepts none. The scores are the same, so removing a shard moves
    /// only the keys it held, each to the shard that scored next.
    pub fn owner_among(count: u32, key: &str, alive: impl Fn(u32) -> bool) -> Option<u32> {
        use sha2::{Digest, Sha256};
        let mut best: Option<(u64, u32)> = None;
        for shard in (0..count.max(1)).filter(|&s| alive(s)) {
            let digest = Sha256::new()
                .chain_update(shard.to_be_bytes())
                .chain_update(key.as_bytes())
                .finalize();
            let mut head = [0u8; 8];
            head.copy_from_slice(&digest[..8]);
            let score = u64::from_be_bytes(head);
            if best.is_none_or(|(b, _)| score > b) {
                best = Some((score, shard));
            }
        }
        best.map(|(_, shard)| shard)
    }

    /// Whether this shard owns `key`.
    pub fn owns(&self, key: &str) -> bool {
        Shard::owner(self.count, key) == self.index
    }
}

impl Default for Shard {
    fn default() -> Shard {
        Shard::WHOLE
    }
}

impl std::fmt::Display for Shard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.index, self.count)
    }
}

/// A shard that does not read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("'{0}' is not a shard like 0/3 (index from 0 to count−1, then count)")]
pub struct ShardError(pub String);

/// The slowest arrival rate an open-model step can keep: one per hour.
pub const MIN_RATE_PER_SEC: f64 = 1.0 / 3600.0;
/// The fastest: one arrival per microsecond, the finest step the timetable
/// is kept in.
pub const MAX_RATE_PER_SEC: f64 = 1_000_000.0;

/// An arrival rate that does not read or cannot be kept.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum RateError {
    /// Not `N/s`, `N/m` or `N/h`.
    #[error("'{0}' is not a rate like 200/s, 30/m or 5000/h")]
    Syntax(String),
    /// Zero, negative or not a number.
    #[error("'{0}': a rate must be above 0")]
    NotPositive(String),
    /// Slower than one per hour.
    #[error("'{0}' is slower than one arrival per hour, the slowest rate a step can keep")]
    TooSlow(String),
    /// Faster than the timetable's resolution.
    #[error(
        "'{0}' is faster than 1,000,000/s, the fastest rate the timetable can keep (shard the load over processes with --shard)"
    )]
    TooFast(String),
}

/// Parses an arrival rate: `200/s`, `30/m`, `5000/h` or a bare number per
/// second, in arrivals per second.
pub fn parse_rate(text: &str) -> Result<f64, RateError> {
    let t = text.trim();
    let (num, per) = match t.split_once('/') {
        Some((n, u)) => (n.trim(), u.trim()),
        None => (t, "s"),
    };
    let secs = match per {
        "s" | "sec" => 1.0,
        "m" | "min" => 60.0,
        "h" => 3600.0,
        _ => return Err(RateError::Syntax(text.to_string())),
    };
    let n: f64 = num
        .parse()
        .map_err(|_| RateError::Syntax(text.to_string()))?;
    if !(n.is_finite() && n > 0.0) {
        return Err(RateError::NotPositive(text.to_string()));
    }
    let per_sec = n / secs;
    if per_sec < MIN_RATE_PER_SEC {
        return Err(RateError::TooSlow(text.to_string()));
    }
    if per_sec > MAX_RATE_PER_SEC {
        return Err(RateError::TooFast(text.to_string()));
    }
    Ok(per_sec)
}

/// What to run and for how long.
#[derive(Debug, Clone)]
pub struct Plan {
    /// Closed or open, and the ramp.
    pub model: Model,
    /// Length of each step (including its warm-up).
    pub step_duration: Duration,
    /// Start of each step not measured.
    pub warmup: Duration,
    /// Most iterations started per step (whole run; shards split it).
    pub iterations: Option<u64>,
    /// This process's part.
    pub shard: Shard,
    /// A fresh instance per iteration, or one kept per user.
    pub instances: InstanceMode,
    /// Passes over the whole ramp (`--repeat`), at least 1.
    pub repeat: u32,
}

impl Plan {
    /// The default warm-up for a step length: a fifth of it, at most 5 s.
    pub fn default_warmup(step: Duration) -> Duration {
        (step / 5).min(Duration::from_secs(5))
    }
}
