//! Two-parameter Weibull maximum-likelihood fit with right-censored data (suspensions),
//! Fisher-matrix confidence bounds computed the way the Python `reliability` package
//! (0.9.0, `Fit_Weibull_2P`) computes them, B-lives, reliability and conditional failure
//! probability.
//!
//! **Model.** `R(t) = exp(−(t/η)^β)`. With failures `tᵢ` (r of them) and suspensions `sⱼ`,
//! `LL(η, β) = Σᵢ [ln β − ln η + (β − 1) ln(tᵢ/η)] − Σ_all (t/η)^β`.
//!
//! **Fit.** The likelihood is profiled in β: for a fixed β the MLE of η is closed-form,
//! `η̂(β) = (Σ_all t^β / r)^(1/β)`, and the profile score
//! `g(β) = r/β + Σᵢ ln tᵢ − r · Σ t^β ln t / Σ t^β` is strictly decreasing, so its root is
//! unique. All sums run in log space (`t^β = exp(β ln t − m)` with `m = β max ln t`), so no
//! power overflows. The start is the median-rank regression estimate (Johnson's adjusted
//! ranks for suspensions, Benard's approximation); the root is then bracketed (`g > 0` below,
//! `g < 0` above) and found by Newton steps that fall back to bisection (in ln β) whenever a
//! step leaves the bracket. Convergence is declared when a step changes β by less than
//! 1e-12 relative; 200 iterations without it is an error.
//!
//! **Bounds.** The covariance matrix is the inverse of the Hessian of the negative
//! log-likelihood at the MLE in the parameters (η, β) — `reliability` calls them
//! (alpha, beta) — computed analytically here (`reliability` uses autograd). Parameter
//! bounds are `x · exp(±Z · SE(x) / x)`; B-life bounds are on `v = ln t = ln η +
//! ln(−ln R)/β` with the delta-method variance, `exp(v ± Z √Var v)`; reliability bounds
//! are on `u = β (ln t − ln η)`, `R = exp(−exp(u ∓ Z √Var u))`. `Z` is the standard normal
//! quantile `Φ⁻¹(1 − α/2)` for two-sided bounds (as `reliability` does) and `Φ⁻¹(c)` for a
//! one-sided bound.

use serde::Serialize;
use statrs::distribution::{ContinuousCDF, Normal};

use crate::mtbf::Sides;
use crate::{AnalyticsError, check_confidence};

/// Iterations allowed to the safeguarded Newton solver.
const MAX_ITERATIONS: u32 = 200;
/// Relative change of β below which the fit has converged.
const TOLERANCE: f64 = 1e-12;
/// Largest shape the bracket search tries before giving up.
const MAX_BETA: f64 = 1e6;
/// Smallest shape the bracket search tries before giving up.
const MIN_BETA: f64 = 1e-6;

/// A fitted 2-parameter Weibull distribution with its Fisher-matrix covariance.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct WeibullFit {
    /// Shape β.
    pub beta: f64,
    /// Scale η (hours), the `alpha` of the `reliability` package.
    pub eta: f64,
    /// Log-likelihood at the MLE.
    pub log_likelihood: f64,
    /// Failures in the fit.
    pub n_failures: usize,
    /// Suspensions (right-censored times) in the fit.
    pub n_suspensions: usize,
    /// Covariance of (η, β): inverse of the Hessian of −LL at the MLE; `None` when that
    /// Hessian is not positive definite (no bounds then).
    pub covariance: Option<[[f64; 2]; 2]>,
    /// Solver iterations.
    pub iterations: u32,
}

/// Lower and upper bounds of one quantity; a side not asked for is `None`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize)]
pub struct Bounds {
    /// Lower bound.
    pub lower: Option<f64>,
    /// Upper bound.
    pub upper: Option<f64>,
}

/// The normal quantile `Z` for bounds at `confidence`: `Φ⁻¹(1 − α/2)` two-sided,
/// `Φ⁻¹(c)` one-sided.
pub fn z_value(confidence: f64, sides: Sides) -> Result<f64, AnalyticsError> {
    check_confidence(confidence)?;
    let normal = Normal::standard();
    Ok(match sides {
        Sides::TwoSided => normal.inverse_cdf(1.0 - (1.0 - confidence) / 2.0),
        Sides::Lower | Sides::Upper => normal.inverse_cdf(confidence),
    })
}

fn check_times(values: &[f64], what: &str) -> Result<(), AnalyticsError> {
    match values.iter().find(|t| !(t.is_finite() && **t > 0.0)) {
        Some(bad) => Err(AnalyticsError::InvalidInput(format!(
            "{what} must be finite and positive, got {bad}"
        ))),
        None => Ok(()),
    }
}

