//! Small charts for dashboard tiles: a horizontal stacked bar of counts by category and
//! a sparkline.

use super::scale::{LinearScale, format_value, widen_domain};
use super::svg::{
    Esc, N, Size, class_names, close, kind_colour, no_data, open, open_untitled, palette, truncate,
    w,
};

/// One category of a [`CountBar`].
#[derive(Clone, Debug, Default, PartialEq)]
pub struct CountSegment {
    /// Category name, e.g. "Critical".
    pub label: String,
    /// How many.
    pub count: u64,
    /// Extra CSS classes (e.g. "critical"); also picks the inline colour when it names
    /// a severity or kind, else the series palette is used.
    pub kind: String,
}

/// A horizontal stacked bar of counts: what [`count_bar`] draws.
#[derive(Clone, Debug, PartialEq)]
pub struct CountBar {
    /// Title written above the bar, also the accessible name.
    pub title: String,
    /// The categories, left to right.
    pub segments: Vec<CountSegment>,
    /// Drawing size (`viewBox`); 360 × 72 by default.
    pub size: Size,
}

impl Default for CountBar {
    fn default() -> Self {
        Self {
            title: String::new(),
            segments: Vec::new(),
            size: Size {
                width: 360,
                height: 72,
            },
        }
    }
}

/// Draws a stacked count bar as an SVG string: the title and total on the first line,
/// one `<rect class="segment KIND">` per non-zero category (width proportional to its
/// count, the count written inside when it fits), and a key of
/// "label count" entries below. With all counts zero, an empty grey bar and "None".
///
/// With no categories it returns the "no data" state.
pub fn count_bar(chart: &CountBar) -> String {
    const KIND: &str = "count-bar";
    if chart.segments.is_empty() {
        return no_data(KIND, chart.size, &chart.title);
    }
    let (w_, h_) = chart.size.dims();
    let total: u64 = chart
        .segments
        .iter()
        .map(|s| s.count)
        .fold(0, u64::saturating_add);
    let description = format!(
        "{} total: {}.",
        total,
        chart
            .segments
            .iter()
            .map(|s| format!("{} {}", s.label, s.count))
            .collect::<Vec<_>>()
            .join(", ")
    );
    let mut out = String::with_capacity(1024 + chart.segments.len() * 300);
    open(&mut out, KIND, chart.size, &chart.title, &description);
    // `open` writes the title at y = 22 with a 15-unit font; the total goes at the right
    w!(
        &mut out,
        "<text class=\"total\" x=\"{}\" y=\"22\" text-anchor=\"end\" font-size=\"15\" \
         font-weight=\"600\" fill=\"#222\">{total}</text>",
        N(w_ - 12.0)
    );
    let (x0, bar_w) = (12.0, w_ - 24.0);
    let (bar_y, bar_h) = (30.0, (h_ * 0.25).clamp(8.0, 22.0));
    if total == 0 {
        w!(
            &mut out,
            "<rect class=\"segment empty\" x=\"{}\" y=\"{}\" width=\"{}\" height=\"{}\" \
             fill=\"#e6e6e6\"/><text x=\"{}\" y=\"{}\" font-size=\"11\" fill=\"#777\" \
             dominant-baseline=\"middle\">None</text>",
            N(x0),
            N(bar_y),
            N(bar_w),
            N(bar_h),
            N(x0 + 6.0),
            N(bar_y + bar_h / 2.0)
        );
    }
    let colour = |i: usize, s: &CountSegment| {
        let c = kind_colour(&format!("{} {}", s.kind, s.label));
        if c == "#555555" { palette(i) } else { c }
    };
    let mut x = x0;
    for (i, s) in chart.segments.iter().enumerate() {
        if s.count == 0 || total == 0 {
            continue;
        }
        let wd = bar_w * s.count as f64 / total as f64;
        w!(
            &mut out,
            "<rect class=\"segment {}\" x=\"{}\" y=\"{}\" width=\"{}\" height=\"{}\" \
             fill=\"{}\"><title>{}: {} ({} %)</title></rect>",
            class_names(&s.kind),
            N(x),
            N(bar_y),
            N(wd),
            N(bar_h),
            colour(i, s),
            Esc(&s.label),
            s.count,
            format_value(s.count as f64 / total as f64 * 100.0, 3)
        );
        let digits = s.count.to_string().len() as f64;
        if wd > digits * 7.0 + 6.0 && bar_h >= 12.0 {
            w!(
                &mut out,
                "<text class=\"segment-count\" x=\"{}\" y=\"{}\" text-anchor=\"middle\" \
                 dominant-baseline=\"middle\" font-size=\"11\" fill=\"#fff\">{}</text>",
                N(x + wd / 2.0),
                N(bar_y + bar_h / 2.0 + 0.5),
                s.count
            );
        }
        x += wd;
    }
    // key below the bar
    let key_y = bar_y + bar_h + 14.0;
    out.push_str("<g class=\"key\" font-size=\"11\" fill=\"#333\">");
    let mut kx = x0;
    for (i, s) in chart.segments.iter().enumerate() {
        let text = format!("{} {}", truncate(&s.label, 24), s.count);
        let wd = 14.0 + 6.2 * text.chars().count() as f64 + 12.0;
        if kx + wd > w_ {
            break;
        }
        w!(
            &mut out,
            "<rect class=\"swatch {}\" x=\"{}\" y=\"{}\" width=\"10\" height=\"10\" fill=\"{}\"/>\
             <text x=\"{}\" y=\"{}\">{}</text>",
            class_names(&s.kind),
            N(kx),
            N(key_y - 9.0),
            colour(i, s),
            N(kx + 14.0),
            N(key_y),
            Esc(&text)
        );
        kx += wd;
    }
    out.push_str("</g>");
    close(&mut out);
    out
}

