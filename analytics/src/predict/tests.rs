//! Known-answer tests of the depletion and service forecasts.

use std::collections::BTreeMap;

use chrono::{DateTime, Duration, Utc};
use fleetpulse_domain::Serial;
use fleetpulse_domain::catalog::ConsumableSpec;
use fleetpulse_domain::device::{ConnectionState, Criticality, LifecycleStatus};
use fleetpulse_domain::prediction::{DeviceHistory, FieldDay, Replacement};

use super::depletion::{WearSource, forecast_depletion, forecast_service};
use super::usage::UsageProfile;
use super::usage::tests::{meter, t};

pub(crate) fn device(daily: BTreeMap<String, Vec<FieldDay>>) -> DeviceHistory {
    DeviceHistory {
        serial: Serial::parse("SN-1").expect("serial"),
        model: Some("OC-5A".into()),
        kind: Some("oxygen_concentrator".into()),
        region: None,
        status: LifecycleStatus::AtCustomer,
        criticality: Criticality::High,
        registered_at: t(2025, 1, 1),
        commissioned_at: None,
        connection: ConnectionState::Online,
        last_seen_at: None,
        last_disconnect: None,
        daily,
        recent_hourly: BTreeMap::new(),
        alarms: Vec::new(),
        failures: Vec::new(),
        replacements: Vec::new(),
        outcomes: Vec::new(),
    }
}

fn filter() -> ConsumableSpec {
    ConsumableSpec {
        id: "filter".into(),
        name: "filter".into(),
        field: "filter_life_pct".into(),
        order_at_pct: 15.0,
        rated_life_hours: 2000.0,
        skill: "basic_maintenance".into(),
        labour_minutes: 10,
        parts: Vec::new(),
    }
}

fn day(at: DateTime<Utc>, v: f64) -> FieldDay {
    FieldDay {
        day: at,
        count: 24,
        mean: v,
        min: v,
        max: v,
        last: v,
    }
}

/// 10 h/day; a filter that wears 0.05 %/h (2000 h life), replaced (reset to 100) on day
/// 40; deterministic ±0.3 % noise and one stray reading of 3 %.
fn filter_device() -> (DeviceHistory, DateTime<Utc>) {
    let start = t(2026, 1, 1);
    let days = 60;
    let runtime = meter(start, days, |_| 10.0);
    let mut level = 70.0;
    let mut lvl = Vec::new();
    for i in 0..days {
        if i == 40 {
            level = 100.0;
        } else {
            level -= 0.05 * 10.0;
        }
        let noise = [0.3, -0.3, 0.1, -0.1, 0.0][i % 5];
        let v = if i == 50 { 3.0 } else { level + noise };
        lvl.push(day(start + Duration::days(i as i64), v));
    }
    let mut daily = BTreeMap::new();
    daily.insert("runtime_hours".to_owned(), runtime);
    daily.insert("filter_life_pct".to_owned(), lvl);
    (device(daily), start + Duration::days(days as i64))
}

#[test]
fn depletion_after_a_reset_with_noise_and_a_stray_reading() {
    let (d, as_of) = filter_device();
    let u = UsageProfile::from_meter(&d.daily["runtime_hours"], as_of).expect("usage");
    let f = forecast_depletion(&d, &filter(), Some(&u), as_of, 1.2816).expect("forecast");
    assert_eq!(f.source, WearSource::CurrentLife);
    // life since day 40: level 100 − 0.5 × (days after 40); day 59 → 90.5
    assert!(
        (f.wear_per_hour - 0.05).abs() < 0.002,
        "{}",
        f.wear_per_hour
    );
    assert!((f.level_now - 90.5).abs() < 0.3, "{}", f.level_now);
    assert_eq!(f.dropped, 1, "the stray 3 % reading is dropped");
    // (90.5 − 15) / 0.05 = 1510 h at 10 h/day = 151 days after the last reading (end of
    // day 59 = as_of)
    let dates = f.dates.expect("dates");
    let days = (dates.due - as_of).num_minutes() as f64 / 1440.0;
    assert!((days - 151.0).abs() < 1.5, "{days}");
    assert!(dates.low <= dates.due && dates.high.is_some_and(|h| h >= dates.due));
}

#[test]
fn a_replacement_record_starts_a_new_life_even_without_a_visible_rise() {
    // the level only rises 5 points (below the rise threshold) but a replacement says so
    let (mut d, as_of) = filter_device();
    let lvl = d.daily.get_mut("filter_life_pct").expect("series");
    for (i, x) in lvl.iter_mut().enumerate() {
        if i >= 40 && i != 50 {
            let v = 35.0 - 0.5 * (i as f64 - 40.0);
            *x = day(x.day, v);
        }
    }
    let u = UsageProfile::from_meter(&d.daily["runtime_hours"], as_of).expect("usage");
    let without = forecast_depletion(&d, &filter(), Some(&u), as_of, 1.28).expect("forecast");
    d.replacements.push(Replacement {
        part: "filter".into(),
        at: t(2026, 1, 1) + Duration::days(40) - Duration::hours(1),
        runtime_hours: None,
        component: None,
    });
    let with = forecast_depletion(&d, &filter(), Some(&u), as_of, 1.28).expect("forecast");
    assert!(
        (with.wear_per_hour - 0.05).abs() < 0.003,
        "{}",
        with.wear_per_hour
    );
    assert!(with.life_started_at.is_some());
    assert_ne!(with.points, without.points);
}

