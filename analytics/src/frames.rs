//! The report's data work: dictionary-encode the records into integer columns, aggregate
//! exposure and failures with polars (lazy joins and group-bys over the big tables), then
//! assemble the tables and run the scalar statistics per group.

use std::collections::{BTreeMap, HashMap};

use chrono::{DateTime, Datelike, Utc};
use fleetpulse_domain::reliability::ReliabilityData;
use polars::prelude::{Column, DataFrame, Expr, IntoLazy, JoinArgs, JoinType, LazyFrame, col, len};

use crate::mtbf;
use crate::mttr::{RepairGroup, first_time_fix};
use crate::pareto::pareto;
use crate::report::{
    ConditionalFailure, GroupKey, GroupValue, MtbfRow, MttrRow, ParetoRow, ReliabilityAt,
    ReliabilityReport, ReportQuery, TrendRow, Warning, WeibullRow, group_label,
};
use crate::trend::month_label;
use crate::weibull::{self, Life, z_value};
use crate::{AnalyticsError, mtbf::percent};

/// Codes of one group: the values of the device keys and of the event keys, each in the
/// query's key order. Code 0 is "no value".
type Codes = Vec<u32>;

/// String values ↔ dense codes; code 0 is `None`.
#[derive(Default)]
struct Dict {
    index: HashMap<String, u32>,
    values: Vec<Option<String>>,
}

impl Dict {
    fn new() -> Self {
        Self {
            index: HashMap::new(),
            values: vec![None],
        }
    }

    fn code(&mut self, value: Option<&str>) -> u32 {
        let Some(v) = value else { return 0 };
        if let Some(&c) = self.index.get(v) {
            return c;
        }
        let c = u32::try_from(self.values.len()).expect("fewer than 2^32 distinct values");
        self.values.push(Some(v.to_owned()));
        self.index.insert(v.to_owned(), c);
        c
    }

    fn value(&self, code: u32) -> Option<String> {
        self.values.get(code as usize).cloned().flatten()
    }
}

/// Analytics-side findings, by kind: count and one example.
#[derive(Default)]
struct Findings(BTreeMap<&'static str, (u64, String)>);

impl Findings {
    fn add(&mut self, kind: &'static str, example: impl FnOnce() -> String) {
        let e = self.0.entry(kind).or_insert_with(|| (0, example()));
        e.0 += 1;
    }

    fn add_n(&mut self, kind: &'static str, n: u64, example: impl FnOnce() -> String) {
        if n == 0 {
            return;
        }
        let e = self.0.entry(kind).or_insert_with(|| (0, example()));
        e.0 += n;
    }
}

/// What each analytics finding means for the figures.
fn finding_meaning(kind: &str) -> &'static str {
    match kind {
        "unknown_device" => {
            "records for serials outside the population: counted, with no model, kind or region"
        }
        "invalid_exposure_hours" => {
            "exposure rows with negative, NaN or infinite hours, or more than the 744 hours of a month: excluded from operating hours"
        }
        "invalid_device_age" => {
            "device meter ages that are negative, NaN or infinite: treated as unknown"
        }
        "weibull_failure_without_age" => {
            "failures without a runtime-hour age: counted in MTBF, Pareto and trend, excluded from Weibull"
        }
        "weibull_invalid_age" => {
            "failures with a negative, NaN or infinite age: counted in MTBF, excluded from Weibull"
        }
        "weibull_zero_lifetime" => {
            "failures at the same age as the previous failure of the same device (and mode): excluded from Weibull"
        }
        "weibull_device_without_age" => {
            "devices without a meter age at the period's end: no suspension in Weibull fits"
        }
        "age_at_end_before_failure" => {
            "devices whose meter age at the period's end is below their last failure age: no suspension"
        }
        "failures_without_exposure" => {
            "groups (or group-months) with failures but no operating hours: rate and MTBF undefined"
        }
        "repair_invalid_interval" => {
            "completed repair orders closed before they were created (or without a close time): excluded from MTTR"
        }
        _ => "",
    }
}

/// A calendar month has at most 31 × 24 hours: a meter that ran longer is broken.
const MAX_MONTH_HOURS: f64 = 744.0;

fn invalid_hours(x: f64) -> bool {
    !(x.is_finite() && x >= 0.0)
}

fn month_index(t: &DateTime<Utc>) -> i32 {
    let d = t.naive_utc();
    d.year() * 12 + d.month0() as i32
}

/// The records as integer columns, plus the dictionaries to decode them.
struct Encoded {
    keys: Vec<GroupKey>,
    device_keys: Vec<GroupKey>,
    event_keys: Vec<GroupKey>,
    serial_index: HashMap<String, u32>,
    dev_model: Vec<u32>,
    dev_kind: Vec<u32>,
    dev_region: Vec<u32>,
    dev_age_at_end: Vec<Option<f64>>,
    model: Dict,
    kind: Dict,
    region: Dict,
    code: Dict,
    mode: Dict,
    component: Dict,
    findings: Findings,
}

