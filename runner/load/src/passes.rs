//! Repeated passes over the ramp (`--repeat N`): one figure per load level
//! from all passes, and how far apart the passes landed, which is the
//! run-to-run noise a gate against a baseline has to see past.
//!
//! The whole ramp is run again rather than each level N times in a row, so
//! a drift during the run (a cache warming, a neighbour getting busy) shows
//! as spread instead of passing for a trend along the load.

use serde::{Deserialize, Serialize};

use crate::compare::Level;
use crate::{LoadReport, StepResult};

/// How far apart the passes of one load level landed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LevelSpread {
    /// `8 users` or `200/s`.
    pub level: String,
    /// Its position on the concurrency axis.
    pub concurrency: f64,
    /// Throughput of each pass, iterations/s (none for a pass where it was
    /// not measured in full).
    pub throughput: Vec<Option<f64>>,
    /// Whole-journey p95 of each pass, ms.
    pub p95_ms: Vec<Option<f64>>,
}

impl LevelSpread {
    /// Smallest, mean and largest of the passes that measured it.
    pub fn range(values: &[Option<f64>]) -> Option<(f64, f64, f64)> {
        range(values.iter().flatten().copied())
    }
}

/// The spread of a run made of several passes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Spread {
    /// Passes run.
    pub passes: u32,
    /// Each load level, in the ramp's order.
    pub levels: Vec<LevelSpread>,
    /// σ fitted to each pass alone (none where a pass could not be fitted).
    pub sigma: Vec<Option<f64>>,
    /// N* fitted to each pass alone (none without a peak).
    pub peak: Vec<Option<f64>>,
}

pub(crate) fn range(values: impl Iterator<Item = f64>) -> Option<(f64, f64, f64)> {
    let mut n = 0usize;
    let (mut lo, mut sum, mut hi) = (f64::INFINITY, 0.0, f64::NEG_INFINITY);
    for v in values.filter(|v| v.is_finite()) {
        n += 1;
        lo = lo.min(v);
        hi = hi.max(v);
        sum += v;
    }
    (n > 0).then(|| (lo, sum / n as f64, hi))
}

impl LoadReport {
    /// The run as if only pass `k` had been made: its steps, analysed alone.
    pub fn pass(&self, k: u32) -> LoadReport {
        let mut r = self.clone();
        r.passes = 1;
        r.steps.retain(|s| s.pass == k);
        r.slo.clear();
        r.analyse_with(false);
        r
    }

    /// One result per load level, in the ramp's order: with one pass the
    /// steps themselves; with several, each level's passes folded together
    /// (counts and histograms added, rates averaged over the passes that
    /// measured it in full).
    pub fn levels(&self) -> Vec<StepResult> {
        if self.passes <= 1 {
            return self.steps.clone();
        }
        let mut order: Vec<Level> = Vec::new();
        for s in &self.steps {
            if let Some(l) = Level::of(s)
                && !order.contains(&l)
            {
                order.push(l);
            }
        }
        order
            .into_iter()
            .filter_map(|level| {
                let mut of_level = self.steps.iter().filter(|s| Level::of(s) == Some(level));
                let mut out = of_level.next()?.clone();
                let mut rates = vec![(
                    out.trusted(),
                    out.throughput,
                    out.request_rate,
                    out.mean_concurrency,
                )];
                for s in of_level {
                    out.counts.add(&s.counts);
                    out.measured_s += s.measured_s;
                    out.duration_s += s.duration_s;
                    out.cut_short &= s.cut_short;
                    out.waited_for_slot += s.waited_for_slot;
                    out.unmeasured += s.unmeasured;
                    out.generator.merge_pass(&s.generator);
                    rates.push((
                        s.trusted(),
                        s.throughput,
                        s.request_rate,
                        s.mean_concurrency,
                    ));
                }
                // Passes measured in full speak for the level; if none was,
                // all of them do (the level is marked anyway).
                let kept: Vec<_> = if rates.iter().any(|r| r.0) {
                    rates.iter().filter(|r| r.0).collect()
                } else {
                    rates.iter().collect()
                };
                let n = kept.len().max(1) as f64;
                out.throughput = kept.iter().map(|r| r.1).sum::<f64>() / n;
                out.request_rate = kept.iter().map(|r| r.2).sum::<f64>() / n;
                out.mean_concurrency = kept.iter().map(|r| r.3).sum::<f64>() / n;
                Some(out)
            })
            .collect()
    }
}