#[test]
fn a_fresh_life_falls_back_to_the_previous_one_then_to_the_rated_life() {
    let (mut d, as_of) = filter_device();
    // cut the history two days after the reset: the current life is too short
    let cut = t(2026, 1, 1) + Duration::days(42);
    for s in d.daily.values_mut() {
        s.retain(|x| x.day < cut);
    }
    let u = UsageProfile::from_meter(&d.daily["runtime_hours"], cut).expect("usage");
    let f = forecast_depletion(&d, &filter(), Some(&u), cut, 1.28).expect("forecast");
    assert_eq!(f.source, WearSource::PreviousLife);
    assert!((f.wear_per_hour - 0.05).abs() < 0.003);
    // with only three readings in all: the catalog's rated life, 100 / 2000 h
    for s in d.daily.values_mut() {
        s.truncate(3);
    }
    let f = forecast_depletion(&d, &filter(), None, as_of, 1.28).expect("forecast");
    assert_eq!(f.source, WearSource::RatedLife);
    assert!((f.wear_per_hour - 0.05).abs() < 1e-12);
    assert!(f.dates.is_none(), "no usage profile, no date");
}

#[test]
fn service_due_from_the_last_service_or_the_next_meter_multiple() {
    let start = t(2026, 1, 1);
    // meter from 1010 to 1600 at 10 h/day over 60 days
    let mut daily = BTreeMap::new();
    daily.insert("runtime_hours".to_owned(), meter(start, 60, |_| 10.0));
    let mut d = device(daily);
    let as_of = start + Duration::days(60);
    let u = UsageProfile::from_meter(&d.daily["runtime_hours"], as_of).expect("usage");
    // no service recorded: the next multiple of 500 above 1600 is 2000 → 400 h → 40 days
    let s = forecast_service(&d, 500.0, Some(&u), as_of, 1.28).expect("due");
    assert_eq!(
        (s.basis, s.due_meter, s.hours_left),
        ("meter_multiple", 2000.0, 400.0)
    );
    assert_eq!(s.dates.expect("dates").due, as_of + Duration::days(40));
    // a service at meter 1250 (day 24): due at 1750 → 150 h → 15 days
    d.replacements.push(Replacement {
        part: "service".into(),
        at: start + Duration::days(25),
        runtime_hours: Some(1250.0),
        component: None,
    });
    let s = forecast_service(&d, 500.0, Some(&u), as_of, 1.28).expect("due");
    assert_eq!((s.basis, s.due_meter), ("service_replacement", 1750.0));
    assert_eq!(s.dates.expect("dates").due, as_of + Duration::days(15));
    // without its meter reading, the meter of the day before is used: day 24's last = 1250
    d.replacements[0].runtime_hours = None;
    let s = forecast_service(&d, 500.0, Some(&u), as_of, 1.28).expect("due");
    assert_eq!(s.due_meter, 1750.0);
    // overdue: due now
    let s = forecast_service(&d, 100.0, Some(&u), as_of, 1.28).expect("due");
    assert_eq!(s.dates.expect("dates").due, as_of);
    assert!(forecast_service(&d, 0.0, Some(&u), as_of, 1.28).is_none());
}

mod on_simulated_data {
    use std::collections::BTreeMap;
    use std::sync::{Arc, OnceLock};

    use chrono::{DateTime, Duration, TimeZone, Utc};
    use fleetpulse_domain::Catalog;
    use fleetpulse_domain::prediction::{DeviceHistory, Forecaster, PredictionData, TrainedModel};

    use crate::predict::{RiskParameters, failure_modes, train_mode, train_modes};
    use fleetpulse_simulator::{Fleet, FleetConfig, simulate};

    use crate::predict::risk::feature_spec;
    use crate::predict::{CatalogForecaster, PredictOptions};

