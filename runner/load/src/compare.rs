//! `waymark load compare`: rounds of an audit side by side, as a team reads
//! them between changes: the USL parameters of each, their change from the
//! first round in % and in words, and throughput and p95 at every load level
//! the rounds share (and which levels they do not).

use std::collections::BTreeSet;

use serde::Serialize;

use super::{LoadReport, StepResult, UslFit};

/// One round: its name (the file it came from) and what it measured.
#[derive(Debug, Clone)]
pub struct Round {
    /// How the round is called in the tables: its file's stem.
    pub name: String,
    /// What it measured.
    pub report: LoadReport,
}

/// A load level: users of the closed model, or arrivals per second of the
/// open one (kept in thousandths so levels compare exactly).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub enum Level {
    /// Concurrent users.
    Users(u32),
    /// Arrivals per second × 1000.
    MilliRate(u64),
}

impl Level {
    pub(crate) fn of(s: &StepResult) -> Option<Level> {
        match (s.users, s.rate) {
            (Some(u), _) => Some(Level::Users(u)),
            (None, Some(r)) if r.is_finite() && r > 0.0 => {
                Some(Level::MilliRate((r * 1000.0).round() as u64))
            }
            _ => None,
        }
    }

    /// `8 users`, `200/s`.
    pub fn label(self) -> String {
        match self {
            Level::Users(u) => format!("{u} user{}", if u == 1 { "" } else { "s" }),
            Level::MilliRate(m) => {
                let s = format!("{:.3}", m as f64 / 1000.0);
                format!("{}/s", s.trim_end_matches('0').trim_end_matches('.'))
            }
        }
    }

    /// Its position on a concurrency axis.
    pub fn value(self) -> f64 {
        match self {
            Level::Users(u) => f64::from(u),
            Level::MilliRate(m) => m as f64 / 1000.0,
        }
    }
}

/// One figure across the rounds.
#[derive(Debug, Clone, Serialize)]
pub struct Row {
    /// What it is (`σ (serialization)`).
    pub name: String,
    /// Its value in each round (none where the round has no fit).
    pub values: Vec<Option<f64>>,
    /// Each value as shown.
    pub shown: Vec<String>,
    /// The last round's against the first's, in words.
    pub change: String,
}

/// Throughput and p95 at one level shared by every round.
#[derive(Debug, Clone, Serialize)]
pub struct LevelRow {
    /// The level.
    pub level: Level,
    /// Iterations per second in each round.
    pub throughput: Vec<f64>,
    /// Whole-journey p95 in each round, ms.
    pub p95_ms: Vec<f64>,
    /// Mean time of each request phase in each round, ms, in
    /// [`waymark_record::PhaseTimings::PHASES`] order.
    pub phases_ms: Vec<[f64; 5]>,
    /// Throughput, last round against the first.
    pub throughput_change: String,
    /// p95, last round against the first.
    pub p95_change: String,
}

/// The rounds compared.
#[derive(Debug, Clone)]
pub struct Comparison {
    /// The rounds, in the order given.
    pub rounds: Vec<Round>,
    /// λ, σ, κ, N*, X(N*), R².
    pub fit: Vec<Row>,
    /// Every level all rounds measured.
    pub levels: Vec<LevelRow>,
    /// Levels some rounds measured and others did not, said in words.
    pub unshared: Vec<String>,
    /// The findings in a sentence each (`serialization penalty 6.1 % → 3.0 %: halved`).
    pub summary: Vec<String>,
}

/// Why rounds cannot be compared.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum CompareError {
    /// Fewer than two.
    #[error("give at least two rounds to compare (got {0})")]
    TooFew(usize),
    /// A closed-model round beside an open-model one.
    #[error(
        "round '{0}' is a {1} model run and round '{2}' a {3} one: their load levels do not compare"
    )]
    Models(String, String, String, String),
}

/// `new` against `old` in words: unchanged, halved, doubled, cut to a
/// third, tripled, or down/up so many %.
pub fn in_words(old: f64, new: f64) -> String {
    if !old.is_finite() || !new.is_finite() {
        return "-".into();
    }
    // Fits land on 1e-15 where they mean 0.
    let zero = |v: f64| v.abs() < 1e-9;
    if zero(old) {
        return if zero(new) {
            "unchanged".into()
        } else {
            "from 0".into()
        };
    }
    if zero(new) {
        return "down to 0".into();
    }
    let r = new / old;
    let pct = (r - 1.0) * 100.0;
    let near = |x: f64| (r - x).abs() <= 0.08 * x;
    if pct.abs() < 2.0 {
        "unchanged".into()
    } else if near(0.5) {
        format!("halved ({pct:+.0} %)")
    } else if near(1.0 / 3.0) {
        format!("cut to a third ({pct:+.0} %)")
    } else if near(0.25) {
        format!("cut to a quarter ({pct:+.0} %)")
    } else if near(2.0) {
        format!("doubled ({pct:+.0} %)")
    } else if near(3.0) {
        format!("tripled ({pct:+.0} %)")
    } else if r < 1.0 {
        format!("down {:.0} %", -pct)
    } else {
        format!("up {pct:.0} %")
    }
}

