//! Weibull with right censoring and left truncation (delayed entry) against lifelines
//! 0.30.3 `WeibullFitter().fit(T, E, entry=…)` on RENEWAL_TRUNCATED: component lives of a
//! simulated fleet with renewals, preventive replacements, competing failure modes and a
//! one-year observation window, computed by `analytics/reference/make_reference.py` from
//! its own ground truth. No Python is needed to run these tests.

mod refdata;

use fleetpulse_analytics::weibull::{Life, fit, fit_lives};
use refdata::*;

/// Relative tolerance on η, β and the log-likelihood (lifelines converges to ~1e-8).
const REL: f64 = 1e-6;
/// Relative tolerance on the standard errors (lifelines differentiates numerically).
const REL_SE: f64 = 1e-3;

#[track_caller]
fn close(what: &str, got: f64, want: f64, rel: f64) {
    let err = (got - want).abs() / want.abs();
    eprintln!("{what}: relative error {err:.1e}");
    assert!(
        err <= rel,
        "{what}: got {got}, lifelines {want} (relative error {err:.2e} > {rel:.0e})"
    );
}

/// The lives of `component`; with `mode`, only that mode's failures count as failures
/// (a failure of a competing mode is a suspension of this one).
fn lives(component: &str, mode: Option<&str>) -> Vec<Life> {
    RENEWAL_LIVES
        .iter()
        .filter(|l| l.1 == component)
        .map(|&(_, _, entry, exit, failed_by)| Life {
            entry,
            exit,
            failed: failed_by.is_some() && (mode.is_none() || failed_by == mode),
        })
        .collect()
}

#[track_caller]
fn check(name: &str, lives: &[Life], want: &TruncatedRef) {
    let w = fit_lives(lives).unwrap_or_else(|e| panic!("{name}: {e}"));
    assert_eq!(lives.len(), want.lives, "{name}: lives");
    assert_eq!(w.n_failures, want.failures, "{name}: failures");
    assert_eq!(
        lives.iter().filter(|l| l.entry > 0.0).count(),
        want.late,
        "{name}: late entries"
    );
    close(&format!("{name} eta"), w.eta, want.eta, REL);
    close(&format!("{name} beta"), w.beta, want.beta, REL);
    close(
        &format!("{name} log-likelihood"),
        w.log_likelihood,
        want.loglik,
        REL,
    );
    close(
        &format!("{name} SE eta"),
        w.eta_se().expect("se"),
        want.eta_se,
        REL_SE,
    );
    close(
        &format!("{name} SE beta"),
        w.beta_se().expect("se"),
        want.beta_se,
        REL_SE,
    );
}

#[test]
fn per_component_fits_with_delayed_entry_match_lifelines() {
    check("comp1", &lives("comp1", None), &RENEWAL_COMP1);
    check("comp2", &lives("comp2", None), &RENEWAL_COMP2);
}

#[test]
fn per_mode_fits_with_competing_modes_match_lifelines() {
    check(
        "comp1_wear",
        &lives("comp1", Some("comp1_wear")),
        &RENEWAL_COMP1_WEAR,
    );
    check(
        "comp2_wear",
        &lives("comp2", Some("comp2_wear")),
        &RENEWAL_COMP2_WEAR,
    );
    check(
        "comp2_seal",
        &lives("comp2", Some("comp2_seal")),
        &RENEWAL_COMP2_SEAL,
    );
}

#[test]
fn ignoring_the_entry_gives_the_biased_fit_and_a_different_beta() {
    for (component, with_entry, without) in [
        ("comp1", &RENEWAL_COMP1, &RENEWAL_COMP1_NO_ENTRY),
        ("comp2", &RENEWAL_COMP2, &RENEWAL_COMP2_NO_ENTRY),
    ] {
        let truncated = lives(component, None);
        let ignored: Vec<Life> = truncated
            .iter()
            .map(|l| Life { entry: 0.0, ..*l })
            .collect();
        // the fit that drops the entries is lifelines' fit without entry=, not ours
        check(&format!("{component} without entry"), &ignored, without);
        let right = fit_lives(&truncated).expect("fit with entry");
        let biased = fit_lives(&ignored).expect("fit without entry");
        close(
            &format!("{component} beta"),
            right.beta,
            with_entry.beta,
            REL,
        );
        // the bias is visible: β differs by far more than the fit tolerance, η by > 5 %
        assert!(
            (biased.beta - right.beta).abs() / right.beta > 5e-3,
            "{component}: β {} with entry vs {} without",
            right.beta,
            biased.beta
        );
        assert!(
            (biased.eta - right.eta).abs() / right.eta > 0.05,
            "{component}: η {} with entry vs {} without",
            right.eta,
            biased.eta
        );
    }
}

#[test]
fn lives_all_entered_at_zero_fit_exactly_as_failures_and_suspensions() {
    let lives: Vec<Life> = HEAVILY_CENSORED_FAILURES
        .iter()
        .map(|&exit| (exit, true))
        .chain(
            HEAVILY_CENSORED_SUSPENSIONS
                .iter()
                .map(|&exit| (exit, false)),
        )
        .map(|(exit, failed)| Life {
            entry: 0.0,
            exit,
            failed,
        })
        .collect();
    let from_lives = fit_lives(&lives).expect("fit_lives");
    let plain = fit(HEAVILY_CENSORED_FAILURES, HEAVILY_CENSORED_SUSPENSIONS).expect("fit");
    assert_eq!(from_lives, plain);
    close(
        "HEAVILY_CENSORED lifelines beta",
        from_lives.beta,
        HEAVILY_CENSORED_LIFELINES.beta,
        REL,
    );
}

#[test]
fn fd001_training_lives_match_lifelines() {
    let lives: Vec<Life> = FD001_TRAIN_CYCLES
        .iter()
        .map(|&exit| Life {
            entry: 0.0,
            exit,
            failed: true,
        })
        .collect();
    check("FD001 training", &lives, &FD001_TRAIN);
}
