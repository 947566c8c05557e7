//! SVG building blocks shared by the charts: the root element with its accessible title
//! and description, the "no data" state, axes, legends, XML escaping and number output
//! for coordinates. Every chart writes into one `String`; nothing here allocates per
//! coordinate.

use std::fmt::{self, Display, Write};

use super::scale::{LinearScale, Ticks};

/// Text shown (and class set) when a chart has nothing to draw.
pub const NO_DATA_TEXT: &str = "No data for this selection";

/// Attributes giving a label a white halo, so it stays legible over lines and shading.
pub(crate) const HALO: &str =
    "stroke=\"#fff\" stroke-width=\"3\" stroke-opacity=\"0.85\" paint-order=\"stroke\"";

/// Fonts of every chart: the platform's UI font, no web font is loaded.
pub const FONT_FAMILY: &str = "system-ui, sans-serif";

/// The chart's drawing size in SVG user units (the `viewBox`); the element itself is
/// `width="100%"` and scales to its container, keeping this aspect ratio.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Size {
    /// Width in user units (at least 40 is used).
    pub width: u32,
    /// Height in user units (at least 16 is used).
    pub height: u32,
}

impl Default for Size {
    /// 720 × 360, a half-width dashboard panel.
    fn default() -> Self {
        Self {
            width: 720,
            height: 360,
        }
    }
}

impl Size {
    /// The size with the minimums applied, as floats.
    pub(crate) fn dims(&self) -> (f64, f64) {
        (
            f64::from(self.width.max(40)),
            f64::from(self.height.max(16)),
        )
    }
}

/// Escapes text for XML content and attribute values (`& < > " '`) and replaces the
/// control characters XML 1.0 forbids with U+FFFD.
pub fn escape_xml(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    push_escaped(&mut out, s);
    out
}

pub(crate) fn push_escaped(out: &mut String, s: &str) {
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            '\t' | '\n' | '\r' => out.push(c),
            c if (c as u32) < 0x20 || c == '\u{FFFE}' || c == '\u{FFFF}' => out.push('\u{FFFD}'),
            c => out.push(c),
        }
    }
}

/// Escaped text as a `Display` value, for `write!`.
pub(crate) struct Esc<'a>(pub &'a str);

impl Display for Esc<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut s = String::new();
        push_escaped(&mut s, self.0);
        f.write_str(&s)
    }
}

/// Keeps the characters allowed in our class names (ASCII letters, digits, `-`, `_`),
/// turning everything else into word breaks, so caller-given kinds cannot break out of
/// the attribute. `"alarm critical"` stays two classes.
pub(crate) fn class_names(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for word in s
        .split(|c: char| !(c.is_ascii_alphanumeric() || c == '-' || c == '_'))
        .filter(|w| !w.is_empty())
    {
        if !out.is_empty() {
            out.push(' ');
        }
        out.push_str(word);
    }
    out
}

/// A coordinate: rounded to 0.1 user unit, no trailing `.0`, no `-0`, `0` for
/// non-finite input (which the charts never produce, but the output must never say
/// NaN).
#[derive(Clone, Copy)]
pub(crate) struct N(pub f64);

impl Display for N {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let v = if self.0.is_finite() {
            self.0.clamp(-1e7, 1e7)
        } else {
            0.0
        };
        let tenths = (v * 10.0).round() as i64;
        if tenths == 0 {
            return f.write_str("0");
        }
        let sign = if tenths < 0 { "-" } else { "" };
        let a = tenths.unsigned_abs();
        if a.is_multiple_of(10) {
            write!(f, "{sign}{}", a / 10)
        } else {
            write!(f, "{sign}{}.{}", a / 10, a % 10)
        }
    }
}

/// `write!` into a `String`, which cannot fail.
macro_rules! w {
    ($out:expr, $($arg:tt)*) => {{
        let _ = ::std::fmt::Write::write_fmt($out, format_args!($($arg)*));
    }};
}
pub(crate) use w;

/// A rectangle in user units.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) struct Rect {
    pub x: f64,
    pub y: f64,
    pub w: f64,
    pub h: f64,
}

impl Rect {
    pub fn right(&self) -> f64 {
        self.x + self.w
    }
    pub fn bottom(&self) -> f64 {
        self.y + self.h
    }
}

/// Margins around the plot area: top, right, bottom, left.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Margins {
    pub top: f64,
    pub right: f64,
    pub bottom: f64,
    pub left: f64,
}

impl Default for Margins {
    fn default() -> Self {
        Self {
            top: 44.0,
            right: 24.0,
            bottom: 48.0,
            left: 68.0,
        }
    }
}