    /// The shipped catalog's OC-5A alone: 200 concentrators for 330 simulated days.
    fn data() -> &'static (Arc<Catalog>, PredictionData) {
        static DATA: OnceLock<(Arc<Catalog>, PredictionData)> = OnceLock::new();
        DATA.get_or_init(|| {
            let full = Catalog::from_toml_str(include_str!("../../../config/catalog.toml"))
                .expect("shipped catalog");
            let oc: Vec<_> = full
                .models()
                .filter(|m| m.id.as_str() == "OC-5A")
                .cloned()
                .collect();
            let catalog = Arc::new(Catalog::from_models(oc).expect("one model"));
            let mut fleet = Fleet::new(
                &FleetConfig {
                    devices: 200,
                    seed: 5,
                    serial_prefix: "T".into(),
                    untidy: None,
                },
                &catalog,
            )
            .expect("fleet");
            let start = Utc
                .with_ymd_and_hms(2024, 1, 1, 0, 0, 0)
                .single()
                .expect("start");
            let (rec, _) = simulate(&mut fleet, &catalog, start, 330);
            let data = rec.snapshot(start + Duration::days(330));
            (catalog, data)
        })
    }

    /// The history as it was known at `as_of`.
    fn truncate(d: &DeviceHistory, as_of: DateTime<Utc>) -> DeviceHistory {
        let mut t = d.clone();
        for s in t.daily.values_mut() {
            s.retain(|x| x.day < as_of);
        }
        t.alarms.retain(|a| a.started_at < as_of);
        for a in &mut t.alarms {
            a.ended_at = a.ended_at.filter(|e| *e <= as_of);
        }
        t.failures.retain(|f| f.at < as_of);
        t.replacements.retain(|r| r.at < as_of);
        t
    }

    fn same(a: &[f64], b: &[f64]) -> bool {
        a.len() == b.len()
            && a.iter()
                .zip(b)
                .all(|(x, y)| x == y || (x.is_nan() && y.is_nan()))
    }

    #[test]
    fn truncating_the_history_after_as_of_changes_no_feature_nor_forecast() {
        let (catalog, data) = data();
        let as_of = data.as_of.expect("as_of") - Duration::days(60) + Duration::hours(13);
        let forecaster = CatalogForecaster::new(catalog.clone(), PredictOptions::default());
        let mut changed_later = 0;
        for mode in ["compressor", "sieve_bed", "cooling"] {
            let spec = feature_spec(catalog, data, mode);
            for d in &data.devices {
                let full = spec.compute(d, as_of);
                let cut = spec.compute(&truncate(d, as_of), as_of);
                assert!(
                    same(&full, &cut),
                    "{} {mode}: features read the future",
                    d.serial
                );
                let later = spec.compute(d, as_of + Duration::days(7));
                changed_later += usize::from(!same(&full, &later));
            }
        }
        // the check has teeth: a week later the same features do change
        assert!(changed_later > 100, "{changed_later}");
        for d in &data.devices {
            assert_eq!(
                forecaster.due_dates(d, as_of),
                forecaster.due_dates(&truncate(d, as_of), as_of),
                "{}",
                d.serial
            );
        }
    }

    #[test]
    fn the_trained_model_beats_both_baselines_on_simulated_failures() {
        let (catalog, data) = data();
        let options = PredictOptions {
            sample_every_days: 6,
            replay_every_days: 3,
            ..PredictOptions::default()
        };
        let forecaster = CatalogForecaster::new(catalog.clone(), options.clone());
        let sieve = train_mode(catalog, data, "sieve_bed", &options, None);
        let models = vec![sieve.clone()];
        let sieve = &models[0];
        let r = &sieve.report;
        assert!(r.metrics.positives > 0, "{}", r.decision);
        for (name, b) in &r.baselines {
            assert!(
                r.metrics.pr_auc > b.pr_auc,
                "{name}: {} vs {}; {}",
                r.metrics.pr_auc,
                b.pr_auc,
                r.decision
            );
        }
        assert_eq!(r.baselines.len(), 2, "{}", r.decision);
        // the replayed warnings: the model warns of more failures than either baseline
        let warned = |m: &fleetpulse_domain::prediction::ValidationMetrics| {
            m.warnings.as_ref().map(|w| (w.failures, w.warned_ahead))
        };
        let (failures, ahead) = warned(&r.metrics).expect("replayed warnings");
        assert!(failures > 0 && ahead > 0, "{failures} {ahead}");
        for (name, b) in &r.baselines {
            let (f, a) = warned(b).expect("replayed warnings");
            assert_eq!(f, failures, "{name}: the same failures");
            assert!(a < ahead, "{name}: {a} of {f} vs the model's {ahead}");
        }
        assert!(r.deployed, "{}", r.decision);
        // it serves because it warned the most failures ahead net of its wasted visits
        assert_eq!(r.serving.as_deref(), Some("model"), "{}", r.decision);
        assert!(
            r.decision
                .starts_with("deployed, serving model: the most net failures warned"),
            "{}",
            r.decision
        );
        assert!(r.validate_from >= r.train_to && r.train_from < r.train_to);
        // a deployed model scores the fleet, with its evidence
        let predictions = forecaster.forecast(data, &models);
        let risk: Vec<_> = predictions
            .iter()
            .filter(|p| p.target == "sieve_bed")
            .collect();
        assert!(!risk.is_empty());
        assert!(
            risk.iter()
                .all(|p| p.probability.is_some_and(|x| (0.0..=1.0).contains(&x))
                    && p.top_features.len() == 5
                    && p.model_version == r.version)
        );
        // with an expected failure date: the part's remaining Weibull life at its age,
        // at the device's usage rate, inside its interval
        let params = RiskParameters::from_trained(sieve).expect("parameters");
        let mut dated = 0;
        for p in &risk {
            let Some(due) = p.due_at else { continue };
            dated += 1;
            let low = p.due_low.expect("interval");
            assert!(p.as_of <= low && low <= due, "{p:?}");
            assert!(p.due_high.is_none_or(|h| due <= h), "{p:?}");
            let rl = &p.evidence["remaining_life"];
            // on these data the sensors' estimate beat the Weibull median on validation
            let life = params
                .sensor_life
                .as_ref()
                .expect("a sensor remaining life");
            assert!(life.preferred, "{life:?}");
            assert!(
                rl["method"]
                    .as_str()
                    .is_some_and(|m| m.starts_with("sensor")),
                "{rl}"
            );
            let median = rl["median_days"].as_f64().expect("median");
            let secs = (median * 86_400.0).round() as i64;
            assert_eq!(due, p.as_of + Duration::seconds(secs), "{rl}");
            assert!((0.0..=life.cap_days).contains(&median), "{rl}");
            // the Weibull remaining life still stands behind it: its median is where the
            // part's conditional survival is one half
            let d = data
                .devices
                .iter()
                .find(|d| d.serial == p.serial)
                .expect("device");
            let r = params.residual_life(d, p.as_of, 0.8).expect("weibull life");
            let w = params.weibull.as_ref().expect("weibull baseline");
            let survival = |t: f64| (-(t / w.eta).powf(w.beta)).exp();
            let half = survival(r.age_hours + r.median_hours) / survival(r.age_hours);
            assert!((half - 0.5).abs() < 1e-9, "{half} {r:?}");
            assert!(r.low_hours <= r.median_hours && r.median_hours <= r.high_hours);
        }
        assert!(dated * 2 > risk.len(), "{dated} of {} dated", risk.len());
        // a retrained model is compared with the current one and loses to itself
        let again = train_mode(catalog, data, "sieve_bed", &options, Some(sieve));
        assert!(!again.report.deployed, "{}", again.report.decision);
        assert!(
            again.report.decision.contains("current model"),
            "{}",
            again.report.decision
        );
        // a mode served by a baseline is scored with the baseline's probability and
        // threshold, and explained by the one input it reads
        let mut by_age = sieve.clone();
        let mut p = params.clone();
        p.serving = crate::predict::Scorer::WeibullAge;
        by_age.parameters = serde_json::to_value(&p).expect("parameters");
        let served = forecaster.forecast(data, std::slice::from_ref(&by_age));
        let mut checked = 0;
        for pr in served.iter().filter(|p| p.target == "sieve_bed") {
            let d = data
                .devices
                .iter()
                .find(|d| d.serial == pr.serial)
                .expect("device");
            let (prob, threshold) = p
                .score(crate::predict::Scorer::WeibullAge, d, pr.as_of)
                .expect("weibull_age applies");
            assert_eq!(
                (pr.probability, pr.threshold),
                (Some(prob), Some(threshold))
            );
            assert_eq!(pr.evidence["scorer"], "weibull_age");
            assert_eq!(pr.top_features.len(), 1);
            assert_eq!(pr.top_features[0].feature, "part:runtime_since_replacement");
            checked += 1;
        }
        assert_eq!(checked, risk.len());
    }

    #[test]
    fn the_tree_learner_trains_with_an_out_of_fold_threshold_and_explains_its_scores() {
        let (catalog, data) = data();
        let options = PredictOptions {
            sample_every_days: 6,
            replay_every_days: 3,
            learner: crate::predict::Learner::GradientBoosting,
            ..PredictOptions::default()
        };
        let m = train_mode(catalog, data, "sieve_bed", &options, None);
        let r = &m.report;
        assert_eq!(r.algorithm, "gradient_boosting", "{}", r.decision);
        assert!(r.decision.contains("out-of-fold"), "{}", r.decision);
        // trees separate these failures at least as well as either baseline
        for (name, b) in &r.baselines {
            assert!(r.metrics.pr_auc > b.pr_auc, "{name}: {}", r.decision);
        }
        let params = RiskParameters::from_trained(&m).expect("parameters");
        let trees = params.trees.as_ref().expect("trees");
        assert!(params.weights.iter().all(|w| *w == 0.0));
        // the contributions are the trees' path contributions: with the bias they give
        // the probability's log-odds
        let as_of = data.as_of.expect("as_of") - Duration::days(20);
        for d in data.devices.iter().take(20) {
            let x = params.spec.compute(d, as_of);
            let (p, c) = params.score_features(&x);
            let logit = trees.bias() + c.iter().sum::<f64>();
            assert!(
                (p - 1.0 / (1.0 + (-logit).exp())).abs() < 1e-9,
                "{p} {logit}"
            );
        }
    }

    #[test]
    fn a_backtest_trains_before_its_start_and_replays_only_after_it() {
        let (catalog, data) = data();
        let t2 = data.as_of.expect("as_of");
        let t1 = t2 - Duration::days(100);
        let train = PredictionData {
            as_of: Some(t1),
            devices: data.devices.iter().map(|d| truncate(d, t1)).collect(),
            ..data.clone()
        };
        let options = PredictOptions {
            sample_every_days: 10,
            replay_every_days: 5,
            ..PredictOptions::default()
        };
        let report = crate::predict::backtest::backtest(
            catalog,
            &options,
            &train,
            data,
            Duration::days(2),
            &|_| {},
        )
        .expect("backtest");
        // trained as of T1: no training read past it
        assert_eq!(report.trained_as_of, t1);
        assert!(!report.modes.is_empty());
        for m in &report.modes {
            assert!(
                m.validated_until <= t1,
                "{}: {}",
                m.failure_mode,
                m.validated_until
            );
        }
        let mut failures_after = 0;
        for m in &report.modes {
            let Some(serving) = m.scorers.first() else {
                continue;
            };
            let learned = &m.scorers[1];
            // the serving row is the row of the scorer the training chose
            match &m.served_by {
                Some(by) => {
                    let row = m.scorers[1..]
                        .iter()
                        .find(|s| &s.scorer == by)
                        .expect("the served scorer's row");
                    assert!(m.deployed);
                    assert_eq!(
                        (serving.warnings, serving.warned_3d, serving.threshold),
                        (row.warnings, row.warned_3d, row.threshold)
                    );
                }
                None => assert_eq!((m.deployed, serving.warnings), (false, 0)),
            }
            // every failure counted happened after T1 on a device scored then
            let in_window: u64 = data
                .devices
                .iter()
                .flat_map(|d| &d.failures)
                .filter(|f| {
                    !f.retracted
                        && f.failure_mode.as_deref() == Some(m.failure_mode.as_str())
                        && f.at > t1
                        && f.at <= t2
                })
                .count() as u64;
            for s in &m.scorers {
                assert!(
                    s.failures <= in_window,
                    "{}: {s:?} of {in_window}",
                    m.failure_mode
                );
                assert!(s.confirmed + s.expired <= s.warnings, "{s:?}");
                assert!(
                    s.warned_3d <= s.warned_1d && s.warned_1d <= s.warned_any,
                    "{s:?}"
                );
            }
            failures_after += learned.failures;
        }
        assert!(
            failures_after > 0,
            "the replay saw no failure: {}",
            report.table()
        );
        let serving: u64 = report
            .modes
            .iter()
            .filter_map(|m| m.scorers.first())
            .map(|s| s.warnings)
            .sum();
        assert_eq!(report.overall[0].scorer, "serving");
        assert_eq!(report.overall[0].warnings, serving);
    }

    #[test]
    fn fleet_thresholds_move_the_deployed_models_and_their_reports_follow() {
        let (catalog, data) = data();
        let options = PredictOptions {
            sample_every_days: 10,
            replay_every_days: 5,
            ..PredictOptions::default()
        };
        let models = train_modes(catalog, data, &options, &[]);
        let joint = "chosen with the other deployed modes";
        let mut moved = 0;
        for m in &models {
            let r = &m.report;
            if r.serving.as_deref() != Some("model") {
                assert!(!r.decision.contains(joint), "{}", r.decision);
                continue;
            }
            let params = RiskParameters::from_trained(m).expect("deployed parameters");
            // the served parameters and the reported metrics use the same threshold
            assert_eq!(params.threshold, r.metrics.threshold, "{}", r.decision);
            let w = r.metrics.warnings.as_ref().expect("replayed warnings");
            assert!(w.failures > 0, "{}", r.decision);
            if r.decision.contains(joint) {
                moved += 1;
            }
        }
        // every model left deployed has its threshold from the joint choice; one whose
        // thresholds all fall below min_mode_precision was taken out, and says so
        let deployed = models
            .iter()
            .filter(|m| m.report.serving.as_deref() == Some("model"))
            .count();
        assert!(moved >= 2 && moved == deployed, "{models:#?}");
        // every mode says which scorer serves it, and a deployed one serves
        for m in &models {
            let r = &m.report;
            assert_eq!(r.deployed, r.serving.is_some(), "{}", r.decision);
            if r.deployed {
                let params = RiskParameters::from_trained(m).expect("parameters");
                assert_eq!(r.serving.as_deref(), Some(params.serving.as_str()));
            }
        }
        for m in models.iter().filter(|m| !m.report.deployed) {
            let d = &m.report.decision;
            assert!(
                d.starts_with("not deployed") || d.starts_with("not trained"),
                "{d}"
            );
        }
        // the choice is reported next to the mode's own
        let own = "its own target would have given";
        assert!(
            models
                .iter()
                .filter(|m| m.report.decision.contains(own))
                .count()
                == moved
        );
    }

    /// The shipped catalog (every model) over a small fleet for `days`.
    fn small_fleet(days: u32) -> (Catalog, PredictionData) {
        let catalog = Catalog::from_toml_str(include_str!("../../../config/catalog.toml"))
            .expect("shipped catalog");
        let config = FleetConfig {
            devices: 24,
            seed: 11,
            serial_prefix: "S".into(),
            untidy: None,
        };
        let mut fleet = Fleet::new(&config, &catalog).expect("fleet");
        let start = Utc
            .with_ymd_and_hms(2024, 1, 1, 0, 0, 0)
            .single()
            .expect("start");
        let (rec, _) = simulate(&mut fleet, &catalog, start, days);
        let data = rec.snapshot(start + Duration::days(i64::from(days)));
        (catalog, data)
    }

    /// The trained models' failure modes, sorted, and each decision by mode.
    fn decisions(models: &[TrainedModel]) -> BTreeMap<String, String> {
        let mut out = BTreeMap::new();
        for m in models {
            assert!(!m.report.deployed, "{}", m.report.decision);
            assert_eq!(m.report.serving, None, "{}", m.report.decision);
            assert!(m.parameters.is_null(), "{}", m.report.decision);
            let old = out.insert(m.report.failure_mode.clone(), m.report.decision.clone());
            assert!(old.is_none(), "{} twice", m.report.failure_mode);
        }
        out
    }

    #[test]
    fn every_catalog_mode_answers_a_report_with_its_reason_when_not_trained() {
        let options = PredictOptions::default();
        let all_modes = failure_modes(
            &Catalog::from_toml_str(include_str!("../../../config/catalog.toml"))
                .expect("shipped catalog"),
        );
        assert!(all_modes.len() > 3, "{all_modes:?}");

        // 20 days: shorter than the warm-up, no training window at all
        let (catalog, short) = small_fleet(20);
        let got = decisions(&train_modes(&catalog, &short, &options, &[]));
        assert_eq!(got.keys().cloned().collect::<Vec<_>>(), all_modes);
        for (mode, d) in &got {
            assert!(
                d.starts_with("not trained: 20.0 days of history (from 2024-01-01 to 2024-01-21 00:00), more than "),
                "{mode}: {d}"
            );
            assert!(d.contains("days of warm-up"), "{mode}: {d}");
            assert!(
                d.contains("failures of this mode in the data, at least 10 needed"),
                "{mode}: {d}"
            );
        }

        // 120 days of the OC-5A alone: its modes have a window but too few failures in it;
        // the modes only other models have find no device
        let (catalog, mut long) = small_fleet(120);
        long.devices.retain(|d| d.model.as_deref() == Some("OC-5A"));
        assert!(!long.devices.is_empty());
        let got = decisions(&train_modes(&catalog, &long, &options, &[]));
        assert_eq!(got.keys().cloned().collect::<Vec<_>>(), all_modes);
        let oc = catalog
            .models()
            .find(|m| m.id.as_str() == "OC-5A")
            .expect("OC-5A");
        let (mut with, mut without) = (0, 0);
        for (mode, d) in &got {
            if catalog.failure_mode(oc.id.as_str(), mode).is_some() {
                with += 1;
                assert!(
                    d.starts_with("not trained: ")
                        && d.contains("failures in the training window (at least 10 needed)"),
                    "{mode}: {d}"
                );
            } else {
                without += 1;
                assert!(
                    d.starts_with("not trained: no device of ")
                        && d.contains(
                            "has daily runtime history in the data; 0 failures of this mode"
                        ),
                    "{mode}: {d}"
                );
                assert!(!d.contains("OC-5A"), "{mode}: {d}");
            }
        }
        assert!(with > 0 && without > 0, "{got:#?}");
    }
}

