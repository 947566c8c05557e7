//! `compute` over small hand-made populations: grouping, exposure, the Weibull population
//! rule, Pareto, trend, MTTR / first-time fix, warnings, CSV and the no-NaN guarantee.

use chrono::{DateTime, TimeZone, Utc};
use fleetpulse_analytics::mtbf::Sides;
use fleetpulse_analytics::{
    AnalyticsError, ConditionalQuery, GroupKey, ReliabilityReport, ReportQuery, compute,
};
use fleetpulse_domain::reliability::{
    AlarmRecord, DataQualityIssue, ExposureRow, FailureRecord, FailureSource, Period,
    PopulationDevice, ReliabilityData, RepairRecord,
};
use fleetpulse_domain::serial::Serial;

fn sn(s: &str) -> Serial {
    Serial::parse(s).expect("test serial")
}

fn at(y: i32, m: u32, d: u32) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(y, m, d, 0, 0, 0)
        .single()
        .expect("test date")
}

fn device(serial: &str, model: &str, age_at_end: Option<f64>) -> PopulationDevice {
    PopulationDevice {
        serial: sn(serial),
        model: Some(model.to_owned()),
        kind: Some(
            if model.starts_with("OC") {
                "oxygen_concentrator"
            } else {
                "ventilator"
            }
            .to_owned(),
        ),
        region: Some("north".to_owned()),
        age_at_start: Some(0.0),
        age_at_end,
    }
}

fn exposure(serial: &str, month: u32, hours: f64) -> ExposureRow {
    ExposureRow {
        serial: sn(serial),
        month: at(2026, month, 1),
        hours,
        resets: 0,
        gap_hours: 0.0,
    }
}

fn failure(
    id: i64,
    serial: &str,
    month: u32,
    age: Option<f64>,
    code: &str,
    mode: &str,
) -> FailureRecord {
    FailureRecord {
        id,
        serial: sn(serial),
        at: at(2026, month, 15),
        age_hours: age,
        code: Some(code.to_owned()),
        failure_mode: Some(mode.to_owned()),
        component: None,
        source: FailureSource::RepairOrder,
        order_id: Some(100 + id),
        alarm_episode_id: None,
    }
}

fn repair(
    order_id: i64,
    serial: &str,
    created: DateTime<Utc>,
    hours: i64,
    started: Option<i64>,
) -> RepairRecord {
    RepairRecord {
        order_id,
        serial: sn(serial),
        cause: "critical_alarm:E1".to_owned(),
        created_at: created,
        started_at: started.map(|h| created + chrono::Duration::hours(h)),
        closed_at: Some(created + chrono::Duration::hours(hours)),
        completed: Some(true),
        failure_confirmed: Some(true),
        fault_code: Some("E1".to_owned()),
        labour_minutes: Some(60),
    }
}

/// Three OC-5A devices and one HV-200 with no exposure.
fn data() -> ReliabilityData {
    ReliabilityData {
        period: Some(Period {
            from: at(2026, 1, 1),
            to: at(2026, 4, 1),
        }),
        as_of: None,
        component_lives: Vec::new(),
        devices: vec![
            device("A1", "OC-5A", Some(3000.0)),
            device("A2", "OC-5A", Some(2500.0)),
            device("A3", "OC-5A", Some(1000.0)),
            device("V1", "HV-200", Some(50.0)),
        ],
        exposure: vec![
            exposure("A1", 1, 500.0),
            exposure("A1", 2, 400.0),
            exposure("A1", 3, 300.0),
            exposure("A2", 1, 600.0),
            exposure("A2", 2, 600.0),
            exposure("A3", 3, 100.0),
        ],
        failures: vec![
            failure(1, "A1", 1, Some(1000.0), "E1", "compressor"),
            failure(2, "A1", 2, Some(2200.0), "E1", "compressor"),
            failure(3, "A1", 3, Some(2600.0), "E2", "sieve_bed"),
            failure(4, "A2", 2, Some(1800.0), "E1", "compressor"),
            failure(5, "A3", 3, None, "E2", "sieve_bed"),
        ],
        repairs: vec![
            repair(101, "A1", at(2026, 1, 15), 10, Some(8)),
            repair(102, "A1", at(2026, 2, 1), 20, None), // 16 days after 101 closed
            repair(104, "A2", at(2026, 2, 15), 30, Some(27)),
        ],
        alarms: vec![
            AlarmRecord {
                serial: sn("A1"),
                code: "W7".to_owned(),
                severity: None,
                started_at: at(2026, 1, 2),
                duration_s: Some(60.0),
            },
            AlarmRecord {
                serial: sn("A2"),
                code: "W7".to_owned(),
                severity: None,
                started_at: at(2026, 1, 3),
                duration_s: None,
            },
            AlarmRecord {
                serial: sn("A2"),
                code: "E1".to_owned(),
                severity: None,
                started_at: at(2026, 2, 3),
                duration_s: None,
            },
        ],
        quality: vec![
            DataQualityIssue {
                serial: sn("A1"),
                kind: "gap".to_owned(),
                at: None,
                detail: "6 h silent".to_owned(),
            },
            DataQualityIssue {
                serial: sn("A2"),
                kind: "gap".to_owned(),
                at: None,
                detail: "9 h silent".to_owned(),
            },
            DataQualityIssue {
                serial: sn("A3"),
                kind: "meter_reset".to_owned(),
                at: None,
                detail: "1000 → 0".to_owned(),
            },
        ],
    }
}

