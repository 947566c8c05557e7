//! Reliability curve: R(t) in percent against operating time, with an optional
//! confidence band and vertical markers (B10 life and the like).

use super::scale::{LinearScale, format_value, nice_ticks};
use super::svg::{
    Esc, HALO, Margins, N, Side, Size, axis_title, class_names, close, kind_colour, no_data, open,
    open_clip, or_default, path_d, plot_area, tick_positions, w, x_axis, y_axis,
};

/// A vertical marker at a time, e.g. "B10 = 347 h".
#[derive(Clone, Debug, Default, PartialEq)]
pub struct LifeMarker {
    /// The time, in the chart's unit.
    pub at: f64,
    /// Label written at the top of the line.
    pub label: String,
    /// Extra CSS classes, e.g. "b-life": the element is `<g class="marker b-life">`.
    pub kind: String,
}

/// A reliability curve: what [`reliability_curve`] draws.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ReliabilityCurve {
    /// Visible title, also the accessible name.
    pub title: String,
    /// Accessible description; generated from the data when empty.
    pub description: String,
    /// The curve `(t, R(t))`, R as a fraction in [0, 1] (values outside are clamped);
    /// any order, non-finite points skipped.
    pub points: Vec<(f64, f64)>,
    /// Optional band `(t, R_lower, R_upper)`, drawn as a shaded area (class `band`).
    pub band: Vec<(f64, f64, f64)>,
    /// Vertical markers.
    pub markers: Vec<LifeMarker>,
    /// X axis label; "Operating time" when empty.
    pub time_label: String,
    /// Time unit; "h" when empty.
    pub time_unit: String,
    /// Drawing size (`viewBox`).
    pub size: Size,
}

/// Draws a reliability curve as an SVG string: x = time from 0 (or the smallest time
/// when negative times are given) to the largest with 1-2-5 ticks, y = R from 0 to
/// 100 %. The curve is `<path class="series s0 curve">`, the band `<path class="band">`,
/// markers `<g class="marker KIND">` (markers are included in the x range).
///
/// Without a finite point it returns the "no data" state.
pub fn reliability_curve(chart: &ReliabilityCurve) -> String {
    const KIND: &str = "reliability";
    let mut pts: Vec<(f64, f64)> = chart
        .points
        .iter()
        .filter(|(t, r)| t.is_finite() && r.is_finite())
        .map(|&(t, r)| (t, r.clamp(0.0, 1.0)))
        .collect();
    if pts.is_empty() {
        return no_data(KIND, chart.size, &chart.title);
    }
    pts.sort_by(|a, b| a.0.total_cmp(&b.0));
    let mut band: Vec<(f64, f64, f64)> = chart
        .band
        .iter()
        .filter(|(t, a, b)| t.is_finite() && a.is_finite() && b.is_finite())
        .map(|&(t, a, b)| (t, a.clamp(0.0, 1.0), b.clamp(0.0, 1.0)))
        .collect();
    band.sort_by(|a, b| a.0.total_cmp(&b.0));
    let markers: Vec<&LifeMarker> = chart.markers.iter().filter(|m| m.at.is_finite()).collect();

    let unit = or_default(&chart.time_unit, "h");
    let label = or_default(&chart.time_label, "Operating time");
    let ts = pts
        .iter()
        .map(|p| p.0)
        .chain(band.iter().map(|b| b.0))
        .chain(markers.iter().map(|m| m.at));
    let (tmin, tmax) = ts.fold((0.0f64, f64::NEG_INFINITY), |(a, b), t| {
        (a.min(t), b.max(t))
    });
    let plot = plot_area(chart.size, Margins::default());
    let xt = nice_ticks(tmin, tmax, (plot.w / 80.0) as usize + 1);
    let xs = LinearScale::new(xt.extent(), (plot.x, plot.right()));
    let yt = nice_ticks(0.0, 100.0, (plot.h / 40.0) as usize + 1);
    let ys = LinearScale::new((0.0, 100.0), (plot.bottom(), plot.y));

    let description = if chart.description.trim().is_empty() {
        let (t_last, r_last) = pts[pts.len() - 1];
        format!(
            "Reliability R(t) from {} to {} {unit}; R({} {unit}) = {} %.",
            format_value(pts[0].0, 4),
            format_value(t_last, 4),
            format_value(t_last, 4),
            format_value(r_last * 100.0, 3)
        )
    } else {
        chart.description.clone()
    };
    let mut out = String::with_capacity(4096 + pts.len() * 14);
    open(&mut out, KIND, chart.size, &chart.title, &description);
    y_axis(
        &mut out,
        plot,
        &tick_positions(&yt, &ys),
        "Reliability R(t) (%)",
        Side::Left,
        true,
    );
    x_axis(
        &mut out,
        plot,
        &tick_positions(&xt, &xs),
        &axis_title(label, unit),
        true,
        false,
    );
    open_clip(&mut out, plot, "plot-area");
    if band.len() >= 2 {
        out.push_str(
            "<path class=\"band\" fill=\"#1f77b4\" fill-opacity=\"0.15\" stroke=\"none\" d=\"",
        );
        path_d(
            &mut out,
            band.iter()
                .map(|&(t, lo, _)| (xs.map(t), ys.map(lo * 100.0)))
                .chain(
                    band.iter()
                        .rev()
                        .map(|&(t, _, hi)| (xs.map(t), ys.map(hi * 100.0))),
                ),
        );
        out.push_str("Z\"/>");
    }
    out.push_str(
        "<path class=\"series s0 curve\" fill=\"none\" stroke=\"#1f77b4\" stroke-width=\"1.8\" \
         stroke-linecap=\"round\" d=\"",
    );
    path_d(
        &mut out,
        pts.iter().map(|&(t, r)| (xs.map(t), ys.map(r * 100.0))),
    );
    if pts.len() == 1 {
        out.push_str("h0");
    }
    out.push_str("\"/>");
    for m in &markers {
        let x = xs.map(m.at);
        let cls = class_names(&m.kind);
        let colour = kind_colour(&m.kind);
        w!(
            &mut out,
            "<g class=\"marker {cls}\"><title>{}</title><line x1=\"{}\" y1=\"{}\" x2=\"{}\" \
             y2=\"{}\" stroke=\"{colour}\" stroke-dasharray=\"4 3\"/><text x=\"{}\" y=\"{}\" \
             font-size=\"11\" fill=\"{colour}\" {HALO}>{}</text></g>",
            Esc(&m.label),
            N(x),
            N(plot.y),
            N(x),
            N(plot.bottom()),
            N(x + 4.0),
            N(plot.y + 14.0),
            Esc(&m.label)
        );
    }
    out.push_str("</svg>");
    close(&mut out);
    out
}

