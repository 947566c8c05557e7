//! Rate trend chart: per-period rates (failures per 1 000 h by month, say) with error
//! bars, one series per group.

use super::scale::{LinearScale, clamp_value, format_value, nice_ticks};
use super::svg::{
    Esc, Margins, N, Side, Size, axis_title, close, no_data, open, open_clip, palette, plot_area,
    series_legend, tick_positions, w, x_axis, y_axis,
};

/// One period's rate of a group.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct TrendPoint {
    /// Index into [`TrendChart::periods`].
    pub period: usize,
    /// The rate.
    pub value: f64,
    /// Lower end of the error bar, if any.
    pub lower: Option<f64>,
    /// Upper end of the error bar, if any.
    pub upper: Option<f64>,
}

/// One group's rates, drawn as a series.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct TrendGroup {
    /// Legend name; no legend entry when empty.
    pub name: String,
    /// The rates; points whose period is out of range or whose value is not finite are
    /// skipped.
    pub points: Vec<TrendPoint>,
}

/// A rate trend chart: what [`rate_trend`] draws.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct TrendChart {
    /// Visible title, also the accessible name.
    pub title: String,
    /// Accessible description; generated from the data when empty.
    pub description: String,
    /// Y axis label, e.g. "Failure rate".
    pub y_label: String,
    /// Y axis unit, e.g. "per 1 000 h".
    pub y_unit: String,
    /// X axis label, e.g. "Month"; none when empty.
    pub x_label: String,
    /// Period labels in order along the x axis ("2024-01", "Feb 2024", …).
    pub periods: Vec<String>,
    /// The groups, drawn with classes `series s0`, `series s1`, ….
    pub groups: Vec<TrendGroup>,
    /// Drawing size (`viewBox`).
    pub size: Size,
}

