//! Property tests: data drawn from a known Weibull (seeded ChaCha8, inverse-CDF sampling
//! `t = η (−ln U)^(1/β)`) is recovered within the fitted Fisher standard errors, the
//! errors shrink as the sample grows, and the 90 % bounds cover the truth about 90 % of
//! the time. Deterministic: fixed seeds.

use fleetpulse_analytics::mtbf::Sides;
use fleetpulse_analytics::weibull::{fit, z_value};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// Draws `n` lifetimes; with `censor_at = Some(c)`, each unit also gets a censoring time
/// uniform on (0, c) and is a suspension when that comes first.
fn sample(
    seed: u64,
    n: usize,
    beta: f64,
    eta: f64,
    censor_at: Option<f64>,
) -> (Vec<f64>, Vec<f64>) {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let (mut f, mut s) = (Vec::new(), Vec::new());
    for _ in 0..n {
        let u: f64 = 1.0 - rng.random::<f64>(); // (0, 1]
        let t = eta * (-u.ln()).powf(1.0 / beta);
        match censor_at {
            Some(c) => {
                let ct = c * (1.0 - rng.random::<f64>());
                if t <= ct { f.push(t) } else { s.push(ct) }
            }
            None => f.push(t),
        }
    }
    (f, s)
}

fn recovers(beta: f64, eta: f64, censor_at: Option<f64>) {
    let mut previous_se = f64::INFINITY;
    for (k, n) in [50usize, 500, 5000].into_iter().enumerate() {
        let mut se_sum = 0.0;
        for seed in 0..10u64 {
            let (f, s) = sample(1000 * k as u64 + seed, n, beta, eta, censor_at);
            let w = fit(&f, &s).unwrap_or_else(|e| panic!("n={n} seed={seed}: {e}"));
            let (sb, se) = (w.beta_se().expect("se"), w.eta_se().expect("se"));
            assert!(
                (w.beta - beta).abs() < 4.0 * sb,
                "n={n} seed={seed}: β̂={} vs β={beta}, SE {sb}",
                w.beta
            );
            assert!(
                (w.eta - eta).abs() < 4.0 * se,
                "n={n} seed={seed}: η̂={} vs η={eta}, SE {se}",
                w.eta
            );
            se_sum += sb / beta;
        }
        let mean_se = se_sum / 10.0;
        // SE ∝ 1/√n: ten times the data, about a third of the error
        assert!(
            mean_se < previous_se * 0.5,
            "n={n}: relative SE {mean_se} did not shrink"
        );
        previous_se = mean_se;
    }
}

#[test]
fn wear_out_without_censoring_is_recovered() {
    recovers(2.5, 1800.0, None);
}

#[test]
fn infant_mortality_without_censoring_is_recovered() {
    recovers(0.7, 40_000.0, None);
}

#[test]
fn wear_out_with_heavy_censoring_is_recovered() {
    recovers(3.0, 5000.0, Some(6000.0));
}

#[test]
fn exponential_with_censoring_is_recovered() {
    recovers(1.0, 10_000.0, Some(15_000.0));
}

#[test]
fn ninety_percent_bounds_cover_the_truth_about_ninety_percent_of_the_time() {
    let (beta, eta) = (1.8, 2500.0);
    let z = z_value(0.90, Sides::TwoSided).expect("valid");
    let runs = 400;
    let (mut cover_b, mut cover_e) = (0, 0);
    for seed in 0..runs {
        let (f, s) = sample(50_000 + seed, 300, beta, eta, Some(4000.0));
        let w = fit(&f, &s).expect("fit");
        let bb = w.beta_bounds(z, Sides::TwoSided);
        let eb = w.eta_bounds(z, Sides::TwoSided);
        if bb.lower.expect("b") <= beta && beta <= bb.upper.expect("b") {
            cover_b += 1;
        }
        if eb.lower.expect("b") <= eta && eta <= eb.upper.expect("b") {
            cover_e += 1;
        }
    }
    for (what, c) in [("β", cover_b), ("η", cover_e)] {
        let share = f64::from(c) / runs as f64;
        // binomial(400, 0.9) has SD 1.5 %: 84 %–96 % is four SDs either side
        assert!(
            (0.84..=0.96).contains(&share),
            "{what}: 90 % bounds covered {share}"
        );
    }
}