impl Encoded {
    fn new(data: &ReliabilityData, query: &ReportQuery) -> Self {
        let keys = query.keys();
        let mut e = Encoded {
            device_keys: keys.iter().copied().filter(|k| !k.is_event_key()).collect(),
            event_keys: keys.iter().copied().filter(|k| k.is_event_key()).collect(),
            keys,
            serial_index: HashMap::with_capacity(data.devices.len()),
            dev_model: Vec::with_capacity(data.devices.len()),
            dev_kind: Vec::with_capacity(data.devices.len()),
            dev_region: Vec::with_capacity(data.devices.len()),
            dev_age_at_end: Vec::with_capacity(data.devices.len()),
            model: Dict::new(),
            kind: Dict::new(),
            region: Dict::new(),
            code: Dict::new(),
            mode: Dict::new(),
            component: Dict::new(),
            findings: Findings::default(),
        };
        for d in &data.devices {
            if e.serial_index.contains_key(d.serial.as_str()) {
                continue; // a duplicate registry row: the first one counts
            }
            let idx = e.dev_model.len() as u32;
            e.serial_index.insert(d.serial.as_str().to_owned(), idx);
            let m = e.model.code(d.model.as_deref());
            let k = e.kind.code(d.kind.as_deref());
            let r = e.region.code(d.region.as_deref());
            e.dev_model.push(m);
            e.dev_kind.push(k);
            e.dev_region.push(r);
            let age = match d.age_at_end {
                Some(a) if invalid_hours(a) => {
                    e.findings.add("invalid_device_age", || {
                        format!("{}: {a}", d.serial.as_str())
                    });
                    None
                }
                other => other,
            };
            e.dev_age_at_end.push(age);
        }
        e
    }

    /// The device index of a serial, adding an unknown device when it is not in the
    /// population.
    fn device(&mut self, serial: &str) -> u32 {
        if let Some(&i) = self.serial_index.get(serial) {
            return i;
        }
        self.findings
            .add("unknown_device", || format!("serial {serial}"));
        let idx = self.dev_model.len() as u32;
        self.serial_index.insert(serial.to_owned(), idx);
        self.dev_model.push(0);
        self.dev_kind.push(0);
        self.dev_region.push(0);
        self.dev_age_at_end.push(None);
        idx
    }

    fn device_codes(&self, idx: u32) -> Codes {
        let i = idx as usize;
        self.device_keys
            .iter()
            .map(|k| match k {
                GroupKey::Model => self.dev_model[i],
                GroupKey::Kind => self.dev_kind[i],
                GroupKey::Region => self.dev_region[i],
                _ => 0,
            })
            .collect()
    }

    fn event_codes(&self, code: u32, mode: u32, component: u32) -> Codes {
        self.event_keys
            .iter()
            .map(|k| match k {
                GroupKey::Code => code,
                GroupKey::Component => component,
                _ => mode,
            })
            .collect()
    }

    fn decode(&self, key: GroupKey, code: u32) -> Option<String> {
        match key {
            GroupKey::Model => self.model.value(code),
            GroupKey::Kind => self.kind.value(code),
            GroupKey::Region => self.region.value(code),
            GroupKey::Code => self.code.value(code),
            GroupKey::FailureMode => self.mode.value(code),
            GroupKey::Component => self.component.value(code),
            GroupKey::Fleet => None,
        }
    }

    /// The row's key values in the query's order.
    fn group(&self, dk: &[u32], ek: &[u32]) -> Vec<GroupValue> {
        let (mut di, mut ei) = (dk.iter(), ek.iter());
        self.keys
            .iter()
            .map(|&key| {
                let code = if key.is_event_key() {
                    ei.next()
                } else {
                    di.next()
                };
                GroupValue {
                    key,
                    value: code.and_then(|&c| self.decode(key, c)),
                }
            })
            .collect()
    }

    fn device_group(&self, dk: &[u32]) -> Vec<GroupValue> {
        self.device_keys
            .iter()
            .zip(dk)
            .map(|(&key, &c)| GroupValue {
                key,
                value: self.decode(key, c),
            })
            .collect()
    }
}

/// One failure as the report uses it.
struct Failure {
    idx: u32,
    month: i32,
    code: u32,
    mode: u32,
    component: u32,
    /// Age when known and valid.
    age: Option<f64>,
}

fn column_names(keys: &[GroupKey]) -> Vec<&'static str> {
    keys.iter().map(|k| k.name()).collect()
}

fn exprs(names: &[&str]) -> Vec<Expr> {
    names.iter().map(|n| col(*n)).collect()
}

fn u32_column(df: &DataFrame, name: &str) -> Result<Vec<u32>, AnalyticsError> {
    Ok(df
        .column(name)?
        .u32()?
        .iter()
        .map(|v| v.unwrap_or(0))
        .collect())
}

fn f64_column(df: &DataFrame, name: &str) -> Result<Vec<f64>, AnalyticsError> {
    Ok(df
        .column(name)?
        .f64()?
        .iter()
        .map(|v| v.unwrap_or(0.0))
        .collect())
}

fn i32_column(df: &DataFrame, name: &str) -> Result<Vec<i32>, AnalyticsError> {
    Ok(df
        .column(name)?
        .i32()?
        .iter()
        .map(|v| v.unwrap_or(0))
        .collect())
}

/// Reads the key columns of an aggregated frame into one code vector per row.
fn key_rows(df: &DataFrame, names: &[&str]) -> Result<Vec<Codes>, AnalyticsError> {
    let cols: Vec<Vec<u32>> = names
        .iter()
        .map(|n| u32_column(df, n))
        .collect::<Result<_, _>>()?;
    Ok((0..df.height())
        .map(|i| cols.iter().map(|c| c[i]).collect())
        .collect())
}

