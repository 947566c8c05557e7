//! Validation metrics of a binary scorer: area under the precision-recall curve (average
//! precision), precision and recall at an operating threshold, a calibration table and the
//! Brier score.
//!
//! Definitions (the same as scikit-learn's `average_precision_score`,
//! `precision_score`, `recall_score`, `brier_score_loss`):
//! - **PR-AUC** = average precision `AP = Σₙ (Rₙ − Rₙ₋₁) Pₙ` over the distinct scores in
//!   descending order (tied scores form one step), `Pₙ`, `Rₙ` the precision and recall when
//!   every sample scoring ≥ the n-th score is called positive. 0 with no positive.
//! - **precision** = TP / (TP + FP) at `score ≥ threshold` (0 when nothing is called),
//!   **recall** = TP / (TP + FN) (0 with no positive).
//! - **Brier** = mean of `(p − y)²`; `None` when the scores are not probabilities.
//! - **calibration**: ten equal-width bins of the predicted probability `[0, 0.1)`, …,
//!   `[0.9, 1]`; each non-empty bin gives its mean prediction and observed positive rate.
//!
//! **Warnings** ([`warning_metrics`]) score the scorer the way the order policy uses it,
//! not per sample: per device in time order, a warning opens when the score reaches the
//! threshold and none is open; a failure of the mode confirms the open warning (a lead of
//! at least `min_lead` counts towards recall), or the warning expires after the horizon
//! (no fault found). A degrading device sampled every day is one warning, not ten
//! positives; a transient excursion that crosses the threshold is one false warning.

use chrono::{DateTime, Duration, Utc};
use fleetpulse_domain::prediction::{CalibrationBin, ValidationMetrics, WarningMetrics};

/// One step of the precision-recall curve: everything scoring ≥ one of the distinct
/// scores is called positive (tied scores form one step).
#[derive(Clone, Copy, Debug, PartialEq)]
struct PrStep {
    precision: f64,
    recall: f64,
}

/// The precision-recall curve over the distinct scores, highest first; empty without a
/// positive.
fn pr_curve(scores: &[f64], labels: &[bool]) -> Vec<PrStep> {
    let positives = labels.iter().filter(|&&y| y).count();
    if positives == 0 {
        return Vec::new();
    }
    let mut order: Vec<usize> = (0..scores.len()).collect();
    order.sort_by(|&a, &b| scores[b].total_cmp(&scores[a]));
    let (mut tp, mut fp) = (0usize, 0usize);
    let mut steps = Vec::new();
    let mut i = 0;
    while i < order.len() {
        let s = scores[order[i]];
        while i < order.len() && scores[order[i]] == s {
            if labels[order[i]] {
                tp += 1;
            } else {
                fp += 1;
            }
            i += 1;
        }
        steps.push(PrStep {
            precision: tp as f64 / (tp + fp) as f64,
            recall: tp as f64 / positives as f64,
        });
    }
    steps
}

/// Average precision (area under the precision-recall step curve); 0 without positives.
pub fn average_precision(scores: &[f64], labels: &[bool]) -> f64 {
    let mut ap = 0.0;
    let mut prev_recall = 0.0;
    for step in pr_curve(scores, labels) {
        ap += (step.recall - prev_recall) * step.precision;
        prev_recall = step.recall;
    }
    ap
}

/// Precision and recall when `score ≥ threshold` is called positive; precision `None`
/// when nothing is.
pub fn precision_recall_at(scores: &[f64], labels: &[bool], threshold: f64) -> (Option<f64>, f64) {
    let (mut tp, mut fp, mut fn_) = (0u64, 0u64, 0u64);
    for (&s, &y) in scores.iter().zip(labels) {
        match (s >= threshold, y) {
            (true, true) => tp += 1,
            (true, false) => fp += 1,
            (false, true) => fn_ += 1,
            (false, false) => {}
        }
    }
    let precision = (tp + fp > 0).then(|| tp as f64 / (tp + fp) as f64);
    let recall = if tp + fn_ == 0 {
        0.0
    } else {
        tp as f64 / (tp + fn_) as f64
    };
    (precision, recall)
}

