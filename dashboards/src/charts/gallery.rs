//! A gallery of every chart with sample data, written to an HTML file for a visual check:
//! `FLEETPULSE_CHART_GALLERY=/tmp/charts.html cargo test -p fleetpulse-dashboards
//! gallery -- --ignored`, then open the file in a browser.

use chrono::{TimeDelta, TimeZone, Utc};

use super::*;

fn page() -> String {
    let t0 = Utc
        .with_ymd_and_hms(2024, 5, 1, 0, 0, 0)
        .single()
        .expect("valid");
    let h = |x: i64| t0 + TimeDelta::hours(x);
    let mean: Vec<_> = (0..14 * 24)
        .filter(|x| !(100..130).contains(x))
        .map(|x| {
            (
                h(x),
                120.0 + x as f64 * 0.35 + ((x as f64) / 5.0).sin() * 6.0,
            )
        })
        .collect();
    let band: Vec<_> = mean.iter().map(|&(t, v)| (t, v - 8.0, v + 9.0)).collect();
    let ts = time_series(&TimeSeriesChart {
        title: "Filter differential pressure — AHU-3".into(),
        y_label: "ΔP".into(),
        y_unit: "Pa".into(),
        from: t0,
        to: h(21 * 24),
        series: vec![
            Series {
                name: "Hourly mean".into(),
                points: mean,
                band,
            },
            Series {
                name: "Supply temp ×10".into(),
                points: (0..14 * 24)
                    .map(|x| (h(x), 180.0 + ((x as f64) / 12.0).cos() * 15.0))
                    .collect(),
                band: vec![],
            },
        ],
        thresholds: vec![Threshold {
            value: 250.0,
            label: "Replace at 250 Pa".into(),
            kind: "critical".into(),
        }],
        markers: vec![
            Marker {
                at: h(60),
                label: "WO-1042 inspect".into(),
                kind: "order".into(),
            },
            Marker {
                at: h(200),
                label: "Fan trip".into(),
                kind: "failure".into(),
            },
        ],
        spans: vec![
            crate::charts::Span {
                from: h(150),
                to: Some(h(170)),
                label: "High ΔP".into(),
                kind: "alarm".into(),
                severity: "warning".into(),
            },
            crate::charts::Span {
                from: h(320),
                to: None,
                label: "Sensor stale".into(),
                kind: "alarm".into(),
                severity: "critical".into(),
            },
        ],
        forecast: Some(Forecast {
            series: 0,
            at: h(17 * 24),
            value: 250.0,
            lower: Some(h(16 * 24)),
            upper: Some(h(19 * 24)),
            label: "Limit reached ~ 18 May".into(),
        }),
        max_gap: Some(TimeDelta::hours(3)),
        ..Default::default()
    });
    let failures = vec![
        310.0, 620.0, 980.0, 1450.0, 2210.0, 150.0, 420.0, 700.0, 1100.0, 1730.0,
    ];
    let suspensions = vec![500.0, 900.0, 2000.0, 2000.0, 2500.0];
    let cov = [[300.0f64.powi(2), 40.0], [40.0, 0.4f64.powi(2)]];
    let wb = weibull_plot(&WeibullPlot {
        title: "Bearing failures — pump fleet".into(),
        failures,
        suspensions,
        show_suspensions: true,
        fit: Some(WeibullLine {
            beta: 1.52,
            eta: 1620.0,
            beta_bounds: Some((0.98, 2.36)),
            eta_bounds: Some((1110.0, 2360.0)),
            confidence: Some(Confidence {
                level: 0.9,
                sides: BoundSides::TwoSided,
            }),
        }),
        band: fisher_band(&log_space(100.0, 10000.0, 60), 1.52, 1620.0, cov, 1.6449),
        ..Default::default()
    });
    let rc = reliability_curve(&ReliabilityCurve {
        title: "Reliability — pump bearings".into(),
        points: (0..=60)
            .map(|i| {
                let t = i as f64 * 80.0;
                (t, 1.0 - weibull_unreliability(t, 1.52, 1620.0))
            })
            .collect(),
        band: (0..=60)
            .filter_map(|i| {
                let t = i as f64 * 80.0;
                fisher_unreliability_bounds(t, 1.52, 1620.0, cov, 1.6449)
                    .map(|(lo, hi)| (t, 1.0 - hi, 1.0 - lo))
            })
            .collect(),
        markers: vec![LifeMarker {
            at: 370.0,
            label: "B10 = 370 h".into(),
            kind: "b-life".into(),
        }],
        ..Default::default()
    });
    let bc = bar_chart(&BarChart {
        title: "Failure modes, last 12 months".into(),
        y_label: "Failures".into(),
        x_label: "Failure mode".into(),
        cumulative: true,
        bars: [
            ("Bearing wear on the drive end", 41.0),
            ("Seal leak", 27.0),
            ("Belt slip", 12.0),
            ("Motor overheating", 8.0),
            ("Impeller <erosion> & cavitation", 5.0),
            ("Other", 3.0),
        ]
        .iter()
        .map(|&(l, v)| Bar {
            label: l.into(),
            value: v,
        })
        .collect(),
        ..Default::default()
    });
    let months: Vec<String> = (1..=12).map(|m| format!("2024-{m:02}")).collect();
    let tr = rate_trend(&TrendChart {
        title: "Failure rate by region".into(),
        y_label: "Failures".into(),
        y_unit: "per 1000 h".into(),
        x_label: "Month".into(),
        periods: months,
        groups: ["North", "South"]
            .iter()
            .enumerate()
            .map(|(g, name)| TrendGroup {
                name: (*name).into(),
                points: (0..12)
                    .map(|i| {
                        let v = 1.0 + g as f64 * 0.6 + (i as f64 / 3.0).sin() * 0.4;
                        TrendPoint {
                            period: i,
                            value: v,
                            lower: Some(v * 0.7),
                            upper: Some(v * 1.4),
                        }
                    })
                    .collect(),
            })
            .collect(),
        ..Default::default()
    });
    let cb = count_bar(&CountBar {
        title: "Open alarms".into(),
        segments: vec![
            CountSegment {
                label: "Critical".into(),
                count: 3,
                kind: "critical".into(),
            },
            CountSegment {
                label: "Warning".into(),
                count: 9,
                kind: "warning".into(),
            },
            CountSegment {
                label: "Minor".into(),
                count: 5,
                kind: "minor".into(),
            },
        ],
        ..Default::default()
    });
    let sp = sparkline(&Sparkline {
        title: "ΔP, 24 h".into(),
        values: (0..96)
            .map(|i| 100.0 + (i as f64 / 8.0).sin() * 10.0 + i as f64 * 0.2)
            .collect(),
        ..Default::default()
    });
    let nd = time_series(&TimeSeriesChart {
        title: "Empty selection".into(),
        ..Default::default()
    });
    let mut html = String::from(
        "<!doctype html><meta charset=\"utf-8\"><title>charts</title>\
         <style>body{font-family:system-ui,sans-serif;display:grid;\
         grid-template-columns:repeat(2,720px);gap:16px;margin:16px}\
         div{border:1px solid #ddd}</style>",
    );
    for svg in [ts, wb, rc, bc, tr, nd] {
        html.push_str("<div>");
        html.push_str(&svg);
        html.push_str("</div>");
    }
    html.push_str("<div style=\"width:360px\">");
    html.push_str(&cb);
    html.push_str("</div><div style=\"width:160px\">");
    html.push_str(&sp);
    html.push_str("</div>");
    html
}

#[test]
#[ignore = "writes a file for a visual check; set FLEETPULSE_CHART_GALLERY"]
fn gallery() {
    let Ok(path) = std::env::var("FLEETPULSE_CHART_GALLERY") else {
        return;
    };
    std::fs::write(&path, page()).expect("write gallery");
}

#[test]
fn gallery_charts_are_valid() {
    let html = page();
    let mut rest = html.as_str();
    let mut count = 0;
    while let Some(i) = rest.find("<svg xmlns") {
        let end = i + rest[i..].find("</div>").expect("div end");
        super::testutil::assert_valid(&rest[i..end]);
        count += 1;
        rest = &rest[end..];
    }
    assert_eq!(count, 8);
}
