//! Time-series chart: sensor readings and hourly rollups against UTC time, with
//! min/max bands, threshold lines, event markers, alarm spans and a depletion forecast.

use chrono::{DateTime, TimeDelta, Utc};

use super::scale::{LinearScale, TimeScale, clamp_value, nice_ticks, time_ticks};
use super::svg::{
    Esc, HALO, Margins, N, Side, Size, axis_title, class_names, close, kind_colour, no_data, open,
    open_clip, palette, plot_area, series_legend, truncate, w, x_axis, y_axis,
};

/// Most points drawn per series: above it a series is reduced by min/max bucketing.
pub const MAX_POINTS_PER_SERIES: usize = 2000;
/// Buckets over the x range when a series is reduced; each keeps at most four points
/// (first, minimum, maximum, last), so a reduced series has at most 2 000 points (plus
/// the ones at gap edges).
const BUCKETS: i64 = 500;

/// A time-series chart: what [`time_series`] draws.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct TimeSeriesChart {
    /// Visible title, also the accessible name.
    pub title: String,
    /// Accessible description; generated from the data when empty.
    pub description: String,
    /// Y axis label, e.g. "Differential pressure".
    pub y_label: String,
    /// Y axis unit, e.g. "Pa"; shown in parentheses after the label.
    pub y_unit: String,
    /// Start of the x range (inclusive). The range is the caller's, not the data's.
    pub from: DateTime<Utc>,
    /// End of the x range (inclusive); must be after `from` or the chart shows no data.
    pub to: DateTime<Utc>,
    /// The series, drawn in order with classes `series s0`, `series s1`, ….
    pub series: Vec<Series>,
    /// Horizontal lines at fixed values (alarm limits).
    pub thresholds: Vec<Threshold>,
    /// Vertical lines at instants (work orders, failures).
    pub markers: Vec<Marker>,
    /// Shaded time spans (alarm episodes).
    pub spans: Vec<Span>,
    /// An optional forecast (e.g. when a filter reaches its replacement limit).
    pub forecast: Option<Forecast>,
    /// A fixed y range; `None` fits the data, bands, thresholds and forecast value.
    pub y_range: Option<(f64, f64)>,
    /// Consecutive points further apart than this are not joined (a gap in the data);
    /// `None` joins all points. Once a series is reduced ([`MAX_POINTS_PER_SERIES`]),
    /// gaps shorter than one bucket (1/500 of the range) are not shown.
    pub max_gap: Option<TimeDelta>,
    /// Drawing size (`viewBox`).
    pub size: Size,
}

/// One series of (instant, value) points, with an optional min/max band.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Series {
    /// Legend name; series with an empty name have no legend entry.
    pub name: String,
    /// The points, in any order; non-finite values break the line.
    pub points: Vec<(DateTime<Utc>, f64)>,
    /// Optional band `(instant, min, max)` drawn as a shaded area behind the line (for
    /// hourly rollups: min and max around the mean). Empty for none.
    pub band: Vec<(DateTime<Utc>, f64, f64)>,
}

/// A horizontal line at a fixed value.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Threshold {
    /// The y value.
    pub value: f64,
    /// Label shown at the right end of the line.
    pub label: String,
    /// Extra CSS classes (e.g. "warning", "critical"); also picks the inline colour.
    pub kind: String,
}

/// A vertical line at an instant.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Marker {
    /// The instant.
    pub at: DateTime<Utc>,
    /// Label written along the line (and as its tooltip).
    pub label: String,
    /// Extra CSS classes, e.g. "order" or "failure": the element is
    /// `<g class="marker failure">`.
    pub kind: String,
}

/// A shaded span of time.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Span {
    /// Start of the span.
    pub from: DateTime<Utc>,
    /// End of the span; `None` for a span still open, drawn to the chart's end.
    pub to: Option<DateTime<Utc>>,
    /// Label (tooltip, and written in the span when it is wide enough).
    pub label: String,
    /// Kind class, e.g. "alarm".
    pub kind: String,
    /// Severity class, e.g. "critical"; the element is `<rect class="span alarm critical">`.
    pub severity: String,
}

/// A forecast: a dashed line from the last point of a series to a forecast instant and
/// value, with the forecast's interval on the time axis shaded.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Forecast {
    /// Index into [`TimeSeriesChart::series`] of the series the line starts from (at its
    /// last finite point); no line when the series is missing or empty.
    pub series: usize,
    /// The forecast instant (e.g. when the filter reaches its limit).
    pub at: DateTime<Utc>,
    /// The value at the forecast instant (e.g. the replacement limit).
    pub value: f64,
    /// Lower end of the forecast interval on the time axis, if any.
    pub lower: Option<DateTime<Utc>>,
    /// Upper end of the forecast interval on the time axis, if any.
    pub upper: Option<DateTime<Utc>>,
    /// Label written at the forecast point.
    pub label: String,
}