/// Draws a rate trend as an SVG string: periods as evenly spaced categories on the x
/// axis, each group a `<path class="series sN">` through its rates with
/// `<circle class="point sN">` points and `<path class="error-bar sN">` bars (groups are
/// offset a little sideways so their bars do not overlap). The y axis starts at 0 when
/// no value or bound is negative.
///
/// With no finite rate in range it returns the "no data" state.
pub fn rate_trend(chart: &TrendChart) -> String {
    const KIND: &str = "trend";
    let np = chart.periods.len();
    let groups: Vec<Vec<&TrendPoint>> = chart
        .groups
        .iter()
        .map(|g| {
            let mut pts: Vec<&TrendPoint> = g
                .points
                .iter()
                .filter(|p| p.period < np && p.value.is_finite())
                .collect();
            pts.sort_by_key(|p| p.period);
            pts
        })
        .collect();
    if groups.iter().all(Vec::is_empty) {
        return no_data(KIND, chart.size, &chart.title);
    }
    let fin = |v: Option<f64>| v.filter(|x| x.is_finite()).map(clamp_value);
    let (mut lo, mut hi) = (f64::INFINITY, f64::NEG_INFINITY);
    for p in groups.iter().flatten() {
        for v in [Some(p.value), p.lower, p.upper]
            .into_iter()
            .filter_map(fin)
        {
            lo = lo.min(v);
            hi = hi.max(v);
        }
    }
    let lo = lo.min(0.0);
    let named: Vec<(usize, &TrendGroup)> = chart
        .groups
        .iter()
        .enumerate()
        .filter(|(_, g)| !g.name.trim().is_empty())
        .collect();
    let (w_, _) = chart.size.dims();
    let rough_band = (w_ - 92.0) / np as f64;
    let longest = chart
        .periods
        .iter()
        .map(|p| p.chars().count())
        .max()
        .unwrap_or(0) as f64;
    let rotate = longest * 6.5 > rough_band * 0.95;
    let margins = Margins {
        top: if named.is_empty() { 44.0 } else { 58.0 },
        bottom: if rotate { 104.0 } else { 48.0 },
        ..Margins::default()
    };
    let plot = plot_area(chart.size, margins);
    let band = plot.w / np as f64;
    let yt = nice_ticks(lo, hi, (plot.h / 40.0) as usize + 1);
    let ys = LinearScale::new(yt.extent(), (plot.bottom(), plot.y));
    let ng = chart.groups.len().max(1);
    let offset_step = (band * 0.5 / ng as f64).min(8.0);
    let gx = |g: usize, period: usize| {
        plot.x + band * (period as f64 + 0.5) + (g as f64 - (ng as f64 - 1.0) / 2.0) * offset_step
    };

    // label every k-th period so labels do not collide
    let per_label = if rotate { 14.0 } else { longest * 6.5 + 8.0 };
    let every = ((per_label / band).ceil() as usize).max(1);
    let xticks: Vec<(f64, String)> = chart
        .periods
        .iter()
        .enumerate()
        .filter(|(i, _)| i % every == 0)
        .map(|(i, p)| (plot.x + band * (i as f64 + 0.5), p.clone()))
        .collect();

    let description = if chart.description.trim().is_empty() {
        format!(
            "Rate trend over {} periods ({} to {}), {} groups; y axis: {}.",
            np,
            chart.periods.first().map(String::as_str).unwrap_or(""),
            chart.periods.last().map(String::as_str).unwrap_or(""),
            chart.groups.len(),
            axis_title(&chart.y_label, &chart.y_unit)
        )
    } else {
        chart.description.clone()
    };
    let mut out = String::with_capacity(4096 + np * ng * 300);
    open(&mut out, KIND, chart.size, &chart.title, &description);
    y_axis(
        &mut out,
        plot,
        &tick_positions(&yt, &ys),
        &axis_title(&chart.y_label, &chart.y_unit),
        Side::Left,
        true,
    );
    x_axis(&mut out, plot, &xticks, chart.x_label.trim(), false, rotate);
    open_clip(&mut out, plot, "plot-area");
    for (g, pts) in groups.iter().enumerate() {
        if pts.is_empty() {
            continue;
        }
        let colour = palette(g);
        let name = &chart.groups[g].name;
        w!(
            &mut out,
            "<g class=\"group s{g}\"><path class=\"error-bar s{g}\" stroke=\"{colour}\" \
             stroke-width=\"1\" fill=\"none\" d=\""
        );
        for p in pts {
            let (Some(a), Some(b)) = (
                fin(p.lower).or(Some(p.value)),
                fin(p.upper).or(Some(p.value)),
            ) else {
                continue;
            };
            if p.lower.is_none() && p.upper.is_none() {
                continue;
            }
            let x = gx(g, p.period);
            let (ya, yb) = (ys.map(a), ys.map(b));
            w!(
                &mut out,
                "M{} {}L{} {}M{} {}h6M{} {}h6",
                N(x),
                N(ya),
                N(x),
                N(yb),
                N(x - 3.0),
                N(ya),
                N(x - 3.0),
                N(yb)
            );
        }
        w!(
            &mut out,
            "\"/><path class=\"series s{g}\" fill=\"none\" stroke=\"{colour}\" \
             stroke-width=\"1.5\" d=\""
        );
        super::svg::path_d(
            &mut out,
            pts.iter().map(|p| (gx(g, p.period), ys.map(p.value))),
        );
        out.push_str("\"/>");
        for p in pts {
            let bounds = match (fin(p.lower), fin(p.upper)) {
                (Some(a), Some(b)) => {
                    format!(" [{}, {}]", format_value(a, 3), format_value(b, 3))
                }
                _ => String::new(),
            };
            w!(
                &mut out,
                "<circle class=\"point s{g}\" cx=\"{}\" cy=\"{}\" r=\"3\" fill=\"{colour}\">\
                 <title>{}{}{}: {}{}</title></circle>",
                N(gx(g, p.period)),
                N(ys.map(p.value)),
                Esc(name),
                if name.is_empty() { "" } else { ", " },
                Esc(&chart.periods[p.period]),
                format_value(p.value, 3),
                bounds
            );
        }
        out.push_str("</g>");
    }
    out.push_str("</svg>");
    series_legend(
        &mut out,
        w_,
        named.iter().map(|(i, g)| (*i, g.name.as_str())),
    );
    close(&mut out);
    out
}