#[test]
fn the_serving_scorer_warns_the_most_failures_ahead_net_of_wasted_visits() {
    use crate::predict::Scorer;
    use crate::predict::risk::choose_serving;
    use fleetpulse_domain::prediction::WarningMetrics;
    // warnings, confirmed, expired, failures warned ≥ 3 d ahead
    let w = |warnings, confirmed: u64, expired: u64, ahead| WarningMetrics {
        warnings,
        confirmed,
        expired,
        warned_ahead: ahead,
        failures: 20,
        precision: (confirmed + expired > 0)
            .then(|| confirmed as f64 / (confirmed + expired) as f64),
        ..WarningMetrics::default()
    };
    // floor 0.3: an expired warning costs 0.3 / 0.7 = 0.4286 of a caught failure
    // model 4 − 0.4286·5 = 1.86; weibull_age 12 − 0.4286·10 = 7.71; alarm_count below the
    // floor (precision 0.08), though it warns the most
    let (model, age, alarms) = (w(10, 5, 5, 4), w(30, 20, 10, 12), w(200, 16, 184, 18));
    let all = [
        (Scorer::Model, Some(&model)),
        (Scorer::WeibullAge, Some(&age)),
        (Scorer::AlarmCount, Some(&alarms)),
    ];
    assert_eq!(choose_serving(&all, 0.3), Some(Scorer::WeibullAge));
    // with no floor a wasted visit costs nothing: the most failures ahead wins
    assert_eq!(choose_serving(&all, 0.0), Some(Scorer::AlarmCount));
    // precise but few against many at the floor: 9 ahead with 1 wasted visit (8.57) beat
    // 14 ahead with 14 wasted visits (8.0), though 14 > 9
    let precise = w(12, 11, 1, 9);
    let noisy = w(30, 16, 14, 14);
    assert_eq!(
        choose_serving(
            &[
                (Scorer::Model, Some(&precise)),
                (Scorer::WeibullAge, Some(&noisy))
            ],
            0.3
        ),
        Some(Scorer::Model)
    );
    // a learned model that may not serve leaves the choice to the baselines
    let no_model = [(Scorer::Model, None), all[1], all[2]];
    assert_eq!(choose_serving(&no_model, 0.3), Some(Scorer::WeibullAge));
    // a tie goes to the higher precision, then to the model
    let same = w(30, 20, 10, 12);
    assert_eq!(
        choose_serving(&[all[1], (Scorer::Model, Some(&same))], 0.3),
        Some(Scorer::Model)
    );
    // nothing reaches the floor, or nothing warns ahead: silent, never a 0-precision pick
    assert_eq!(choose_serving(&all, 0.7), None);
    let quiet = w(0, 0, 0, 0);
    assert_eq!(choose_serving(&[(Scorer::Model, Some(&quiet))], 0.0), None);
    // above the floor with one failure warned ahead: it serves, the mode is not silent
    let late = w(20, 14, 6, 1);
    assert_eq!(
        choose_serving(&[(Scorer::Model, Some(&late))], 0.3),
        Some(Scorer::Model)
    );
}