/// Sums over all times for one β, in log space: `m = β · max ln t` and the weighted
/// moments of `ln t` with weights `exp(β ln t − m)`.
struct Moments {
    /// `ln Σ t^β`.
    ln_sum: f64,
    /// `Σ w ln t / Σ w`.
    mean: f64,
    /// `Σ w (ln t)² / Σ w − mean²`.
    var: f64,
}

fn moments(ln_t: &[f64], max_ln: f64, beta: f64) -> Moments {
    let m = beta * max_ln;
    let (mut s0, mut s1, mut s2) = (0.0, 0.0, 0.0);
    for &l in ln_t {
        // centre ln t on its maximum so l − max ≤ 0 and the squares stay small
        let d = l - max_ln;
        let w = (beta * l - m).exp();
        s0 += w;
        s1 += w * d;
        s2 += w * d * d;
    }
    let mean_d = s1 / s0;
    Moments {
        ln_sum: m + s0.ln(),
        mean: max_ln + mean_d,
        var: (s2 / s0 - mean_d * mean_d).max(0.0),
    }
}

/// Median-rank regression start (rank regression on X: ln t on ln(−ln(1 − F))), with
/// Johnson's adjusted ranks for suspensions and Benard's median-rank approximation.
/// `None` when it gives no usable shape (e.g. fewer than two distinct failure times).
fn median_rank_start(failures: &[f64], suspensions: &[f64]) -> Option<f64> {
    let mut all: Vec<(f64, bool)> = failures
        .iter()
        .map(|&t| (t, true))
        .chain(suspensions.iter().map(|&t| (t, false)))
        .collect();
    // failures before suspensions at equal times, as the usual convention
    all.sort_by(|a, b| a.0.total_cmp(&b.0).then(b.1.cmp(&a.1)));
    let n = all.len() as f64;
    let mut order = 0.0;
    let (mut xs, mut ys) = (Vec::new(), Vec::new());
    for (i, &(t, failed)) in all.iter().enumerate() {
        if !failed {
            continue;
        }
        let remaining = n - i as f64; // items at or after this position
        order += (n + 1.0 - order) / (1.0 + remaining);
        let f = (order - 0.3) / (n + 0.4);
        xs.push(t.ln());
        ys.push((-(1.0 - f).ln()).ln());
    }
    let k = xs.len() as f64;
    let mx = xs.iter().sum::<f64>() / k;
    let my = ys.iter().sum::<f64>() / k;
    let sxy: f64 = xs.iter().zip(&ys).map(|(x, y)| (x - mx) * (y - my)).sum();
    let syy: f64 = ys.iter().map(|y| (y - my) * (y - my)).sum();
    // RRX: x = a + b y, β = 1/b
    let beta = syy / sxy;
    (beta.is_finite() && beta > MIN_BETA && beta < MAX_BETA).then_some(beta)
}

/// Fits a 2-parameter Weibull distribution by maximum likelihood to `failures` and
/// right-censored `suspensions` (all in hours, finite and positive).
///
/// Errors: fewer than 2 failures; a non-positive, NaN or infinite time; all failure
/// times equal with no longer suspension (β unbounded); no convergence.
pub fn fit(failures: &[f64], suspensions: &[f64]) -> Result<WeibullFit, AnalyticsError> {
    if failures.len() < 2 {
        return Err(AnalyticsError::TooFewFailures {
            got: failures.len(),
            needed: 2,
        });
    }
    check_times(failures, "failure times")?;
    check_times(suspensions, "suspension times")?;
    let ln_f: Vec<f64> = failures.iter().map(|t| t.ln()).collect();
    let ln_all: Vec<f64> = ln_f
        .iter()
        .copied()
        .chain(suspensions.iter().map(|t| t.ln()))
        .collect();
    let max_ln = ln_all.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    let min_f = ln_f.iter().copied().fold(f64::INFINITY, f64::min);
    // g(∞) = Σ ln tᵢ − r max ln t: non-negative only when every failure sits at the maximum
    if min_f >= max_ln {
        return Err(AnalyticsError::AllEqual(failures[0]));
    }
    let r = failures.len() as f64;
    let sum_lf: f64 = ln_f.iter().sum();
    let score = |beta: f64| -> (f64, f64, Moments) {
        let mo = moments(&ln_all, max_ln, beta);
        let g = r / beta + sum_lf - r * mo.mean;
        let dg = -r / (beta * beta) - r * mo.var;
        (g, dg, mo)
    };

    let start = median_rank_start(failures, suspensions).unwrap_or(1.0);
    let (mut lo, mut hi) = (start, start);
    while score(lo).0 <= 0.0 {
        lo /= 2.0;
        if lo < MIN_BETA {
            return Err(AnalyticsError::NoConvergence(
                "no shape below the start gives a positive score".to_owned(),
            ));
        }
    }
    while score(hi).0 >= 0.0 {
        hi *= 2.0;
        if hi > MAX_BETA {
            return Err(AnalyticsError::NoConvergence(format!(
                "shape exceeds {MAX_BETA}: the failure times are (nearly) all equal"
            )));
        }
    }

    let mut beta = start.clamp(lo, hi);
    let mut iterations = 0;
    let mut converged = false;
    while iterations < MAX_ITERATIONS {
        iterations += 1;
        let (g, dg, _) = score(beta);
        if g == 0.0 {
            converged = true;
            break;
        }
        if g > 0.0 {
            lo = lo.max(beta);
        } else {
            hi = hi.min(beta);
        }
        let newton = beta - g / dg;
        let next = if newton.is_finite() && newton > lo && newton < hi {
            newton
        } else {
            (lo * hi).sqrt()
        };
        let step = (next - beta).abs();
        beta = next;
        if step <= TOLERANCE * beta || (hi - lo) <= TOLERANCE * beta {
            converged = true;
            break;
        }
    }
    if !converged {
        return Err(AnalyticsError::NoConvergence(format!(
            "no convergence after {MAX_ITERATIONS} iterations (β ≈ {beta})"
        )));
    }

    let (_, _, mo) = score(beta);
    let ln_eta = (mo.ln_sum - r.ln()) / beta;
    let eta = ln_eta.exp();
    if !(eta.is_finite() && eta > 0.0 && beta.is_finite()) {
        return Err(AnalyticsError::NoConvergence(format!(
            "non-finite estimate (β = {beta}, η = {eta})"
        )));
    }
    let mut fit = WeibullFit {
        beta,
        eta,
        log_likelihood: 0.0,
        n_failures: failures.len(),
        n_suspensions: suspensions.len(),
        covariance: None,
        iterations,
    };
    let (ll, hessian) = log_likelihood_and_hessian(&ln_f, &ln_all, eta, beta);
    fit.log_likelihood = ll;
    fit.covariance = invert_positive_definite(hessian);
    Ok(fit)
}