/// Milliseconds since the epoch.
fn ms(t: DateTime<Utc>) -> i64 {
    t.timestamp_millis()
}

/// A series prepared for drawing: segments of (ms, value) points, split at gaps.
struct Prepared {
    segments: Vec<Vec<(i64, f64)>>,
    band: Vec<Vec<(i64, f64, f64)>>,
    /// Value extent of the points inside the x range.
    extent: Option<(f64, f64)>,
}

fn extend(extent: &mut Option<(f64, f64)>, v: f64) {
    if v.is_finite() {
        let v = clamp_value(v);
        *extent = Some(match *extent {
            Some((lo, hi)) => (lo.min(v), hi.max(v)),
            None => (v, v),
        });
    }
}

/// Sorted points within `[from, to]` plus the nearest point on each side (so a line
/// enters the plot from its edge); values are clamped, non-finite ones kept as NaN
/// markers of a break.
fn window<T: Copy>(mut pts: Vec<(i64, T)>, from: i64, to: i64) -> Vec<(i64, T)> {
    if !pts.is_sorted_by_key(|p| p.0) {
        pts.sort_by_key(|p| p.0);
    }
    let start = pts.partition_point(|p| p.0 < from);
    let end = pts.partition_point(|p| p.0 <= to);
    let lo = start.saturating_sub(1);
    let hi = (end + 1).min(pts.len());
    pts.truncate(hi);
    pts.drain(..lo);
    pts
}

/// Splits sorted points into runs: a new run starts after a non-finite value or a step
/// longer than `gap` milliseconds.
fn runs<T: Copy>(
    pts: &[(i64, T)],
    gap: Option<i64>,
    finite: impl Fn(&T) -> bool,
) -> Vec<&[(i64, T)]> {
    let mut out = Vec::new();
    let mut start: Option<usize> = None;
    for i in 0..pts.len() {
        if !finite(&pts[i].1) {
            if let Some(s) = start.take() {
                out.push(&pts[s..i]);
            }
            continue;
        }
        match start {
            None => start = Some(i),
            Some(s) => {
                if gap.is_some_and(|g| pts[i].0 - pts[i - 1].0 > g) {
                    out.push(&pts[s..i]);
                    start = Some(i);
                }
            }
        }
    }
    if let Some(s) = start {
        out.push(&pts[s..]);
    }
    out
}

/// Reduces a run by min/max bucketing: per bucket of `width` ms (counted from `from`),
/// the first, lowest, highest and last point, in time order.
fn decimate(run: &[(i64, f64)], from: i64, width: i64) -> Vec<(i64, f64)> {
    let mut out = Vec::new();
    let bucket = |t: i64| (t - from).div_euclid(width.max(1));
    let mut a = 0;
    while a < run.len() {
        let b0 = bucket(run[a].0);
        let mut b = a;
        let (mut imin, mut imax) = (a, a);
        while b < run.len() && bucket(run[b].0) == b0 {
            if run[b].1 < run[imin].1 {
                imin = b;
            }
            if run[b].1 > run[imax].1 {
                imax = b;
            }
            b += 1;
        }
        let mut idx = [a, imin, imax, b - 1];
        idx.sort_unstable();
        let mut last = usize::MAX;
        for i in idx {
            if i != last {
                out.push(run[i]);
                last = i;
            }
        }
        a = b;
    }
    out
}

/// The same for a band: per bucket, the lowest minimum and highest maximum at the
/// bucket's first and last instants.
fn decimate_band(run: &[(i64, (f64, f64))], from: i64, width: i64) -> Vec<(i64, f64, f64)> {
    let mut out = Vec::new();
    let bucket = |t: i64| (t - from).div_euclid(width.max(1));
    let mut a = 0;
    while a < run.len() {
        let b0 = bucket(run[a].0);
        let mut b = a;
        let (mut lo, mut hi) = (f64::INFINITY, f64::NEG_INFINITY);
        while b < run.len() && bucket(run[b].0) == b0 {
            lo = lo.min(run[b].1.0);
            hi = hi.max(run[b].1.1);
            b += 1;
        }
        out.push((run[a].0, lo, hi));
        if b - 1 > a {
            out.push((run[b - 1].0, lo, hi));
        }
        a = b;
    }
    out
}