/// A sparkline: what [`sparkline`] draws.
#[derive(Clone, Debug, PartialEq)]
pub struct Sparkline {
    /// Accessible name (not drawn: a tile shows its own heading).
    pub title: String,
    /// The values, evenly spaced left to right; non-finite values break the line.
    pub values: Vec<f64>,
    /// Drawing size (`viewBox`); 160 × 40 by default.
    pub size: Size,
}

impl Default for Sparkline {
    fn default() -> Self {
        Self {
            title: String::new(),
            values: Vec::new(),
            size: Size {
                width: 160,
                height: 40,
            },
        }
    }
}

/// Draws a sparkline as an SVG string: `<path class="series s0 sparkline">` through the
/// values (min to max filling the height, no axes) and a `<circle class="last">` on the
/// last value; the description gives the minimum, maximum and last value. More than
/// 2 000 values are reduced to min/max pairs per pixel-sized bucket.
///
/// Without a finite value it returns the "no data" state.
pub fn sparkline(chart: &Sparkline) -> String {
    const KIND: &str = "sparkline";
    let finite: Vec<(usize, f64)> = chart
        .values
        .iter()
        .copied()
        .enumerate()
        .filter(|(_, v)| v.is_finite())
        .map(|(i, v)| (i, super::scale::clamp_value(v)))
        .collect();
    let Some(&(last_i, last)) = finite.last() else {
        return no_data(KIND, chart.size, &chart.title);
    };
    let (w_, h_) = chart.size.dims();
    let (lo, hi) = finite
        .iter()
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), &(_, v)| {
            (a.min(v), b.max(v))
        });
    let ys = LinearScale::new(widen_domain(lo, hi), (h_ - 4.0, 4.0));
    let n = chart.values.len();
    let xs = |i: usize| {
        if n <= 1 {
            w_ / 2.0
        } else {
            3.0 + (w_ - 6.0) * i as f64 / (n - 1) as f64
        }
    };
    let description = format!(
        "{} values; min {}, max {}, last {}.",
        finite.len(),
        format_value(lo, 4),
        format_value(hi, 4),
        format_value(last, 4)
    );
    let mut out = String::with_capacity(512 + finite.len().min(2000) * 12);
    open_untitled(&mut out, KIND, chart.size, &chart.title, &description);
    out.push_str(
        "<path class=\"series s0 sparkline\" fill=\"none\" stroke=\"#1f77b4\" \
         stroke-width=\"1.5\" stroke-linejoin=\"round\" stroke-linecap=\"round\" d=\"",
    );
    // reduce long inputs: per bucket of indices, the min and max in index order
    let buckets = 1000usize;
    let reduce = n > 2000;
    let mut prev: Option<usize> = None;
    let mut i = 0;
    while i < finite.len() {
        let (idx, v) = finite[i];
        let mut group_end = i + 1;
        if reduce {
            let b = idx * buckets / n;
            while group_end < finite.len() && finite[group_end].0 * buckets / n == b {
                group_end += 1;
            }
        }
        let group = &finite[i..group_end];
        let pts: Vec<(usize, f64)> = if group.len() > 2 {
            let mn = group
                .iter()
                .min_by(|a, b| a.1.total_cmp(&b.1))
                .copied()
                .unwrap_or((idx, v));
            let mx = group
                .iter()
                .max_by(|a, b| a.1.total_cmp(&b.1))
                .copied()
                .unwrap_or((idx, v));
            if mn.0 <= mx.0 {
                vec![mn, mx]
            } else {
                vec![mx, mn]
            }
        } else {
            group.to_vec()
        };
        for (k, (j, v)) in pts.into_iter().enumerate() {
            // a new subpath after a break (a skipped non-finite index)
            let joined = k > 0 || prev.is_some_and(|p| p + 1 == group[0].0 || reduce);
            w!(
                &mut out,
                "{}{} {}",
                if joined { "L" } else { "M" },
                N(xs(j)),
                N(ys.map(v))
            );
        }
        prev = Some(group[group.len() - 1].0);
        i = group_end;
    }
    if finite.len() == 1 {
        out.push_str("h0");
    }
    w!(
        &mut out,
        "\"/><circle class=\"last\" cx=\"{}\" cy=\"{}\" r=\"2.5\" fill=\"#1f77b4\"/>",
        N(xs(last_i)),
        N(ys.map(last))
    );
    close(&mut out);
    out
}