/// One life for [`fit_lives`]: observed from age `entry` (0 unless the life began before
/// observation started: delayed entry, left truncation) to age `exit`, where it failed
/// (`failed`) or was suspended (right censoring). Ages in hours on the component's axis.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, utoipa::ToSchema)]
pub struct Life {
    /// Age when observation of this life began (≥ 0).
    pub entry: f64,
    /// Age at failure or suspension (> entry).
    pub exit: f64,
    /// Whether the life ended in a failure.
    pub failed: bool,
}

/// Fits a 2-parameter Weibull distribution by maximum likelihood to lives with right
/// censoring and left truncation (delayed entry):
///
/// `LL(η, β) = Σ_fail [ln β − ln η + (β − 1) ln(tᵢ/η)] − Σ_all (tⱼ/η)^β + Σ_all (eⱼ/η)^β`,
///
/// the likelihood of each life conditional on its survival to its entry age (the function
/// lifelines' `WeibullFitter().fit(T, E, entry=…)` maximises). When every entry is 0 this
/// is [`fit`] exactly (same solver). Otherwise the profile likelihood
/// `LLp(β) = r ln β + (β − 1) Σ ln tᵢ − r ln(S(β)/r) − r`, `S(β) = Σ (t^β − e^β)`, with
/// `η̂(β)^β = S(β)/r`, is maximised in `ln β` (it is not provably unimodal): bracketed by
/// expanding steps, narrowed by golden-section search, then solved by Newton steps on its
/// score that fall back to bisection whenever a step leaves the bracket.
///
/// Errors: fewer than 2 failures; a non-finite or non-positive exit, a negative entry or
/// `entry ≥ exit`; an unbounded shape; no convergence.
pub fn fit_lives(lives: &[Life]) -> Result<WeibullFit, AnalyticsError> {
    check_lives(lives)?;
    if lives.iter().all(|l| l.entry == 0.0) {
        let failures: Vec<f64> = lives.iter().filter(|l| l.failed).map(|l| l.exit).collect();
        let suspensions: Vec<f64> = lives.iter().filter(|l| !l.failed).map(|l| l.exit).collect();
        return fit(&failures, &suspensions);
    }
    fit_truncated(lives)
}

fn check_lives(lives: &[Life]) -> Result<(), AnalyticsError> {
    let failures = lives.iter().filter(|l| l.failed).count();
    if failures < 2 {
        return Err(AnalyticsError::TooFewFailures {
            got: failures,
            needed: 2,
        });
    }
    for l in lives {
        if !(l.exit.is_finite() && l.exit > 0.0) {
            return Err(AnalyticsError::InvalidInput(format!(
                "life exit ages must be finite and positive, got {}",
                l.exit
            )));
        }
        if !(l.entry.is_finite() && l.entry >= 0.0 && l.entry < l.exit) {
            return Err(AnalyticsError::InvalidInput(format!(
                "life entry ages must be finite, ≥ 0 and below the exit age, got entry {} for exit {}",
                l.entry, l.exit
            )));
        }
    }
    Ok(())
}

