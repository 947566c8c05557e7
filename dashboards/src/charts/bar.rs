//! Bar chart for Pareto analyses: categories with values, bars in the given order, value
//! labels, and an optional cumulative-percent line on a right-hand 0–100 % axis.

use super::scale::{LinearScale, format_value, nice_ticks};
use super::svg::{
    Esc, Margins, N, Side, Size, axis_title, close, no_data, open, plot_area, tick_positions,
    truncate, w, x_axis, y_axis,
};

/// One bar.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Bar {
    /// Category name; truncated under the bar when long, in full in its tooltip.
    pub label: String,
    /// The value (a count for Pareto charts); non-finite values are drawn as 0.
    pub value: f64,
}

/// A bar chart: what [`bar_chart`] draws.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct BarChart {
    /// Visible title, also the accessible name.
    pub title: String,
    /// Accessible description; generated from the data when empty.
    pub description: String,
    /// The bars, drawn in the given order (sort them for a Pareto chart).
    pub bars: Vec<Bar>,
    /// Y axis label, e.g. "Failures".
    pub y_label: String,
    /// Y axis unit, if any.
    pub y_unit: String,
    /// X axis label (the categories), e.g. "Failure mode"; none when empty.
    pub x_label: String,
    /// Draw the cumulative percentage of the (positive) values as a line on a right-hand
    /// 0–100 % axis, as in a Pareto chart.
    pub cumulative: bool,
    /// Drawing size (`viewBox`).
    pub size: Size,
}