/// The spread of `r`'s passes; none with a single pass.
pub(crate) fn spread(r: &LoadReport) -> Option<Spread> {
    if r.passes <= 1 {
        return None;
    }
    let passes: Vec<LoadReport> = (0..r.passes).map(|k| r.pass(k)).collect();
    let levels = r
        .levels()
        .iter()
        .filter_map(|l| {
            let level = Level::of(l)?;
            let at = |p: &LoadReport| {
                p.steps
                    .iter()
                    .rfind(|s| Level::of(s) == Some(level) && s.trusted())
                    .cloned()
            };
            let steps: Vec<Option<StepResult>> = passes.iter().map(at).collect();
            Some(LevelSpread {
                level: level.label(),
                concurrency: l.concurrency(),
                throughput: steps
                    .iter()
                    .map(|s| s.as_ref().map(|s| s.throughput))
                    .collect(),
                p95_ms: steps
                    .iter()
                    .map(|s| s.as_ref().map(|s| s.counts.latency.quantile_ms(0.95)))
                    .collect(),
            })
        })
        .collect();
    Some(Spread {
        passes: r.passes,
        levels,
        sigma: passes
            .iter()
            .map(|p| p.usl.as_ref().map(|f| f.sigma))
            .collect(),
        peak: passes
            .iter()
            .map(|p| p.usl.as_ref().and_then(|f| f.peak_concurrency))
            .collect(),
    })
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::slo::Gate;
    use crate::{Counts, Histo, generator::Generator};
    use std::time::Duration;

    /// A closed run over levels 1, 2, 4 users: `by_pass[p][l]` is pass p's
    /// throughput at level l; every iteration took 10 ms × (pass + 1).
    pub(crate) fn report(by_pass: &[[f64; 3]]) -> LoadReport {
        let mut steps = Vec::new();
        for (p, levels) in by_pass.iter().enumerate() {
            for (l, &x) in levels.iter().enumerate() {
                let mut latency = Histo::default();
                latency.record(Duration::from_millis(10 * (p as u64 + 1)));
                steps.push(StepResult {
                    index: steps.len(),
                    pass: p as u32,
                    users: Some(1 << l),
                    rate: None,
                    warmup_s: 0.0,
                    measured_s: 1.0,
                    duration_s: 1.0,
                    cut_short: false,
                    measured_window: None,
                    counts: Counts {
                        iterations: x as u64,
                        passed: x as u64,
                        latency,
                        ..Counts::default()
                    },
                    throughput: x,
                    request_rate: x,
                    mean_concurrency: f64::from(1u32 << l),
                    waited_for_slot: 0,
                    unmeasured: 0,
                    generator: Generator::default(),
                });
            }
        }
        let mut r = LoadReport {
            format: crate::FORMAT,
            waymark_version: "test".into(),
            journey: "j".into(),
            model: "closed".into(),
            shard: None,
            shards_merged: 1,
            location: "here".into(),
            instances: "fresh".into(),
            started_at: "2026-12-03T00:00:00Z".into(),
            step_duration_s: 1.0,
            warmup_s: 0.0,
            interrupted: false,
            passes: by_pass.len() as u32,
            steps,
            spread: None,
            observed: Vec::new(),
            warnings: Vec::new(),
            total: Counts::default(),
            usl: None,
            usl_refused: None,
            slo: Vec::new(),
        };
        r.analyse();
        r
    }

    #[test]
    fn passes_fold_into_one_figure_per_level_and_show_their_spread() {
        let r = report(&[
            [100.0, 180.0, 300.0],
            [110.0, 200.0, 330.0],
            [90.0, 190.0, 270.0],
        ]);
        let levels = r.levels();
        assert_eq!(levels.len(), 3);
        assert_eq!(levels[1].label(), "2 users");
        assert!((levels[1].throughput - 190.0).abs() < 1e-9);
        assert_eq!(levels[2].counts.iterations, 900);
        let spread = r.spread.as_ref().expect("a spread with 3 passes");
        assert_eq!(spread.passes, 3);
        let (lo, mean, hi) = LevelSpread::range(&spread.levels[2].throughput).expect("values");
        assert_eq!((lo, mean, hi), (270.0, 300.0, 330.0));
        assert_eq!(spread.sigma.len(), 3);
        assert_eq!(r.pass(1).steps.len(), 3);
        assert!(report(&[[1.0, 2.0, 3.0]]).spread.is_none());
    }

    #[test]
    fn a_beyond_spread_gate_fails_only_on_a_change_larger_than_the_noise() {
        let gate = |t: &str| Gate::parse(t).expect(t);
        // Baseline: best level 1000/s, its passes 950 to 1050 apart by 100.
        let base = report(&[
            [300.0, 600.0, 950.0],
            [300.0, 600.0, 1050.0],
            [300.0, 600.0, 1000.0],
        ]);
        // 930/s: below 0.95 × 1000, but by 70, inside the spread of 100.
        let noisy = report(&[
            [300.0, 600.0, 900.0],
            [300.0, 600.0, 960.0],
            [300.0, 600.0, 930.0],
        ]);
        // 800/s: down by 200, more than any pass moved.
        let worse = report(&[
            [300.0, 600.0, 790.0],
            [300.0, 600.0, 810.0],
            [300.0, 600.0, 800.0],
        ]);

        let plain = gate("throughput>=0.95*baseline").evaluate(&noisy, Some(&base));
        assert!(!plain.passed, "{plain:?}");
        let g = gate("throughput >= 0.95*baseline beyond spread");
        let r = g.evaluate(&noisy, Some(&base));
        assert!(r.passed, "{r:?}");
        assert_eq!(r.spread.as_deref(), Some("100.0/s"));
        assert!(
            r.figures().contains("within the run-to-run spread"),
            "{}",
            r.figures()
        );
        let r = g.evaluate(&worse, Some(&base));
        assert!(!r.passed, "{r:?}");
        assert!(r.note.is_none(), "{r:?}");

        // Rounds of one pass have no spread: judged as written, and said so.
        let once = report(&[[300.0, 600.0, 930.0]]);
        let base1 = report(&[[300.0, 600.0, 1000.0]]);
        let r = g.evaluate(&once, Some(&base1));
        assert!(
            !r.passed && r.note.as_deref().is_some_and(|n| n.contains("--repeat")),
            "{r:?}"
        );

        // Against a fixed value there is no change to judge.
        let e = Gate::parse("throughput>=900/s beyond spread").expect_err("refused");
        assert!(e.to_string().contains("from the baseline"), "{e}");
    }
}
