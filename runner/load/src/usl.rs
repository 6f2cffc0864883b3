//! The Universal Scalability Law (N. J. Gunther, *Guerrilla Capacity
//! Planning*, 2007): X(N) = λN / (1 + σ(N−1) + κN(N−1)).
//!
//! σ is the serialization penalty (the share of work that queues on one
//! shared resource), κ the crosstalk or coherency cost (pairs of workers
//! waiting on each other), λ the throughput of one worker alone.
//!
//! The fit is nonlinear least squares on X with σ, κ ≥ 0. For fixed σ and κ
//! the best λ has a closed form, so only σ and κ are searched: a log grid
//! finds the basin, a pattern search polishes it. No crate does a bounded
//! fit of three parameters without pulling in a linear-algebra stack, and
//! this one is small enough to test against published results.

use serde::{Deserialize, Serialize};

/// The fitted law and what follows from it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct UslFit {
    /// Throughput of one worker, per second.
    pub lambda: f64,
    /// Serialization (contention) coefficient, 0..1.
    pub sigma: f64,
    /// Crosstalk (coherency) coefficient.
    pub kappa: f64,
    /// Coefficient of determination of the fit on the measured points.
    pub r_squared: f64,
    /// Concurrency of the throughput peak, sqrt((1−σ)/κ); none when κ is 0
    /// (throughput never falls).
    pub peak_concurrency: Option<f64>,
    /// Predicted throughput at the peak, X(N*); with κ = 0, the ceiling λ/σ
    /// (none when σ is 0 too).
    pub peak_throughput: Option<f64>,
    /// Measured points the fit used.
    pub points: usize,
    /// What the reader should know: no contention seen, an extrapolated peak.
    pub notes: Vec<String>,
    /// Throughput predicted beyond the measured range, with its interval.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub predictions: Vec<Prediction>,
}

/// The throughput the fit predicts at a concurrency, and the range a
/// measurement there should fall in.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Prediction {
    /// The concurrency predicted at.
    pub concurrency: f64,
    /// The fit's throughput there, per second.
    pub throughput: f64,
    /// Lower end of the 95 % prediction interval.
    pub low: f64,
    /// Upper end.
    pub high: f64,
}

/// Bootstrap resamples behind a prediction interval.
const RESAMPLES: usize = 400;

/// Prediction intervals at `at` for `fit`, made from `points` (what it was
/// fitted to) by a residual bootstrap: the relative residuals are drawn
/// again onto the fitted curve, the law refitted, and the prediction made
/// with one more drawn residual (a new measurement is as noisy as the old
/// ones). The 2.5th to 97.5th percentiles are the interval. The draws are
/// seeded, so a report reads the same every time it is analysed. None
/// with 4 points or fewer: three parameters leave no residual to learn
/// the noise from.
pub fn prediction_intervals(fit: &UslFit, points: &[(f64, f64)], at: &[f64]) -> Vec<Prediction> {
    use rand::{Rng, SeedableRng};
    let points: Vec<(f64, f64)> = points
        .iter()
        .copied()
        .filter(|&(n, x)| n > 0.0 && n.is_finite() && x.is_finite() && x >= 0.0)
        .filter(|&(n, _)| fit.predict(n) > 0.0)
        .collect();
    let m = points.len();
    if m <= 4 || at.is_empty() {
        return Vec::new();
    }
    // Residuals of a least-squares fit understate the noise by the
    // parameters it spent; scaled back, centred.
    let inflate = (m as f64 / (m - 3) as f64).sqrt();
    let raw: Vec<f64> = points
        .iter()
        .map(|&(n, x)| x / fit.predict(n) - 1.0)
        .collect();
    let mean = raw.iter().sum::<f64>() / m as f64;
    let resid: Vec<f64> = raw.iter().map(|r| (r - mean) * inflate).collect();
    let mut rng = rand::rngs::StdRng::seed_from_u64(0x0057_5EED);
    let mut draws: Vec<Vec<f64>> = vec![Vec::with_capacity(RESAMPLES); at.len()];
    for _ in 0..RESAMPLES {
        let sample: Vec<(f64, f64)> = points
            .iter()
            .map(|&(n, _)| {
                let r = resid[rng.random_range(0..m)];
                (n, (fit.predict(n) * (1.0 + r)).max(0.0))
            })
            .collect();
        let (s, k) = polish(&sample, fit.sigma, fit.kappa);
        let (lambda, _) = profile(&sample, s, k);
        for (i, &n) in at.iter().enumerate() {
            let r = resid[rng.random_range(0..m)];
            draws[i].push(lambda * n / denominator(s, k, n) * (1.0 + r));
        }
    }
    at.iter()
        .zip(draws)
        .map(|(&n, mut d)| {
            d.sort_by(f64::total_cmp);
            let q = |p: f64| d[((d.len() - 1) as f64 * p).round() as usize];
            Prediction {
                concurrency: n,
                throughput: fit.predict(n),
                low: q(0.025),
                high: q(0.975),
            }
        })
        .collect()
}