fn step_at(levels: &[StepResult], level: Level) -> Option<&StepResult> {
    // The last measured step at that level (a ramp may come back down).
    levels
        .iter()
        .filter(|s| s.counts.iterations > 0)
        .rfind(|s| Level::of(s) == Some(level))
}

fn mean_phases(s: &StepResult) -> [f64; 5] {
    let mut out = [0.0; 5];
    for (i, name) in waymark_record::PhaseTimings::PHASES.iter().enumerate() {
        out[i] = s.counts.phases.get(*name).map_or(0.0, |h| h.mean_ms());
    }
    out
}

/// Compares `rounds` (two or more, the first is the baseline).
pub fn compare(rounds: Vec<Round>) -> Result<Comparison, CompareError> {
    if rounds.len() < 2 {
        return Err(CompareError::TooFew(rounds.len()));
    }
    let first = &rounds[0];
    if let Some(other) = rounds.iter().find(|r| r.report.model != first.report.model) {
        return Err(CompareError::Models(
            first.name.clone(),
            first.report.model.clone(),
            other.name.clone(),
            other.report.model.clone(),
        ));
    }
    let fits: Vec<Option<&UslFit>> = rounds.iter().map(|r| r.report.usl.as_ref()).collect();
    let row = |name: &str, get: &dyn Fn(&UslFit) -> Option<f64>, show: &dyn Fn(f64) -> String| {
        let values: Vec<Option<f64>> = fits.iter().map(|f| f.and_then(get)).collect();
        let shown = values
            .iter()
            .map(|v| v.map_or_else(|| "-".to_string(), show))
            .collect();
        let change = match (
            values.first().copied().flatten(),
            values.last().copied().flatten(),
        ) {
            (Some(a), Some(b)) => in_words(a, b),
            _ => "-".into(),
        };
        Row {
            name: name.into(),
            values,
            shown,
            change,
        }
    };
    let unit = if first.report.model == "closed" {
        "user"
    } else {
        "in flight"
    };
    let fit = vec![
        row(&format!("λ (one {unit}), /s"), &|f| Some(f.lambda), &|v| {
            format!("{v:.1}")
        }),
        row("σ (serialization)", &|f| Some(f.sigma), &|v| {
            format!("{:.2} %", v * 100.0)
        }),
        row("κ (crosstalk)", &|f| Some(f.kappa), &|v| format!("{v:.6}")),
        row("N* (peak concurrency)", &|f| f.peak_concurrency, &|v| {
            format!("{v:.1}")
        }),
        row("X(N*), /s", &|f| f.peak_throughput, &|v| format!("{v:.1}")),
        row("R²", &|f| Some(f.r_squared), &|v| format!("{v:.3}")),
    ];

    // Repeated passes fold into one figure per level.
    let folded: Vec<Vec<StepResult>> = rounds.iter().map(|r| r.report.levels()).collect();
    let sets: Vec<BTreeSet<Level>> = folded
        .iter()
        .map(|steps| {
            steps
                .iter()
                .filter(|s| s.counts.iterations > 0)
                .filter_map(Level::of)
                .collect()
        })
        .collect();
    let all: BTreeSet<Level> = sets.iter().flatten().copied().collect();
    let mut levels = Vec::new();
    let mut unshared = Vec::new();
    for level in all {
        let missing: Vec<&str> = rounds
            .iter()
            .zip(&sets)
            .filter(|(_, s)| !s.contains(&level))
            .map(|(r, _)| r.name.as_str())
            .collect();
        if !missing.is_empty() {
            unshared.push(format!(
                "{}: not measured in {}",
                level.label(),
                missing.join(", ")
            ));
            continue;
        }
        let steps: Vec<&StepResult> = folded.iter().filter_map(|l| step_at(l, level)).collect();
        let throughput: Vec<f64> = steps.iter().map(|s| s.throughput).collect();
        let p95_ms: Vec<f64> = steps
            .iter()
            .map(|s| s.counts.latency.quantile_ms(0.95))
            .collect();
        let change = |v: &[f64]| match (v.first(), v.last()) {
            (Some(a), Some(b)) => in_words(*a, *b),
            _ => "-".into(),
        };
        levels.push(LevelRow {
            level,
            throughput_change: change(&throughput),
            p95_change: change(&p95_ms),
            phases_ms: steps.iter().map(|s| mean_phases(s)).collect(),
            throughput,
            p95_ms,
        });
    }

    let (a, b) = (&rounds[0].name, &rounds[rounds.len() - 1].name);
    let mut summary = Vec::new();
    let sentence = |what: &str, r: &Row| -> Option<String> {
        let (x, y) = (r.shown.first()?, r.shown.last()?);
        (x != "-" && y != "-").then(|| format!("{what} {x} → {y} ({a} → {b}): {}", r.change))
    };
    summary.extend(sentence("serialization penalty σ", &fit[1]));
    summary.extend(sentence("crosstalk κ", &fit[2]));
    summary.extend(sentence("peak concurrency N*", &fit[3]));
    summary.extend(sentence("throughput at the peak X(N*)", &fit[4]));
    if let Some(top) = levels.last() {
        summary.push(format!(
            "at {}: throughput {:.1}/s → {:.1}/s ({}), p95 {:.1} ms → {:.1} ms ({})",
            top.level.label(),
            top.throughput.first().copied().unwrap_or(f64::NAN),
            top.throughput.last().copied().unwrap_or(f64::NAN),
            top.throughput_change,
            top.p95_ms.first().copied().unwrap_or(f64::NAN),
            top.p95_ms.last().copied().unwrap_or(f64::NAN),
            top.p95_change
        ));
    }
    for r in &rounds {
        if let Some(why) = &r.report.usl_refused {
            summary.push(format!("{}: no USL fit ({why})", r.name));
        }
    }
    Ok(Comparison {
        rounds,
        fit,
        levels,
        unshared,
        summary,
    })
}