fn report(query: &ReportQuery) -> ReliabilityReport {
    compute(&data(), query).expect("report")
}

fn by(keys: &[GroupKey]) -> ReportQuery {
    ReportQuery {
        group_by: keys.to_vec(),
        ..ReportQuery::default()
    }
}

#[test]
fn fleet_mtbf_is_hours_over_failures() {
    let r = report(&ReportQuery::default());
    assert_eq!(r.mtbf.len(), 1);
    let row = &r.mtbf[0];
    assert_eq!(row.group_label, "fleet");
    assert_eq!(row.devices, 4);
    assert_eq!(row.operating_hours, 2500.0);
    assert_eq!(row.failures, 5);
    assert_eq!(row.mtbf_hours, Some(500.0));
    assert!(row.mtbf_lower.expect("lower") < 500.0 && row.mtbf_upper.expect("upper") > 500.0);
    assert_eq!(row.method, "chi-square, time-terminated, two-sided 90 %");
}

#[test]
fn a_model_without_exposure_has_a_row_with_undefined_mtbf() {
    let r = report(&by(&[GroupKey::Model]));
    let labels: Vec<_> = r.mtbf.iter().map(|m| m.group_label.as_str()).collect();
    assert_eq!(labels, ["model=HV-200", "model=OC-5A"]);
    let hv = &r.mtbf[0];
    assert_eq!((hv.devices, hv.operating_hours, hv.failures), (1, 0.0, 0));
    assert!(hv.mtbf_hours.is_none() && hv.mtbf_lower.is_none() && hv.rate_per_1000h.is_none());
    assert!(hv.method.starts_with("no operating hours"));
}

#[test]
fn failure_mode_groups_share_the_models_hours() {
    let r = report(&by(&[GroupKey::Model, GroupKey::FailureMode]));
    let rows: Vec<_> = r
        .mtbf
        .iter()
        .map(|m| (m.group_label.as_str(), m.operating_hours, m.failures))
        .collect();
    assert_eq!(
        rows,
        [
            ("model=OC-5A, failure_mode=compressor", 2500.0, 3),
            ("model=OC-5A, failure_mode=sieve_bed", 2500.0, 2),
        ]
    );
}

#[test]
fn weibull_lifetimes_restart_at_each_failure_of_the_same_mode() {
    let r = report(&by(&[GroupKey::Model, GroupKey::FailureMode]));
    let comp = r
        .weibull
        .iter()
        .find(|w| w.group_label == "model=OC-5A, failure_mode=compressor")
        .expect("row");
    // A1: 1000, 1200 (2200 − 1000), suspension 800; A2: 1800, suspension 700; A3: suspension 1000
    assert_eq!((comp.n_failures, comp.n_suspensions), (3, 3));
    let direct =
        fleetpulse_analytics::weibull::fit(&[1000.0, 1200.0, 1800.0], &[800.0, 700.0, 1000.0])
            .expect("fit");
    assert!((comp.beta.expect("β") - direct.beta).abs() < 1e-12 * direct.beta);
    let sieve = r
        .weibull
        .iter()
        .find(|w| w.group_label == "model=OC-5A, failure_mode=sieve_bed")
        .expect("row");
    // A1: 2600, suspension 400; A2: suspension 2500; A3's failure has no age: suspension 1000
    assert_eq!((sieve.n_failures, sieve.n_suspensions), (1, 3));
    assert_eq!(
        sieve.error.as_deref(),
        Some("too few failures (1; at least 2 needed)")
    );
    assert!(sieve.beta.is_none() && sieve.b10_hours.is_none());
    assert!(
        r.warnings
            .iter()
            .any(|w| w.kind == "weibull_failure_without_age" && w.count == 1)
    );
}