/// The plot area for a chart of `size` with `m` margins (never smaller than 20 units).
pub(crate) fn plot_area(size: Size, m: Margins) -> Rect {
    let (w, h) = size.dims();
    Rect {
        x: m.left,
        y: m.top,
        w: (w - m.left - m.right).max(20.0),
        h: (h - m.top - m.bottom).max(20.0),
    }
}

/// Pixel positions and labels of linear ticks within the scale's domain.
pub(crate) fn tick_positions(ticks: &Ticks, scale: &LinearScale) -> Vec<(f64, String)> {
    let (d0, d1) = scale.domain;
    let tol = (d1 - d0) * 1e-9;
    ticks
        .values
        .iter()
        .zip(ticks.labels())
        .filter(|(v, _)| **v >= d0 - tol && **v <= d1 + tol)
        .map(|(v, l)| (scale.map(*v), l))
        .collect()
}

/// Series colours used inline (`s0`, `s1`, …); the page stylesheet may override them
/// through the classes.
pub(crate) const PALETTE: &[&str] = &[
    "#1f77b4", "#ff7f0e", "#2ca02c", "#9467bd", "#8c564b", "#e377c2", "#17becf", "#7f7f7f",
];

pub(crate) fn palette(i: usize) -> &'static str {
    PALETTE[i % PALETTE.len()]
}

/// A default colour for a caller-given kind, from the words it contains: red for
/// critical, failure and alarm; orange for warning; green for order, maintenance and
/// replacement; blue for info; grey otherwise.
pub(crate) fn kind_colour(kind: &str) -> &'static str {
    let k = kind.to_ascii_lowercase();
    if k.contains("critical") || k.contains("failure") || k.contains("fault") {
        "#d62728"
    } else if k.contains("warn") || k.contains("major") {
        "#ff7f0e"
    } else if k.contains("alarm") {
        "#d62728"
    } else if k.contains("order") || k.contains("maint") || k.contains("replace") {
        "#2ca02c"
    } else if k.contains("info") || k.contains("minor") {
        "#1f77b4"
    } else {
        "#555555"
    }
}

/// Opens the root `<svg>` element with its `<title>` and `<desc>` (the accessible name and
/// description) and the visible title.
pub(crate) fn open(out: &mut String, kind: &str, size: Size, title: &str, desc: &str) {
    open_untitled(out, kind, size, title, desc);
    if !title.is_empty() {
        w!(
            out,
            "<text class=\"chart-title\" x=\"12\" y=\"22\" font-size=\"15\" font-weight=\"600\" \
             fill=\"#222\">{}</text>",
            Esc(title)
        );
    }
}

/// Opens the root `<svg>` element with its `<title>` and `<desc>` but no visible title
/// (for tiles whose page shows the heading).
pub(crate) fn open_untitled(out: &mut String, kind: &str, size: Size, title: &str, desc: &str) {
    let (w, h) = size.dims();
    w!(
        out,
        "<svg xmlns=\"http://www.w3.org/2000/svg\" class=\"chart {kind}\" viewBox=\"0 0 {} {}\" \
         width=\"100%\" preserveAspectRatio=\"xMidYMid meet\" role=\"img\" \
         font-family=\"{FONT_FAMILY}\" font-size=\"12\">",
        N(w),
        N(h)
    );
    w!(
        out,
        "<title>{}</title><desc>{}</desc>",
        Esc(title),
        Esc(desc)
    );
}

pub(crate) fn close(out: &mut String) {
    out.push_str("</svg>");
}

/// The "no data" state: the chart's frame with its title and the text
/// [`NO_DATA_TEXT`], class `no-data` on the root and on the text.
pub(crate) fn no_data(kind: &str, size: Size, title: &str) -> String {
    let (w, h) = size.dims();
    let mut out = String::with_capacity(800);
    open(
        &mut out,
        &format!("{kind} no-data"),
        size,
        title,
        NO_DATA_TEXT,
    );
    w!(
        &mut out,
        "<rect class=\"frame\" x=\"0.5\" y=\"0.5\" width=\"{}\" height=\"{}\" fill=\"none\" \
         stroke=\"#ddd\"/><text class=\"no-data\" x=\"{}\" y=\"{}\" text-anchor=\"middle\" \
         dominant-baseline=\"middle\" font-size=\"14\" fill=\"#777\">{NO_DATA_TEXT}</text>",
        N(w - 1.0),
        N(h - 1.0),
        N(w / 2.0),
        N(h / 2.0 + 8.0)
    );
    close(&mut out);
    out
}

/// An axis title with its unit in parentheses when there is one: `Temperature (°C)`.
pub(crate) fn axis_title(label: &str, unit: &str) -> String {
    match (label.trim().is_empty(), unit.trim().is_empty()) {
        (_, true) => label.trim().to_string(),
        (true, false) => format!("({})", unit.trim()),
        (false, false) => format!("{} ({})", label.trim(), unit.trim()),
    }
}