/// The comparison as the terminal shows it.
pub fn terminal(c: &Comparison) -> String {
    use std::fmt::Write as _;
    let mut out = String::new();
    let names: Vec<&str> = c.rounds.iter().map(|r| r.name.as_str()).collect();
    let w = names
        .iter()
        .map(|n| n.chars().count())
        .max()
        .unwrap_or(8)
        .max(12);
    let _ = writeln!(
        out,
        "waymark load compare: {} rounds of {}",
        c.rounds.len(),
        c.rounds[0].report.journey
    );
    for r in &c.rounds {
        let _ = writeln!(
            out,
            "  {}: {} model, {} instances, started {}, {} steps",
            r.name,
            r.report.model,
            r.report.instances,
            r.report.started_at,
            r.report.steps.len()
        );
    }
    let head = |out: &mut String, first: &str| {
        let _ = write!(out, "\n{first:<24}");
        for n in &names {
            let _ = write!(out, " {n:>w$}");
        }
        let _ = writeln!(out, "  change (first → last)");
    };
    head(&mut out, "USL fit");
    for r in &c.fit {
        let _ = write!(out, "{:<24}", r.name);
        for s in &r.shown {
            let _ = write!(out, " {s:>w$}");
        }
        let _ = writeln!(out, "  {}", r.change);
    }
    if !c.levels.is_empty() {
        head(&mut out, "throughput /s");
        for l in &c.levels {
            let _ = write!(out, "{:<24}", l.level.label());
            for t in &l.throughput {
                let _ = write!(out, " {:>w$}", format!("{t:.1}"));
            }
            let _ = writeln!(out, "  {}", l.throughput_change);
        }
        head(&mut out, "p95 ms");
        for l in &c.levels {
            let _ = write!(out, "{:<24}", l.level.label());
            for t in &l.p95_ms {
                let _ = write!(out, " {:>w$}", format!("{t:.1}"));
            }
            let _ = writeln!(out, "  {}", l.p95_change);
        }
    }
    if !c.unshared.is_empty() {
        let _ = writeln!(out, "\nLevels not in every round (left out above):");
        for u in &c.unshared {
            let _ = writeln!(out, "  {u}");
        }
    }
    if !c.summary.is_empty() {
        let _ = writeln!(out, "\nIn words:");
        for s in &c.summary {
            let _ = writeln!(out, "  {s}");
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn changes_read_as_people_say_them() {
        assert_eq!(in_words(6.1, 3.0), "halved (-51 %)");
        assert_eq!(in_words(100.0, 201.0), "doubled (+101 %)");
        assert_eq!(in_words(100.0, 300.0), "tripled (+200 %)");
        assert_eq!(in_words(6.0, 2.0), "cut to a third (-67 %)");
        assert_eq!(in_words(100.0, 101.0), "unchanged");
        assert_eq!(in_words(100.0, 80.0), "down 20 %");
        assert_eq!(in_words(100.0, 140.0), "up 40 %");
        assert_eq!(in_words(0.0, 0.0), "unchanged");
        assert_eq!(in_words(0.0, 3.6e-15), "unchanged");
        assert_eq!(in_words(0.1948, 1e-16), "down to 0");
        assert_eq!(in_words(f64::NAN, 1.0), "-");
    }

    #[test]
    fn levels_label_users_and_rates() {
        assert_eq!(Level::Users(1).label(), "1 user");
        assert_eq!(Level::Users(8).label(), "8 users");
        assert_eq!(Level::MilliRate(2500).label(), "2.5/s");
    }
}