/// Log times of one set of lives, and the sums the truncated profile needs.
struct Truncated {
    /// `ln t` of the failures.
    ln_f: Vec<f64>,
    /// `(ln exit, ln entry)` of every life; `ln entry = −∞` for entry 0.
    ln_te: Vec<(f64, f64)>,
    /// `max ln exit`: the centre of the log-space sums.
    max_ln: f64,
}

/// `S(β) = Σ (t^β − e^β)` in log space with its first two log-derivatives:
/// `(ln S, S'/S, S''/S)`, derivatives in β.
fn truncated_sums(d: &Truncated, beta: f64) -> (f64, f64, f64) {
    let m = beta * d.max_ln;
    let (mut s0, mut s1, mut s2) = (0.0, 0.0, 0.0);
    for &(lt, le) in &d.ln_te {
        let dt = lt - d.max_ln;
        let wt = (beta * lt - m).exp();
        // t^β − e^β = t^β (1 − (e/t)^β), without cancellation when e is close to t
        let diff = wt * -(beta * (le - lt)).exp_m1();
        s0 += diff;
        s1 += wt * dt;
        s2 += wt * dt * dt;
        if le.is_finite() {
            let de = le - d.max_ln;
            let we = (beta * le - m).exp();
            s1 -= we * de;
            s2 -= we * de * de;
        }
    }
    // moments of the centred log (ln t − max): shift back to ln t
    let c = d.max_ln;
    let m1 = s1 / s0;
    let m2 = s2 / s0;
    (m + s0.ln(), c + m1, m2 + 2.0 * c * m1 + c * c)
}

