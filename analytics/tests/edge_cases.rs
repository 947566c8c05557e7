//! The cases a quality engineer's data will hit sooner or later: no failures, one
//! failure, everything censored, invalid confidence, bad numbers.

use fleetpulse_analytics::AnalyticsError;
use fleetpulse_analytics::mtbf::{Sides, Termination, mtbf};
use fleetpulse_analytics::weibull::fit;

#[test]
fn zero_failures_give_a_lower_bound_only() {
    let e = mtbf(50_000.0, 0, 0.90, Sides::TwoSided, Termination::Time).expect("valid");
    assert_eq!(e.mtbf_hours, None);
    assert_eq!(e.mtbf_upper, None);
    // 2T / χ²(0.90; 2) = T / −ln(0.10)
    let want = 50_000.0 / -(0.10f64.ln());
    let got = e.mtbf_lower.expect("lower bound");
    assert!((got - want).abs() < 1e-9 * want, "{got} vs {want}");
    assert_eq!(e.rate_per_1000h, Some(0.0));
    assert!(e.method.contains("zero failures"), "{}", e.method);
}

#[test]
fn zero_hours_leave_everything_undefined() {
    let e = mtbf(0.0, 3, 0.90, Sides::TwoSided, Termination::Time).expect("valid");
    assert!(e.mtbf_hours.is_none() && e.mtbf_lower.is_none() && e.rate_per_1000h.is_none());
}

#[test]
fn invalid_confidence_is_rejected() {
    for c in [0.0, 1.0, -0.1, 1.5, f64::NAN, f64::INFINITY] {
        let err = mtbf(1000.0, 2, c, Sides::TwoSided, Termination::Time).expect_err("invalid");
        assert!(
            matches!(err, AnalyticsError::InvalidConfidence(_)),
            "{c}: {err}"
        );
    }
}

#[test]
fn negative_or_nan_hours_are_rejected() {
    for h in [-1.0, f64::NAN, f64::INFINITY] {
        let err = mtbf(h, 2, 0.9, Sides::TwoSided, Termination::Time).expect_err("invalid");
        assert!(matches!(err, AnalyticsError::InvalidInput(_)), "{h}: {err}");
    }
}

#[test]
fn method_names_the_computation() {
    let e = mtbf(1000.0, 4, 0.90, Sides::TwoSided, Termination::Failure).expect("valid");
    assert_eq!(e.method, "chi-square, failure-terminated, two-sided 90 %");
    let e = mtbf(1000.0, 4, 0.95, Sides::Lower, Termination::Time).expect("valid");
    assert_eq!(
        e.method,
        "chi-square, time-terminated, one-sided lower 95 %"
    );
    assert!(e.mtbf_upper.is_none() && e.rate_lower.is_none());
}

#[test]
fn weibull_needs_two_failures() {
    let err = fit(&[], &[100.0, 200.0]).expect_err("all censored");
    assert_eq!(err, AnalyticsError::TooFewFailures { got: 0, needed: 2 });
    let err = fit(&[150.0], &[100.0, 200.0]).expect_err("one failure");
    assert_eq!(err.to_string(), "too few failures (1; at least 2 needed)");
}

#[test]
fn weibull_rejects_equal_failure_times_without_a_longer_suspension() {
    let err = fit(&[500.0, 500.0, 500.0], &[200.0, 500.0]).expect_err("β unbounded");
    assert!(matches!(err, AnalyticsError::AllEqual(_)), "{err}");
    // a longer suspension bounds β
    let w = fit(&[500.0, 500.0, 500.0], &[800.0]).expect("finite β");
    assert!(w.beta.is_finite() && w.beta > 1.0 && w.eta.is_finite());
}

#[test]
fn weibull_rejects_non_positive_and_non_finite_times() {
    for bad in [0.0, -5.0, f64::NAN, f64::INFINITY] {
        let err = fit(&[100.0, 200.0, bad], &[]).expect_err("bad failure");
        assert!(
            matches!(err, AnalyticsError::InvalidInput(_)),
            "{bad}: {err}"
        );
        let err = fit(&[100.0, 200.0], &[bad]).expect_err("bad suspension");
        assert!(
            matches!(err, AnalyticsError::InvalidInput(_)),
            "{bad}: {err}"
        );
    }
}

#[test]
fn weibull_handles_extreme_scales() {
    // hours in the millions and in the thousandths: log-space sums do not overflow
    let big: Vec<f64> = [1.1, 1.3, 1.7, 2.2, 2.9].iter().map(|x| x * 1e7).collect();
    let w = fit(&big, &[3.5e7, 4e7]).expect("fit");
    assert!(w.eta > 1e7 && w.eta < 1e8 && w.covariance.is_some());
    let tiny: Vec<f64> = [1.1, 1.3, 1.7, 2.2, 2.9].iter().map(|x| x * 1e-3).collect();
    let w2 = fit(&tiny, &[]).expect("fit");
    assert!((w2.beta - fit(&big[..5], &[]).expect("fit").beta).abs() < 1e-9 * w2.beta);
    // nearly equal times: very large β, still finite
    let w3 = fit(&[1000.0, 1001.0, 1002.0], &[]).expect("fit");
    assert!(w3.beta > 1000.0 && w3.beta.is_finite());
}

#[test]
fn reliability_and_conditional_failure() {
    let w = fit(&[120.0, 340.0, 560.0, 800.0, 1100.0], &[900.0, 1500.0]).expect("fit");
    assert_eq!(w.reliability(0.0), 1.0);
    let (a, dt) = (500.0, 200.0);
    let want = 1.0 - w.reliability(a + dt) / w.reliability(a);
    assert!((w.conditional_failure(a, dt) - want).abs() < 1e-12);
    assert!((w.reliability(w.b_life(0.1)) - 0.9).abs() < 1e-12);
    assert!((w.reliability(w.b_life(0.5)) - 0.5).abs() < 1e-12);
    // a tiny probability stays accurate (no 1 − 0.999… cancellation)
    let p = w.conditional_failure(1.0, 1e-6);
    assert!(p > 0.0 && p < 1e-6);
}