#[test]
fn fleet_weibull_counts_any_failure() {
    let q = ReportQuery {
        reliability_at_hours: vec![0.0, 500.0, 2000.0],
        conditional: Some(ConditionalQuery {
            age_hours: 1000.0,
            horizon_hours: 500.0,
        }),
        ..ReportQuery::default()
    };
    let r = report(&q);
    let w = &r.weibull[0];
    // A1: 1000, 1200, 400, susp 400; A2: 1800, susp 700; A3: susp 1000; V1: susp 50
    assert_eq!((w.n_failures, w.n_suspensions), (4, 4));
    assert!(w.error.is_none(), "{:?}", w.error);
    assert_eq!(w.reliability.len(), 3);
    assert_eq!(w.reliability[0].reliability, 1.0);
    assert!(w.b10_lower.expect("b") < w.b10_hours.expect("b10"));
    assert!(w.conditional.as_ref().expect("conditional").probability > 0.0);
    assert!(w.method.contains("Fisher"));
}

#[test]
fn pareto_of_failures_and_alarms() {
    let r = report(&ReportQuery::default());
    let codes: Vec<_> = r
        .pareto_failures
        .iter()
        .filter(|p| p.by == "code")
        .map(|p| (p.value.clone().expect("code"), p.count, p.cumulative_share))
        .collect();
    assert_eq!(
        codes,
        [("E1".to_owned(), 3, 0.6), ("E2".to_owned(), 2, 1.0)]
    );
    assert!(
        r.pareto_failures
            .iter()
            .any(|p| p.by == "failure_mode" && p.value.as_deref() == Some("compressor"))
    );
    let alarms: Vec<_> = r
        .pareto_alarms
        .iter()
        .map(|p| (p.value.clone().expect("code"), p.count))
        .collect();
    assert_eq!(alarms, [("W7".to_owned(), 2), ("E1".to_owned(), 1)]);
}

#[test]
fn trend_by_month() {
    let r = report(&ReportQuery::default());
    let rows: Vec<_> = r
        .trend
        .iter()
        .map(|t| (t.month.as_str(), t.devices, t.operating_hours, t.failures))
        .collect();
    assert_eq!(
        rows,
        [
            ("2026-01", 2, 1100.0, 1),
            ("2026-02", 2, 1000.0, 2),
            ("2026-03", 2, 400.0, 2)
        ]
    );
    assert!((r.trend[1].rate_per_1000h.expect("rate") - 2.0).abs() < 1e-12);
}

#[test]
fn mttr_and_first_time_fix() {
    let r = report(&ReportQuery::default());
    let m = &r.mttr[0];
    assert_eq!((m.repairs, m.completed), (3, 3));
    assert!((m.mttr_mean_hours.expect("mean") - 20.0).abs() < 1e-12);
    assert_eq!(m.mttr_median_hours, Some(20.0));
    assert_eq!(m.hands_on_n, 2);
    assert_eq!(m.hands_on_mean_hours, Some(2.5));
    // 101 was followed by 102 within 30 days; 102 and 104 closed more than 30 days before
    // the period's end with no repeat
    assert_eq!((m.ftf_eligible, m.ftf_fixed, m.ftf_pending), (3, 2, 0));
    // a 10-day window: 101's repeat came 16 days later, so all three are first-time fixes
    let r = report(&ReportQuery {
        ftf_window_days: 10,
        ..ReportQuery::default()
    });
    assert_eq!(r.mttr[0].ftf_fixed, 3);
    // a 60-day window: 102 and 104 are still pending at the period's end (1 April)
    let r = report(&ReportQuery {
        ftf_window_days: 60,
        ..ReportQuery::default()
    });
    let m = &r.mttr[0];
    assert_eq!((m.ftf_eligible, m.ftf_fixed, m.ftf_pending), (1, 0, 2));
}