fn fit_truncated(lives: &[Life]) -> Result<WeibullFit, AnalyticsError> {
    let ln_f: Vec<f64> = lives
        .iter()
        .filter(|l| l.failed)
        .map(|l| l.exit.ln())
        .collect();
    let ln_te: Vec<(f64, f64)> = lives
        .iter()
        .map(|l| {
            let le = if l.entry > 0.0 {
                l.entry.ln()
            } else {
                f64::NEG_INFINITY
            };
            (l.exit.ln(), le)
        })
        .collect();
    let max_ln = ln_te.iter().map(|p| p.0).fold(f64::NEG_INFINITY, f64::max);
    let d = Truncated {
        ln_f,
        ln_te,
        max_ln,
    };
    let r = d.ln_f.len() as f64;
    let sum_lf: f64 = d.ln_f.iter().sum();
    // profile log-likelihood as a function of x = ln β
    let profile = |x: f64| -> f64 {
        let beta = x.exp();
        let (ln_s, _, _) = truncated_sums(&d, beta);
        r * x + (beta - 1.0) * sum_lf - r * (ln_s - r.ln()) - r
    };

    // bracket a maximum: expand from β = 1 until the profile falls on both sides
    let (lo_x, hi_x) = (MIN_BETA.ln(), MAX_BETA.ln());
    let mut step = 0.5;
    let (mut a, mut b, mut c) = (-step, 0.0, step);
    let (mut fa, mut fb, mut fc) = (profile(a), profile(b), profile(c));
    let mut bracketed = false;
    for _ in 0..200 {
        if !(fa.is_finite() && fb.is_finite() && fc.is_finite()) {
            break;
        }
        if fb >= fa && fb >= fc {
            bracketed = true;
            break;
        }
        step *= 1.6;
        if fa > fc {
            (c, fc) = (b, fb);
            (b, fb) = (a, fa);
            a = b - step;
            fa = profile(a);
        } else {
            (a, fa) = (b, fb);
            (b, fb) = (c, fc);
            c = b + step;
            fc = profile(c);
        }
        if a < lo_x || c > hi_x {
            break;
        }
    }
    if !bracketed {
        return Err(AnalyticsError::NoConvergence(format!(
            "no maximum of the profile likelihood for β in [{MIN_BETA}, {MAX_BETA}]: the failure times are (nearly) all equal or the data are degenerate"
        )));
    }

    // golden-section search in ln β, to a bracket narrow enough for Newton: comparing
    // profile values cannot locate the maximum closer than about √ε, the score can
    let inv_phi = (5f64.sqrt() - 1.0) / 2.0;
    let mut iterations = 0;
    let (mut x1, mut x2) = (c - inv_phi * (c - a), a + inv_phi * (c - a));
    let (mut f1, mut f2) = (profile(x1), profile(x2));
    while (c - a) > 1e-3 && iterations < MAX_ITERATIONS {
        iterations += 1;
        if f1 >= f2 {
            c = x2;
            (x2, f2) = (x1, f1);
            x1 = c - inv_phi * (c - a);
            f1 = profile(x1);
        } else {
            a = x1;
            (x1, f1) = (x2, f2);
            x2 = a + inv_phi * (c - a);
            f2 = profile(x2);
        }
    }
    // Newton on the profile score g(β) = r/β + Σ ln tᵢ − r S'/S inside the bracket, with
    // bisection in ln β whenever a step leaves it
    let score = |beta: f64| {
        let (_, m1, m2) = truncated_sums(&d, beta);
        let g = r / beta + sum_lf - r * m1;
        let dg = -r / (beta * beta) - r * (m2 - m1 * m1);
        (g, dg)
    };
    let (mut lo, mut hi) = (a.exp(), c.exp());
    if !(score(lo).0 > 0.0 && score(hi).0 < 0.0) {
        return Err(AnalyticsError::NoConvergence(format!(
            "the profile score does not change sign around β ≈ {}",
            ((a + c) / 2.0).exp()
        )));
    }
    let mut beta = ((a + c) / 2.0).exp();
    let mut converged = false;
    while iterations < 2 * MAX_ITERATIONS {
        iterations += 1;
        let (g, dg) = score(beta);
        if g == 0.0 {
            converged = true;
            break;
        }
        if g > 0.0 {
            lo = lo.max(beta);
        } else {
            hi = hi.min(beta);
        }
        let newton = beta - g / dg;
        let next = if newton.is_finite() && newton > lo && newton < hi {
            newton
        } else {
            (lo * hi).sqrt()
        };
        let moved = (next - beta).abs();
        beta = next;
        if moved <= TOLERANCE * beta || (hi - lo) <= TOLERANCE * beta {
            converged = true;
            break;
        }
    }
    if !converged {
        return Err(AnalyticsError::NoConvergence(format!(
            "no convergence after {iterations} iterations (β ≈ {beta})"
        )));
    }

    let (ln_s, _, _) = truncated_sums(&d, beta);
    let eta = ((ln_s - r.ln()) / beta).exp();
    if !(eta.is_finite() && eta > 0.0 && beta.is_finite()) {
        return Err(AnalyticsError::NoConvergence(format!(
            "non-finite estimate (β = {beta}, η = {eta})"
        )));
    }
    let ln_entries: Vec<f64> = d
        .ln_te
        .iter()
        .map(|p| p.1)
        .filter(|l| l.is_finite())
        .collect();
    let ln_all: Vec<f64> = d.ln_te.iter().map(|p| p.0).collect();
    let (ll, hessian) =
        log_likelihood_and_hessian_truncated(&d.ln_f, &ln_all, &ln_entries, eta, beta);
    Ok(WeibullFit {
        beta,
        eta,
        log_likelihood: ll,
        n_failures: d.ln_f.len(),
        n_suspensions: lives.len() - d.ln_f.len(),
        covariance: invert_positive_definite(hessian),
        iterations,
    })
}

/// `LL(η, β)` and the Hessian of `−LL` with delayed entries: every `Σ_all z^β lzᵏ` of the
/// untruncated formulas becomes `Σ_all z^β lzᵏ − Σ_entries ze^β lzeᵏ`.
fn log_likelihood_and_hessian_truncated(
    ln_f: &[f64],
    ln_all: &[f64],
    ln_entries: &[f64],
    eta: f64,
    beta: f64,
) -> (f64, [[f64; 2]; 2]) {
    let r = ln_f.len() as f64;
    let ln_eta = eta.ln();
    let sums = |ls: &[f64]| {
        let (mut s0, mut s1, mut s2) = (0.0, 0.0, 0.0);
        for &l in ls {
            let lz = l - ln_eta;
            let zb = (beta * lz).exp();
            s0 += zb;
            s1 += zb * lz;
            s2 += zb * lz * lz;
        }
        (s0, s1, s2)
    };
    let (t0, t1, t2) = sums(ln_all);
    let (e0, e1, e2) = sums(ln_entries);
    let (s0, s1, s2) = (t0 - e0, t1 - e1, t2 - e2);
    let sum_lz_f: f64 = ln_f.iter().map(|l| l - ln_eta).sum();
    let ll = r * beta.ln() - r * ln_eta + (beta - 1.0) * sum_lz_f - s0;
    let d_ee = (r * beta - beta * (beta + 1.0) * s0) / (eta * eta);
    let d_bb = -r / (beta * beta) - s2;
    let d_eb = (s0 + beta * s1 - r) / eta;
    (ll, [[-d_ee, -d_eb], [-d_eb, -d_bb]])
}