/// Mean squared error of probabilities against the 0/1 labels; `None` without samples.
pub fn brier(probabilities: &[f64], labels: &[bool]) -> Option<f64> {
    if probabilities.is_empty() {
        return None;
    }
    let sum: f64 = probabilities
        .iter()
        .zip(labels)
        .map(|(&p, &y)| {
            let d = p - if y { 1.0 } else { 0.0 };
            d * d
        })
        .sum();
    Some(sum / probabilities.len() as f64)
}

/// Ten equal-width bins of predicted probability; empty bins are left out.
pub fn calibration(probabilities: &[f64], labels: &[bool]) -> Vec<CalibrationBin> {
    const BINS: usize = 10;
    let mut sum_p = [0.0; BINS];
    let mut pos = [0u64; BINS];
    let mut n = [0u64; BINS];
    for (&p, &y) in probabilities.iter().zip(labels) {
        let b = ((p.clamp(0.0, 1.0) * BINS as f64) as usize).min(BINS - 1);
        sum_p[b] += p;
        n[b] += 1;
        pos[b] += u64::from(y);
    }
    (0..BINS)
        .filter(|&b| n[b] > 0)
        .map(|b| CalibrationBin {
            predicted_low: b as f64 / BINS as f64,
            predicted_high: (b + 1) as f64 / BINS as f64,
            mean_predicted: sum_p[b] / n[b] as f64,
            observed_rate: pos[b] as f64 / n[b] as f64,
            count: n[b],
        })
        .collect()
}

/// One device's scores in time order and its failures of the mode in the same period.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ScoredSeries {
    pub times: Vec<DateTime<Utc>>,
    pub scores: Vec<f64>,
    /// Sorted.
    pub failures: Vec<DateTime<Utc>>,
}

/// Warnings replayed over `series` at `threshold` (see the module documentation).
pub fn warning_metrics(
    series: &[ScoredSeries],
    threshold: f64,
    horizon: Duration,
    min_lead: Duration,
) -> WarningMetrics {
    let mut m = WarningMetrics {
        min_lead_days: min_lead.num_seconds() as f64 / 86_400.0,
        ..WarningMetrics::default()
    };
    let mut leads = Vec::new();
    for s in series {
        let mut open: Option<DateTime<Utc>> = None;
        let mut next_failure = 0;
        let expire =
            |open: &mut Option<DateTime<Utc>>, now: DateTime<Utc>, m: &mut WarningMetrics| {
                if open.is_some_and(|w| now >= w + horizon) {
                    *open = None;
                    m.expired += 1;
                }
            };
        let mut fail =
            |open: &mut Option<DateTime<Utc>>, at: DateTime<Utc>, m: &mut WarningMetrics| {
                m.failures += 1;
                if let Some(w) = open.take() {
                    m.confirmed += 1;
                    let lead = at - w;
                    leads.push(lead.num_seconds() as f64 / 86_400.0);
                    if lead >= min_lead {
                        m.warned_ahead += 1;
                    }
                }
            };
        for (&t, &score) in s.times.iter().zip(&s.scores) {
            while next_failure < s.failures.len() && s.failures[next_failure] <= t {
                let at = s.failures[next_failure];
                expire(&mut open, at, &mut m);
                fail(&mut open, at, &mut m);
                next_failure += 1;
            }
            expire(&mut open, t, &mut m);
            if open.is_none() && score >= threshold {
                open = Some(t);
                m.warnings += 1;
            }
        }
        for &at in &s.failures[next_failure..] {
            expire(&mut open, at, &mut m);
            fail(&mut open, at, &mut m);
        }
    }
    let closed = m.confirmed + m.expired;
    m.precision = (closed > 0).then(|| m.confirmed as f64 / closed as f64);
    m.recall = if m.failures > 0 {
        m.warned_ahead as f64 / m.failures as f64
    } else {
        0.0
    };
    leads.sort_by(f64::total_cmp);
    m.median_lead_days = (!leads.is_empty()).then(|| leads[leads.len() / 2]);
    m
}