/// The device frame (`idx`, `all`, and one column per device key).
fn device_frame(e: &Encoded) -> Result<DataFrame, AnalyticsError> {
    let n = e.dev_model.len();
    let idx: Vec<u32> = (0..n as u32).collect();
    let mut cols = vec![
        Column::new("idx".into(), idx),
        Column::new("all".into(), vec![0u32; n]),
    ];
    for k in &e.device_keys {
        let v = match k {
            GroupKey::Model => e.dev_model.clone(),
            GroupKey::Kind => e.dev_kind.clone(),
            _ => e.dev_region.clone(),
        };
        cols.push(Column::new(k.name().into(), v));
    }
    Ok(DataFrame::new(n, cols)?)
}

/// The `all` column and one column per device key for rows of the given devices.
fn device_key_columns(e: &Encoded, idx: &[u32]) -> Vec<Column> {
    let mut cols = vec![Column::new("all".into(), vec![0u32; idx.len()])];
    for k in &e.device_keys {
        let codes = match k {
            GroupKey::Model => &e.dev_model,
            GroupKey::Kind => &e.dev_kind,
            _ => &e.dev_region,
        };
        let v: Vec<u32> = idx.iter().map(|&i| codes[i as usize]).collect();
        cols.push(Column::new(k.name().into(), v));
    }
    cols
}

fn join_devices(frame: LazyFrame, devices: &LazyFrame) -> LazyFrame {
    frame.join(
        devices.clone(),
        [col("idx")],
        [col("idx")],
        JoinArgs::new(JoinType::Inner),
    )
}

/// Aggregates of the big tables, collected from polars.
struct Aggregates {
    /// Devices per device group.
    devices: HashMap<Codes, u64>,
    /// Per device group and month: operating hours and devices with exposure.
    exposure_month: HashMap<Codes, BTreeMap<i32, (f64, u64)>>,
    /// Per (device group, event group) and month: failures.
    failures_month: HashMap<(Codes, Codes), BTreeMap<i32, u64>>,
    /// Per device group: failures by code and by mode.
    pareto_code: HashMap<Codes, Vec<(u32, u64)>>,
    pareto_mode: HashMap<Codes, Vec<(u32, u64)>>,
    /// Per device group: alarm episodes by code.
    pareto_alarm: HashMap<Codes, Vec<(u32, u64)>>,
}

fn aggregate(
    e: &Encoded,
    exposure: (Vec<u32>, Vec<i32>, Vec<f64>),
    failures: &[Failure],
    alarms: (Vec<u32>, Vec<u32>),
) -> Result<Aggregates, AnalyticsError> {
    let dev = device_frame(e)?.lazy();
    let mut dk_names = vec!["all"];
    dk_names.extend(column_names(&e.device_keys));
    let ek_names = column_names(&e.event_keys);
    let dk_only = &dk_names[1..];

    // devices per device group
    let df = dev
        .clone()
        .group_by(exprs(&dk_names))
        .agg([len().alias("devices")])
        .collect()?;
    let keys = key_rows(&df, dk_only)?;
    let counts = u32_column(&df, "devices")?;
    let devices = keys
        .into_iter()
        .zip(counts)
        .map(|(k, c)| (k, u64::from(c)))
        .collect();

    // exposure per device group and month: the 2.4 M-row table. Its device keys are
    // gathered by the dense device index (a join on a dense integer key is an array
    // lookup), which spares polars hashing 2.4 M rows against the device table.
    let (e_idx, e_month, e_hours) = exposure;
    let n = e_idx.len();
    let mut cols = device_key_columns(e, &e_idx);
    cols.extend([
        Column::new("idx".into(), e_idx),
        Column::new("month".into(), e_month),
        Column::new("hours".into(), e_hours),
    ]);
    let exp = DataFrame::new(n, cols)?.lazy();
    let mut by = dk_names.clone();
    by.push("month");
    let df = exp
        .group_by(exprs(&by))
        .agg([
            col("hours").sum().alias("hours"),
            col("idx").n_unique().alias("devices"),
        ])
        .collect()?;
    let keys = key_rows(&df, dk_only)?;
    let months = i32_column(&df, "month")?;
    let hours = f64_column(&df, "hours")?;
    let devs = u32_column(&df, "devices")?;
    let mut exposure_month: HashMap<Codes, BTreeMap<i32, (f64, u64)>> = HashMap::new();
    for (i, k) in keys.into_iter().enumerate() {
        exposure_month
            .entry(k)
            .or_default()
            .insert(months[i], (hours[i], u64::from(devs[i])));
    }

    // failures per group and month
    let n = failures.len();
    let fail = DataFrame::new(
        n,
        vec![
            Column::new(
                "idx".into(),
                failures.iter().map(|f| f.idx).collect::<Vec<_>>(),
            ),
            Column::new(
                "month".into(),
                failures.iter().map(|f| f.month).collect::<Vec<_>>(),
            ),
            Column::new(
                "code".into(),
                failures.iter().map(|f| f.code).collect::<Vec<_>>(),
            ),
            Column::new(
                "failure_mode".into(),
                failures.iter().map(|f| f.mode).collect::<Vec<_>>(),
            ),
            Column::new(
                "component".into(),
                failures.iter().map(|f| f.component).collect::<Vec<_>>(),
            ),
        ],
    )?
    .lazy();
    // joined once and materialised: every later group-by reuses it instead of joining
    // (and hashing the device table) again
    let fail_dev = join_devices(fail, &dev).collect()?.lazy();
    let mut by = dk_names.clone();
    by.extend(&ek_names);
    by.push("month");
    let df = fail_dev
        .clone()
        .group_by(exprs(&by))
        .agg([len().alias("failures")])
        .collect()?;
    let dkeys = key_rows(&df, dk_only)?;
    let ekeys = key_rows(&df, &ek_names)?;
    let months = i32_column(&df, "month")?;
    let counts = u32_column(&df, "failures")?;
    let mut failures_month: HashMap<(Codes, Codes), BTreeMap<i32, u64>> = HashMap::new();
    for (i, (dk, ek)) in dkeys.into_iter().zip(ekeys).enumerate() {
        failures_month
            .entry((dk, ek))
            .or_default()
            .insert(months[i], u64::from(counts[i]));
    }

    let pareto_of = |frame: LazyFrame, value: &str| -> Result<_, AnalyticsError> {
        let mut by = dk_names.clone();
        by.push(value);
        let df = frame
            .group_by(exprs(&by))
            .agg([len().alias("count")])
            .collect()?;
        let keys = key_rows(&df, dk_only)?;
        let values = u32_column(&df, value)?;
        let counts = u32_column(&df, "count")?;
        let mut out: HashMap<Codes, Vec<(u32, u64)>> = HashMap::new();
        for (i, k) in keys.into_iter().enumerate() {
            out.entry(k)
                .or_default()
                .push((values[i], u64::from(counts[i])));
        }
        Ok(out)
    };
    let pareto_code = pareto_of(fail_dev.clone(), "code")?;
    let pareto_mode = pareto_of(fail_dev, "failure_mode")?;
    let (a_idx, a_code) = alarms;
    let n = a_idx.len();
    let alarm = DataFrame::new(
        n,
        vec![
            Column::new("idx".into(), a_idx),
            Column::new("code".into(), a_code),
        ],
    )?
    .lazy();
    let pareto_alarm = pareto_of(join_devices(alarm, &dev), "code")?;

    Ok(Aggregates {
        devices,
        exposure_month,
        failures_month,
        pareto_code,
        pareto_mode,
        pareto_alarm,
    })
}