/// `LL(η, β)` and the Hessian of `−LL` in (η, β), from the log times.
fn log_likelihood_and_hessian(
    ln_f: &[f64],
    ln_all: &[f64],
    eta: f64,
    beta: f64,
) -> (f64, [[f64; 2]; 2]) {
    let r = ln_f.len() as f64;
    let ln_eta = eta.ln();
    let (mut s0, mut s1, mut s2) = (0.0, 0.0, 0.0);
    for &l in ln_all {
        let lz = l - ln_eta;
        let zb = (beta * lz).exp();
        s0 += zb;
        s1 += zb * lz;
        s2 += zb * lz * lz;
    }
    let sum_lz_f: f64 = ln_f.iter().map(|l| l - ln_eta).sum();
    let ll = r * beta.ln() - r * ln_eta + (beta - 1.0) * sum_lz_f - s0;
    // second derivatives of LL
    let d_ee = (r * beta - beta * (beta + 1.0) * s0) / (eta * eta);
    let d_bb = -r / (beta * beta) - s2;
    let d_eb = (s0 + beta * s1 - r) / eta;
    (ll, [[-d_ee, -d_eb], [-d_eb, -d_bb]])
}

fn invert_positive_definite(h: [[f64; 2]; 2]) -> Option<[[f64; 2]; 2]> {
    let det = h[0][0] * h[1][1] - h[0][1] * h[1][0];
    if !(det.is_finite() && det > 0.0 && h[0][0] > 0.0) {
        return None;
    }
    let inv = [
        [h[1][1] / det, -h[0][1] / det],
        [-h[1][0] / det, h[0][0] / det],
    ];
    inv.iter().flatten().all(|x| x.is_finite()).then_some(inv)
}

fn finite(x: f64) -> Option<f64> {
    x.is_finite().then_some(x)
}

impl WeibullFit {
    /// Standard error of η.
    pub fn eta_se(&self) -> Option<f64> {
        self.covariance.map(|c| c[0][0].abs().sqrt())
    }

    /// Standard error of β.
    pub fn beta_se(&self) -> Option<f64> {
        self.covariance.map(|c| c[1][1].abs().sqrt())
    }

    /// Covariance of η and β.
    pub fn cov_eta_beta(&self) -> Option<f64> {
        self.covariance.map(|c| c[0][1])
    }

    /// Bounds on η: `η · exp(±Z · SE(η) / η)`.
    pub fn eta_bounds(&self, z: f64, sides: Sides) -> Bounds {
        log_bounds(self.eta, self.eta_se(), z, sides)
    }

    /// Bounds on β: `β · exp(±Z · SE(β) / β)`.
    pub fn beta_bounds(&self, z: f64, sides: Sides) -> Bounds {
        log_bounds(self.beta, self.beta_se(), z, sides)
    }

    /// Reliability `R(t) = exp(−(t/η)^β)`; 1 for `t ≤ 0`.
    pub fn reliability(&self, t: f64) -> f64 {
        if t <= 0.0 {
            return 1.0;
        }
        (-(t / self.eta).powf(self.beta)).exp()
    }

    /// Probability that a unit that survived to `age` fails within the next `dt` hours:
    /// `1 − R(age + dt) / R(age)`, computed as `−expm1(H(age) − H(age + dt))` with
    /// `H(t) = (t/η)^β`, which stays accurate when the probability is tiny.
    pub fn conditional_failure(&self, age: f64, dt: f64) -> f64 {
        let h = |t: f64| {
            if t <= 0.0 {
                0.0
            } else {
                (t / self.eta).powf(self.beta)
            }
        };
        let p = -(h(age) - h(age + dt)).exp_m1();
        p.clamp(0.0, 1.0)
    }

    /// Remaining life of a unit that survived to `age`: the `x` by which a fraction `q`
    /// of such units has failed, `R(age + x) / R(age) = 1 − q`, so
    /// `x = η ((age/η)^β − ln(1 − q))^(1/β) − age`. `None` for `q` outside (0, 1) or a
    /// negative or non-finite age.
    pub fn residual_quantile(&self, age: f64, q: f64) -> Option<f64> {
        if !(q > 0.0 && q < 1.0 && age.is_finite() && age >= 0.0) {
            return None;
        }
        let h = (age / self.eta).powf(self.beta) - (-q).ln_1p();
        let x = self.eta * h.powf(1.0 / self.beta) - age;
        (x.is_finite()).then_some(x.max(0.0))
    }

    /// The B-life: the age by which a fraction `p` of units has failed,
    /// `η (−ln(1 − p))^(1/β)`.
    pub fn b_life(&self, p: f64) -> f64 {
        self.eta * (-(1.0 - p).ln()).powf(1.0 / self.beta)
    }