/// Thresholds tried by [`warning_curve`].
const WARNING_CANDIDATES: usize = 300;

/// The replayed warnings at candidate thresholds, highest threshold first: up to 300
/// scores spread over the highest 10 % (at least 2 000) of the scores. Empty without a
/// failure.
pub fn warning_curve(
    series: &[ScoredSeries],
    horizon: Duration,
    min_lead: Duration,
) -> Vec<(f64, WarningMetrics)> {
    if series.iter().all(|s| s.failures.is_empty()) {
        return Vec::new();
    }
    let mut all: Vec<f64> = series
        .iter()
        .flat_map(|s| s.scores.iter().copied())
        .filter(|x| x.is_finite())
        .collect();
    all.sort_by(|a, b| b.total_cmp(a));
    all.dedup();
    let top = all.len().min((all.len() / 10).max(2000));
    let step = (top / WARNING_CANDIDATES).max(1);
    all[..top]
        .iter()
        .step_by(step)
        .map(|&t| (t, warning_metrics(series, t, horizon, min_lead)))
        .collect()
}

/// The threshold whose replayed warnings reach `min_precision` with the highest recall
/// (above 0; the higher threshold on a tie); when none reaches it, the one with the best F1 of
/// warning precision and recall. Candidates: [`warning_curve`]. `None` without a failure.
pub fn choose_warning_threshold(
    series: &[ScoredSeries],
    min_precision: f64,
    horizon: Duration,
    min_lead: Duration,
) -> Option<f64> {
    curve_threshold(&warning_curve(series, horizon, min_lead), min_precision)
}

/// [`choose_warning_threshold`] on a curve already replayed.
pub fn curve_threshold(curve: &[(f64, WarningMetrics)], min_precision: f64) -> Option<f64> {
    let mut best: Option<(f64, f64)> = None; // (recall, threshold)
    let mut best_f1: Option<(f64, f64)> = None;
    for (t, m) in curve {
        // a candidate without a closed warning has no precision: it counts as 0 here
        let precision = m.precision.unwrap_or(0.0);
        if m.warned_ahead > 0
            && precision >= min_precision
            && best.is_none_or(|(r, _)| m.recall > r)
        {
            best = Some((m.recall, *t));
        }
        let f1 = if precision + m.recall > 0.0 {
            2.0 * precision * m.recall / (precision + m.recall)
        } else {
            0.0
        };
        if best_f1.is_none_or(|(f, _)| f1 > f) {
            best_f1 = Some((f1, *t));
        }
    }
    best.or(best_f1).map(|(_, t)| t)
}