/// The encoded records and their aggregates, shared by the report and the sample export.
struct Prepared {
    e: Encoded,
    failures: Vec<Failure>,
    repair_idx: Vec<u32>,
    agg: Aggregates,
}

fn prepare(data: &ReliabilityData, query: &ReportQuery) -> Result<Prepared, AnalyticsError> {
    let mut e = Encoded::new(data, query);

    // exposure
    let mut e_idx = Vec::with_capacity(data.exposure.len());
    let mut e_month = Vec::with_capacity(data.exposure.len());
    let mut e_hours = Vec::with_capacity(data.exposure.len());
    let mut last: Option<(&str, u32)> = None;
    for row in &data.exposure {
        if invalid_hours(row.hours) || row.hours > MAX_MONTH_HOURS {
            e.findings.add("invalid_exposure_hours", || {
                format!("{} {}: {}", row.serial.as_str(), row.month, row.hours)
            });
            continue;
        }
        // the store sends a device's months together: skip the hash lookup for repeats
        let idx = match last {
            Some((serial, idx)) if serial == row.serial.as_str() => idx,
            _ => e.device(row.serial.as_str()),
        };
        last = Some((row.serial.as_str(), idx));
        e_idx.push(idx);
        e_month.push(month_index(&row.month));
        e_hours.push(row.hours);
    }

    // failures (of the requested sources)
    let mut failures = Vec::with_capacity(data.failures.len());
    for f in &data.failures {
        if let Some(sources) = &query.sources
            && !sources.contains(&f.source)
        {
            continue;
        }
        let idx = e.device(f.serial.as_str());
        let age = match f.age_hours {
            None => {
                e.findings.add("weibull_failure_without_age", || {
                    format!("failure {} of {}", f.id, f.serial.as_str())
                });
                None
            }
            Some(a) if invalid_hours(a) => {
                e.findings.add("weibull_invalid_age", || {
                    format!("failure {} of {}: {a}", f.id, f.serial.as_str())
                });
                None
            }
            Some(a) => Some(a),
        };
        failures.push(Failure {
            idx,
            month: month_index(&f.at),
            code: e.code.code(f.code.as_deref()),
            mode: e.mode.code(f.failure_mode.as_deref()),
            component: e.component.code(f.component.as_deref()),
            age,
        });
    }

    // alarms
    let mut a_idx = Vec::with_capacity(data.alarms.len());
    let mut a_code = Vec::with_capacity(data.alarms.len());
    for a in &data.alarms {
        a_idx.push(e.device(a.serial.as_str()));
        a_code.push(e.code.code(Some(a.code.as_str())));
    }
    let repair_idx: Vec<u32> = data
        .repairs
        .iter()
        .map(|r| e.device(r.serial.as_str()))
        .collect();

    let agg = aggregate(&e, (e_idx, e_month, e_hours), &failures, (a_idx, a_code))?;
    Ok(Prepared {
        e,
        failures,
        repair_idx,
        agg,
    })
}