    /// Bounds on the B-life at fraction `p`, on `v = ln t` as `reliability` computes its
    /// bounds on time (`CI_type="time"`).
    pub fn b_life_bounds(&self, p: f64, z: f64, sides: Sides) -> Bounds {
        let Some(c) = self.covariance else {
            return Bounds::default();
        };
        let y = (-(1.0 - p).ln()).ln(); // ln(−ln R)
        let v = self.eta.ln() + y / self.beta;
        let dv_de = 1.0 / self.eta;
        let dv_db = -y / (self.beta * self.beta);
        let var = dv_de * dv_de * c[0][0] + dv_db * dv_db * c[1][1] + 2.0 * dv_de * dv_db * c[0][1];
        let sd = var.max(0.0).sqrt();
        Bounds {
            lower: if sides.lower() {
                finite((v - z * sd).exp())
            } else {
                None
            },
            upper: if sides.upper() {
                finite((v + z * sd).exp())
            } else {
                None
            },
        }
    }

    /// Bounds on `R(t)`, on `u = β (ln t − ln η)` as `reliability` computes its bounds on
    /// reliability (`CI_type="reliability"`). `None` for `t ≤ 0`.
    pub fn reliability_bounds(&self, t: f64, z: f64, sides: Sides) -> Bounds {
        let Some(c) = self.covariance else {
            return Bounds::default();
        };
        if t <= 0.0 {
            return Bounds::default();
        }
        let u = self.beta * (t.ln() - self.eta.ln());
        let du_de = -self.beta / self.eta;
        let du_db = t.ln() - self.eta.ln();
        let var = du_de * du_de * c[0][0] + du_db * du_db * c[1][1] + 2.0 * du_de * du_db * c[0][1];
        let sd = var.max(0.0).sqrt();
        Bounds {
            lower: if sides.lower() {
                finite((-(u + z * sd).exp()).exp())
            } else {
                None
            },
            upper: if sides.upper() {
                finite((-(u - z * sd).exp()).exp())
            } else {
                None
            },
        }
    }

    /// Akaike information criterion `2k − 2 LL` with k = 2.
    pub fn aic(&self) -> f64 {
        4.0 - 2.0 * self.log_likelihood
    }

    /// Bayesian information criterion `k ln n − 2 LL` with k = 2, n = failures +
    /// suspensions (as `reliability` counts n).
    pub fn bic(&self) -> f64 {
        2.0 * ((self.n_failures + self.n_suspensions) as f64).ln() - 2.0 * self.log_likelihood
    }
}

fn log_bounds(x: f64, se: Option<f64>, z: f64, sides: Sides) -> Bounds {
    let Some(se) = se else {
        return Bounds::default();
    };
    Bounds {
        lower: if sides.lower() {
            finite(x * (-z * se / x).exp())
        } else {
            None
        },
        upper: if sides.upper() {
            finite(x * (z * se / x).exp())
        } else {
            None
        },
    }
}

#[cfg(test)]
mod tests {

    #[test]
    fn residual_quantiles_by_hand() {
        let f = WeibullFit {
            beta: 2.0,
            eta: 1000.0,
            log_likelihood: 0.0,
            n_failures: 0,
            n_suspensions: 0,
            covariance: None,
            iterations: 0,
        };
        // ((500 + x)/1000)² = 0.25 + ln 2  →  x = 1000·√(0.25 + ln 2) − 500
        let want = 1000.0 * (0.25 + std::f64::consts::LN_2).sqrt() - 500.0;
        let x = f.residual_quantile(500.0, 0.5).expect("median");
        assert!((x - want).abs() < 1e-9, "{x} {want}");
        // consistent with the conditional failure probability
        assert!((f.conditional_failure(500.0, x) - 0.5).abs() < 1e-12);
        let (lo, hi) = (
            f.residual_quantile(500.0, 0.1).expect("q10"),
            f.residual_quantile(500.0, 0.9).expect("q90"),
        );
        assert!(lo < x && x < hi);
        assert!((f.conditional_failure(500.0, hi) - 0.9).abs() < 1e-12);
        // wear-out: an older part has less life left
        assert!(f.residual_quantile(1500.0, 0.5).expect("older") < x);
        // memoryless at β = 1: the median remaining life is η ln 2 at any age
        let e = WeibullFit { beta: 1.0, ..f };
        for age in [0.0, 300.0, 5000.0] {
            let m = e.residual_quantile(age, 0.5).expect("median");
            assert!(
                (m - 1000.0 * std::f64::consts::LN_2).abs() < 1e-6,
                "{age}: {m}"
            );
        }
        assert_eq!(f.residual_quantile(500.0, 1.0), None);
        assert_eq!(f.residual_quantile(-1.0, 0.5), None);
    }

    use super::*;

    use crate::refdata;