#[test]
fn store_findings_are_summarised_by_kind() {
    let r = report(&ReportQuery::default());
    let store: Vec<_> = r
        .warnings
        .iter()
        .filter(|w| w.source == "store")
        .map(|w| (w.kind.as_str(), w.count))
        .collect();
    assert_eq!(store, [("gap", 2), ("meter_reset", 1)]);
}

#[test]
fn sources_filter_the_failures() {
    let mut d = data();
    d.failures[0].source = FailureSource::Alarm;
    let q = ReportQuery {
        sources: Some(vec![FailureSource::RepairOrder, FailureSource::Import]),
        ..ReportQuery::default()
    };
    let r = compute(&d, &q).expect("report");
    assert_eq!(r.mtbf[0].failures, 4);
}

#[test]
fn invalid_queries_are_rejected() {
    let q = ReportQuery {
        confidence: 1.0,
        ..ReportQuery::default()
    };
    assert!(matches!(
        compute(&data(), &q),
        Err(AnalyticsError::InvalidConfidence(_))
    ));
    let q = ReportQuery {
        reliability_at_hours: vec![f64::NAN],
        ..ReportQuery::default()
    };
    assert!(matches!(
        compute(&data(), &q),
        Err(AnalyticsError::InvalidInput(_))
    ));
    let q = ReportQuery {
        conditional: Some(ConditionalQuery {
            age_hours: -1.0,
            horizon_hours: 10.0,
        }),
        ..ReportQuery::default()
    };
    assert!(matches!(
        compute(&data(), &q),
        Err(AnalyticsError::InvalidInput(_))
    ));
}

#[test]
fn bad_numbers_are_excluded_and_reported_never_emitted() {
    let mut d = data();
    d.exposure.push(exposure("A1", 3, f64::NAN));
    d.exposure.push(exposure("A2", 3, -40.0));
    d.failures
        .push(failure(9, "A2", 3, Some(f64::INFINITY), "E9", "compressor"));
    d.failures
        .push(failure(10, "ZZ9", 3, Some(-3.0), "E9", "compressor"));
    d.devices[1].age_at_end = Some(f64::NAN);
    let q = ReportQuery {
        group_by: vec![GroupKey::Model, GroupKey::Code],
        reliability_at_hours: vec![100.0, 1e9],
        conditional: Some(ConditionalQuery {
            age_hours: 0.0,
            horizon_hours: 1e9,
        }),
        ..ReportQuery::default()
    };
    let r = compute(&d, &q).expect("report");
    let kinds: Vec<_> = r
        .warnings
        .iter()
        .filter(|w| w.source == "analytics")
        .map(|w| w.kind.as_str())
        .collect();
    for k in [
        "invalid_exposure_hours",
        "weibull_invalid_age",
        "unknown_device",
        "invalid_device_age",
        "failures_without_exposure",
    ] {
        assert!(kinds.contains(&k), "{k} missing from {kinds:?}");
    }
    let fleet = compute(&d, &ReportQuery::default()).expect("report");
    assert_eq!(fleet.mtbf[0].operating_hours, 2500.0);
    assert_eq!(fleet.mtbf[0].failures, 7);
    assert_all_numbers_finite(&serde_json::to_value(&r).expect("json"));
    assert_all_numbers_finite(&serde_json::to_value(&fleet).expect("json"));
    assert_no_non_finite_field(&r);
    assert_no_non_finite_field(&fleet);
}