/// Which side of the plot a y axis is on.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Side {
    Left,
    Right,
}

/// A y axis: line, tick labels at pixel positions `ticks`, optional horizontal
/// gridlines across the plot, and the rotated axis title.
pub(crate) fn y_axis(
    out: &mut String,
    plot: Rect,
    ticks: &[(f64, String)],
    title: &str,
    side: Side,
    grid: bool,
) {
    let (cls, x, anchor, dx, title_x, rot) = match side {
        Side::Left => ("y", plot.x, "end", -6.0, 16.0, -90),
        Side::Right => ("y2", plot.right(), "start", 6.0, plot.right() + 48.0, 90),
    };
    w!(out, "<g class=\"axis {cls}\">");
    if grid {
        out.push_str("<g class=\"grid\" stroke=\"#e6e6e6\" stroke-width=\"1\">");
        for (p, _) in ticks {
            w!(
                out,
                "<line x1=\"{}\" y1=\"{}\" x2=\"{}\" y2=\"{}\"/>",
                N(plot.x),
                N(*p),
                N(plot.right()),
                N(*p)
            );
        }
        out.push_str("</g>");
    }
    w!(
        out,
        "<line class=\"axis-line\" x1=\"{}\" y1=\"{}\" x2=\"{}\" y2=\"{}\" stroke=\"#888\"/>",
        N(x),
        N(plot.y),
        N(x),
        N(plot.bottom())
    );
    w!(
        out,
        "<g class=\"tick-labels\" font-size=\"11\" fill=\"#444\" text-anchor=\"{anchor}\">"
    );
    for (p, label) in ticks {
        w!(
            out,
            "<text x=\"{}\" y=\"{}\" dominant-baseline=\"middle\">{}</text>",
            N(x + dx),
            N(*p),
            Esc(label)
        );
    }
    out.push_str("</g>");
    if !title.is_empty() {
        let cy = plot.y + plot.h / 2.0;
        w!(
            out,
            "<text class=\"axis-title\" x=\"{}\" y=\"{}\" transform=\"rotate({rot} {} {})\" \
             text-anchor=\"middle\" fill=\"#333\">{}</text>",
            N(title_x),
            N(cy),
            N(title_x),
            N(cy),
            Esc(title)
        );
    }
    out.push_str("</g>");
}

/// An x axis: line, tick labels at pixel positions `ticks` (rotated when `rotate`),
/// optional vertical gridlines, and the axis title below.
pub(crate) fn x_axis(
    out: &mut String,
    plot: Rect,
    ticks: &[(f64, String)],
    title: &str,
    grid: bool,
    rotate: bool,
) {
    out.push_str("<g class=\"axis x\">");
    if grid {
        out.push_str("<g class=\"grid\" stroke=\"#e6e6e6\" stroke-width=\"1\">");
        for (p, _) in ticks {
            w!(
                out,
                "<line x1=\"{}\" y1=\"{}\" x2=\"{}\" y2=\"{}\"/>",
                N(*p),
                N(plot.y),
                N(*p),
                N(plot.bottom())
            );
        }
        out.push_str("</g>");
    }
    w!(
        out,
        "<line class=\"axis-line\" x1=\"{}\" y1=\"{}\" x2=\"{}\" y2=\"{}\" stroke=\"#888\"/>",
        N(plot.x),
        N(plot.bottom()),
        N(plot.right()),
        N(plot.bottom())
    );
    let y = plot.bottom() + 16.0;
    if rotate {
        out.push_str(
            "<g class=\"tick-labels\" font-size=\"11\" fill=\"#444\" text-anchor=\"end\">",
        );
    } else {
        out.push_str(
            "<g class=\"tick-labels\" font-size=\"11\" fill=\"#444\" text-anchor=\"middle\">",
        );
    }
    for (p, label) in ticks {
        if rotate {
            w!(
                out,
                "<text x=\"{}\" y=\"{}\" transform=\"rotate(-35 {} {})\">{}</text>",
                N(*p),
                N(y - 4.0),
                N(*p),
                N(y - 4.0),
                Esc(label)
            );
        } else {
            w!(
                out,
                "<text x=\"{}\" y=\"{}\">{}</text>",
                N(*p),
                N(y),
                Esc(label)
            );
        }
    }
    out.push_str("</g>");
    if !title.is_empty() {
        w!(
            out,
            "<text class=\"axis-title\" x=\"{}\" y=\"{}\" text-anchor=\"middle\" \
             fill=\"#333\">{}</text>",
            N(plot.x + plot.w / 2.0),
            N(plot.bottom() + if rotate { 92.0 } else { 36.0 }),
            Esc(title)
        );
    }
    out.push_str("</g>");
}