/// The Weibull population (failure lifetimes and suspensions) of every group, as
/// [`crate::report::weibull_samples`] returns them.
pub(crate) fn weibull_samples(
    data: &ReliabilityData,
    query: &ReportQuery,
) -> Result<Vec<crate::report::WeibullSample>, AnalyticsError> {
    let Prepared {
        mut e,
        failures,
        agg,
        ..
    } = prepare(data, query)?;
    let (groups, pops) = populations(&mut e, &agg, &failures, data);
    Ok(groups
        .iter()
        .zip(pops)
        .map(|((dk, ek), pop)| {
            let group = e.group(dk, ek);
            crate::report::WeibullSample {
                group_label: group_label(&group),
                group,
                failures: pop.failures,
                suspensions: pop.suspensions,
                lives: pop.lives,
            }
        })
        .collect())
}

/// Builds the whole report (the query has been validated).
pub(crate) fn build_report(
    data: &ReliabilityData,
    query: &ReportQuery,
) -> Result<ReliabilityReport, AnalyticsError> {
    let Prepared {
        mut e,
        failures,
        repair_idx,
        agg,
    } = prepare(data, query)?;

    let mtbf = mtbf_table(&mut e, &agg, query)?;
    let trend = trend_table(&mut e, &agg, query)?;
    let weibull = weibull_table(&mut e, &agg, &failures, query, data)?;
    let pareto_failures = pareto_table(&e, &agg.pareto_code, "code", &e.code)
        .into_iter()
        .chain(pareto_table(&e, &agg.pareto_mode, "failure_mode", &e.mode))
        .collect();
    let pareto_alarms = pareto_table(&e, &agg.pareto_alarm, "code", &e.code);
    let mttr = mttr_table(&mut e, &agg, data, &repair_idx, query);
    let warnings = warnings(data, &e.findings);

    Ok(ReliabilityReport {
        period: data.period,
        query: query.clone(),
        mtbf,
        weibull,
        pareto_failures,
        pareto_alarms,
        trend,
        mttr,
        warnings,
    })
}

/// The (device group, event group) combinations that get a row: every device group when
/// there are no event keys, else the combinations observed in the failures.
fn row_groups(e: &Encoded, agg: &Aggregates) -> Vec<(Codes, Codes)> {
    let mut groups: Vec<(Codes, Codes)> = if e.event_keys.is_empty() {
        agg.devices
            .keys()
            .map(|dk| (dk.clone(), Vec::new()))
            .collect()
    } else {
        agg.failures_month.keys().cloned().collect()
    };
    groups.sort_by_key(|(dk, ek)| e.group(dk, ek));
    groups
}

fn mtbf_table(
    e: &mut Encoded,
    agg: &Aggregates,
    query: &ReportQuery,
) -> Result<Vec<MtbfRow>, AnalyticsError> {
    let mut rows = Vec::new();
    for (dk, ek) in row_groups(e, agg) {
        let hours: f64 = agg
            .exposure_month
            .get(&dk)
            .map_or(0.0, |m| m.values().map(|(h, _)| h).sum());
        let failures: u64 = agg
            .failures_month
            .get(&(dk.clone(), ek.clone()))
            .map_or(0, |m| m.values().sum());
        let group = e.group(&dk, &ek);
        let label = group_label(&group);
        if hours == 0.0 && failures > 0 {
            e.findings
                .add("failures_without_exposure", || label.clone());
        }
        let est = mtbf::mtbf(
            hours,
            failures,
            query.confidence,
            query.sides,
            query.termination,
        )?;
        rows.push(MtbfRow {
            group,
            group_label: label,
            devices: agg.devices.get(&dk).copied().unwrap_or(0),
            operating_hours: hours,
            failures,
            mtbf_hours: est.mtbf_hours,
            mtbf_lower: est.mtbf_lower,
            mtbf_upper: est.mtbf_upper,
            rate_per_1000h: est.rate_per_1000h,
            rate_lower: est.rate_lower,
            rate_upper: est.rate_upper,
            confidence: est.confidence,
            method: est.method,
        });
    }
    Ok(rows)
}

fn trend_table(
    e: &mut Encoded,
    agg: &Aggregates,
    query: &ReportQuery,
) -> Result<Vec<TrendRow>, AnalyticsError> {
    let empty_exp = BTreeMap::new();
    let empty_fail = BTreeMap::new();
    let mut rows = Vec::new();
    for (dk, ek) in row_groups(e, agg) {
        let exp = agg.exposure_month.get(&dk).unwrap_or(&empty_exp);
        let fail = agg
            .failures_month
            .get(&(dk.clone(), ek.clone()))
            .unwrap_or(&empty_fail);
        let mut months: Vec<i32> = exp.keys().chain(fail.keys()).copied().collect();
        months.sort_unstable();
        months.dedup();
        let group = e.group(&dk, &ek);
        let label = group_label(&group);
        for m in months {
            let (hours, devices) = exp.get(&m).copied().unwrap_or((0.0, 0));
            let failures = fail.get(&m).copied().unwrap_or(0);
            if hours == 0.0 && failures > 0 {
                e.findings.add("failures_without_exposure", || {
                    format!("{label} in {}", month_label(m))
                });
            }
            let est = mtbf::mtbf(
                hours,
                failures,
                query.confidence,
                query.sides,
                query.termination,
            )?;
            rows.push(TrendRow {
                group: group.clone(),
                group_label: label.clone(),
                month: month_label(m),
                devices,
                operating_hours: hours,
                failures,
                rate_per_1000h: est.rate_per_1000h,
                rate_lower: est.rate_lower,
                rate_upper: est.rate_upper,
                confidence: est.confidence,
                method: est.method,
            });
        }
    }
    Ok(rows)
}