mod features {
    use super::*;
    use crate::predict::features::FeatureSpec;
    use fleetpulse_domain::prediction::FailureLabel;

    fn spec() -> FeatureSpec {
        FeatureSpec {
            mode: "compressor".into(),
            fields: vec!["temperature_c".into()],
            codes: Vec::new(),
            components: BTreeMap::new(),
            models: Vec::new(),
            layout: crate::predict::features::FEATURE_LAYOUT,
        }
    }

    /// 40 °C ± 0.05 for `n` days from 2025-01-01, then `tail`.
    fn temperatures(n: i64, tail: &[f64]) -> DeviceHistory {
        let start = t(2025, 1, 1);
        let mut days: Vec<FieldDay> = (0..n)
            .map(|i| {
                day(
                    start + Duration::days(i),
                    40.0 + if i % 2 == 0 { 0.05 } else { -0.05 },
                )
            })
            .collect();
        for (k, &v) in tail.iter().enumerate() {
            days.push(day(start + Duration::days(n + k as i64), v));
        }
        device(BTreeMap::from([("temperature_c".to_owned(), days)]))
    }

    fn feature(d: &DeviceHistory, as_of: DateTime<Utc>, name: &str) -> f64 {
        let spec = spec();
        let i = spec
            .names()
            .iter()
            .position(|n| n == name)
            .expect("a feature name");
        spec.compute(d, as_of)[i]
    }

