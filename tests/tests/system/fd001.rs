//! NASA C-MAPSS FD001, a fleet nobody here designed, brought in through the product's own
//! imports with no code change (the walkthrough of docs/examples/fd001/README.md): the
//! catalog of docs/examples/fd001/catalog.toml, `to_csv.py` on the data set, `fleetpulse
//! import devices|telemetry|failures`, then `fleetpulse report reliability --group-by
//! component|failure_mode`. The component lives and their Weibull fits are compared with
//! lifelines on the same lives.

#[path = "../../../analytics/tests/refdata/mod.rs"]
mod refdata;

use std::path::{Path, PathBuf};

use fleetpulse_system_tests::fleetpulse_bin;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("repository root")
        .to_path_buf()
}

async fn fleetpulse(args: &[&str], data: &Path) -> anyhow::Result<String> {
    let out = tokio::process::Command::new(fleetpulse_bin())
        .args(args)
        .arg("--data")
        .arg(data)
        .env(
            "FLEETPULSE_CATALOG__PATH",
            repo().join("docs/examples/fd001/catalog.toml"),
        )
        .output()
        .await?;
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    anyhow::ensure!(
        out.status.success(),
        "fleetpulse {args:?}: {stdout} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(stdout)
}

/// The Weibull row of a report written to `dir`: (failures, suspensions, β, η).
fn weibull_row(dir: &Path) -> anyhow::Result<(u64, u64, f64, f64)> {
    let text = std::fs::read_to_string(dir.join("weibull.csv"))?;
    let mut lines = text.lines();
    let header: Vec<&str> = lines.next().unwrap_or_default().split(',').collect();
    let row: Vec<&str> = lines.next().unwrap_or_default().split(',').collect();
    anyhow::ensure!(lines.next().is_none(), "one Weibull row expected: {text}");
    let col = |name: &str| -> anyhow::Result<&str> {
        header
            .iter()
            .position(|h| *h == name)
            .and_then(|i| row.get(i).copied())
            .ok_or_else(|| anyhow::anyhow!("no {name} in {text}"))
    };
    Ok((
        col("n_failures")?.parse()?,
        col("n_suspensions")?.parse()?,
        col("beta")?.parse()?,
        col("eta")?.parse()?,
    ))
}

/// `fleetpulse report reliability ARGS --out OUT`, and its Weibull row.
async fn report(args: &[&str], out: &Path, data: &Path) -> anyhow::Result<(u64, u64, f64, f64)> {
    let mut all = vec!["report", "reliability"];
    all.extend_from_slice(args);
    all.extend(["--out", out.to_str().unwrap_or_default()]);
    fleetpulse(&all, data).await?;
    weibull_row(out)
}

/// The C-MAPSS files: `FLEETPULSE_CMAPSS_DIR`, else the copy in tests/data/cmapss.
fn cmapss() -> PathBuf {
    std::env::var_os("FLEETPULSE_CMAPSS_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo().join("tests/data/cmapss"))
}

/// `to_csv.py` on FD001 with `args` into `dir/csv`, then `fleetpulse import` of its
/// devices, telemetry and failures into `data`: each kind with the import's output.
async fn import_fd001(
    dir: &Path,
    args: &[&str],
    data: &Path,
) -> anyhow::Result<Vec<(&'static str, String)>> {
    let csv = dir.join("csv");
    let status = tokio::process::Command::new("python3")
        .arg(repo().join("docs/examples/fd001/to_csv.py"))
        .arg(cmapss())
        .arg(&csv)
        .args(args)
        .status()
        .await?;
    anyhow::ensure!(status.success(), "to_csv.py failed");
    let mut out = Vec::new();
    for kind in ["devices", "telemetry", "failures"] {
        let file = csv.join(format!("{kind}.csv"));
        let report = fleetpulse(&["import", kind, file.to_str().unwrap_or_default()], data).await?;
        out.push((kind, report));
    }
    Ok(out)
}

fn close(got: f64, want: f64, rel: f64) -> bool {
    (got - want).abs() <= rel * want.abs()
}

#[tokio::test]
async fn fd001_comes_in_through_the_imports_and_its_lives_fit_as_lifelines_fits_them()
-> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let data = dir.path().join("data");
    let imported = import_fd001(dir.path(), &[], &data).await?;
    for ((kind, out), rows) in imported.iter().zip([200, 33_727, 100]) {
        assert!(
            out.contains(&format!("imported {rows} of {rows} rows")),
            "{kind}: {out}"
        );
    }

    // the training engines, commissioned 2024-01-01 + (unit − 1) days, all failed by June:
    // 100 lives from new, every one a failure — lifelines on the 100 training lives
    let train = dir.path().join("train");
    let (failures, suspensions, beta, eta) = report(
        &[
            "--from",
            "2024-01-01T00:00:00Z",
            "--to",
            "2024-06-01T00:00:00Z",
            "--group-by",
            "component",
        ],
        &train,
        &data,
    )
    .await?;
    let want = &refdata::FD001_TRAIN;
    assert_eq!((failures, suspensions), (100, 0));
    assert!(
        close(beta, want.beta, 1e-6) && close(eta, want.eta, 1e-6),
        "β {beta} η {eta}, lifelines β {} η {}",
        want.beta,
        want.eta
    );
    let lives = std::fs::read_to_string(train.join("component_lives.csv"))?;
    assert_eq!(lives.lines().count(), 101, "{lives}");

    // and with the test engines, still in service at their last cycle, as suspensions:
    // lifelines 0.30.3 WeibullFitter().fit(T, E) on the 100 training lives (E = 1) and the
    // 100 test units' last cycles (E = 0): λ 236.6255740482319, ρ 4.820018032859865
    let all = dir.path().join("all");
    let (failures, suspensions, beta, eta) = report(
        &[
            "--from",
            "2024-01-01T00:00:00Z",
            "--to",
            "2025-01-01T00:00:00Z",
            "--group-by",
            "component",
        ],
        &all,
        &data,
    )
    .await?;
    assert_eq!((failures, suspensions), (100, 100));
    assert!(
        close(beta, 4.820018032859865, 1e-5) && close(eta, 236.6255740482319, 1e-5),
        "β {beta} η {eta}"
    );

    // as of 2024-03-01: the 60 engines commissioned by then, 52 failed, 8 running at their
    // last cycle before that instant — lifelines on those lives: λ 214.02033503005654,
    // ρ 6.1085233033398065 (script in docs/examples/fd001/README.md)
    let as_of = dir.path().join("as_of");
    let (failures, suspensions, beta, eta) = report(
        &[
            "--from",
            "2024-01-01T00:00:00Z",
            "--to",
            "2025-01-01T00:00:00Z",
            "--as-of",
            "2024-03-01T00:00:00Z",
            "--group-by",
            "failure_mode",
        ],
        &as_of,
        &data,
    )
    .await?;
    assert_eq!((failures, suspensions), (52, 8));
    assert!(
        close(beta, 6.1085233033398065, 1e-5) && close(eta, 214.02033503005654, 1e-5),
        "β {beta} η {eta}"
    );
    Ok(())
}

/// The backtest of docs/benchmarks.md ("second measurement") on FD001: one cycle a day,
/// the test engines from day 300 with their failures where `RUL_FD001` puts them, trained
/// as of 2024-10-27 and replayed daily to 2026-06-01. Guards the figures claimed there:
/// the learned model serves and, at the Weibull baseline's precision, warns more failures
/// ≥ 3 days ahead than it (36 of 117 against 34); the sensors' remaining life at the test
/// engines' last cycle has an RMSE against `RUL_FD001` far below the age-only floor of
/// 37.80 cycles (tests/data/cmapss/README.md): 22.14 measured.
#[tokio::test]
async fn fd001_backtest_beats_the_age_rule_and_its_remaining_life_beats_the_age_floor()
-> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let data = dir.path().join("data");
    let args = [
        "--cycle-hours",
        "24",
        "--test-offset-days",
        "300",
        "--test-failures",
    ];
    import_fd001(dir.path(), &args, &data).await?;
    let cmapss = cmapss();
    let out = dir.path().join("bt");
    fleetpulse(
        &[
            "backtest",
            "--train-until",
            "2024-10-27T00:00:00Z",
            "--until",
            "2026-06-01T00:00:00Z",
            "--step-hours",
            "24",
            "--out",
            out.to_str().unwrap_or_default(),
        ],
        &data,
    )
    .await?;
    let r: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("backtest.json"))?)?;
    let mode = &r["modes"][0];
    assert_eq!(mode["served_by"], "model", "{}", mode["decision"]);
    // FD001 has no alarms: no alarm_count baseline (it would be a constant)
    let scorers: Vec<&str> = mode["scorers"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|s| s["scorer"].as_str())
        .collect();
    assert_eq!(scorers, ["serving", "model", "weibull_age"]);
    let eq = r["overall_equal_precision"]
        .as_array()
        .and_then(|v| v.iter().find(|e| e["baseline"] == "weibull_age"))
        .expect("the model at the weibull_age baseline's precision");
    let (model, age) = (
        eq["model_warned_3d"].as_u64().expect("count"),
        eq["baseline_warned_3d"].as_u64().expect("count"),
    );
    assert!(
        model > age && eq["model_precision"].as_f64() >= eq["precision"].as_f64(),
        "{eq}"
    );
    assert_eq!(eq["failures"], 117, "{eq}");

    // remaining life at the test engines' last cycle against RUL_FD001
    let unzipped = tokio::process::Command::new("gzip")
        .arg("-dc")
        .arg(cmapss.join("RUL_FD001.txt.gz"))
        .output()
        .await?;
    anyhow::ensure!(
        unzipped.status.success(),
        "gzip -dc RUL_FD001.txt.gz failed"
    );
    let rul: Vec<f64> = String::from_utf8(unzipped.stdout)?
        .split_whitespace()
        .map(str::parse)
        .collect::<Result<_, _>>()?;
    let rmse = |method: &str| -> anyhow::Result<f64> {
        let life = mode["remaining_life"]
            .as_array()
            .and_then(|v| v.iter().find(|l| l["method"] == method))
            .ok_or_else(|| anyhow::anyhow!("no {method} estimate"))?;
        let mut sq = Vec::new();
        for e in life["estimates"].as_array().into_iter().flatten() {
            let serial = e["serial"].as_str().unwrap_or_default();
            let Some(unit) = serial.strip_prefix("FD001-T") else {
                continue;
            };
            // estimated the midnight after the last cycle: one cycle after it
            let want = rul[unit.parse::<usize>()? - 1] - 1.0;
            let actual = e["actual_days"].as_f64().unwrap_or(f64::NAN);
            anyhow::ensure!((actual - want).abs() < 1e-9, "{e}: RUL {want}");
            let err = e["estimated_days"].as_f64().unwrap_or(f64::NAN) - actual;
            sq.push(err * err);
        }
        anyhow::ensure!(sq.len() == 100, "{method}: {} test engines", sq.len());
        Ok((sq.iter().sum::<f64>() / sq.len() as f64).sqrt())
    };
    let (sensor, weibull) = (rmse("sensor")?, rmse("weibull_age")?);
    assert!(sensor < 25.0, "sensor RMSE {sensor}");
    assert!(weibull > 37.0 && sensor < weibull, "{sensor} {weibull}");
    Ok(())
}