impl UslFit {
    /// Predicted throughput at concurrency `n`.
    pub fn predict(&self, n: f64) -> f64 {
        self.lambda * n / denominator(self.sigma, self.kappa, n)
    }
}

/// Why no fit was made.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum UslRefusal {
    /// Three parameters need three concurrency levels.
    #[error(
        "the USL needs throughput at 3 or more concurrency levels above 0; this run measured {0}"
    )]
    TooFewPoints(usize),
    /// No positive throughput anywhere.
    #[error("no throughput was measured, so there is nothing to fit")]
    NoThroughput,
}

fn denominator(sigma: f64, kappa: f64, n: f64) -> f64 {
    1.0 + sigma * (n - 1.0) + kappa * n * (n - 1.0)
}

/// Best λ for fixed σ, κ and its sum of squared errors.
fn profile(points: &[(f64, f64)], sigma: f64, kappa: f64) -> (f64, f64) {
    let mut xg = 0.0;
    let mut gg = 0.0;
    for &(n, x) in points {
        let g = n / denominator(sigma, kappa, n);
        xg += x * g;
        gg += g * g;
    }
    let lambda = if gg > 0.0 { (xg / gg).max(0.0) } else { 0.0 };
    let sse = points
        .iter()
        .map(|&(n, x)| {
            let e = x - lambda * n / denominator(sigma, kappa, n);
            e * e
        })
        .sum();
    (lambda, sse)
}

/// Pattern search from (σ, κ), each coordinate kept ≥ 0: the best (σ, κ)
/// near it.
fn polish(points: &[(f64, f64)], sigma: f64, kappa: f64) -> (f64, f64) {
    let (mut s, mut k) = (sigma, kappa);
    let (_, mut sse) = profile(points, s, k);
    let mut ds = (s * 0.5).max(1e-4);
    let mut dk = (k * 0.5).max(1e-7);
    for _ in 0..10_000 {
        let mut moved = false;
        for (cs, ck) in [(s + ds, k), (s - ds, k), (s, k + dk), (s, k - dk)] {
            if !(0.0..=1.0).contains(&cs) || ck < 0.0 {
                continue;
            }
            let (_, e) = profile(points, cs, ck);
            if e < sse {
                (s, k, sse) = (cs, ck, e);
                moved = true;
            }
        }
        if !moved {
            ds *= 0.5;
            dk *= 0.5;
            if ds < 1e-12 && dk < 1e-15 {
                break;
            }
        }
    }
    (s, k)
}