    #[test]
    fn a_steady_rise_runs_up_and_a_transient_turns() {
        // baseline 40 (MAD 0.05 → scale max(1.4826 · 0.05, 1 % of 40) = 0.4); a
        // precursor adds 1, 2, 4, 7, 11 and 16 °C over the last six days: six rises of
        // more than one scale
        let scale: f64 = 0.4;
        let close = |a: f64, b: f64| (a - b).abs() < 1e-6;
        let rising = temperatures(120, &[41.0, 42.0, 44.0, 47.0, 51.0, 56.0]);
        let as_of = t(2025, 1, 1) + Duration::days(126);
        assert_eq!(feature(&rising, as_of, "temperature_c:run_up"), 6.0);
        assert_eq!(feature(&rising, as_of, "temperature_c:run_down"), 0.0);
        // the last three days are 7 to 16 °C above the baseline 40.0
        let lo = feature(&rising, as_of, "temperature_c:devmin_3d");
        assert!(close(lo, (7.0 / scale).ln_1p()), "{lo}");
        let hi = feature(&rising, as_of, "temperature_c:devmax_3d");
        assert!(close(hi, (16.0 / scale).ln_1p()), "{hi}");
        // 56 − 44 over three days
        let rise = feature(&rising, as_of, "temperature_c:rise_3d");
        assert!(close(rise, (12.0 / (3.0 * scale)).ln_1p()), "{rise}");
        // 47, 51, 56: bending up by 1 °C
        let accel = feature(&rising, as_of, "temperature_c:accel_3d");
        assert!(close(accel, (1.0 / scale).ln_1p()), "{accel}");
        // a two-day excursion that has turned: last step down, one fall
        let transient = temperatures(120, &[46.0, 48.0, 44.0]);
        let as_of = t(2025, 1, 1) + Duration::days(123);
        assert_eq!(feature(&transient, as_of, "temperature_c:run_up"), 0.0);
        assert_eq!(feature(&transient, as_of, "temperature_c:run_down"), 1.0);
        assert!(feature(&transient, as_of, "temperature_c:devmin_3d") > 0.0);
        // 46, 48, 44: bending down by 6 °C
        let accel = feature(&transient, as_of, "temperature_c:accel_3d");
        assert!(close(accel, -(6.0 / scale).ln_1p()), "{accel}");
    }