#[test]
fn random_messy_data_never_errors_or_emits_non_finite_numbers() {
    use rand::{Rng, SeedableRng};
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(42);
    let weird = [f64::NAN, -1.0, 0.0, f64::INFINITY, 1e-300, 1e300];
    let num = |rng: &mut rand_chacha::ChaCha8Rng, scale: f64| {
        if rng.random::<f64>() < 0.1 {
            weird[rng.random_range(0..weird.len())]
        } else {
            rng.random::<f64>() * scale
        }
    };
    for round in 0..40 {
        let n = rng.random_range(0..8);
        let models = ["OC-5A", "HV-200"];
        let mut d = ReliabilityData::default();
        for i in 0..n {
            let mut dev = device(&format!("D{i}"), models[i % 2], Some(num(&mut rng, 5000.0)));
            if rng.random::<f64>() < 0.2 {
                dev.age_at_end = None;
                dev.model = None;
            }
            d.devices.push(dev);
            for m in 1..=rng.random_range(0..4u32) {
                d.exposure
                    .push(exposure(&format!("D{i}"), m, num(&mut rng, 700.0)));
            }
            for k in 0..rng.random_range(0..4) {
                let age = if rng.random::<f64>() < 0.2 {
                    None
                } else {
                    Some(num(&mut rng, 5000.0))
                };
                let code = ["E1", "E2"][k % 2];
                d.failures.push(failure(
                    i as i64 * 10 + k as i64,
                    &format!("D{i}"),
                    rng.random_range(1..4),
                    age,
                    code,
                    "compressor",
                ));
            }
            if rng.random::<f64>() < 0.5 {
                d.repairs.push(repair(
                    i as i64,
                    &format!("D{i}"),
                    at(2026, 1, 2),
                    rng.random_range(-5..50),
                    Some(1),
                ));
            }
        }
        let keys = [
            GroupKey::Fleet,
            GroupKey::Model,
            GroupKey::FailureMode,
            GroupKey::Code,
            GroupKey::Region,
        ];
        let group_by: Vec<GroupKey> = keys
            .iter()
            .copied()
            .filter(|_| rng.random::<f64>() < 0.4)
            .collect();
        let q = ReportQuery {
            group_by,
            confidence: rng.random_range(0.01..0.99),
            reliability_at_hours: vec![rng.random::<f64>() * 1e4],
            conditional: Some(ConditionalQuery {
                age_hours: rng.random::<f64>() * 1e4,
                horizon_hours: 1.0 + rng.random::<f64>() * 1e4,
            }),
            ..ReportQuery::default()
        };
        let r = compute(&d, &q).unwrap_or_else(|e| panic!("round {round}: {e}"));
        assert_all_numbers_finite(&serde_json::to_value(&r).expect("json"));
        assert_no_non_finite_field(&r);
        let _ = r.tables_csv();
    }
}

/// serde_json writes a NaN as `null`, which the JSON check above cannot tell from `None`:
/// so check the fields themselves — required numbers finite, optional ones `None` or
/// finite.
fn assert_no_non_finite_field(r: &ReliabilityReport) {
    let ok = |x: f64| assert!(x.is_finite(), "non-finite {x}");
    let ok_opt = |x: Option<f64>| assert!(x.is_none_or(f64::is_finite), "non-finite {x:?}");
    for m in &r.mtbf {
        [m.operating_hours, m.confidence].into_iter().for_each(ok);
        [
            m.mtbf_hours,
            m.mtbf_lower,
            m.mtbf_upper,
            m.rate_per_1000h,
            m.rate_lower,
            m.rate_upper,
        ]
        .into_iter()
        .for_each(ok_opt);
    }
    for w in &r.weibull {
        ok(w.confidence);
        [
            w.beta,
            w.beta_se,
            w.beta_lower,
            w.beta_upper,
            w.eta,
            w.eta_se,
            w.eta_lower,
            w.eta_upper,
            w.cov_eta_beta,
            w.log_likelihood,
            w.aic,
            w.bic,
            w.b10_hours,
            w.b10_lower,
            w.b10_upper,
            w.b50_hours,
            w.b50_lower,
            w.b50_upper,
        ]
        .into_iter()
        .for_each(ok_opt);
        for at in &w.reliability {
            [at.t_hours, at.reliability].into_iter().for_each(ok);
            [at.lower, at.upper].into_iter().for_each(ok_opt);
        }
        if let Some(c) = &w.conditional {
            [c.age_hours, c.horizon_hours, c.probability]
                .into_iter()
                .for_each(ok);
        }
    }
    for p in r.pareto_failures.iter().chain(&r.pareto_alarms) {
        [p.share, p.cumulative_share].into_iter().for_each(ok);
    }
    for t in &r.trend {
        [t.operating_hours, t.confidence].into_iter().for_each(ok);
        [t.rate_per_1000h, t.rate_lower, t.rate_upper]
            .into_iter()
            .for_each(ok_opt);
    }
    for m in &r.mttr {
        [
            m.mttr_mean_hours,
            m.mttr_median_hours,
            m.hands_on_mean_hours,
            m.hands_on_median_hours,
            m.ftf_rate,
        ]
        .into_iter()
        .for_each(ok_opt);
    }
}