/// Draws a bar chart as an SVG string: `<rect class="bar">` per category with a
/// `<text class="value-label">` above it; category names under the bars (rotated when
/// the bars are narrow, truncated with "…" when long, full name in a `<title>`). With
/// `cumulative`, `<path class="cumulative">` with `<circle class="cumulative-point">`
/// on a right axis `axis y2` from 0 to 100 %. Negative values draw downward from 0 and
/// count as 0 in the cumulative line.
///
/// With no bars it returns the "no data" state.
pub fn bar_chart(chart: &BarChart) -> String {
    const KIND: &str = "bar";
    if chart.bars.is_empty() {
        return no_data(KIND, chart.size, &chart.title);
    }
    let values: Vec<f64> = chart
        .bars
        .iter()
        .map(|b| {
            if b.value.is_finite() {
                super::scale::clamp_value(b.value)
            } else {
                0.0
            }
        })
        .collect();
    let n = values.len();
    let (w_, _) = chart.size.dims();
    let band = (w_ - 68.0 - if chart.cumulative { 64.0 } else { 24.0 }) / n as f64;
    let rotate = band < 56.0;
    let margins = Margins {
        right: if chart.cumulative { 64.0 } else { 24.0 },
        bottom: if rotate { 104.0 } else { 52.0 },
        ..Margins::default()
    };
    let plot = plot_area(chart.size, margins);
    let band = plot.w / n as f64;
    let (vmin, vmax) = values
        .iter()
        .fold((0.0f64, 0.0f64), |(a, b), &v| (a.min(v), b.max(v)));
    let vmax = if vmin == 0.0 && vmax == 0.0 {
        1.0
    } else {
        vmax
    };
    let yt = nice_ticks(vmin, vmax, (plot.h / 40.0) as usize + 1);
    let ys = LinearScale::new(yt.extent(), (plot.bottom(), plot.y));

    let positive_total: f64 = values.iter().map(|v| v.max(0.0)).sum();
    let description = if chart.description.trim().is_empty() {
        let top = chart
            .bars
            .iter()
            .zip(&values)
            .take(3)
            .map(|(b, v)| format!("{} {}", b.label, format_value(*v, 4)))
            .collect::<Vec<_>>()
            .join(", ");
        format!(
            "Bar chart of {} categories ({}); first: {top}.",
            n,
            axis_title(&chart.y_label, &chart.y_unit)
        )
    } else {
        chart.description.clone()
    };
    let mut out = String::with_capacity(2048 + n * 400);
    open(&mut out, KIND, chart.size, &chart.title, &description);
    y_axis(
        &mut out,
        plot,
        &tick_positions(&yt, &ys),
        &axis_title(&chart.y_label, &chart.y_unit),
        Side::Left,
        true,
    );
    // the x axis line and title; category labels are written below with their tooltips
    x_axis(&mut out, plot, &[], chart.x_label.trim(), false, rotate);

    let max_chars = if rotate {
        18
    } else {
        ((band / 6.5) as usize).max(4)
    };
    let bar_w = (band * 0.7).max(1.0);
    let y0 = ys.map(0.0);
    out.push_str("<g class=\"bars\">");
    for (i, (b, &v)) in chart.bars.iter().zip(&values).enumerate() {
        let cx = plot.x + band * (i as f64 + 0.5);
        let yv = ys.map(v);
        let (top, height) = if v >= 0.0 {
            (yv, y0 - yv)
        } else {
            (y0, yv - y0)
        };
        w!(
            &mut out,
            "<rect class=\"bar\" x=\"{}\" y=\"{}\" width=\"{}\" height=\"{}\" fill=\"#1f77b4\">\
             <title>{}: {}</title></rect>",
            N(cx - bar_w / 2.0),
            N(top),
            N(bar_w),
            N(height.max(0.0)),
            Esc(&b.label),
            format_value(v, 6)
        );
        let ly = if v >= 0.0 { yv - 4.0 } else { yv + 12.0 };
        w!(
            &mut out,
            "<text class=\"value-label\" x=\"{}\" y=\"{}\" text-anchor=\"middle\" \
             font-size=\"11\" fill=\"#333\">{}</text>",
            N(cx),
            N(ly),
            format_value(v, 4)
        );
    }
    out.push_str("</g><g class=\"categories\" font-size=\"11\" fill=\"#444\">");
    for (i, b) in chart.bars.iter().enumerate() {
        let cx = plot.x + band * (i as f64 + 0.5);
        let short = truncate(&b.label, max_chars);
        let y = plot.bottom() + 16.0;
        if rotate {
            w!(
                &mut out,
                "<text class=\"category\" x=\"{}\" y=\"{}\" text-anchor=\"end\" \
                 transform=\"rotate(-35 {} {})\"><title>{}</title>{}</text>",
                N(cx),
                N(y - 4.0),
                N(cx),
                N(y - 4.0),
                Esc(&b.label),
                Esc(&short)
            );
        } else {
            w!(
                &mut out,
                "<text class=\"category\" x=\"{}\" y=\"{}\" text-anchor=\"middle\">\
                 <title>{}</title>{}</text>",
                N(cx),
                N(y),
                Esc(&b.label),
                Esc(&short)
            );
        }
    }
    out.push_str("</g>");

    if chart.cumulative {
        let ps = LinearScale::new((0.0, 100.0), (plot.bottom(), plot.y));
        let pt = nice_ticks(0.0, 100.0, 6);
        let ticks: Vec<(f64, String)> = tick_positions(&pt, &ps)
            .into_iter()
            .map(|(p, l)| (p, format!("{l} %")))
            .collect();
        y_axis(&mut out, plot, &ticks, "Cumulative (%)", Side::Right, false);
        if positive_total > 0.0 {
            let mut acc = 0.0;
            let cum: Vec<(f64, f64)> = values
                .iter()
                .enumerate()
                .map(|(i, v)| {
                    acc += v.max(0.0);
                    (
                        plot.x + band * (i as f64 + 0.5),
                        (acc / positive_total * 100.0).min(100.0),
                    )
                })
                .collect();
            out.push_str(
                "<g class=\"cumulative-line\"><path class=\"cumulative\" fill=\"none\" \
                 stroke=\"#d62728\" stroke-width=\"1.5\" d=\"",
            );
            super::svg::path_d(&mut out, cum.iter().map(|&(x, p)| (x, ps.map(p))));
            out.push_str("\"/>");
            for (b, &(x, p)) in chart.bars.iter().zip(&cum) {
                w!(
                    &mut out,
                    "<circle class=\"cumulative-point\" cx=\"{}\" cy=\"{}\" r=\"2.5\" \
                     fill=\"#d62728\"><title>{}: cumulative {} %</title></circle>",
                    N(x),
                    N(ps.map(p)),
                    Esc(&b.label),
                    format_value(p, 3)
                );
            }
            out.push_str("</g>");
        }
    }
    close(&mut out);
    out
}