    #[test]
    fn the_last_day_s_last_reading_leads_its_mean() {
        // baseline 40 (scale 0.4); the last day's readings climb from 39.8 to 45 in its
        // evening: its mean is still 40.2, its last reading 44.8
        let close = |a: f64, b: f64| (a - b).abs() < 1e-6;
        let mut d = temperatures(120, &[40.2]);
        let days = d.daily.get_mut("temperature_c").expect("field");
        let last = days.last_mut().expect("a day");
        (last.min, last.max, last.last) = (39.8, 45.0, 44.8);
        let as_of = t(2025, 1, 1) + Duration::days(121);
        let mean = feature(&d, as_of, "temperature_c:dev_1d");
        assert!(close(mean, (0.2f64 / 0.4).ln_1p()), "{mean}");
        let v = feature(&d, as_of, "temperature_c:dev_last");
        assert!(close(v, (4.8f64 / 0.4).ln_1p()), "{v}");
        // the day's extremes are not read: they depend on how often the device reports
        assert_eq!(feature(&d, as_of, "temperature_c:max_7d"), 40.2);
    }

    /// A field read from a signal `f(hour)` every `every` hours for `n` days, folded
    /// into daily summaries as the store folds hourly rollups.
    fn reported(n: i64, every: i64, f: impl Fn(i64) -> f64) -> Vec<FieldDay> {
        let start = t(2025, 1, 1);
        (0..n)
            .map(|i| {
                let v: Vec<f64> = (0..24)
                    .step_by(every as usize)
                    .map(|h| f(i * 24 + h))
                    .collect();
                FieldDay {
                    day: start + Duration::days(i),
                    count: v.len() as u32,
                    mean: v.iter().sum::<f64>() / v.len() as f64,
                    min: v.iter().copied().fold(f64::INFINITY, f64::min),
                    max: v.iter().copied().fold(f64::NEG_INFINITY, f64::max),
                    last: *v.last().expect("a reading"),
                }
            })
            .collect()
    }

    #[test]
    fn a_device_reporting_every_6_hours_looks_like_one_reporting_hourly() {
        // a temperature with a ±3 °C day cycle, a slow drift and a rise in the last week,
        // and a runtime meter of 10 h a day: hourly and every 6 hours (the day cycle
        // averages out over 4 equally spaced readings as over 24)
        let temp = |h: i64| {
            let day = h as f64 / 24.0;
            40.0 + 3.0 * (std::f64::consts::TAU * day + 0.7).sin()
                + 0.01 * (day - 20.0).sin()
                + if day > 113.0 {
                    0.5 * (day - 113.0)
                } else {
                    0.0
                }
        };
        let meter = |h: i64| (h as f64 / 24.0).floor() * 10.0 + ((h % 24) as f64).min(10.0);
        let fleet = |every: i64| {
            device(BTreeMap::from([
                ("temperature_c".to_owned(), reported(120, every, temp)),
                ("runtime_hours".to_owned(), reported(120, every, meter)),
            ]))
        };
        let (hourly, six) = (fleet(1), fleet(6));
        let spec = FeatureSpec {
            fields: vec!["runtime_hours".into(), "temperature_c".into()],
            ..spec()
        };
        let as_of = t(2025, 1, 1) + Duration::days(120);
        let (a, b) = (spec.compute(&hourly, as_of), spec.compute(&six, as_of));
        let names = spec.names();
        for (i, name) in names.iter().enumerate() {
            // the same up to the sampling of a drift within a day; `dev_last` is one
            // reading, at 23:00 hourly and at 18:00 every 6 hours
            if name.ends_with("dev_last") {
                continue;
            }
            let (x, y) = (a[i], b[i]);
            let same = (x.is_nan() && y.is_nan()) || (x - y).abs() <= 0.05 * x.abs().max(1.0);
            assert!(same, "{name}: hourly {x}, every 6 h {y}");
        }
        // the check has teeth: the days' ranges, which are not features, differ widely
        let range = |d: &DeviceHistory| {
            let last = *d.daily["temperature_c"].last().expect("a day");
            last.max - last.min
        };
        assert!(
            range(&hourly) - range(&six) > 1.0,
            "{} {}",
            range(&hourly),
            range(&six)
        );
    }

    #[test]
    fn a_field_without_a_baseline_gives_missing_values_in_their_places() {
        // 20 days of history: no 90-to-30-day baseline, so every deviation is missing,
        // and the vector keeps one value per name
        let d = temperatures(20, &[]);
        let as_of = t(2025, 1, 1) + Duration::days(20);
        let spec = spec();
        let x = spec.compute(&d, as_of);
        assert_eq!(x.len(), spec.names().len());
        assert!(feature(&d, as_of, "temperature_c:dev_1d").is_nan());
        assert!(feature(&d, as_of, "temperature_c:dev_last").is_nan());
        assert!(feature(&d, as_of, "temperature_c:mean_7d").is_finite());
        assert!(feature(&d, as_of, "device:age_days").is_finite());
    }