fn assert_all_numbers_finite(v: &serde_json::Value) {
    match v {
        serde_json::Value::Number(n) => assert!(n.as_f64().is_some_and(f64::is_finite), "{n}"),
        serde_json::Value::Array(a) => a.iter().for_each(assert_all_numbers_finite),
        serde_json::Value::Object(o) => o.values().for_each(assert_all_numbers_finite),
        _ => {}
    }
}

#[test]
fn empty_data_gives_empty_tables_not_errors() {
    let r = compute(
        &ReliabilityData::default(),
        &by(&[GroupKey::Model, GroupKey::FailureMode]),
    )
    .expect("report");
    assert!(r.mtbf.is_empty() && r.weibull.is_empty() && r.trend.is_empty());
    let r = compute(&ReliabilityData::default(), &ReportQuery::default()).expect("report");
    assert!(r.mtbf.is_empty() || r.mtbf[0].operating_hours == 0.0);
}

#[test]
fn one_sided_queries_give_one_bound() {
    let q = ReportQuery {
        sides: Sides::Lower,
        ..ReportQuery::default()
    };
    let r = report(&q);
    assert!(r.mtbf[0].mtbf_lower.is_some() && r.mtbf[0].mtbf_upper.is_none());
    assert!(r.weibull[0].beta_lower.is_some() && r.weibull[0].beta_upper.is_none());
}

#[test]
fn csv_tables_have_headers_and_quote_what_needs_it() {
    let r = report(&by(&[GroupKey::Model, GroupKey::FailureMode]));
    let tables = r.tables_csv();
    let names: Vec<_> = tables.iter().map(|(n, _)| *n).collect();
    assert_eq!(
        names,
        [
            "mtbf",
            "weibull",
            "weibull_reliability",
            "pareto_failures",
            "pareto_alarms",
            "trend",
            "mttr",
            "warnings"
        ]
    );
    let mtbf = &tables[0].1;
    let mut lines = mtbf.split("\r\n");
    assert!(
        lines
            .next()
            .expect("header")
            .starts_with("group,model,failure_mode,devices,operating_hours,failures,mtbf_hours")
    );
    let first = lines.next().expect("row");
    assert!(
        first.starts_with("\"model=OC-5A, failure_mode=compressor\",OC-5A,compressor,3,2500,3,"),
        "{first}"
    );
    for (name, text) in &tables {
        assert!(text.ends_with("\r\n"), "{name}");
    }
}

#[test]
fn report_types_have_openapi_schemas() {
    use utoipa::PartialSchema;
    let schema = serde_json::to_string(&ReliabilityReport::schema()).expect("schema");
    assert!(schema.contains("pareto_failures"));
    let q = serde_json::to_string(&ReportQuery::schema()).expect("schema");
    assert!(q.contains("ftf_window_days"));
}

#[test]
fn query_deserialises_with_defaults() {
    let q: ReportQuery =
        serde_json::from_str(r#"{"group_by":["model","failure_mode"],"sides":"lower"}"#)
            .expect("query");
    assert_eq!(q.confidence, 0.90);
    assert_eq!(q.ftf_window_days, 30);
    assert_eq!(q.sides, Sides::Lower);
    assert!(serde_json::from_str::<ReportQuery>(r#"{"confidenc":0.9}"#).is_err());
}

#[test]
fn weibull_samples_are_the_populations_of_the_weibull_table() {
    let q = by(&[GroupKey::Model, GroupKey::FailureMode]);
    let r = report(&q);
    let samples = fleetpulse_analytics::weibull_samples(&data(), &q).expect("samples");
    assert_eq!(samples.len(), r.weibull.len());
    for (s, w) in samples.iter().zip(&r.weibull) {
        assert_eq!(s.group_label, w.group_label);
        assert_eq!(s.failures.len() as u64, w.n_failures);
        assert_eq!(s.suspensions.len() as u64, w.n_suspensions);
    }
    let comp = &samples[0];
    assert_eq!(comp.group_label, "model=OC-5A, failure_mode=compressor");
    let mut f = comp.failures.clone();
    f.sort_by(f64::total_cmp);
    assert_eq!(f, [1000.0, 1200.0, 1800.0]);
}
