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

fn close(got: f64, want: f64, rel: f64) -> bool {
    (got - want).abs() <= rel * want.abs()
}

#[tokio::test]
async fn fd001_comes_in_through_the_imports_and_its_lives_fit_as_lifelines_fits_them()
-> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let csv = dir.path().join("csv");
    let data = dir.path().join("data");
    let cmapss = std::env::var_os("FLEETPULSE_CMAPSS_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo().join("tests/data/cmapss"));
    let status = tokio::process::Command::new("python3")
        .arg(repo().join("docs/examples/fd001/to_csv.py"))
        .arg(&cmapss)
        .arg(&csv)
        .status()
        .await?;
    anyhow::ensure!(status.success(), "to_csv.py failed");

    for (kind, rows) in [("devices", 200), ("telemetry", 33_727), ("failures", 100)] {
        let file = csv.join(format!("{kind}.csv"));
        let out = fleetpulse(&["import", kind, file.to_str().unwrap_or_default()], &data).await?;
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