fn prepare(s: &Series, from: i64, to: i64, gap: Option<i64>) -> Prepared {
    let bucket_width = ((to - from) / BUCKETS).max(1);
    let pts: Vec<(i64, f64)> = s
        .points
        .iter()
        .map(|&(t, v)| {
            (
                ms(t),
                if v.is_finite() {
                    clamp_value(v)
                } else {
                    f64::NAN
                },
            )
        })
        .collect();
    let pts = window(pts, from, to);
    let mut extent = None;
    for &(t, v) in &pts {
        if (from..=to).contains(&t) {
            extend(&mut extent, v);
        }
    }
    let reduce = pts.len() > MAX_POINTS_PER_SERIES;
    let gap = if reduce {
        gap.map(|g| g.max(bucket_width))
    } else {
        gap
    };
    let segments = runs(&pts, gap, |v| v.is_finite())
        .into_iter()
        .map(|r| {
            if reduce {
                decimate(r, from, bucket_width)
            } else {
                r.to_vec()
            }
        })
        .collect();

    let band: Vec<(i64, (f64, f64))> = s
        .band
        .iter()
        .map(|&(t, a, b)| {
            let (a, b) = if a.is_finite() && b.is_finite() {
                let (a, b) = (clamp_value(a), clamp_value(b));
                (a.min(b), a.max(b))
            } else {
                (f64::NAN, f64::NAN)
            };
            (ms(t), (a, b))
        })
        .collect();
    let band = window(band, from, to);
    for &(t, (a, b)) in &band {
        if (from..=to).contains(&t) {
            extend(&mut extent, a);
            extend(&mut extent, b);
        }
    }
    let reduce_band = band.len() > MAX_POINTS_PER_SERIES;
    let band_gap = if reduce_band {
        gap.map(|g| g.max(bucket_width))
    } else {
        gap
    };
    let band = runs(&band, band_gap, |v| v.0.is_finite())
        .into_iter()
        .map(|r| {
            if reduce_band {
                decimate_band(r, from, bucket_width)
            } else {
                r.iter().map(|&(t, (a, b))| (t, a, b)).collect()
            }
        })
        .collect();
    Prepared {
        segments,
        band,
        extent,
    }
}

fn fmt_time(t: DateTime<Utc>) -> String {
    t.format("%Y-%m-%d %H:%M UTC").to_string()
}