/// Thresholds for several failure modes at once: the most failures warned at least
/// `min_lead` ahead over all modes together, with the precision of all their warnings
/// together at least `min_precision` and every mode's own at least `min_mode_precision`,
/// there and in `held_out` (the same candidates replayed on data the model was not
/// fitted on, one list per curve; a list shorter than its curve leaves the rest unchecked).
/// A mode whose warnings are cheap in wasted visits per failure caught gets a lower
/// threshold than one that wastes many; a per-mode target spends the same precision on
/// each. Returns an index into each curve, `None` for a mode with no candidate reaching
/// `min_mode_precision` with a failure warned ahead (it takes no part: its warnings would
/// be mostly wasted visits); `None` instead of the list when the modes together cannot
/// reach `min_precision` (the caller keeps its per-mode choices).
///
/// Method: Lagrangian relaxation. For a price `λ` of a warning below the precision
/// target, each mode takes its candidate maximising `warned_ahead − λ·(min_precision ·
/// closed − confirmed)` (the higher threshold on a tie); the total surplus `Σ confirmed −
/// min_precision · Σ closed` does not decrease with `λ`, and precision ≥ `min_precision`
/// is surplus ≥ 0, so the smallest `λ` with surplus ≥ 0 is found by bisection.
pub fn choose_fleet_thresholds(
    curves: &[&[(f64, WarningMetrics)]],
    held_out: &[&[WarningMetrics]],
    min_precision: f64,
    min_mode_precision: f64,
) -> Option<Vec<Option<usize>>> {
    // a candidate whose held-out warnings (when it has closed any) fall below the mode's
    // floor is out: a threshold that looks cheap on the window it was fitted on only
    let holds = |i: usize, k: usize| {
        held_out.get(i).and_then(|h| h.get(k)).is_none_or(|m| {
            m.confirmed + m.expired == 0 || m.precision.unwrap_or(0.0) >= min_mode_precision
        })
    };
    let eligible: Vec<Vec<usize>> = curves
        .iter()
        .enumerate()
        .map(|(i, c)| {
            (0..c.len())
                .filter(|&k| {
                    c[k].1.warned_ahead > 0
                        && c[k].1.precision.unwrap_or(0.0) >= min_mode_precision
                        && holds(i, k)
                })
                .collect()
        })
        .collect();
    let closed = |m: &WarningMetrics| (m.confirmed + m.expired) as f64;
    let surplus = |m: &WarningMetrics| m.confirmed as f64 - min_precision * closed(m);
    let pick = |lambda: f64| -> Vec<Option<usize>> {
        eligible
            .iter()
            .zip(curves)
            .map(|(ks, c)| {
                let mut best: Option<(f64, usize)> = None;
                for &k in ks {
                    let m = &c[k].1;
                    let v = m.warned_ahead as f64 + lambda * surplus(m);
                    // curves run from the highest threshold down: a tie keeps the higher
                    if best.is_none_or(|(b, _)| v > b + 1e-9) {
                        best = Some((v, k));
                    }
                }
                best.map(|(_, k)| k)
            })
            .collect()
    };
    let total = |choice: &[Option<usize>]| -> f64 {
        choice
            .iter()
            .zip(curves)
            .filter_map(|(k, c)| k.map(|k| surplus(&c[k].1)))
            .sum()
    };
    let first = pick(0.0);
    if total(&first) >= 0.0 {
        return Some(first);
    }
    let mut hi = 1.0;
    while total(&pick(hi)) < 0.0 {
        hi *= 4.0;
        if hi > 1e9 {
            return None;
        }
    }
    let mut lo = 0.0;
    for _ in 0..60 {
        let mid = 0.5 * (lo + hi);
        if total(&pick(mid)) >= 0.0 {
            hi = mid;
        } else {
            lo = mid;
        }
    }
    Some(pick(hi))
}