#[cfg(test)]
mod tests {
    use super::super::testutil::{assert_valid, num, tags, texts};
    use super::*;

    fn pareto() -> BarChart {
        BarChart {
            title: "Failure modes".into(),
            y_label: "Failures".into(),
            x_label: "Failure mode".into(),
            cumulative: true,
            bars: vec![
                Bar {
                    label: "Bearing wear & <noise> on the drive end".into(),
                    value: 50.0,
                },
                Bar {
                    label: "Seal leak".into(),
                    value: 30.0,
                },
                Bar {
                    label: "Belt".into(),
                    value: 15.0,
                },
                Bar {
                    label: "Other".into(),
                    value: 5.0,
                },
            ],
            ..Default::default()
        }
    }

    #[test]
    fn bars_values_and_cumulative_percent() {
        let svg = bar_chart(&pareto());
        assert_valid(&svg);
        let bars = tags(&svg, "rect class=\"bar\"");
        assert_eq!(bars.len(), 4);
        // heights proportional to the values
        let h: Vec<f64> = bars.iter().map(|b| num(b, "height")).collect();
        assert!((h[0] / h[1] - 50.0 / 30.0).abs() < 0.01, "{h:?}");
        let t = texts(&svg);
        for v in [
            "50",
            "30",
            "15",
            "5",
            "Failures",
            "Failure mode",
            "Cumulative (%)",
            "100 %",
        ] {
            assert!(t.contains(&v), "{v}: {t:?}");
        }
        // cumulative: 50, 80, 95, 100 % on the right axis
        let c = tags(&svg, "circle class=\"cumulative-point\"");
        assert_eq!(c.len(), 4);
        // 100 % is the last point, 50 % the first: the scale follows from the two
        let (top, first) = (num(c[3], "cy"), num(c[0], "cy"));
        let bottom = 2.0 * first - top;
        let at = |p: f64| bottom + (top - bottom) * p / 100.0;
        assert!((num(c[1], "cy") - at(80.0)).abs() < 0.11);
        assert!((num(c[2], "cy") - at(95.0)).abs() < 0.11);
        assert!(svg.contains("g class=\"axis y2\""));
    }

    #[test]
    fn long_labels_are_truncated_with_the_full_name_as_tooltip() {
        let svg = bar_chart(&pareto());
        let full = "Bearing wear &amp; &lt;noise&gt; on the drive end";
        assert!(svg.contains(&format!("<title>{full}</title>")));
        let cats: Vec<&str> = texts(&svg)
            .into_iter()
            .filter(|t| t.starts_with("<title>Bearing"))
            .collect();
        assert_eq!(cats.len(), 1);
        let shown = cats[0].rsplit("</title>").next().expect("label");
        assert!(shown.ends_with('…') && shown.len() < full.len(), "{shown}");
    }

    #[test]
    fn no_data_and_edges() {
        let svg = bar_chart(&BarChart::default());
        assert_valid(&svg);
        assert!(svg.contains("class=\"no-data\""));
        for vals in [
            vec![0.0, 0.0],
            vec![7.0],
            vec![1e300, f64::NAN, -1e300],
            vec![-5.0, -2.0],
            vec![f64::INFINITY],
        ] {
            let mut c = pareto();
            c.bars = vals
                .iter()
                .map(|&v| Bar {
                    label: "x".into(),
                    value: v,
                })
                .collect();
            let svg = bar_chart(&c);
            assert_valid(&svg);
            assert!(!svg.contains("no-data"));
        }
        // many categories: rotated labels, still valid
        let mut c = pareto();
        c.bars = (0..200)
            .map(|i| Bar {
                label: format!("mode {i}"),
                value: 200.0 - i as f64,
            })
            .collect();
        let svg = bar_chart(&c);
        assert_valid(&svg);
        assert!(svg.contains("rotate(-35"));
    }
}