/// Draws a time-series chart as an SVG string.
///
/// The x axis is the caller's range `[from, to]` (UTC, ticks from hours to months), the
/// y axis is fitted with 1-2-5 ticks unless `y_range` is given. Each series is a
/// `<path class="series sN">` (one subpath per run between gaps; an isolated point is a
/// round dot), its band a `<path class="band sN">`. Thresholds are
/// `<g class="threshold KIND">`, markers `<g class="marker KIND">`, spans
/// `<rect class="span KIND SEVERITY">` (an open span runs to `to`), the forecast
/// `<g class="forecast">` with a dashed `forecast-line` and a shaded
/// `forecast-interval`. Everything inside the plot is clipped to it.
///
/// With no series point or band point inside the range (or `from >= to`) it returns the
/// "no data" state.
pub fn time_series(chart: &TimeSeriesChart) -> String {
    const KIND: &str = "time-series";
    let (from, to) = (ms(chart.from), ms(chart.to));
    if from >= to {
        return no_data(KIND, chart.size, &chart.title);
    }
    let gap = chart.max_gap.map(|g| g.num_milliseconds().max(1));
    let prepared: Vec<Prepared> = chart
        .series
        .iter()
        .map(|s| prepare(s, from, to, gap))
        .collect();
    let mut extent = None;
    for p in &prepared {
        if let Some((a, b)) = p.extent {
            extend(&mut extent, a);
            extend(&mut extent, b);
        }
    }
    if extent.is_none() {
        return no_data(KIND, chart.size, &chart.title);
    }
    for t in &chart.thresholds {
        extend(&mut extent, t.value);
    }
    if let Some(f) = &chart.forecast {
        extend(&mut extent, f.value);
    }
    let (lo, hi) = match chart.y_range {
        Some((a, b)) if a.is_finite() && b.is_finite() => (a, b),
        _ => {
            // 5 % headroom so lines and labels at the extremes stay off the frame; data
            // that never goes below 0 keeps 0 as its floor
            let (a, b) = extent.unwrap_or((0.0, 1.0));
            let pad = (b / 2.0 - a / 2.0) * 0.1;
            let a2 = if a >= 0.0 {
                (a - pad).max(0.0)
            } else {
                a - pad
            };
            (a2, b + pad)
        }
    };

    let named: Vec<(usize, &Series)> = chart
        .series
        .iter()
        .enumerate()
        .filter(|(_, s)| !s.name.trim().is_empty())
        .collect();
    let margins = Margins {
        top: if named.is_empty() { 44.0 } else { 58.0 },
        ..Margins::default()
    };
    let plot = plot_area(chart.size, margins);
    let yt = nice_ticks(lo, hi, (plot.h / 40.0) as usize + 1);
    // a fixed range is kept as given; a fitted one is extended to whole ticks
    let ydomain = if chart.y_range.is_some() {
        super::scale::widen_domain(lo, hi)
    } else {
        yt.extent()
    };
    let ys = LinearScale::new(ydomain, (plot.bottom(), plot.y));
    let xs = TimeScale {
        from: chart.from,
        to: chart.to,
        range: (plot.x, plot.right()),
    };
    let xm = |t: i64| plot.x + (t - from) as f64 / (to - from) as f64 * plot.w;

    let total_points: usize = prepared
        .iter()
        .map(|p| p.segments.iter().map(Vec::len).sum::<usize>())
        .sum();
    let description = if chart.description.trim().is_empty() {
        format!(
            "Time series, {} series, {} to {}; y axis: {}. {} thresholds, {} markers, {} spans{}.",
            chart.series.len(),
            fmt_time(chart.from),
            fmt_time(chart.to),
            axis_title(&chart.y_label, &chart.y_unit),
            chart.thresholds.len(),
            chart.markers.len(),
            chart.spans.len(),
            if chart.forecast.is_some() {
                ", with a forecast"
            } else {
                ""
            }
        )
    } else {
        chart.description.clone()
    };
    let mut out = String::with_capacity(4096 + total_points * 14);
    open(&mut out, KIND, chart.size, &chart.title, &description);

    // axes and grid first, data on top
    let tol = (ydomain.1 - ydomain.0) * 1e-9;
    let ylabels: Vec<(f64, String)> = yt
        .values
        .iter()
        .zip(yt.labels())
        .filter(|(v, _)| **v >= ydomain.0 - tol && **v <= ydomain.1 + tol)
        .map(|(v, l)| (ys.map(*v), l))
        .collect();
    y_axis(
        &mut out,
        plot,
        &ylabels,
        &axis_title(&chart.y_label, &chart.y_unit),
        Side::Left,
        true,
    );
    let xt: Vec<(f64, String)> = time_ticks(chart.from, chart.to, (plot.w / 90.0) as usize)
        .into_iter()
        .map(|t| (xs.map(t.at), t.label))
        .collect();
    x_axis(&mut out, plot, &xt, "Time (UTC)", true, false);

    open_clip(&mut out, plot, "plot-area");

    // spans behind everything
    for s in &chart.spans {
        let a = ms(s.from).max(from);
        let b = s.to.map(ms).unwrap_or(to).min(to);
        if b < a || ms(s.from) > to {
            continue;
        }
        let (x0, x1) = (xm(a), xm(b));
        let cls = class_names(&format!("{} {}", s.kind, s.severity));
        let colour = kind_colour(&format!("{} {}", s.kind, s.severity));
        let until =
            s.to.map(fmt_time)
                .unwrap_or_else(|| "still open".to_string());
        w!(
            &mut out,
            "<rect class=\"span {cls}\" x=\"{}\" y=\"{}\" width=\"{}\" height=\"{}\" \
             fill=\"{colour}\" fill-opacity=\"0.12\"><title>{} ({} – {})</title></rect>",
            N(x0),
            N(plot.y),
            N((x1 - x0).max(1.0)),
            N(plot.h),
            Esc(&s.label),
            fmt_time(s.from),
            Esc(&until)
        );
        let chars = s.label.chars().count() as f64;
        if !s.label.is_empty() && x1 - x0 > chars * 6.5 + 8.0 {
            w!(
                &mut out,
                "<text class=\"span-label {cls}\" x=\"{}\" y=\"{}\" font-size=\"10\" \
                 fill=\"{colour}\" {HALO}>{}</text>",
                N(x0 + 4.0),
                N(plot.y + 12.0),
                Esc(&s.label)
            );
        }
    }

    // forecast interval
    if let Some(f) = &chart.forecast
        && let (Some(a), Some(b)) = (f.lower.or(Some(f.at)), f.upper.or(Some(f.at)))
        && (f.lower.is_some() || f.upper.is_some())
    {
        let (a, b) = (ms(a).min(ms(b)), ms(a).max(ms(b)));
        if b >= from && a <= to {
            let (x0, x1) = (xm(a.max(from)), xm(b.min(to)));
            w!(
                &mut out,
                "<rect class=\"forecast-interval\" x=\"{}\" y=\"{}\" width=\"{}\" height=\"{}\" \
                 fill=\"#7f7f7f\" fill-opacity=\"0.15\"><title>Forecast interval {} – {}</title>\
                 </rect>",
                N(x0),
                N(plot.y),
                N((x1 - x0).max(1.0)),
                N(plot.h),
                fmt_time(DateTime::from_timestamp_millis(a).unwrap_or(chart.from)),
                fmt_time(DateTime::from_timestamp_millis(b).unwrap_or(chart.to)),
            );
        }
    }

    // bands, then lines
    for (i, p) in prepared.iter().enumerate() {
        if p.band.iter().all(|r| r.len() < 2) {
            continue;
        }
        w!(
            &mut out,
            "<path class=\"band s{i}\" fill=\"{}\" fill-opacity=\"0.2\" stroke=\"none\" d=\"",
            palette(i)
        );
        for run in p.band.iter().filter(|r| r.len() >= 2) {
            for (k, &(t, _, hi)) in run.iter().enumerate() {
                w!(
                    &mut out,
                    "{}{} {}",
                    if k == 0 { "M" } else { "L" },
                    N(xm(t)),
                    N(ys.map(hi))
                );
            }
            for &(t, lo, _) in run.iter().rev() {
                w!(&mut out, "L{} {}", N(xm(t)), N(ys.map(lo)));
            }
            out.push('Z');
        }
        out.push_str("\"/>");
    }
    for (i, p) in prepared.iter().enumerate() {
        if p.segments.is_empty() {
            continue;
        }
        w!(
            &mut out,
            "<path class=\"series s{i}\" fill=\"none\" stroke=\"{}\" stroke-width=\"1.5\" \
             stroke-linejoin=\"round\" stroke-linecap=\"round\" d=\"",
            palette(i)
        );
        for run in &p.segments {
            for (k, &(t, v)) in run.iter().enumerate() {
                w!(
                    &mut out,
                    "{}{} {}",
                    if k == 0 { "M" } else { "L" },
                    N(xm(t)),
                    N(ys.map(v))
                );
            }
            if run.len() == 1 {
                out.push_str("h0");
            }
        }
        out.push_str("\">");
        if !chart.series[i].name.is_empty() {
            w!(&mut out, "<title>{}</title>", Esc(&chart.series[i].name));
        }
        out.push_str("</path>");
    }

    // thresholds
    for t in &chart.thresholds {
        if !t.value.is_finite() {
            continue;
        }
        let y = ys.map(t.value);
        let cls = class_names(&t.kind);
        let colour = kind_colour(if t.kind.is_empty() {
            "critical"
        } else {
            &t.kind
        });
        w!(
            &mut out,
            "<g class=\"threshold {cls}\"><line x1=\"{}\" y1=\"{}\" x2=\"{}\" y2=\"{}\" \
             stroke=\"{colour}\" stroke-width=\"1\" stroke-dasharray=\"6 4\"/>",
            N(plot.x),
            N(y),
            N(plot.right()),
            N(y)
        );
        if !t.label.is_empty() {
            w!(
                &mut out,
                "<text x=\"{}\" y=\"{}\" text-anchor=\"end\" font-size=\"10\" \
                 fill=\"{colour}\" {HALO}>{}</text>",
                N(plot.right() - 4.0),
                N(y - 4.0),
                Esc(&t.label)
            );
        }
        out.push_str("</g>");
    }

    // markers
    for m in &chart.markers {
        let t = ms(m.at);
        if t < from || t > to {
            continue;
        }
        let x = xm(t);
        let cls = class_names(&m.kind);
        let colour = kind_colour(&m.kind);
        w!(
            &mut out,
            "<g class=\"marker {cls}\"><title>{} ({})</title><line x1=\"{}\" y1=\"{}\" \
             x2=\"{}\" y2=\"{}\" stroke=\"{colour}\" stroke-width=\"1\" \
             stroke-dasharray=\"2 3\"/>",
            Esc(&m.label),
            fmt_time(m.at),
            N(x),
            N(plot.y),
            N(x),
            N(plot.bottom())
        );
        if !m.label.is_empty() {
            w!(
                &mut out,
                "<text x=\"{}\" y=\"{}\" transform=\"rotate(90 {} {})\" font-size=\"10\" \
                 fill=\"{colour}\" {HALO}>{}</text>",
                N(x + 3.0),
                N(plot.y + 4.0),
                N(x + 3.0),
                N(plot.y + 4.0),
                Esc(&truncate(&m.label, 30))
            );
        }
        out.push_str("</g>");
    }

    // forecast line and point
    if let Some(f) = &chart.forecast {
        let i = f.series;
        let colour = palette(i);
        out.push_str("<g class=\"forecast\">");
        let last = chart.series.get(i).and_then(|s| {
            s.points
                .iter()
                .filter(|p| p.1.is_finite())
                .max_by_key(|p| p.0)
                .copied()
        });
        let fx = xm(ms(f.at));
        let fy = ys.map(f.value);
        if let Some((t0, v0)) = last
            && f.value.is_finite()
        {
            w!(
                &mut out,
                "<path class=\"forecast-line s{i}\" fill=\"none\" stroke=\"{colour}\" \
                 stroke-width=\"1.5\" stroke-dasharray=\"6 4\" d=\"M{} {}L{} {}\"/>",
                N(xm(ms(t0))),
                N(ys.map(v0)),
                N(fx),
                N(fy)
            );
        }
        if f.value.is_finite() && (from..=to).contains(&ms(f.at)) {
            w!(
                &mut out,
                "<circle class=\"forecast-point s{i}\" cx=\"{}\" cy=\"{}\" r=\"3.5\" \
                 fill=\"#fff\" stroke=\"{colour}\" stroke-width=\"1.5\"><title>{} ({})</title>\
                 </circle>",
                N(fx),
                N(fy),
                Esc(&f.label),
                fmt_time(f.at)
            );
        }
        if !f.label.is_empty() {
            let lx = fx.clamp(plot.x + 4.0, plot.right() - 4.0);
            let anchor = if lx > plot.x + plot.w * 0.6 {
                "end"
            } else {
                "start"
            };
            let dx = if anchor == "end" { -6.0 } else { 6.0 };
            w!(
                &mut out,
                "<text class=\"forecast-label\" x=\"{}\" y=\"{}\" text-anchor=\"{anchor}\" \
                 font-size=\"11\" fill=\"#333\" {HALO}>{}</text>",
                N(lx + dx),
                N((fy - 8.0).clamp(plot.y + 12.0, plot.bottom() - 4.0)),
                Esc(&f.label)
            );
        }
        out.push_str("</g>");
    }
    out.push_str("</svg>");

    let (w_, _) = chart.size.dims();
    series_legend(
        &mut out,
        w_,
        named.iter().map(|(i, s)| (*i, s.name.as_str())),
    );
    close(&mut out);
    out
}