/// Every metric of a scorer on held-out samples. `probabilities`: whether the scores are
/// probabilities (Brier and calibration only then).
pub fn validation_metrics(
    scores: &[f64],
    labels: &[bool],
    threshold: f64,
    probabilities: bool,
) -> ValidationMetrics {
    let (precision, recall) = precision_recall_at(scores, labels, threshold);
    let positives = labels.iter().filter(|&&y| y).count() as u64;
    ValidationMetrics {
        pr_auc: average_precision(scores, labels),
        threshold,
        precision,
        recall,
        positives,
        negatives: labels.len() as u64 - positives,
        calibration: if probabilities {
            calibration(scores, labels)
        } else {
            Vec::new()
        },
        brier: if probabilities {
            brier(scores, labels)
        } else {
            None
        },
        warnings: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SCORES: [f64; 8] = [0.9, 0.8, 0.7, 0.6, 0.55, 0.4, 0.3, 0.1];
    const LABELS: [bool; 8] = [true, false, true, true, false, false, true, false];

    #[test]
    fn average_precision_by_hand() {
        // descending: + − + + − − + −; precision at each positive: 1/1, 2/3, 3/4, 4/7
        // AP = (1 + 2/3 + 3/4 + 4/7) / 4; scikit-learn 1.9.1
        // `average_precision_score([1,0,1,1,0,0,1,0], SCORES)` = 0.7470238095238095
        let ap = average_precision(&SCORES, &LABELS);
        assert!((ap - (1.0 + 2.0 / 3.0 + 0.75 + 4.0 / 7.0) / 4.0).abs() < 1e-12);
        assert!((ap - 0.7470238095238095).abs() < 1e-12);
    }

    #[test]
    fn ties_form_one_step() {
        // all tied: one step to recall 1 at precision 2/4
        let ap = average_precision(&[0.5; 4], &[true, false, true, false]);
        assert!((ap - 0.5).abs() < 1e-12);
        // tie of a positive and a negative at the top: step to recall 1/2 at 1/2,
        // then the positive alone: recall 1 at 2/3 → 0.25 + 1/3 (scikit-learn 1.9.1:
        // average_precision_score([1,0,1,0], [0.9,0.9,0.5,0.1]) = 0.5833333333333333)
        let ap = average_precision(&[0.9, 0.9, 0.5, 0.1], &[true, false, true, false]);
        assert!((ap - (0.25 + 1.0 / 3.0)).abs() < 1e-12, "{ap}");
        assert_eq!(average_precision(&[0.3, 0.2], &[false, false]), 0.0);
    }

    #[test]
    fn precision_recall_at_a_threshold_by_hand() {
        // ≥ 0.6: 0.9+ 0.8− 0.7+ 0.6+ → precision 3/4; recall 3 of 4 positives
        let (p, r) = precision_recall_at(&SCORES, &LABELS, 0.6);
        assert!((p.expect("calls") - 0.75).abs() < 1e-12 && (r - 0.75).abs() < 1e-12);
        let (p, r) = precision_recall_at(&SCORES, &LABELS, 0.95);
        // nothing called positive: no precision, not 0
        assert_eq!((p, r), (None, 0.0));
    }

    #[test]
    fn brier_and_calibration_by_hand() {
        // (0.9−1)² + (0.8−0)² + (0.7−1)² + (0.6−1)² + (0.55−0)² + (0.4−0)² + (0.3−1)² + (0.1−0)²
        // = 0.01 + 0.64 + 0.09 + 0.16 + 0.3025 + 0.16 + 0.49 + 0.01 = 1.8625; / 8
        // scikit-learn 1.9.1 brier_score_loss(LABELS, SCORES) = 0.23281250000000003
        let b = brier(&SCORES, &LABELS).expect("samples");
        assert!((b - 1.8625 / 8.0).abs() < 1e-12, "{b}");
        let bins = calibration(&SCORES, &LABELS);
        // bins: [0.1,0.2):0.1− ; [0.3,0.4):0.3+ ; [0.4,0.5):0.4− ; [0.5,0.6):0.55− ;
        // [0.6,0.7):0.6+ ; [0.7,0.8):0.7+ ; [0.8,0.9):0.8− ; [0.9,1]:0.9+
        assert_eq!(bins.len(), 8);
        assert_eq!(bins[0].count, 1);
        assert_eq!(bins[0].observed_rate, 0.0);
        assert!((bins[0].predicted_low - 0.1).abs() < 1e-12);
        let last = bins.last().expect("a bin");
        assert_eq!((last.count, last.observed_rate), (1, 1.0));
        let pooled = calibration(&[0.12, 0.18, 0.15], &[true, false, false]);
        assert_eq!(pooled.len(), 1);
        assert!((pooled[0].mean_predicted - 0.15).abs() < 1e-12);
        assert!((pooled[0].observed_rate - 1.0 / 3.0).abs() < 1e-12);
    }

    fn at(day: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_700_000_000 - 1_700_000_000 % 86_400 + day * 86_400, 0)
            .expect("a time")
    }

    /// Device A: scores rise from day 3 and it fails on day 10 (one warning, on day 4,
    /// confirmed 6 days ahead). Device B: a transient on days 2–3 and another on day 20
    /// (two warnings: the first expires on day 16 at a 14-day horizon, the second is still
    /// open at the end). Device C: fails on day 5 with a warning from day 4 (1 day ahead).
    fn three_devices() -> Vec<ScoredSeries> {
        let days = |n: i64| (0..n).map(at).collect::<Vec<_>>();
        let a = vec![0.1, 0.1, 0.1, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0, 1.1, 0.1, 0.1];
        let mut b = vec![0.1; 25];
        b[2] = 0.7;
        b[3] = 0.6;
        b[20] = 0.9;
        let mut c = vec![0.1; 8];
        c[4] = 0.8;
        vec![
            ScoredSeries {
                times: days(12),
                scores: a,
                failures: vec![at(10) + Duration::hours(5)],
            },
            ScoredSeries {
                times: days(25),
                scores: b,
                failures: Vec::new(),
            },
            ScoredSeries {
                times: days(8),
                scores: c,
                failures: vec![at(5)],
            },
        ]
    }

    #[test]
    fn warnings_replayed_by_hand() {
        let (h, lead) = (Duration::days(14), Duration::days(3));
        // at 0.6: A warns on day 4 → confirmed at day 10 + 5 h (6.2 days
        // ahead); B warns on day 2, expires on day 16, warns again on day 20 (open);
        // C warns on day 4, its failure on day 5 confirms it 1 day ahead (not ≥ 3).
        let m = warning_metrics(&three_devices(), 0.6, h, lead);
        assert_eq!(
            (
                m.warnings,
                m.confirmed,
                m.expired,
                m.failures,
                m.warned_ahead
            ),
            (4, 2, 1, 2, 1)
        );
        assert!((m.precision.expect("closed") - 2.0 / 3.0).abs() < 1e-12);
        assert!((m.recall - 0.5).abs() < 1e-12);
        assert_eq!(m.median_lead_days, Some(6.0 + 5.0 / 24.0));
        // at 0.95: A alone, on day 8, 2.2 days ahead: precise but too late
        let m = warning_metrics(&three_devices(), 0.95, h, lead);
        assert_eq!(
            (m.warnings, m.confirmed, m.expired, m.warned_ahead),
            (1, 1, 0, 0)
        );
        assert_eq!((m.precision, m.recall), (Some(1.0), 0.0));
        // a warning older than the horizon has expired before the failure it did not
        // announce
        let late = vec![ScoredSeries {
            times: vec![at(0), at(1)],
            scores: vec![0.9, 0.1],
            failures: vec![at(20)],
        }];
        let m = warning_metrics(&late, 0.5, h, lead);
        assert_eq!((m.confirmed, m.expired, m.failures), (0, 1, 1));
    }

    #[test]
    fn the_warning_threshold_is_the_highest_recall_at_the_precision_asked() {
        let (h, lead) = (Duration::days(14), Duration::days(3));
        // plus device D, 60 quiet days: at 0.1 everything warns and D alone expires four
        // times (precision 2/7). From 0.5 to 0.7: A confirmed ahead, C 1 day ahead, B's
        // first transient expired: 2/3, recall 1/2. At 0.8 and 0.9: B's expired warning
        // is gone (precision 1), A still ≥ 3 days ahead (recall 1/2). At 1.0 and 1.1 A
        // warns too late (recall 0). The highest threshold with recall 1/2 is 0.9.
        let mut series = three_devices();
        series.push(ScoredSeries {
            times: (0..60).map(at).collect(),
            scores: vec![0.1; 60],
            failures: Vec::new(),
        });
        let t = choose_warning_threshold(&series, 0.6, h, lead).expect("failures");
        assert!((t - 0.9).abs() < 1e-9, "{t}");
        let m = warning_metrics(&series, 0.1, h, lead);
        assert!(
            (m.precision.expect("closed") - 2.0 / 7.0).abs() < 1e-12,
            "{m:?}"
        );
        // B quiet for 60 days: its day-20 transient now expires, so no threshold with
        // recall > 0 reaches precision 0.9. The best F1 is taken: 0.8 (precision 2/3,
        // recall 1/2, F1 0.571) over 0.1 (1/3, 1: 0.5), 0.5 (1/2, 1/2) and 0.9 (1/2, 1/2).
        let mut series = three_devices();
        series[1].times = (0..60).map(at).collect();
        series[1].scores.resize(60, 0.1);
        let t = choose_warning_threshold(&series, 0.9, h, lead).expect("failures");
        assert!((t - 0.8).abs() < 1e-9, "{t}");
        let m = warning_metrics(&series, t, h, lead);
        assert!(
            m.precision.is_some_and(|p| (p - 2.0 / 3.0).abs() < 1e-12) && m.recall == 0.5,
            "{m:?}"
        );
        let none: Vec<ScoredSeries> = vec![ScoredSeries {
            times: vec![at(0)],
            scores: vec![0.5],
            failures: Vec::new(),
        }];
        assert_eq!(choose_warning_threshold(&none, 0.5, h, lead), None);
    }

    fn point(t: f64, confirmed: u64, expired: u64, warned_ahead: u64) -> (f64, WarningMetrics) {
        let m = WarningMetrics {
            warnings: confirmed + expired,
            confirmed,
            expired,
            failures: 40,
            warned_ahead,
            min_lead_days: 3.0,
            precision: (confirmed + expired > 0)
                .then(|| confirmed as f64 / (confirmed + expired) as f64),
            recall: warned_ahead as f64 / 40.0,
            median_lead_days: None,
        };
        (t, m)
    }

    #[test]
    fn fleet_thresholds_spend_the_precision_where_it_buys_the_most_failures() {
        // mode A: 10 ahead at 10/10, 19 at 20/25, 27 at 28/50 (precision 0.56);
        // mode B: 8 ahead at 10/12, 10 at 12/32 (0.375).
        let a = [
            point(0.9, 10, 0, 10),
            point(0.5, 20, 5, 19),
            point(0.2, 28, 22, 27),
        ];
        let b = [point(0.8, 10, 2, 8), point(0.3, 12, 20, 10)];
        // per mode at 0.6: A's 0.5 and B's 0.8, 27 failures ahead
        let per_mode = |c: &[(f64, WarningMetrics)]| curve_threshold(c, 0.6);
        assert_eq!((per_mode(&a), per_mode(&b)), (Some(0.5), Some(0.8)));
        // together at 0.6: A's 0.2 with B's 0.8 is 38/62 = 0.613 and 35 ahead; A's 0.2
        // with B's 0.3 (40/82) and A's 0.5 with B's 0.3 (32/57) fall below 0.6
        let fleet = choose_fleet_thresholds(&[&a, &b], &[], 0.6, 0.0);
        assert_eq!(fleet, Some(vec![Some(2), Some(0)]));
        // every mode at least 0.58 on its own: A's 0.56 is out
        let fleet = choose_fleet_thresholds(&[&a, &b], &[], 0.6, 0.58);
        assert_eq!(fleet, Some(vec![Some(1), Some(0)]));
        // B never reaches 0.85 on its own: it takes no part, A alone reaches 0.6
        let fleet = choose_fleet_thresholds(&[&a, &b], &[], 0.6, 0.85);
        assert_eq!(fleet, Some(vec![Some(0), None]));
        // nothing reaches 0.95 together (B never does): the per-mode choice stays
        let fleet = choose_fleet_thresholds(&[&a, &b], &[], 0.95, 0.0);
        assert_eq!(fleet, None);
        // with everything affordable the most failures are taken, the higher threshold
        // on a tie (A's 0.2 and B's 0.3 both add failures; none tie here)
        let fleet = choose_fleet_thresholds(&[&a, &b], &[], 0.3, 0.0);
        assert_eq!(fleet, Some(vec![Some(2), Some(1)]));
        // A's 0.2 held out at 3/12 (0.25), below a floor of 0.3: A falls back to 0.5;
        // a held-out candidate with nothing closed is not held against it
        let a_held = [
            point(0.9, 0, 0, 0).1,
            point(0.5, 6, 3, 5).1,
            point(0.2, 3, 9, 3).1,
        ];
        let fleet = choose_fleet_thresholds(&[&a, &b], &[&a_held, &[]], 0.6, 0.3);
        assert_eq!(fleet, Some(vec![Some(1), Some(0)]));
        let tie = [point(0.9, 5, 0, 5), point(0.4, 5, 9, 5)];
        assert_eq!(
            choose_fleet_thresholds(&[&tie], &[], 0.1, 0.0),
            Some(vec![Some(0)])
        );
    }
}