#[cfg(test)]
mod tests {
    use super::super::testutil::{assert_valid, attr, num, path_points, tags, texts};
    use super::*;

    fn chart() -> TrendChart {
        let months = ["Jan 2024", "Feb 2024", "Mar 2024", "Apr 2024"];
        TrendChart {
            title: "Failure rate by region".into(),
            y_label: "Failure rate".into(),
            y_unit: "per 1000 h".into(),
            x_label: "Month".into(),
            periods: months.iter().map(|s| s.to_string()).collect(),
            groups: vec![
                TrendGroup {
                    name: "North".into(),
                    points: (0..4)
                        .map(|i| TrendPoint {
                            period: i,
                            value: 1.0 + i as f64,
                            lower: Some(0.5 + i as f64),
                            upper: Some(1.5 + i as f64),
                        })
                        .collect(),
                },
                TrendGroup {
                    name: "South & <East>".into(),
                    points: vec![
                        TrendPoint {
                            period: 1,
                            value: 2.0,
                            lower: None,
                            upper: None,
                        },
                        TrendPoint {
                            period: 9, // out of range: skipped
                            value: 2.0,
                            lower: None,
                            upper: None,
                        },
                    ],
                },
            ],
            ..Default::default()
        }
    }

    #[test]
    fn series_points_and_error_bars() {
        let svg = rate_trend(&chart());
        assert_valid(&svg);
        assert_eq!(tags(&svg, "circle class=\"point s0\"").len(), 4);
        assert_eq!(tags(&svg, "circle class=\"point s1\"").len(), 1);
        let eb = tags(&svg, "path class=\"error-bar s0\"");
        assert_eq!(eb.len(), 1);
        // each bar: stem (2 points) and two caps (1 point each, `h6`)
        assert_eq!(path_points(attr(eb[0], "d").expect("d")).len(), 16);
        let t = texts(&svg);
        for l in [
            "Jan 2024",
            "Apr 2024",
            "Failure rate (per 1000 h)",
            "Month",
            "South &amp; &lt;East&gt;",
        ] {
            assert!(t.contains(&l), "{l}: {t:?}");
        }
        // y starts at 0 for positive rates: ticks 0..5 over the plot from y = 312
        // (bottom) to 58 (below the legend), 50.8 per unit
        let p = tags(&svg, "circle class=\"point s0\"");
        assert!((num(p[0], "cy") - 261.2).abs() < 0.06, "{}", p[0]);
        assert!((num(p[3], "cy") - 108.8).abs() < 0.06, "{}", p[3]);
    }

    #[test]
    fn no_data_and_edges() {
        let svg = rate_trend(&TrendChart::default());
        assert_valid(&svg);
        assert!(svg.contains("class=\"no-data\""));
        let mut c = chart();
        c.periods.clear();
        assert!(rate_trend(&c).contains("class=\"no-data\""));
        for (v, lo, hi) in [
            (0.0, Some(0.0), Some(0.0)),
            (-2.0, Some(-3.0), Some(-1.0)),
            (1e300, Some(f64::NEG_INFINITY), Some(f64::NAN)),
            (5.0, None, Some(6.0)),
        ] {
            let mut c = chart();
            c.groups = vec![TrendGroup {
                name: String::new(),
                points: vec![TrendPoint {
                    period: 0,
                    value: v,
                    lower: lo,
                    upper: hi,
                }],
            }];
            let svg = rate_trend(&c);
            assert_valid(&svg);
            assert!(!svg.contains("no-data"));
        }
        // many periods: labels thinned and rotated
        let mut c = chart();
        c.periods = (0..120)
            .map(|i| format!("{}-{:02}", 2015 + i / 12, i % 12 + 1))
            .collect();
        let svg = rate_trend(&c);
        assert_valid(&svg);
        let shown = texts(&svg)
            .into_iter()
            .filter(|t| t.starts_with("20"))
            .count();
        assert!(shown < 60, "{shown} labels");
    }
}