#[cfg(test)]
mod tests {
    use super::super::testutil::{assert_valid, attr, num, path_points, tags, texts};
    use super::*;

    #[test]
    fn count_bar_segments_are_proportional() {
        let c = CountBar {
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
                    label: "Minor <x>".into(),
                    count: 0,
                    kind: "minor".into(),
                },
            ],
            ..Default::default()
        };
        let svg = count_bar(&c);
        assert_valid(&svg);
        let segs = tags(&svg, "rect class=\"segment");
        assert_eq!(segs.len(), 2);
        assert!((num(segs[1], "width") / num(segs[0], "width") - 3.0).abs() < 0.01);
        assert!((num(segs[0], "width") + num(segs[1], "width") - 336.0).abs() < 0.11);
        let t = texts(&svg);
        for l in [
            "Open alarms",
            "12",
            "Critical 3",
            "Warning 9",
            "Minor &lt;x&gt; 0",
        ] {
            assert!(t.contains(&l), "{l}: {t:?}");
        }
        assert_eq!(attr(segs[0], "fill"), Some("#d62728"));
    }

    #[test]
    fn count_bar_edges() {
        let svg = count_bar(&CountBar::default());
        assert_valid(&svg);
        assert!(svg.contains("class=\"no-data\""));
        let svg = count_bar(&CountBar {
            title: "Open alarms".into(),
            segments: vec![CountSegment {
                label: "Critical".into(),
                count: 0,
                kind: "critical".into(),
            }],
            ..Default::default()
        });
        assert_valid(&svg);
        assert!(texts(&svg).contains(&"None"));
        let svg = count_bar(&CountBar {
            segments: vec![
                CountSegment {
                    label: "a".into(),
                    count: u64::MAX,
                    kind: String::new(),
                },
                CountSegment {
                    label: "b".into(),
                    count: u64::MAX,
                    kind: String::new(),
                },
            ],
            ..Default::default()
        });
        assert_valid(&svg);
    }

    #[test]
    fn sparkline_fills_the_height_and_marks_the_last_value() {
        let s = Sparkline {
            title: "ΔP last 24 h".into(),
            values: vec![1.0, 3.0, 2.0, f64::NAN, 5.0, 4.0],
            ..Default::default()
        };
        let svg = sparkline(&s);
        assert_valid(&svg);
        assert!(svg.contains("<title>ΔP last 24 h</title>"));
        let d = attr(tags(&svg, "path class=\"series s0 sparkline\"")[0], "d").expect("d");
        assert_eq!(d.matches('M').count(), 2, "{d}");
        let p = path_points(d);
        assert_eq!(p.len(), 5);
        // min (1.0) at the bottom (40 − 4), max (5.0) at the top (4)
        assert_eq!(p[0].1, 36.0);
        assert_eq!(p[3].1, 4.0);
        let last = tags(&svg, "circle class=\"last\"")[0];
        assert_eq!(num(last, "cx"), 157.0);
        assert_eq!(num(last, "cy"), 12.0);
    }

    #[test]
    fn sparkline_edges_and_long_inputs() {
        assert!(sparkline(&Sparkline::default()).contains("class=\"no-data\""));
        for v in [
            vec![2.0],
            vec![3.0, 3.0],
            vec![f64::MAX, f64::MIN],
            vec![-1.0, -2.0],
        ] {
            let svg = sparkline(&Sparkline {
                values: v,
                ..Default::default()
            });
            assert_valid(&svg);
        }
        let values: Vec<f64> = (0..100_000).map(|i| (i as f64 / 1000.0).sin()).collect();
        let svg = sparkline(&Sparkline {
            values,
            ..Default::default()
        });
        assert_valid(&svg);
        let p =
            path_points(attr(tags(&svg, "path class=\"series s0 sparkline\"")[0], "d").expect("d"));
        assert!(p.len() <= 2000, "{}", p.len());
        assert!(svg.len() < 40_000);
    }
}