    fn lives_of(failures: &[f64], suspensions: &[f64], entry: impl Fn(f64) -> f64) -> Vec<Life> {
        failures
            .iter()
            .map(|&t| (t, true))
            .chain(suspensions.iter().map(|&t| (t, false)))
            .map(|(exit, failed)| Life {
                entry: entry(exit),
                exit,
                failed,
            })
            .collect()
    }

    #[test]
    fn the_truncated_solver_with_no_entries_finds_the_untruncated_fit() {
        let (f, s) = (
            refdata::HEAVILY_CENSORED_FAILURES,
            refdata::HEAVILY_CENSORED_SUSPENSIONS,
        );
        let plain = fit(f, s).expect("fit");
        let general = fit_truncated(&lives_of(f, s, |_| 0.0)).expect("truncated fit");
        let rel = |a: f64, b: f64| (a - b).abs() / b.abs();
        assert!(
            rel(general.beta, plain.beta) < 1e-9,
            "{general:?} vs {plain:?}"
        );
        assert!(
            rel(general.eta, plain.eta) < 1e-9,
            "{general:?} vs {plain:?}"
        );
        assert!(rel(general.log_likelihood, plain.log_likelihood) < 1e-12);
        let (cg, cp) = (
            general.covariance.expect("cov"),
            plain.covariance.expect("cov"),
        );
        for (a, b) in cg.iter().flatten().zip(cp.iter().flatten()) {
            assert!(rel(*a, *b) < 1e-6, "{cg:?} vs {cp:?}");
        }
    }

    #[test]
    fn gradient_vanishes_at_the_truncated_mle() {
        let lives = lives_of(
            &[120.0, 340.0, 560.0, 800.0, 1100.0, 1300.0],
            &[900.0, 1500.0, 1500.0],
            |t| if t > 500.0 { t / 3.0 } else { 0.0 },
        );
        let w = fit_lives(&lives).expect("fit");
        let ln_f: Vec<f64> = lives
            .iter()
            .filter(|l| l.failed)
            .map(|l| l.exit.ln())
            .collect();
        let ln_all: Vec<f64> = lives.iter().map(|l| l.exit.ln()).collect();
        let ln_e: Vec<f64> = lives
            .iter()
            .filter(|l| l.entry > 0.0)
            .map(|l| l.entry.ln())
            .collect();
        let ll = |eta: f64, beta: f64| {
            log_likelihood_and_hessian_truncated(&ln_f, &ln_all, &ln_e, eta, beta).0
        };
        let (he, hb) = (w.eta * 1e-6, w.beta * 1e-6);
        let de = (ll(w.eta + he, w.beta) - ll(w.eta - he, w.beta)) / (2.0 * he);
        let db = (ll(w.eta, w.beta + hb) - ll(w.eta, w.beta - hb)) / (2.0 * hb);
        assert!(de.abs() * w.eta < 1e-5, "dLL/dη = {de}");
        assert!(db.abs() * w.beta < 1e-5, "dLL/dβ = {db}");
        // the analytic Hessian matches finite differences of the gradient
        let h = log_likelihood_and_hessian_truncated(&ln_f, &ln_all, &ln_e, w.eta, w.beta).1;
        let d2b =
            (ll(w.eta, w.beta + hb) - 2.0 * ll(w.eta, w.beta) + ll(w.eta, w.beta - hb)) / (hb * hb);
        assert!((-d2b - h[1][1]).abs() / h[1][1] < 1e-3, "{d2b} vs {h:?}");
    }

    #[test]
    fn an_entry_at_or_after_the_exit_is_refused() {
        let mut lives = lives_of(&[100.0, 200.0, 300.0], &[], |_| 0.0);
        lives[1].entry = 200.0;
        assert!(matches!(
            fit_lives(&lives),
            Err(AnalyticsError::InvalidInput(_))
        ));
    }

    #[test]
    fn gradient_vanishes_at_the_mle() {
        let f = [120.0, 340.0, 560.0, 800.0, 1100.0];
        let s = [900.0, 1500.0, 1500.0];
        let w = fit(&f, &s).expect("fit");
        let ll = |eta: f64, beta: f64| {
            let ln_f: Vec<f64> = f.iter().map(|t: &f64| t.ln()).collect();
            let ln_all: Vec<f64> = f.iter().chain(&s).map(|t| t.ln()).collect();
            log_likelihood_and_hessian(&ln_f, &ln_all, eta, beta).0
        };
        let (he, hb) = (w.eta * 1e-6, w.beta * 1e-6);
        let de = (ll(w.eta + he, w.beta) - ll(w.eta - he, w.beta)) / (2.0 * he);
        let db = (ll(w.eta, w.beta + hb) - ll(w.eta, w.beta - hb)) / (2.0 * hb);
        assert!(de.abs() * w.eta < 1e-5, "dLL/dη = {de}");
        assert!(db.abs() * w.beta < 1e-5, "dLL/dβ = {db}");
    }
}