/// Lifetimes of one Weibull group.
#[derive(Default)]
struct Population {
    failures: Vec<f64>,
    suspensions: Vec<f64>,
    /// Component lives with their entry ages: the fit is on these when not empty
    /// (`failures` and `suspensions` then hold their exits).
    lives: Vec<Life>,
}

/// Whether the Weibull fits of this report are on the component lives.
fn on_component_lives(e: &Encoded, data: &ReliabilityData) -> bool {
    !data.component_lives.is_empty()
        && e.event_keys.iter().any(|k| k.fits_component_lives())
        && !e.event_keys.contains(&GroupKey::Code)
}

/// The Weibull populations from the component lives: a group split by component has the
/// lives of that component (every failure mode a failure); a group split by failure mode
/// has the lives of the components that fail in it, where only a failure of that mode is
/// a failure (another mode ends the life as a suspension: competing modes).
fn life_populations(
    e: &mut Encoded,
    groups: &[(Codes, Codes)],
    failures: &[Failure],
    data: &ReliabilityData,
) -> Vec<Population> {
    let mut pops: Vec<Population> = (0..groups.len()).map(|_| Population::default()).collect();
    let comp_at = e.event_keys.iter().position(|k| *k == GroupKey::Component);
    let mode_at = e
        .event_keys
        .iter()
        .position(|k| *k == GroupKey::FailureMode);
    // the components each failure mode was seen failing
    let mut owners: HashMap<u32, Vec<u32>> = HashMap::new();
    for f in failures {
        let o = owners.entry(f.mode).or_default();
        if !o.contains(&f.component) {
            o.push(f.component);
        }
    }
    let mut by_device_group: HashMap<Codes, Vec<(Codes, usize)>> = HashMap::new();
    for (i, (dk, ek)) in groups.iter().enumerate() {
        by_device_group
            .entry(dk.clone())
            .or_default()
            .push((ek.clone(), i));
    }
    for life in &data.component_lives {
        let idx = e.device(life.serial.as_str());
        let dk = e.device_codes(idx);
        let Some(event_groups) = by_device_group.get(&dk) else {
            continue;
        };
        let comp = e.component.code(Some(&life.component));
        let failed_in = e.mode.code(life.failure_mode.as_deref());
        for (ek, pi) in event_groups {
            if comp_at.is_some_and(|i| ek[i] != comp) {
                continue;
            }
            let mode = mode_at.map(|i| ek[i]);
            if let Some(m) = mode
                && !owners.get(&m).is_some_and(|o| o.contains(&comp))
            {
                continue;
            }
            let failed = match mode {
                Some(m) => life.failure_mode.is_some() && failed_in == m,
                None => life.failure_mode.is_some(),
            };
            let pop = &mut pops[*pi];
            if failed {
                pop.failures.push(life.exit);
            } else {
                pop.suspensions.push(life.exit);
            }
            pop.lives.push(Life {
                entry: life.entry,
                exit: life.exit,
                failed,
            });
        }
    }
    pops
}

/// Builds the Weibull populations: per device and event group, failure lifetimes measured
/// from the previous failure of the same device in the same group (or from 0), and the
/// remaining time to the device's age at the period's end as a suspension.
fn populations(
    e: &mut Encoded,
    agg: &Aggregates,
    failures: &[Failure],
    data: &ReliabilityData,
) -> (Vec<(Codes, Codes)>, Vec<Population>) {
    let groups = row_groups(e, agg);
    if on_component_lives(e, data) {
        let pops = life_populations(e, &groups, failures, data);
        return (groups, pops);
    }
    let mut pops: Vec<Population> = (0..groups.len()).map(|_| Population::default()).collect();
    // per device group: its event groups and their population index
    let mut by_device_group: HashMap<&Codes, Vec<(&Codes, usize)>> = HashMap::new();
    for (i, (dk, ek)) in groups.iter().enumerate() {
        by_device_group.entry(dk).or_default().push((ek, i));
    }
    // failures with a valid age, by device, event codes and age
    let mut aged: Vec<(u32, Codes, f64)> = failures
        .iter()
        .filter_map(|f| {
            f.age
                .map(|a| (f.idx, e.event_codes(f.code, f.mode, f.component), a))
        })
        .collect();
    aged.sort_by(|a, b| a.0.cmp(&b.0).then(a.1.cmp(&b.1)).then(a.2.total_cmp(&b.2)));

    let n_devices = e.dev_model.len() as u32;
    let mut cursor = 0;
    let (mut zero_lifetimes, mut no_age, mut before_failure) = (0u64, 0u64, 0u64);
    let mut no_age_example = String::new();
    for idx in 0..n_devices {
        let start = cursor;
        while cursor < aged.len() && aged[cursor].0 == idx {
            cursor += 1;
        }
        let own = &aged[start..cursor];
        let dk = e.device_codes(idx);
        let Some(event_groups) = by_device_group.get(&dk) else {
            continue;
        };
        let age_at_end = e.dev_age_at_end[idx as usize];
        if age_at_end.is_none() {
            no_age += 1;
            if no_age_example.is_empty() {
                no_age_example = format!("device #{idx}");
            }
        }
        for &(ek, pi) in event_groups {
            let pop = &mut pops[pi];
            let mut last = 0.0;
            for (_, _, age) in own.iter().filter(|(_, fek, _)| fek == ek) {
                let life = age - last;
                if life > 0.0 {
                    pop.failures.push(life);
                } else {
                    zero_lifetimes += 1;
                }
                last = *age;
            }
            if let Some(end) = age_at_end {
                let rest = end - last;
                if rest > 0.0 {
                    pop.suspensions.push(rest);
                } else if rest < 0.0 {
                    before_failure += 1;
                }
            }
        }
    }
    e.findings
        .add_n("weibull_zero_lifetime", zero_lifetimes, String::new);
    e.findings
        .add_n("weibull_device_without_age", no_age, || no_age_example);
    e.findings
        .add_n("age_at_end_before_failure", before_failure, String::new);
    (groups, pops)
}