    #[test]
    fn the_days_before_a_repair_are_left_behind() {
        // 60 °C from day 120 to the compressor failure on day 125, repaired on day 126 at
        // 10:00, then 40 °C again: a week later the recent windows see only 40 °C
        let mut d = temperatures(120, &[60.0; 7]);
        let start = t(2025, 1, 1);
        let days = d.daily.get_mut("temperature_c").expect("field");
        for i in 127..134 {
            days.push(day(start + Duration::days(i), 40.0));
        }
        d.failures.push(FailureLabel {
            at: start + Duration::days(125),
            runtime_hours: None,
            failure_mode: Some("compressor".into()),
            code: Some("E102".into()),
            source: "alarm".into(),
            retracted: false,
        });
        let as_of = start + Duration::days(131);
        // down before the repair: the 7-day max still holds the failure
        assert_eq!(feature(&d, as_of, "temperature_c:max_7d"), 60.0);
        d.replacements.push(Replacement {
            part: "compressor".into(),
            at: start + Duration::days(126) + Duration::hours(10),
            runtime_hours: None,
            component: None,
        });
        assert_eq!(feature(&d, as_of, "temperature_c:max_7d"), 40.0);
        assert_eq!(feature(&d, as_of, "temperature_c:mean_7d"), 40.0);
        // the baseline (90 to 30 days back) is not cut: the deviation is measured from 40
        assert!(feature(&d, as_of, "temperature_c:dev_1d").abs() < 1.0);
    }

    /// PM-1's component comp3 fails in two modes; comp1 in one.
    const PM1: &str = r#"
[[model]]
id = "PM-1"
name = "Press machine"
kind = "other"
default_criticality = "standard"
service_interval_hours = 0
service_skill = ""
service_labour_minutes = 0

[[model.component]]
id = "comp1"
[[model.component.failure_mode]]
id = "comp1_wear"

[[model.component]]
id = "comp3"
[[model.component.failure_mode]]
id = "comp3_crack"
[[model.component.failure_mode]]
id = "comp3_wear"
"#;

    #[test]
    fn a_component_renewal_renews_every_mode_of_it_and_age_counts_from_commissioning() {
        let catalog = fleetpulse_domain::Catalog::from_toml_str(&format!(
            "{}\n{PM1}",
            include_str!("../../../config/catalog.toml")
        ))
        .expect("catalog");
        let start = t(2025, 1, 1);
        let as_of = start + Duration::days(30);
        let mut d = temperatures(30, &[]);
        d.model = Some("PM-1".into());
        let data = fleetpulse_domain::prediction::PredictionData {
            as_of: Some(as_of),
            devices: vec![d.clone()],
            ..Default::default()
        };
        let spec = crate::predict::risk::feature_spec(&catalog, &data, "comp3_crack");
        assert_eq!(spec.component_of(&d), Some("comp3"));
        assert!(!spec.part_age(&d, as_of).known);
        // a renewal of another component does not renew comp3
        d.replacements.push(Replacement {
            part: "comp1".into(),
            at: start + Duration::days(10),
            runtime_hours: None,
            component: Some("comp1".into()),
        });
        assert!(!spec.part_age(&d, as_of).known);
        // one of comp3 renews comp3_crack although it does not name the mode
        d.replacements.push(Replacement {
            part: "comp3".into(),
            at: start + Duration::days(20),
            runtime_hours: None,
            component: Some("comp3".into()),
        });
        let age = spec.part_age(&d, as_of);
        assert!(age.known);
        assert_eq!(age.days_since, 10.0);
        // a model trained before components matches by mode only
        let old = FeatureSpec {
            components: BTreeMap::new(),
            ..spec.clone()
        };
        assert!(!old.part_age(&d, as_of).known);
        // imported long after its commissioning: ages count from the commissioning
        d.registered_at = start + Duration::days(400);
        d.commissioned_at = Some(start - Duration::days(100));
        let i = spec
            .names()
            .iter()
            .position(|n| n == "device:age_days")
            .expect("age");
        assert_eq!(spec.compute(&d, as_of)[i], 130.0);
        d.replacements.clear();
        assert_eq!(spec.part_age(&d, as_of).days_since, 130.0);
    }
}

#[test]
fn field_outcomes_count_no_fault_found_as_false_positives_per_model_version() {
    use crate::predict::risk::field_outcomes;
    use fleetpulse_domain::prediction::{FieldOutcomes, PredictionData, PredictionOutcome};
    let outcome =
        |id: i64, cause: &str, version: Option<&str>, confirmed: Option<bool>| PredictionOutcome {
            order_id: id,
            cause: cause.into(),
            raised_at: t(2025, 3, 1),
            closed_at: confirmed.map(|_| t(2025, 3, 5)),
            failure_confirmed: confirmed,
            fault_code: None,
            model_version: version.map(String::from),
        };
    let mut a = device(BTreeMap::new());
    a.outcomes = vec![
        outcome(
            1,
            "failure_risk:compressor",
            Some("risk-compressor-1"),
            Some(true),
        ),
        outcome(
            2,
            "failure_risk:compressor",
            Some("risk-compressor-1"),
            Some(false),
        ),
        outcome(
            3,
            "failure_risk:compressor",
            Some("risk-compressor-1"),
            Some(false),
        ),
        outcome(
            4,
            "failure_risk:sieve_bed",
            Some("risk-sieve_bed-1"),
            Some(false),
        ),
        outcome(5, "filter_depletion", None, Some(true)),
    ];
    let mut b = device(BTreeMap::new());
    b.outcomes = vec![
        outcome(
            6,
            "failure_risk:compressor",
            Some("risk-compressor-2"),
            None,
        ),
        outcome(7, "failure_risk:compressor", None, Some(true)),
    ];
    let data = PredictionData {
        as_of: Some(t(2025, 4, 1)),
        history_days: 365,
        recent_days: 14,
        devices: vec![a, b],
    };
    let f = field_outcomes(&data, "compressor");
    let row = |v: &str, orders, confirmed, no_fault_found, open, precision| FieldOutcomes {
        model_version: v.into(),
        orders,
        confirmed,
        no_fault_found,
        open,
        precision,
    };
    assert_eq!(
        f,
        vec![
            row("risk-compressor-1", 3, 1, 2, 0, Some(1.0 / 3.0)),
            row("risk-compressor-2", 1, 0, 0, 1, None),
            row("unknown", 1, 1, 0, 0, Some(1.0)),
        ]
    );
    assert_eq!(field_outcomes(&data, "blower"), Vec::new());
}