/// Opens a nested `<svg>` covering `plot` whose user coordinates are the root's (its
/// `viewBox` is its own rectangle): content drawn inside is clipped to the plot area
/// without a `clipPath` id that could collide between charts on one page.
pub(crate) fn open_clip(out: &mut String, plot: Rect, class: &str) {
    w!(
        out,
        "<svg class=\"{class}\" x=\"{}\" y=\"{}\" width=\"{}\" height=\"{}\" \
         viewBox=\"{} {} {} {}\" overflow=\"hidden\">",
        N(plot.x),
        N(plot.y),
        N(plot.w),
        N(plot.h),
        N(plot.x),
        N(plot.y),
        N(plot.w),
        N(plot.h)
    );
}

/// One legend entry: CSS class of the swatch, its inline colour, its text.
pub(crate) struct LegendEntry<'a> {
    pub class: String,
    pub colour: &'a str,
    pub label: String,
}

/// The legend of numbered series (`s<i>` swatches in the palette's colours), at the top
/// right of a chart `width` wide: the time-series and trend charts' legend.
pub(crate) fn series_legend<'a>(
    out: &mut String,
    width: f64,
    names: impl IntoIterator<Item = (usize, &'a str)>,
) {
    let entries: Vec<LegendEntry<'_>> = names
        .into_iter()
        .map(|(i, name)| LegendEntry {
            class: format!("s{i}"),
            colour: palette(i),
            label: name.to_owned(),
        })
        .collect();
    legend(out, width - 12.0, 42.0, &entries);
}

/// `text` trimmed, or `default` when it is blank (a chart's unit or axis label).
pub(crate) fn or_default<'a>(text: &'a str, default: &'a str) -> &'a str {
    match text.trim() {
        "" => default,
        t => t,
    }
}

/// A one-line legend of coloured swatches starting at (`x`, `y`), right-aligned so that
/// it ends at `right` when it fits; the widths are estimated (7 units per character at
/// font size 12).
pub(crate) fn legend(out: &mut String, right: f64, y: f64, entries: &[LegendEntry<'_>]) {
    if entries.is_empty() {
        return;
    }
    let widths: Vec<f64> = entries
        .iter()
        .map(|e| 18.0 + 6.5 * e.label.chars().count().min(40) as f64 + 14.0)
        .collect();
    let total: f64 = widths.iter().sum();
    let mut x = (right - total).max(12.0);
    out.push_str("<g class=\"legend\" font-size=\"12\" fill=\"#333\">");
    for (e, wd) in entries.iter().zip(&widths) {
        w!(
            out,
            "<rect class=\"swatch {}\" x=\"{}\" y=\"{}\" width=\"12\" height=\"12\" fill=\"{}\"/>\
             <text x=\"{}\" y=\"{}\">{}</text>",
            e.class,
            N(x),
            N(y - 10.0),
            e.colour,
            N(x + 16.0),
            N(y),
            Esc(&truncate(&e.label, 40))
        );
        x += wd;
    }
    out.push_str("</g>");
}

/// `s` cut to `max` characters with an ellipsis when longer.
pub(crate) fn truncate(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        s.to_string()
    } else {
        let mut t: String = s.chars().take(max.saturating_sub(1)).collect();
        t.push('…');
        t
    }
}

/// Writes an SVG path `d` for the given polyline points (`M x y L x y …`).
pub(crate) fn path_d(out: &mut String, points: impl IntoIterator<Item = (f64, f64)>) {
    for (i, (x, y)) in points.into_iter().enumerate() {
        let _ = out.write_str(if i == 0 { "M" } else { "L" });
        w!(out, "{} {}", N(x), N(y));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escaping_covers_markup_and_control_characters() {
        assert_eq!(
            escape_xml("a<b & \"c\" 'd'>\u{1}"),
            "a&lt;b &amp; &quot;c&quot; &#39;d&#39;&gt;\u{FFFD}"
        );
    }

    #[test]
    fn coordinates_are_short_and_finite() {
        assert_eq!(N(12.34).to_string(), "12.3");
        assert_eq!(N(12.0).to_string(), "12");
        assert_eq!(N(-0.04).to_string(), "0");
        assert_eq!(N(-3.25).to_string(), "-3.3");
        assert_eq!(N(f64::NAN).to_string(), "0");
        assert_eq!(N(f64::INFINITY).to_string(), "0");
        assert_eq!(N(1e300).to_string(), "10000000");
    }

    #[test]
    fn class_names_drop_markup() {
        assert_eq!(class_names("alarm critical"), "alarm critical");
        assert_eq!(class_names("x\" onload=\"y"), "x onload y");
        assert_eq!(class_names(""), "");
    }

    #[test]
    fn axis_titles_carry_units() {
        assert_eq!(axis_title("Temperature", "°C"), "Temperature (°C)");
        assert_eq!(axis_title("Count", ""), "Count");
    }
}