fn finite(x: f64) -> Option<f64> {
    x.is_finite().then_some(x)
}

fn weibull_table(
    e: &mut Encoded,
    agg: &Aggregates,
    failures: &[Failure],
    query: &ReportQuery,
    data: &ReliabilityData,
) -> Result<Vec<WeibullRow>, AnalyticsError> {
    let (groups, pops) = populations(e, agg, failures, data);
    let sides = query.sides;
    let z = z_value(query.confidence, sides)?;
    let method = if on_component_lives(e, data) {
        format!(
            "MLE on component lives (renewals; suspensions at preventive replacements and at the period's end) with right censoring and left truncation (delayed entry), as lifelines WeibullFitter with entry=; Fisher-matrix bounds: {} {} % (Z = {:.4})",
            sides.label(),
            percent(query.confidence),
            z
        )
    } else {
        format!(
            "MLE with right censoring (profile likelihood in β, safeguarded Newton); Fisher-matrix bounds as Python reliability Fit_Weibull_2P: {} {} % (Z = {:.4})",
            sides.label(),
            percent(query.confidence),
            z
        )
    };
    let mut rows = Vec::with_capacity(groups.len());
    for ((dk, ek), pop) in groups.iter().zip(pops) {
        let group = e.group(dk, ek);
        let mut row = WeibullRow {
            group_label: group_label(&group),
            group,
            n_failures: pop.failures.len() as u64,
            n_suspensions: pop.suspensions.len() as u64,
            beta: None,
            beta_se: None,
            beta_lower: None,
            beta_upper: None,
            eta: None,
            eta_se: None,
            eta_lower: None,
            eta_upper: None,
            cov_eta_beta: None,
            log_likelihood: None,
            aic: None,
            bic: None,
            b10_hours: None,
            b10_lower: None,
            b10_upper: None,
            b50_hours: None,
            b50_lower: None,
            b50_upper: None,
            reliability: Vec::new(),
            conditional: None,
            confidence: query.confidence,
            method: method.clone(),
            error: None,
        };
        let fitted = if pop.lives.is_empty() {
            weibull::fit(&pop.failures, &pop.suspensions)
        } else {
            weibull::fit_lives(&pop.lives)
        };
        match fitted {
            Err(err) => row.error = Some(err.to_string()),
            Ok(fit) => {
                let (eb, bb) = (fit.eta_bounds(z, sides), fit.beta_bounds(z, sides));
                let (b10, b50) = (
                    fit.b_life_bounds(0.1, z, sides),
                    fit.b_life_bounds(0.5, z, sides),
                );
                row.beta = finite(fit.beta);
                row.beta_se = fit.beta_se().and_then(finite);
                row.beta_lower = bb.lower;
                row.beta_upper = bb.upper;
                row.eta = finite(fit.eta);
                row.eta_se = fit.eta_se().and_then(finite);
                row.eta_lower = eb.lower;
                row.eta_upper = eb.upper;
                row.cov_eta_beta = fit.cov_eta_beta().and_then(finite);
                row.log_likelihood = finite(fit.log_likelihood);
                row.aic = finite(fit.aic());
                row.bic = finite(fit.bic());
                row.b10_hours = finite(fit.b_life(0.1));
                row.b10_lower = b10.lower;
                row.b10_upper = b10.upper;
                row.b50_hours = finite(fit.b_life(0.5));
                row.b50_lower = b50.lower;
                row.b50_upper = b50.upper;
                row.reliability = query
                    .reliability_at_hours
                    .iter()
                    .map(|&t| {
                        let b = fit.reliability_bounds(t, z, sides);
                        ReliabilityAt {
                            t_hours: t,
                            reliability: fit.reliability(t),
                            lower: b.lower,
                            upper: b.upper,
                        }
                    })
                    .collect();
                row.conditional = query.conditional.map(|c| ConditionalFailure {
                    age_hours: c.age_hours,
                    horizon_hours: c.horizon_hours,
                    probability: fit.conditional_failure(c.age_hours, c.horizon_hours),
                });
                if fit.covariance.is_none() {
                    row.error = Some(
                        "Fisher matrix not positive definite at the MLE: no bounds".to_owned(),
                    );
                }
            }
        }
        rows.push(row);
    }
    Ok(rows)
}