#[cfg(test)]
mod tests {
    use super::super::testutil::{assert_valid, attr, num, path_points, tags, texts};
    use super::*;

    fn curve() -> ReliabilityCurve {
        let (beta, eta) = (1.5, 1000.0);
        let r = |t: f64| (-(t / eta).powf(beta)).exp();
        ReliabilityCurve {
            title: "Pump seals".into(),
            points: (0..=40)
                .map(|i| (i as f64 * 50.0, r(i as f64 * 50.0)))
                .collect(),
            band: (0..=40)
                .map(|i| {
                    let t = i as f64 * 50.0;
                    (t, r(t) * 0.9, (r(t) * 1.1).min(1.0))
                })
                .collect(),
            markers: vec![LifeMarker {
                at: 223.0,
                label: "B10 = 223 h".into(),
                kind: "b-life".into(),
            }],
            ..Default::default()
        }
    }

    #[test]
    fn draws_the_curve_band_and_markers() {
        let svg = reliability_curve(&curve());
        assert_valid(&svg);
        let t = texts(&svg);
        assert!(t.contains(&"Reliability R(t) (%)"));
        assert!(t.contains(&"Operating time (h)"));
        assert!(t.contains(&"B10 = 223 h"));
        assert!(
            t.contains(&"100") && t.contains(&"0") && t.contains(&"2000"),
            "{t:?}"
        );
        let p = path_points(attr(tags(&svg, "path class=\"series s0 curve\"")[0], "d").expect("d"));
        assert_eq!(p.len(), 41);
        // R(0) = 1 → top of the plot (y = 44); x from 68 to 696 for 0..2000
        assert_eq!(p[0], (68.0, 44.0));
        assert_eq!(p[40].0, 696.0);
        // R(1000) = e⁻¹ = 36.8 % → 312 − 0.368 × 268
        let y = 312.0 - (-1.0f64).exp() * 268.0;
        assert!((p[20].1 - y).abs() < 0.06, "{} vs {y}", p[20].1);
        assert_eq!(tags(&svg, "path class=\"band\"").len(), 1);
        let m = tags(&svg, "g class=\"marker b-life\"");
        assert_eq!(m.len(), 1);
        let line = tags(&svg, "line x1")
            .into_iter()
            .find(|l| attr(l, "stroke-dasharray") == Some("4 3"))
            .expect("marker line");
        assert!((num(line, "x1") - (68.0 + 223.0 / 2000.0 * 628.0)).abs() < 0.06);
    }

    #[test]
    fn no_data_and_edges() {
        let svg = reliability_curve(&ReliabilityCurve::default());
        assert_valid(&svg);
        assert!(svg.contains("class=\"no-data\""));
        let svg = reliability_curve(&ReliabilityCurve {
            points: vec![(f64::NAN, 0.5)],
            ..Default::default()
        });
        assert!(svg.contains("class=\"no-data\""));
        for pts in [
            vec![(100.0, 0.9)],
            vec![(0.0, 1.0), (0.0, 1.0)],
            vec![(1e300, 2.0), (-1e300, -1.0)],
            vec![(5.0, 0.5), (5.0, 0.5), (5.0, 0.5)],
        ] {
            let svg = reliability_curve(&ReliabilityCurve {
                points: pts.clone(),
                band: vec![(1.0, f64::NAN, 1.0), (2.0, -3.0, 9.0)],
                markers: vec![LifeMarker {
                    at: f64::INFINITY,
                    ..Default::default()
                }],
                ..Default::default()
            });
            assert_valid(&svg);
            assert!(!svg.contains("no-data"), "{pts:?}");
        }
    }
}