#[cfg(test)]
mod tests {
    use super::super::testutil::{assert_valid, attr, num, path_points, tags, texts};
    use super::*;
    use chrono::TimeZone;

    fn t0() -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2024, 5, 1, 0, 0, 0)
            .single()
            .expect("valid")
    }

    fn hours(h: i64) -> DateTime<Utc> {
        t0() + TimeDelta::hours(h)
    }

    fn chart(points: Vec<(DateTime<Utc>, f64)>) -> TimeSeriesChart {
        TimeSeriesChart {
            title: "Filter ΔP — AHU-3".into(),
            y_label: "Differential pressure".into(),
            y_unit: "Pa".into(),
            from: t0(),
            to: hours(48),
            series: vec![Series {
                name: "ΔP".into(),
                points,
                band: vec![],
            }],
            ..Default::default()
        }
    }

    /// The y position of `v` according to the y tick labels (x = 62) of a chart.
    fn y_of(svg: &str, v: f64) -> f64 {
        let ticks: Vec<(f64, f64)> = tags(svg, "text x=\"62\"")
            .into_iter()
            .map(|t| {
                let start = svg.find(t).expect("tag") + t.len() + 1;
                let end = start + svg[start..].find('<').expect("end");
                (svg[start..end].parse::<f64>().expect("number"), num(t, "y"))
            })
            .collect();
        let (a, b) = (ticks[0], ticks[ticks.len() - 1]);
        a.1 + (v - a.0) / (b.0 - a.0) * (b.1 - a.1)
    }

    #[test]
    fn draws_a_line_with_labelled_axes() {
        let pts: Vec<_> = (0..=48).map(|h| (hours(h), 100.0 + h as f64)).collect();
        let svg = time_series(&chart(pts));
        assert_valid(&svg);
        let texts = texts(&svg);
        assert!(texts.contains(&"Differential pressure (Pa)"), "{texts:?}");
        assert!(texts.contains(&"Time (UTC)"));
        assert!(texts.contains(&"Filter ΔP — AHU-3"));
        let paths = tags(&svg, "path class=\"series s0\"");
        assert_eq!(paths.len(), 1);
        let p = path_points(attr(paths[0], "d").expect("d"));
        assert_eq!(p.len(), 49);
        // first point at the left edge, last at the right edge (margins 68 and 24)
        assert_eq!(p[0].0, 68.0);
        assert_eq!(p[48].0, 696.0);
        // rising values: y decreases
        assert!(p[48].1 < p[0].1);
        assert_eq!(tags(&svg, "g class=\"axis x\"").len(), 1);
        assert_eq!(tags(&svg, "g class=\"axis y\"").len(), 1);
        assert!(svg.contains("<rect class=\"swatch s0\""));
    }

    #[test]
    fn y_positions_follow_the_scale() {
        // values 0..=100, with 5 % headroom 0..105 → y ticks 0..120 by 20; the plot runs
        // from y = 312 (bottom) to 58 (below the legend): y(v) = 312 − v/120 × 254
        let pts = vec![(hours(0), 0.0), (hours(24), 50.0), (hours(48), 100.0)];
        let svg = time_series(&chart(pts));
        let d = attr(tags(&svg, "path class=\"series s0\"")[0], "d")
            .expect("d")
            .to_string();
        let p = path_points(&d);
        assert_eq!(p, vec![(68.0, 312.0), (382.0, 206.2), (696.0, 100.3)]);
        assert!(texts(&svg).contains(&"120"));
    }

    #[test]
    fn gaps_longer_than_max_gap_break_the_line() {
        let mut pts: Vec<_> = (0..10).map(|h| (hours(h), 1.0)).collect();
        pts.extend((20..30).map(|h| (hours(h), 2.0)));
        pts.push((hours(40), 3.0)); // isolated
        let mut c = chart(pts);
        c.max_gap = Some(TimeDelta::hours(2));
        let svg = time_series(&c);
        assert_valid(&svg);
        let d = attr(tags(&svg, "path class=\"series s0\"")[0], "d").expect("d");
        assert_eq!(d.matches('M').count(), 3, "{d}");
        assert!(d.ends_with("h0"), "isolated point drawn as a dot: {d}");
        // without max_gap: one run
        c.max_gap = None;
        let svg = time_series(&c);
        let d = attr(tags(&svg, "path class=\"series s0\"")[0], "d").expect("d");
        assert_eq!(d.matches('M').count(), 1);
    }

    #[test]
    fn non_finite_values_break_the_line_and_never_print() {
        let pts = vec![
            (hours(1), 1.0),
            (hours(2), f64::NAN),
            (hours(3), 2.0),
            (hours(4), f64::INFINITY),
            (hours(5), 3.0),
        ];
        let svg = time_series(&chart(pts));
        assert_valid(&svg);
        let d = attr(tags(&svg, "path class=\"series s0\"")[0], "d").expect("d");
        assert_eq!(d.matches('M').count(), 3);
    }

    #[test]
    fn bands_thresholds_markers_spans_and_forecast() {
        let pts: Vec<_> = (0..24)
            .map(|h| (hours(h), 100.0 + 2.0 * h as f64))
            .collect();
        let band: Vec<_> = (0..24)
            .map(|h| (hours(h), 95.0 + 2.0 * h as f64, 105.0 + 2.0 * h as f64))
            .collect();
        let mut c = chart(pts);
        c.series[0].band = band;
        c.thresholds = vec![Threshold {
            value: 250.0,
            label: "Replace at 250 Pa".into(),
            kind: "critical".into(),
        }];
        c.markers = vec![
            Marker {
                at: hours(5),
                label: "WO-17 <filter> & belt".into(),
                kind: "order".into(),
            },
            Marker {
                at: hours(100), // outside: not drawn
                label: "later".into(),
                kind: "failure".into(),
            },
        ];
        c.spans = vec![
            Span {
                from: hours(10),
                to: Some(hours(12)),
                label: "High ΔP".into(),
                kind: "alarm".into(),
                severity: "critical".into(),
            },
            Span {
                from: hours(40),
                to: None,
                label: "open".into(),
                kind: "alarm".into(),
                severity: "warning".into(),
            },
        ];
        c.forecast = Some(Forecast {
            series: 0,
            at: hours(36),
            value: 250.0,
            lower: Some(hours(32)),
            upper: Some(hours(44)),
            label: "Limit ~ 2 May 12:00".into(),
        });
        let svg = time_series(&c);
        assert_valid(&svg);
        assert_eq!(tags(&svg, "path class=\"band s0\"").len(), 1);
        assert_eq!(tags(&svg, "g class=\"threshold critical\"").len(), 1);
        assert_eq!(tags(&svg, "g class=\"marker order\"").len(), 1);
        assert_eq!(tags(&svg, "g class=\"marker failure\"").len(), 0);
        assert!(svg.contains("WO-17 &lt;filter&gt; &amp; belt"));
        let spans = tags(&svg, "rect class=\"span alarm");
        assert_eq!(spans.len(), 2);
        // the open span runs to the right edge of the plot (x 68 + w = 696)
        let open = tags(&svg, "rect class=\"span alarm warning\"")[0];
        assert!((num(open, "x") + num(open, "width") - 696.0).abs() < 0.2);
        // the 2 h span: 2/48 of 628 = 26.2 wide
        let closed = tags(&svg, "rect class=\"span alarm critical\"")[0];
        assert!((num(closed, "width") - 26.2).abs() < 0.2, "{closed}");
        let fl = tags(&svg, "path class=\"forecast-line s0\"");
        assert_eq!(fl.len(), 1);
        let p = path_points(attr(fl[0], "d").expect("d"));
        // from the last point (hour 23) to hour 36 at the threshold's height
        let threshold_line = tags(&svg, "line")
            .into_iter()
            .find(|l| attr(l, "stroke-dasharray") == Some("6 4"))
            .expect("threshold line");
        assert!((p[1].1 - num(threshold_line, "y1")).abs() < 0.11);
        assert!((p[0].0 - (68.0 + 23.0 / 48.0 * 628.0)).abs() < 0.11);
        let iv = tags(&svg, "rect class=\"forecast-interval\"")[0];
        assert!((num(iv, "width") - 12.0 / 48.0 * 628.0).abs() < 0.2);
        // y range includes the threshold
        let yt: Vec<&str> = texts(&svg);
        assert!(yt.contains(&"250"), "{yt:?}");
    }

    #[test]
    fn no_data_states() {
        let svg = time_series(&chart(vec![]));
        assert_valid(&svg);
        assert!(svg.contains("class=\"no-data\""));
        assert!(svg.contains("No data for this selection"));
        // points only outside the range
        let svg = time_series(&chart(vec![(hours(-5), 1.0), (hours(60), 2.0)]));
        assert!(svg.contains("class=\"no-data\""));
        // empty range
        let mut c = chart(vec![(hours(1), 1.0)]);
        c.to = c.from;
        assert!(time_series(&c).contains("class=\"no-data\""));
        assert!(time_series(&TimeSeriesChart::default()).contains("class=\"no-data\""));
    }

    #[test]
    fn edge_values_never_print_nan_or_inf() {
        let cases: Vec<Vec<(DateTime<Utc>, f64)>> = vec![
            vec![(hours(3), 42.0)],
            vec![(hours(3), 7.0), (hours(4), 7.0), (hours(5), 7.0)],
            vec![(hours(3), 1e300), (hours(4), -1e300)],
            vec![(hours(3), f64::MAX), (hours(4), f64::MIN)],
            vec![(hours(3), -5.0), (hours(4), -3.0)],
            vec![(hours(3), 0.0), (hours(3), 0.0)],
            vec![(hours(3), 1e-300), (hours(4), 2e-300)],
        ];
        for pts in cases {
            let mut c = chart(pts.clone());
            c.series[0].band = pts.iter().map(|&(t, v)| (t, v - 1.0, v + 1.0)).collect();
            c.thresholds = vec![Threshold {
                value: f64::NAN,
                label: "nan".into(),
                kind: String::new(),
            }];
            c.forecast = Some(Forecast {
                series: 3,
                at: hours(1000),
                value: f64::INFINITY,
                ..Default::default()
            });
            let svg = time_series(&c);
            assert_valid(&svg);
            assert!(!svg.contains("no-data"), "{pts:?}");
        }
    }

    #[test]
    fn extreme_time_ranges_stay_finite() {
        let mut c = chart(vec![(hours(1), 1.0), (hours(2), 2.0)]);
        c.from = DateTime::<Utc>::MIN_UTC;
        c.to = DateTime::<Utc>::MAX_UTC;
        c.max_gap = Some(TimeDelta::milliseconds(1));
        c.spans = vec![Span {
            from: DateTime::<Utc>::MIN_UTC,
            to: None,
            ..Default::default()
        }];
        let svg = time_series(&c);
        assert_valid(&svg);
        // one minute
        let mut c = chart(vec![(hours(0), 1.0), (t0() + TimeDelta::seconds(30), 2.0)]);
        c.to = t0() + TimeDelta::minutes(1);
        let svg = time_series(&c);
        assert_valid(&svg);
    }

    #[test]
    fn unsorted_points_are_sorted() {
        let pts = vec![(hours(10), 3.0), (hours(0), 1.0), (hours(5), 2.0)];
        let svg = time_series(&chart(pts));
        let p = path_points(attr(tags(&svg, "path class=\"series s0\"")[0], "d").expect("d"));
        assert!(p.windows(2).all(|w| w[0].0 < w[1].0));
    }

    #[test]
    fn the_line_enters_from_outside_the_range() {
        // a point before `from` and one after `to` are kept so the line reaches the edges
        let pts = vec![
            (hours(-2), 1.0),
            (hours(10), 2.0),
            (hours(50), 3.0),
            (hours(90), 9.0),
        ];
        let svg = time_series(&chart(pts));
        let p = path_points(attr(tags(&svg, "path class=\"series s0\"")[0], "d").expect("d"));
        assert_eq!(p.len(), 3);
        assert!(p[0].0 < 68.0 && p[2].0 > 696.0);
    }

    #[test]
    fn a_long_series_is_reduced_and_stays_small() {
        // 100 000 points over 48 h with a spike that must survive the reduction
        let n = 100_000;
        let step = 48.0 * 3600.0 / n as f64;
        let pts: Vec<_> = (0..n)
            .map(|i| {
                let t = t0() + TimeDelta::milliseconds((i as f64 * step * 1000.0) as i64);
                let v = if i == 54_321 {
                    500.0
                } else {
                    100.0 + (i as f64 / 500.0).sin() * 10.0
                };
                (t, v)
            })
            .collect();
        let band: Vec<_> = pts.iter().map(|&(t, v)| (t, v - 3.0, v + 3.0)).collect();
        let mut c = chart(pts);
        c.series[0].band = band;
        c.max_gap = Some(TimeDelta::minutes(5));
        let start = std::time::Instant::now();
        let svg = time_series(&c);
        eprintln!(
            "100 000-point series with band: {:?}, {} bytes",
            start.elapsed(),
            svg.len()
        );
        assert_valid(&svg);
        assert!(svg.len() < 300_000, "{} bytes", svg.len());
        let p = path_points(attr(tags(&svg, "path class=\"series s0\"")[0], "d").expect("d"));
        assert!(p.len() <= MAX_POINTS_PER_SERIES + 4, "{} points", p.len());
        assert!(p.len() > 1000, "{} points", p.len());
        // the spike is kept: the smallest y is that of 500 on the axis' scale
        let min_y = p.iter().map(|p| p.1).fold(f64::INFINITY, f64::min);
        assert!((min_y - y_of(&svg, 500.0)).abs() < 0.2, "{min_y}");
        // one run: no spurious gap breaks from the reduction
        let d = attr(tags(&svg, "path class=\"series s0\"")[0], "d").expect("d");
        assert_eq!(d.matches('M').count(), 1);
    }
}