fn pareto_table(
    e: &Encoded,
    counts: &HashMap<Codes, Vec<(u32, u64)>>,
    by: &str,
    dict: &Dict,
) -> Vec<ParetoRow> {
    let mut groups: Vec<&Codes> = counts.keys().collect();
    groups.sort_by_key(|dk| e.device_group(dk));
    let mut rows = Vec::new();
    for dk in groups {
        let group = e.device_group(dk);
        let label = group_label(&group);
        let bars: Vec<(Option<String>, u64)> = counts[dk]
            .iter()
            .map(|&(code, n)| (dict.value(code), n))
            .collect();
        for bar in pareto(bars) {
            rows.push(ParetoRow {
                group: group.clone(),
                group_label: label.clone(),
                by: by.to_owned(),
                value: bar.value,
                count: bar.count,
                total: bar.total,
                share: bar.share,
                cumulative_share: bar.cumulative_share,
            });
        }
    }
    rows
}

fn mttr_table(
    e: &mut Encoded,
    agg: &Aggregates,
    data: &ReliabilityData,
    repair_idx: &[u32],
    query: &ReportQuery,
) -> Vec<MttrRow> {
    // the failure mode and component of the failure linked to each repair order
    let mode_of_order: HashMap<i64, (Option<&str>, Option<&str>)> = data
        .failures
        .iter()
        .filter_map(|f| {
            f.order_id
                .map(|o| (o, (f.failure_mode.as_deref(), f.component.as_deref())))
        })
        .collect();
    let ftf = first_time_fix(
        &data.repairs,
        repair_idx,
        data.period,
        query.ftf_window_days,
    );
    let mut groups: HashMap<(Codes, Codes), RepairGroup> = HashMap::new();
    if e.event_keys.is_empty() {
        for dk in agg.devices.keys() {
            groups.insert((dk.clone(), Vec::new()), RepairGroup::default());
        }
    }
    let mut invalid = 0u64;
    let mut invalid_example = String::new();
    for (i, r) in data.repairs.iter().enumerate() {
        let dk = e.device_codes(repair_idx[i]);
        let code = e.code.code(r.fault_code.as_deref());
        let (mode, component) = mode_of_order.get(&r.order_id).copied().unwrap_or_default();
        let mode = e.mode.code(mode);
        let component = e.component.code(component);
        let ek = e.event_codes(code, mode, component);
        let g = groups.entry((dk, ek)).or_default();
        if !g.add(r, ftf[i]) {
            invalid += 1;
            if invalid_example.is_empty() {
                invalid_example = format!("order {}", r.order_id);
            }
        }
    }
    e.findings
        .add_n("repair_invalid_interval", invalid, || invalid_example);
    let mut keyed: Vec<_> = groups.into_iter().collect();
    keyed.sort_by_key(|((dk, ek), _)| e.group(dk, ek));
    keyed
        .into_iter()
        .map(|((dk, ek), g)| {
            let group = e.group(&dk, &ek);
            g.row(group_label(&group), group, query.ftf_window_days)
        })
        .collect()
}

fn warnings(data: &ReliabilityData, findings: &Findings) -> Vec<Warning> {
    let mut store: BTreeMap<&str, (u64, String)> = BTreeMap::new();
    for q in &data.quality {
        let e = store
            .entry(q.kind.as_str())
            .or_insert_with(|| (0, format!("{}: {}", q.serial.as_str(), q.detail)));
        e.0 += 1;
    }
    let mut out: Vec<Warning> = store
        .into_iter()
        .map(|(kind, (count, example))| Warning {
            source: "store".to_owned(),
            kind: kind.to_owned(),
            count,
            detail: format!("{}; e.g. {example}", store_meaning(kind)),
        })
        .collect();
    out.extend(findings.0.iter().map(|(kind, (count, example))| Warning {
        source: "analytics".to_owned(),
        kind: (*kind).to_owned(),
        count: *count,
        detail: if example.is_empty() {
            finding_meaning(kind).to_owned()
        } else {
            format!("{}; e.g. {example}", finding_meaning(kind))
        },
    }));
    out
}

fn store_meaning(kind: &str) -> &'static str {
    match kind {
        "meter_reset" => {
            "runtime-hour meter resets: hours after each reset counted from the new value"
        }
        "gap" => {
            "silences longer than the gap threshold: the meter's hours over a silence it ended are counted; a silence still going on at the end of the period adds none"
        }
        "meter_jump" => {
            "runtime-hour meter rose faster than the clock allows: the step is capped at the elapsed hours"
        }
        "no_meter" => "devices with no runtime-hour reading in the period: no exposure",
        "failure_without_age" => "failures without a runtime-hour age: excluded from Weibull",
        _ => "data-quality finding of the store",
    }
}

#[cfg(test)]
mod tests {
    use super::Dict;

    #[test]
    fn dict_code_zero_is_none() {
        let mut d = Dict::new();
        assert_eq!(d.code(None), 0);
        let a = d.code(Some("a"));
        assert_eq!(d.code(Some("a")), a);
        assert_eq!(d.value(a).as_deref(), Some("a"));
        assert_eq!(d.value(0), None);
    }
}