/// Fits the law to `(concurrency, throughput)` points.
pub fn fit(points: &[(f64, f64)]) -> Result<UslFit, UslRefusal> {
    let points: Vec<(f64, f64)> = points
        .iter()
        .copied()
        .filter(|&(n, x)| n > 0.0 && n.is_finite() && x.is_finite() && x >= 0.0)
        .collect();
    let mut levels: Vec<f64> = points.iter().map(|p| p.0).collect();
    levels.sort_by(f64::total_cmp);
    levels.dedup_by(|a, b| (*a - *b).abs() < 1e-9);
    if levels.len() < 3 {
        return Err(UslRefusal::TooFewPoints(levels.len()));
    }
    if points.iter().all(|p| p.1 <= 0.0) {
        return Err(UslRefusal::NoThroughput);
    }

    // Grid: 0 and decades wide enough for any realistic system.
    let sigmas: Vec<f64> = std::iter::once(0.0)
        .chain((0..=72).map(|i| 10f64.powf(-6.0 + i as f64 / 12.0)))
        .filter(|s| *s <= 1.0)
        .collect();
    let kappas: Vec<f64> = std::iter::once(0.0)
        .chain((0..=108).map(|i| 10f64.powf(-9.0 + i as f64 / 12.0)))
        .filter(|k| *k <= 1.0)
        .collect();
    let mut best = (0.0, 0.0, f64::INFINITY);
    for &s in &sigmas {
        for &k in &kappas {
            let (_, sse) = profile(&points, s, k);
            if sse < best.2 {
                best = (s, k, sse);
            }
        }
    }

    let (s, k) = polish(&points, best.0, best.1);
    let (lambda, sse) = profile(&points, s, k);
    let mean = points.iter().map(|p| p.1).sum::<f64>() / points.len() as f64;
    let sst: f64 = points.iter().map(|p| (p.1 - mean).powi(2)).sum();
    let r_squared = if sst > 0.0 { 1.0 - sse / sst } else { 1.0 };

    let max_n = levels.last().copied().unwrap_or(1.0);
    let mut notes = Vec::new();
    // Below these, the law's penalty at the largest measured N is under 1%.
    let no_sigma = s * (max_n - 1.0) < 0.01;
    let no_kappa = k * max_n * (max_n - 1.0) < 0.01;
    let (peak_concurrency, peak_throughput) = if k > 0.0 && !no_kappa {
        let n_star = ((1.0 - s) / k).sqrt();
        let x_star = lambda * n_star / denominator(s, k, n_star);
        if n_star > 2.0 * max_n {
            notes.push(format!(
                "the peak N* = {n_star:.0} lies beyond twice the largest concurrency measured ({max_n:.0}): it is an extrapolation"
            ));
        }
        (Some(n_star), Some(x_star))
    } else if no_sigma {
        notes.push(format!(
            "no contention seen: throughput grew in proportion to concurrency up to {max_n:.0}; measure higher to find the limit"
        ));
        (None, None)
    } else {
        notes.push(format!(
            "no crosstalk seen up to {max_n:.0}: throughput levels off towards λ/σ and does not fall in the measured range"
        ));
        (None, Some(lambda / s))
    };
    Ok(UslFit {
        lambda,
        sigma: s,
        kappa: k,
        r_squared,
        peak_concurrency,
        peak_throughput,
        points: points.len(),
        notes,
        predictions: Vec::new(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};

    fn close(got: f64, want: f64, rel: f64) -> bool {
        (got - want).abs() <= rel * want.abs()
    }

    /// The worked example of the R `usl` package's test `tests/coef.R`
    /// (S. Moeding, CRAN `usl` 3.0): load 1, 2, 4, 6, 8, 10 and throughput
    /// 1, 1.8868, 3.0769, 3.5294, 3.5398, 3.3557 give alpha (σ) = 0.02,
    /// beta (κ) = 0.02 and gamma (λ) = 1.00 (`coef.Rout.save`).
    #[test]
    fn recovers_the_usl_package_coefficient_example() {
        let data = [
            (1.0, 1.0),
            (2.0, 1.8868),
            (4.0, 3.0769),
            (6.0, 3.5294),
            (8.0, 3.5398),
            (10.0, 3.3557),
        ];
        let f = fit(&data).expect("fits");
        assert!(close(f.sigma, 0.02, 0.01), "sigma {}", f.sigma);
        assert!(close(f.kappa, 0.02, 0.01), "kappa {}", f.kappa);
        assert!(close(f.lambda, 1.0, 0.001), "lambda {}", f.lambda);
        assert!(f.r_squared > 0.9999, "r2 {}", f.r_squared);
        // sqrt((1 − 0.02) / 0.02) = 7.0
        let peak = f.peak_concurrency.expect("a peak");
        assert!(close(peak, 7.0, 0.01), "peak {peak}");
    }

    /// SPEC SDM91 on a 16-CPU Sun SPARCcenter 2000 (Gunther, *Guerrilla
    /// Capacity Planning*, Springer 2007, the `specsdm91` dataset of the R
    /// `usl` package). Its `tests/usl-nlxb.Rout.save` fits, with λ free:
    /// alpha 0.0277285, beta 0.0001044, gamma 89.9952330, R² 0.99; and
    /// `tests/peak-scalability.Rout.save` gives the peak as 97 users.
    #[test]
    fn matches_the_published_specsdm91_fit() {
        let data = [
            (1.0, 64.9),
            (18.0, 995.9),
            (36.0, 1652.4),
            (72.0, 1853.2),
            (108.0, 1828.9),
            (144.0, 1775.0),
            (216.0, 1702.2),
        ];
        let f = fit(&data).expect("fits");
        assert!(close(f.sigma, 0.0277285, 0.01), "sigma {}", f.sigma);
        assert!(close(f.kappa, 0.0001044, 0.01), "kappa {}", f.kappa);
        assert!(close(f.lambda, 89.9952330, 0.005), "lambda {}", f.lambda);
        assert!((f.r_squared - 0.99).abs() < 0.005, "r2 {}", f.r_squared);
        let peak = f.peak_concurrency.expect("a peak");
        assert_eq!(format!("{peak:.0}"), "97", "peak {peak}");
        assert!(f.notes.is_empty(), "{:?}", f.notes);
    }

    /// Data made from known coefficients with 2% noise comes back to them.
    #[test]
    fn recovers_known_coefficients_from_noisy_data() {
        let (lambda, sigma, kappa) = (250.0, 0.06, 0.0008);
        let truth = UslFit {
            lambda,
            sigma,
            kappa,
            r_squared: 1.0,
            peak_concurrency: None,
            peak_throughput: None,
            points: 0,
            notes: vec![],
            predictions: vec![],
        };
        for seed in 1..=5u64 {
            let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
            let data: Vec<(f64, f64)> = [1, 2, 4, 8, 16, 24, 32, 48, 64, 96]
                .iter()
                .map(|&n| {
                    let n = f64::from(n);
                    let noise = 1.0 + rng.random_range(-0.02..0.02);
                    (n, truth.predict(n) * noise)
                })
                .collect();
            let f = fit(&data).expect("fits");
            assert!(close(f.lambda, lambda, 0.05), "seed {seed}: λ {}", f.lambda);
            assert!(close(f.sigma, sigma, 0.25), "seed {seed}: σ {}", f.sigma);
            assert!(close(f.kappa, kappa, 0.25), "seed {seed}: κ {}", f.kappa);
            let want_peak = ((1.0 - sigma) / kappa).sqrt();
            let peak = f.peak_concurrency.expect("a peak");
            assert!(close(peak, want_peak, 0.15), "seed {seed}: N* {peak}");
            assert!(f.r_squared > 0.98, "seed {seed}: R² {}", f.r_squared);
        }
    }

    /// Points on 1–8 with ±1 % noise from a known law with a peak at 14: the
    /// interval at 32, well past the peak, holds the truth and is not so
    /// wide as to say nothing.
    #[test]
    fn prediction_intervals_hold_the_truth_beyond_the_measured_range() {
        let truth = UslFit {
            lambda: 100.0,
            sigma: 0.05,
            kappa: 0.005,
            r_squared: 1.0,
            peak_concurrency: None,
            peak_throughput: None,
            points: 0,
            notes: vec![],
            predictions: vec![],
        };
        let mut held = 0;
        for seed in 1..=10u64 {
            let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
            let data: Vec<(f64, f64)> = (1..=8)
                .map(|n| {
                    let n = f64::from(n);
                    (n, truth.predict(n) * (1.0 + rng.random_range(-0.01..0.01)))
                })
                .collect();
            let f = fit(&data).expect("fits");
            let p = &prediction_intervals(&f, &data, &[32.0])[0];
            let want = truth.predict(32.0);
            assert!(
                p.low <= p.throughput && p.throughput <= p.high,
                "seed {seed}: {p:?}"
            );
            assert!(
                (p.high - p.low) / want < 0.6,
                "seed {seed}: too wide to say anything: {p:?}, truth {want:.1}"
            );
            held += usize::from(p.low <= want && want <= p.high);
        }
        assert!(
            held >= 9,
            "the truth fell outside {} of 10 intervals",
            10 - held
        );
        // Four points leave one residual degree of freedom: no interval.
        let four: Vec<(f64, f64)> = [1.0, 2.0, 4.0, 8.0]
            .iter()
            .map(|&n| (n, truth.predict(n)))
            .collect();
        let f = fit(&four).expect("fits");
        assert!(prediction_intervals(&f, &four, &[32.0]).is_empty());
    }

    #[test]
    fn refuses_too_few_levels() {
        assert_eq!(
            fit(&[(1.0, 10.0), (2.0, 19.0), (2.0, 19.5)]),
            Err(UslRefusal::TooFewPoints(2))
        );
        assert_eq!(
            fit(&[(1.0, 0.0), (2.0, 0.0), (4.0, 0.0)]),
            Err(UslRefusal::NoThroughput)
        );
    }

    #[test]
    fn linear_scaling_says_no_contention_and_no_peak() {
        let data: Vec<(f64, f64)> = [1.0, 2.0, 4.0, 8.0]
            .iter()
            .map(|&n| (n, 100.0 * n))
            .collect();
        let f = fit(&data).expect("fits");
        assert_eq!(f.peak_concurrency, None);
        assert!(f.notes[0].contains("no contention seen"), "{:?}", f.notes);
        assert!(close(f.lambda, 100.0, 0.01));
    }

    #[test]
    fn pure_serialization_levels_off_without_a_peak() {
        // Amdahl: κ = 0, σ = 0.1, ceiling λ/σ = 500.
        let data: Vec<(f64, f64)> = [1.0, 2.0, 4.0, 8.0, 16.0, 32.0]
            .iter()
            .map(|&n| (n, 50.0 * n / (1.0 + 0.1 * (n - 1.0))))
            .collect();
        let f = fit(&data).expect("fits");
        assert_eq!(f.peak_concurrency, None);
        let ceiling = f.peak_throughput.expect("a ceiling");
        assert!(close(ceiling, 500.0, 0.02), "ceiling {ceiling}");
        assert!(f.notes[0].contains("levels off"), "{:?}", f.notes);
    }
}
