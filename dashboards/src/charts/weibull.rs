//! Weibull probability plot: failures at their median-rank plotting positions on
//! Weibull paper, the fitted line and its confidence band, and the plotting-position
//! and Fisher-matrix bound helpers the page needs to prepare the data.
//!
//! **Paper.** x = log10(t), y = ln(−ln(1 − F)). A 2-parameter Weibull distribution
//! `F(t) = 1 − exp(−(t/η)^β)` is the straight line `y = β (ln t − ln η)`, which crosses
//! y = 0 (F = 1 − e⁻¹ ≈ 63.2 %) at t = η. Gridlines are labelled in unreliability percent.
//!
//! **Plotting positions** ([`median_ranks`]). Failures and suspensions are sorted
//! together (a failure before a suspension at the same time). Each failure gets
//! Johnson's adjusted rank: `rank = previous rank + (n + 1 − previous rank) / (1 +
//! reverse rank)`, where the reverse rank is the number of items (failures and
//! suspensions) at or after the failure's position, i.e. n − i + 1 for position i
//! (1-based). Without suspensions the increment is always 1 and the adjusted rank is the
//! order number. The median rank is Benard's approximation `F = (rank − 0.3) / (n + 0.4)`.
//! The same rule gives the analytics crate its rank-regression starting point.
//!
//! **Bounds** ([`fisher_unreliability_bounds`]). The Fisher-matrix bounds on F(t) used by
//! ReliaSoft Weibull++ and Meeker & Escobar (and the Python `reliability` package,
//! `CI_type="reliability"`): with `u = β (ln t − ln η)`, the delta method gives
//! `Var u = (∂u/∂η)² Var η + (∂u/∂β)² Var β + 2 (∂u/∂η)(∂u/∂β) Cov(η, β)` with
//! `∂u/∂η = −β/η` and `∂u/∂β = ln t − ln η`; the bounds are `u ± z √Var u` mapped back
//! through `F = 1 − exp(−exp(u))`. Bounding u rather than F keeps them inside (0, 1).
//! The covariance is that of (η, β), laid out as
//! `fleetpulse_analytics::weibull::WeibullFit::covariance`: `[[Var η, Cov], [Cov, Var β]]`.

use super::scale::{format_decade, format_value, log10_decades};
use super::svg::{
    Esc, Margins, N, Rect, Side, Size, axis_title, close, no_data, open, open_clip, or_default,
    plot_area, w, x_axis, y_axis,
};

/// Johnson's adjusted ranks of the failures among failures and suspensions:
/// `(failure time, adjusted rank)` in ascending time. Items are sorted together, a
/// failure before a suspension at an equal time (the usual convention: the suspended
/// unit outlived the failed one). Non-finite times are ignored. See the module
/// documentation for the rule.
pub fn adjusted_ranks(failures: &[f64], suspensions: &[f64]) -> Vec<(f64, f64)> {
    let mut all: Vec<(f64, bool)> = failures
        .iter()
        .filter(|t| t.is_finite())
        .map(|&t| (t, true))
        .chain(
            suspensions
                .iter()
                .filter(|t| t.is_finite())
                .map(|&t| (t, false)),
        )
        .collect();
    all.sort_by(|a, b| a.0.total_cmp(&b.0).then(b.1.cmp(&a.1)));
    let n = all.len() as f64;
    let mut rank = 0.0;
    let mut out = Vec::with_capacity(failures.len());
    for (i, &(t, failed)) in all.iter().enumerate() {
        if failed {
            let reverse_rank = n - i as f64; // items at or after this position
            rank += (n + 1.0 - rank) / (1.0 + reverse_rank);
            out.push((t, rank));
        }
    }
    out
}

/// Median-rank plotting positions `(failure time, F)` of the failures, ascending:
/// Johnson's adjusted ranks ([`adjusted_ranks`]) with Benard's approximation
/// `F = (rank − 0.3) / (n + 0.4)`, n counting failures and suspensions.
pub fn median_ranks(failures: &[f64], suspensions: &[f64]) -> Vec<(f64, f64)> {
    let n = (failures.iter().filter(|t| t.is_finite()).count()
        + suspensions.iter().filter(|t| t.is_finite()).count()) as f64;
    adjusted_ranks(failures, suspensions)
        .into_iter()
        .map(|(t, r)| (t, (r - 0.3) / (n + 0.4)))
        .collect()
}

/// The Weibull unreliability `F(t) = 1 − exp(−(t/η)^β)` (0 for t ≤ 0), computed as
/// `−expm1(−(t/η)^β)` so that small values keep their precision.
pub fn weibull_unreliability(t: f64, beta: f64, eta: f64) -> f64 {
    if t <= 0.0 {
        return 0.0;
    }
    -(-(t / eta).powf(beta)).exp_m1()
}

/// Fisher-matrix bounds `(F_lower, F_upper)` on the unreliability at time `t` for a
/// Weibull fit (β, η) with covariance `cov` of (η, β) (`[[Var η, Cov], [Cov, Var β]]`)
/// and standard normal quantile `z` (1.6449 for 90 % two-sided). See the module
/// documentation for the method. `None` when t, β or η is not positive and finite or
/// the bounds are not finite; a zero covariance gives `F_lower = F_upper = F(t)`.
pub fn fisher_unreliability_bounds(
    t: f64,
    beta: f64,
    eta: f64,
    cov: [[f64; 2]; 2],
    z: f64,
) -> Option<(f64, f64)> {
    let ok = |v: f64| v.is_finite() && v > 0.0;
    if !(ok(t) && ok(beta) && ok(eta) && z.is_finite()) {
        return None;
    }
    let l = t.ln() - eta.ln();
    let u = beta * l;
    let du_deta = -beta / eta;
    let du_dbeta = l;
    let var = du_deta * du_deta * cov[0][0]
        + du_dbeta * du_dbeta * cov[1][1]
        + 2.0 * du_deta * du_dbeta * cov[0][1];
    let sd = var.max(0.0).sqrt();
    let f = |u: f64| -(-u.exp()).exp_m1();
    let (lo, hi) = (f(u - z.abs() * sd), f(u + z.abs() * sd));
    (lo.is_finite() && hi.is_finite()).then_some((lo, hi))
}

/// `n` times (at least 2) spaced evenly in log between `lo` and `hi` (both positive),
/// for sampling a band across a plot's range; empty when the bounds are unusable.
pub fn log_space(lo: f64, hi: f64, n: usize) -> Vec<f64> {
    let ok = |v: f64| v.is_finite() && v > 0.0;
    if !(ok(lo) && ok(hi)) {
        return Vec::new();
    }
    let n = n.max(2);
    let (a, b) = (lo.ln(), hi.ln());
    (0..n)
        .map(|i| (a + (b - a) * i as f64 / (n - 1) as f64).exp())
        .collect()
}

/// The Fisher-matrix band `(t, F_lower, F_upper)` at each of `times` (see
/// [`fisher_unreliability_bounds`]; times where it is undefined are left out), ready
/// for [`WeibullPlot::band`].
pub fn fisher_band(
    times: &[f64],
    beta: f64,
    eta: f64,
    cov: [[f64; 2]; 2],
    z: f64,
) -> Vec<(f64, f64, f64)> {
    times
        .iter()
        .filter_map(|&t| fisher_unreliability_bounds(t, beta, eta, cov, z).map(|(a, b)| (t, a, b)))
        .collect()
}

/// Which bounds a confidence level refers to, for the legend.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum BoundSides {
    /// Two-sided bounds (the level is the coverage of the interval).
    #[default]
    TwoSided,
    /// A one-sided lower bound.
    Lower,
    /// A one-sided upper bound.
    Upper,
}

/// A confidence level for the legend, e.g. 0.9 two-sided → "90 % two-sided".
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Confidence {
    /// The level as a fraction (0.9 for 90 %).
    pub level: f64,
    /// Which bounds.
    pub sides: BoundSides,
}

impl Confidence {
    /// The legend text, e.g. "90 % two-sided" or "95 % lower one-sided".
    pub fn label(&self) -> String {
        let pct = format_value(self.level * 100.0, 4);
        match self.sides {
            BoundSides::TwoSided => format!("{pct} % two-sided"),
            BoundSides::Lower => format!("{pct} % lower one-sided"),
            BoundSides::Upper => format!("{pct} % upper one-sided"),
        }
    }
}

/// A fitted Weibull line with its parameter bounds for the legend.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct WeibullLine {
    /// Shape β (> 0).
    pub beta: f64,
    /// Scale η in the plot's time unit (> 0).
    pub eta: f64,
    /// Bounds on β, shown as "β = 1.83 [1.52, 2.20]".
    pub beta_bounds: Option<(f64, f64)>,
    /// Bounds on η, shown as "η = 592 h [540, 650]".
    pub eta_bounds: Option<(f64, f64)>,
    /// The confidence of the bounds and band, shown as "90 % two-sided".
    pub confidence: Option<Confidence>,
}

/// A Weibull probability plot: what [`weibull_plot`] draws.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct WeibullPlot {
    /// Visible title, also the accessible name.
    pub title: String,
    /// Accessible description; generated from the data when empty.
    pub description: String,
    /// Failure times (positive; others are counted for ranks but not drawn).
    pub failures: Vec<f64>,
    /// Suspension (right-censored) times; they shift the ranks of later failures.
    pub suspensions: Vec<f64>,
    /// Draw suspensions as small tick marks on the x axis (class `suspension`).
    pub show_suspensions: bool,
    /// The fitted line, if any.
    pub fit: Option<WeibullLine>,
    /// Confidence band `(t, F_lower, F_upper)`, e.g. from [`fisher_band`]; drawn as a
    /// shaded polygon (class `band`). Empty for none.
    pub band: Vec<(f64, f64, f64)>,
    /// X axis label; "Time to failure" when empty.
    pub time_label: String,
    /// Time unit; "h" when empty.
    pub time_unit: String,
    /// Drawing size (`viewBox`).
    pub size: Size,
}

/// Up to this many failures (or suspensions) every one is drawn, each point with a
/// tooltip; beyond it, points (and suspension ticks) on the same pixel as one already
/// drawn are merged, which keeps a plot of thousands of units small.
pub const MERGE_ABOVE: usize = 500;

/// Unreliability levels (percent) with gridlines on the paper.
const LEVELS: &[f64] = &[
    0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0, 20.0, 30.0, 40.0, 50.0, 63.2, 70.0, 80.0,
    90.0, 95.0, 99.0, 99.9, 99.99,
];
/// The order in which levels get a label when labels would collide.
const LABEL_PRIORITY: &[f64] = &[
    63.2, 1.0, 10.0, 50.0, 90.0, 99.0, 0.1, 99.9, 5.0, 20.0, 2.0, 30.0, 95.0, 0.01, 99.99, 0.5,
    80.0, 40.0, 70.0, 0.2, 0.05, 0.02,
];

/// `ln(−ln(1 − F))` with F kept inside (1e-300, 1 − 1e-15) so the result is finite.
pub fn weibull_y(f: f64) -> f64 {
    let f = if f.is_nan() {
        0.5
    } else {
        f.clamp(1e-300, 1.0 - 1e-15)
    };
    (-(-f).ln_1p()).ln()
}

/// Formats a value and its bounds with the same number of decimals, the value to 3
/// significant digits: "1.83 [1.52, 2.20]".
fn with_bounds(v: f64, bounds: Option<(f64, f64)>, unit: &str) -> String {
    let s = format_value(v, 3);
    let decimals = s.split_once('.').map_or(0, |(_, d)| d.len());
    let unit = if unit.is_empty() {
        String::new()
    } else {
        format!(" {unit}")
    };
    match bounds {
        Some((a, b)) if a.is_finite() && b.is_finite() && !s.contains('e') => {
            format!("{s}{unit} [{a:.decimals$}, {b:.decimals$}]")
        }
        _ => format!("{s}{unit}"),
    }
}

fn plural(n: usize, one: &str, many: &str) -> String {
    format!("{n} {}", if n == 1 { one } else { many })
}

/// Draws a Weibull probability plot as an SVG string.
///
/// Failures are `<circle class="point failure">` at (t, median rank) — see
/// [`median_ranks`]; suspensions are not points but, with `show_suspensions`, short
/// `<line class="suspension">` ticks on the x axis. The fit is `<path class="fit">`
/// across the x range (through (η, 63.2 %)), the band `<path class="band">`. The legend
/// (`<g class="legend">`) gives β and η with their bounds, the confidence and the counts.
/// The x axis spans whole decades around the data (and η); the y axis runs at least from
/// 1 % to 99 % and further when the points need it (0.01 % to 99.99 %).
///
/// Without a positive finite failure time it returns the "no data" state.
pub fn weibull_plot(plot_def: &WeibullPlot) -> String {
    const KIND: &str = "weibull";
    let p = plot_def;
    let positions: Vec<(f64, f64)> = median_ranks(&p.failures, &p.suspensions)
        .into_iter()
        .filter(|&(t, _)| t > 0.0)
        .collect();
    if positions.is_empty() {
        return no_data(KIND, p.size, &p.title);
    }
    let unit = or_default(&p.time_unit, "h");
    let time_label = or_default(&p.time_label, "Time to failure");
    let fit = p
        .fit
        .as_ref()
        .filter(|f| f.beta.is_finite() && f.beta > 0.0 && f.eta.is_finite() && f.eta > 0.0);
    let suspensions: Vec<f64> = p
        .suspensions
        .iter()
        .copied()
        .filter(|t| t.is_finite() && *t > 0.0)
        .collect();
    let band: Vec<(f64, f64, f64)> = {
        let mut b: Vec<(f64, f64, f64)> = p
            .band
            .iter()
            .copied()
            .filter(|&(t, a, c)| t.is_finite() && t > 0.0 && !a.is_nan() && !c.is_nan())
            .collect();
        b.sort_by(|a, b| a.0.total_cmp(&b.0));
        b
    };

    // x range: decades around failures, shown suspensions, band and η
    let mut tmin = positions[0].0;
    let mut tmax = positions[positions.len() - 1].0;
    let mut include = |t: f64| {
        tmin = tmin.min(t);
        tmax = tmax.max(t);
    };
    if p.show_suspensions {
        suspensions.iter().for_each(|&t| include(t));
    }
    if let Some(f) = fit {
        include(f.eta);
    }
    if let (Some(a), Some(b)) = (band.first(), band.last()) {
        include(a.0);
        include(b.0);
    }
    let decades = log10_decades(tmin, tmax);
    let (x0, x1) = (decades[0].log10(), decades[decades.len() - 1].log10());

    // y range: levels around the points, at least 1 % .. 99 %
    let fmin = positions.iter().map(|p| p.1).fold(1.0, f64::min);
    let fmax = positions.iter().map(|p| p.1).fold(0.0, f64::max);
    let lo_level = LEVELS
        .iter()
        .rev()
        .find(|&&l| l / 100.0 <= fmin.min(0.01) + 1e-12)
        .copied()
        .unwrap_or(LEVELS[0]);
    let hi_level = LEVELS
        .iter()
        .find(|&&l| l / 100.0 >= fmax.max(0.99) - 1e-12)
        .copied()
        .unwrap_or(LEVELS[LEVELS.len() - 1]);
    let (y_lo, y_hi) = (weibull_y(lo_level / 100.0), weibull_y(hi_level / 100.0));

    let plot = plot_area(
        p.size,
        Margins {
            left: 60.0,
            ..Margins::default()
        },
    );
    let xp = |t: f64| plot.x + (t.log10() - x0) / (x1 - x0) * plot.w;
    let yp = |y: f64| plot.bottom() - (y - y_lo) / (y_hi - y_lo) * plot.h;

    let description = if p.description.trim().is_empty() {
        let mut d = format!(
            "Weibull probability plot of {} and {} at median-rank positions",
            plural(positions.len(), "failure", "failures"),
            plural(suspensions.len(), "suspension", "suspensions"),
        );
        if let Some(f) = fit {
            d.push_str(&format!(
                "; fitted shape β = {}, scale η = {} {unit}",
                format_value(f.beta, 3),
                format_value(f.eta, 3)
            ));
        }
        d.push('.');
        d
    } else {
        p.description.clone()
    };

    let mut out = String::with_capacity(6000 + positions.len() * 64);
    open(&mut out, KIND, p.size, &p.title, &description);

    // y gridlines at every level in range; labels where they do not collide
    let levels: Vec<f64> = LEVELS
        .iter()
        .copied()
        .filter(|&l| l >= lo_level && l <= hi_level)
        .collect();
    let mut labelled: Vec<(f64, f64)> = Vec::new(); // (level, pixel)
    for &l in LABEL_PRIORITY {
        if !levels.contains(&l) {
            continue;
        }
        let py = yp(weibull_y(l / 100.0));
        if labelled.iter().all(|&(_, q)| (q - py).abs() >= 13.0) {
            labelled.push((l, py));
        }
    }
    out.push_str("<g class=\"grid minor\" stroke=\"#efefef\" stroke-width=\"1\">");
    for &l in &levels {
        if labelled.iter().any(|&(m, _)| m == l) {
            continue;
        }
        let py = yp(weibull_y(l / 100.0));
        w!(
            &mut out,
            "<line x1=\"{}\" y1=\"{}\" x2=\"{}\" y2=\"{}\"/>",
            N(plot.x),
            N(py),
            N(plot.right()),
            N(py)
        );
    }
    // minor x gridlines at 2..9 × 10^k
    for w_ in decades.windows(2) {
        for m in 2..10 {
            let px = xp(w_[0] * f64::from(m));
            w!(
                &mut out,
                "<line x1=\"{}\" y1=\"{}\" x2=\"{}\" y2=\"{}\"/>",
                N(px),
                N(plot.y),
                N(px),
                N(plot.bottom())
            );
        }
    }
    out.push_str("</g>");
    labelled.sort_by(|a, b| a.0.total_cmp(&b.0));
    let yticks: Vec<(f64, String)> = labelled
        .iter()
        .map(|&(l, py)| (py, format_value(l, 4)))
        .collect();
    y_axis(
        &mut out,
        plot,
        &yticks,
        "Unreliability F(t) (%)",
        Side::Left,
        true,
    );
    // the 63.2 % line, where the fit crosses at t = η
    let y632 = yp(0.0);
    w!(
        &mut out,
        "<line class=\"eta-level\" x1=\"{}\" y1=\"{}\" x2=\"{}\" y2=\"{}\" stroke=\"#bbb\" \
         stroke-dasharray=\"4 3\"/>",
        N(plot.x),
        N(y632),
        N(plot.right()),
        N(y632)
    );
    let mut xticks: Vec<(f64, String)> =
        decades.iter().map(|&d| (xp(d), format_decade(d))).collect();
    if decades.len() <= 3 {
        // few decades: label 2 and 5 within each too
        for w_ in decades.windows(2) {
            for m in [2.0, 5.0] {
                let v = w_[0] * m;
                xticks.push((xp(v), format_value(v, 3)));
            }
        }
        xticks.sort_by(|a, b| a.0.total_cmp(&b.0));
    }
    x_axis(
        &mut out,
        plot,
        &xticks,
        &axis_title(&format!("{time_label}, log scale"), unit),
        true,
        false,
    );

    open_clip(&mut out, plot, "plot-area");
    if band.len() >= 2 {
        out.push_str(
            "<path class=\"band\" fill=\"#1f77b4\" fill-opacity=\"0.15\" stroke=\"none\" d=\"",
        );
        for (i, &(t, lo, _)) in band.iter().enumerate() {
            w!(
                &mut out,
                "{}{} {}",
                if i == 0 { "M" } else { "L" },
                N(xp(t)),
                N(clamp_px(yp(weibull_y(lo)), plot))
            );
        }
        for &(t, _, hi) in band.iter().rev() {
            w!(
                &mut out,
                "L{} {}",
                N(xp(t)),
                N(clamp_px(yp(weibull_y(hi)), plot))
            );
        }
        out.push_str("Z\"/>");
    }
    if let Some(f) = fit {
        // y = β (ln t − ln η) with x = log10 t, cut to the plot box analytically
        let ln10 = std::f64::consts::LN_10;
        let x_at = |y: f64| (y / f.beta + f.eta.ln()) / ln10;
        let xa = x0.max(x_at(y_lo));
        let xb = x1.min(x_at(y_hi));
        if xa < xb {
            let y_of = |x: f64| f.beta * (x * ln10 - f.eta.ln());
            let ta = 10f64.powf(xa);
            let tb = 10f64.powf(xb);
            w!(
                &mut out,
                "<path class=\"fit\" fill=\"none\" stroke=\"#1f77b4\" stroke-width=\"1.8\" \
                 d=\"M{} {}L{} {}\"/>",
                N(xp(ta)),
                N(yp(y_of(xa))),
                N(xp(tb)),
                N(yp(y_of(xb)))
            );
        }
    }
    let titles = positions.len() <= MERGE_ABOVE;
    // beyond MERGE_ABOVE points, a point on the same pixel as one already drawn (3 px
    // across) adds nothing to the picture, only bytes: it is left out (the plotting
    // positions are still those of every unit)
    let mut seen = std::collections::HashSet::new();
    let drawn: Vec<(f64, f64)> = positions
        .iter()
        .copied()
        .filter(|&(t, f)| {
            titles
                || seen.insert((
                    (xp(t) * 2.0).round() as i64,
                    (yp(weibull_y(f)) * 2.0).round() as i64,
                ))
        })
        .collect();
    out.push_str("<g class=\"points\" fill=\"#d62728\" fill-opacity=\"0.85\">");
    for &(t, f) in &drawn {
        w!(
            &mut out,
            "<circle class=\"point failure\" cx=\"{}\" cy=\"{}\" r=\"3\"",
            N(xp(t)),
            N(yp(weibull_y(f)))
        );
        if titles {
            w!(
                &mut out,
                "><title>{} {unit}, F = {} %</title></circle>",
                format_value(t, 4),
                format_value(f * 100.0, 3)
            );
        } else {
            out.push_str("/>");
        }
    }
    out.push_str("</g>");
    if p.show_suspensions && !suspensions.is_empty() {
        out.push_str("<g class=\"suspensions\" stroke=\"#555\" stroke-width=\"1\">");
        let mut ticks = std::collections::HashSet::new();
        for &t in &suspensions {
            let px = xp(t);
            // ticks are vertical lines: one per pixel column is all the eye sees
            if suspensions.len() > MERGE_ABOVE && !ticks.insert(px.round() as i64) {
                continue;
            }
            w!(
                &mut out,
                "<line class=\"suspension\" x1=\"{}\" y1=\"{}\" x2=\"{}\" y2=\"{}\"/>",
                N(px),
                N(plot.bottom()),
                N(px),
                N(plot.bottom() - 7.0)
            );
        }
        out.push_str("</g>");
    }
    out.push_str("</svg>");

    // legend, upper left inside the plot (where Weibull data rarely is)
    let mut lines: Vec<String> = Vec::new();
    if let Some(f) = fit {
        lines.push(format!("β = {}", with_bounds(f.beta, f.beta_bounds, "")));
        lines.push(format!("η = {}", with_bounds(f.eta, f.eta_bounds, unit)));
        if let Some(c) = f.confidence
            && c.level.is_finite()
            && c.level > 0.0
            && c.level < 1.0
        {
            lines.push(c.label());
        }
    }
    lines.push(format!(
        "{}, {}",
        plural(positions.len(), "failure", "failures"),
        plural(suspensions.len(), "suspension", "suspensions")
    ));
    legend_box(&mut out, plot, &lines);
    close(&mut out);
    out
}

/// Keeps a band vertex within a few plot heights of the plot (the clip hides the rest),
/// so that extreme bounds never produce huge coordinates.
fn clamp_px(y: f64, plot: Rect) -> f64 {
    y.clamp(plot.y - 2.0 * plot.h, plot.bottom() + 2.0 * plot.h)
}

/// A text legend in a white box at the upper left of the plot.
fn legend_box(out: &mut String, plot: Rect, lines: &[String]) {
    let width = 16.0 + 6.6 * lines.iter().map(|l| l.chars().count()).max().unwrap_or(0) as f64;
    let height = 8.0 + 16.0 * lines.len() as f64;
    let (x, y) = (plot.x + 8.0, plot.y + 8.0);
    w!(
        out,
        "<g class=\"legend\" font-size=\"12\" fill=\"#222\"><rect x=\"{}\" y=\"{}\" \
         width=\"{}\" height=\"{}\" fill=\"#fff\" fill-opacity=\"0.9\" stroke=\"#ccc\"/>",
        N(x),
        N(y),
        N(width),
        N(height)
    );
    for (i, l) in lines.iter().enumerate() {
        w!(
            out,
            "<text x=\"{}\" y=\"{}\">{}</text>",
            N(x + 8.0),
            N(y + 18.0 + 16.0 * i as f64),
            Esc(l)
        );
    }
    out.push_str("</g>");
}

#[cfg(test)]
mod tests {
    use super::super::testutil::{assert_valid, attr, num, path_points, tags, texts};
    use super::*;

    #[track_caller]
    fn close(got: f64, want: f64, tol: f64) {
        assert!((got - want).abs() <= tol, "got {got}, want {want} (±{tol})");
    }

    #[test]
    fn without_suspensions_the_adjusted_rank_is_the_order_number() {
        let r = adjusted_ranks(&[30.0, 10.0, 20.0, 40.0], &[]);
        let ranks: Vec<f64> = r.iter().map(|p| p.1).collect();
        for (got, want) in ranks.iter().zip([1.0, 2.0, 3.0, 4.0]) {
            close(*got, want, 1e-12);
        }
        assert_eq!(
            r.iter().map(|p| p.0).collect::<Vec<_>>(),
            [10.0, 20.0, 30.0, 40.0]
        );
        // Benard: (j − 0.3) / (n + 0.4)
        let m = median_ranks(&[30.0, 10.0, 20.0, 40.0], &[]);
        close(m[0].1, 0.7 / 4.4, 1e-15);
        close(m[3].1, 3.7 / 4.4, 1e-15);
    }

    /// Kececioglu, *Reliability & Life Testing Handbook* vol. 2 (1994), table 3.1, as
    /// used by ReliaSoft's Weibull++ validation example "Median Rank for Multiple
    /// Censored Data": F 5100, S 9500, F 15000, S 22000, F 40000 hours. Published median
    /// ranks (Weibull++, exact F-distribution method): 12.94 %, 36.1 %, 70.84 %.
    /// By hand (n = 5): 5100 is 1st of 5 (reverse rank 5): 0 + 6/6 = 1; 15000 is 3rd
    /// (reverse rank 3): 1 + (6 − 1)/4 = 2.25; 40000 is 5th (reverse rank 1):
    /// 2.25 + (6 − 2.25)/2 = 4.125. Benard: 0.7/5.4 = 12.96 %, 1.95/5.4 = 36.11 %,
    /// 3.825/5.4 = 70.83 %, within 0.02 points of the exact values.
    #[test]
    fn adjusted_ranks_match_the_kececioglu_reference() {
        let failures = [5100.0, 15000.0, 40000.0];
        let suspensions = [9500.0, 22000.0];
        let r = adjusted_ranks(&failures, &suspensions);
        close(r[0].1, 1.0, 1e-12);
        close(r[1].1, 2.25, 1e-12);
        close(r[2].1, 4.125, 1e-12);
        let m = median_ranks(&failures, &suspensions);
        let published = [0.1294, 0.361, 0.7084];
        for ((t, f), (want_t, want_f)) in m.iter().zip(failures.iter().zip(published)) {
            assert_eq!(t, want_t);
            close(*f, want_f, 0.0003);
        }
        close(m[0].1, 0.7 / 5.4, 1e-15);
        close(m[1].1, 1.95 / 5.4, 1e-15);
        close(m[2].1, 3.825 / 5.4, 1e-15);
    }

    /// ReliaSoft Reliability HotWire 104 ("Median Rank Based on Mean Order Number"):
    /// S 2500, F 2730, F 3900, S 4100, F 5000. By hand (n = 5): 2730 is 2nd (reverse
    /// rank 4): 6/5 = 1.2; 3900 is 3rd (reverse rank 3): 1.2 + 4.8/4 = 2.4; 5000 is 5th
    /// (reverse rank 1): 2.4 + 3.6/2 = 4.2.
    #[test]
    fn a_suspension_before_the_first_failure_raises_its_rank() {
        let r = adjusted_ranks(&[2730.0, 3900.0, 5000.0], &[2500.0, 4100.0]);
        close(r[0].1, 1.2, 1e-12);
        close(r[1].1, 2.4, 1e-12);
        close(r[2].1, 4.2, 1e-12);
    }

    #[test]
    fn a_suspension_tied_with_a_failure_counts_after_it() {
        let r = adjusted_ranks(&[100.0, 200.0], &[100.0]);
        close(r[0].1, 1.0, 1e-12);
        // 200 is 3rd of 3 (reverse rank 1): 1 + (4 − 1)/2 = 2.5
        close(r[1].1, 2.5, 1e-12);
        assert!(median_ranks(&[f64::NAN], &[f64::INFINITY]).is_empty());
    }

    /// Reference: Python `reliability` 0.9.0, `Fit_Weibull_2P(failures=[310, 620, 980,
    /// 1450, 2210], CI=0.9)` then `SF(CI_x=[500], CI_type="reliability")`, as stored in
    /// `analytics/tests/refdata/mod.rs` (SMALL): α = 1255.5291228728997, β =
    /// 1.74827883675394, SE α = 339.1136404676709, SE β = 0.6225999392806246, Cov =
    /// 67.77407332173391; R(500) = 0.8187651186188505 with bounds [0.44415453301502805,
    /// 0.9519281439636234], so F(500) bounds are [1 − 0.95193, 1 − 0.44415].
    #[test]
    fn fisher_bounds_match_the_reliability_package() {
        let (eta, beta) = (1255.5291228728997, 1.74827883675394);
        let (se_e, se_b, c) = (339.1136404676709, 0.6225999392806246, 67.77407332173391);
        let cov = [[se_e * se_e, c], [c, se_b * se_b]];
        let z = 1.6448536269514722; // Φ⁻¹(0.95)
        let (lo, hi) = fisher_unreliability_bounds(500.0, beta, eta, cov, z).expect("bounds");
        close(
            weibull_unreliability(500.0, beta, eta),
            1.0 - 0.8187651186188505,
            1e-6,
        );
        close(lo, 1.0 - 0.9519281439636234, 1e-5);
        close(hi, 1.0 - 0.44415453301502805, 1e-5);
        // SMALL_CENSORED: failures [150, 420, 700, 1100, 1730], suspensions [500, 900,
        // 2000, 2000]; R(1000) = 0.6104822428770529 in [0.34226375739401427,
        // 0.7967982762780564]
        let (eta, beta) = (1785.0603278598705, 1.2187719742399277);
        let (se_e, se_b, c) = (677.2551637990438, 0.46183454680188085, -79.51273489605731);
        let cov = [[se_e * se_e, c], [c, se_b * se_b]];
        let (lo, hi) = fisher_unreliability_bounds(1000.0, beta, eta, cov, z).expect("bounds");
        close(lo, 1.0 - 0.7967982762780564, 1e-5);
        close(hi, 1.0 - 0.34226375739401427, 1e-5);
    }

    #[test]
    fn fisher_bounds_bracket_widen_and_collapse() {
        let (beta, eta) = (2.0, 1000.0);
        let cov = [[150.0f64.powi(2), 20.0], [20.0, 0.3f64.powi(2)]];
        let z = 1.6448536269514722;
        let mut widths = Vec::new();
        for t in [50.0, 200.0, 600.0, 1000.0, 1700.0, 2600.0, 3500.0] {
            let f = weibull_unreliability(t, beta, eta);
            let (lo, hi) = fisher_unreliability_bounds(t, beta, eta, cov, z).expect("bounds");
            assert!(lo < f && f < hi, "t={t}: {lo} < {f} < {hi}");
            widths.push((t, weibull_y(hi) - weibull_y(lo)));
        }
        // on the paper the band is narrowest near the data centre (where
        // ∂Var u/∂ln t = 0: ln(t/η) = β Cov / (η Var β) = 0.44, t ≈ 1560) and widens away
        // from it on both sides
        let narrowest = widths
            .iter()
            .min_by(|a, b| a.1.total_cmp(&b.1))
            .expect("some")
            .0;
        assert_eq!(narrowest, 1700.0);
        assert!(
            widths.windows(2).take(4).all(|w| w[0].1 > w[1].1),
            "{widths:?}"
        );
        assert!(
            widths[5].1 < widths[6].1 && widths[4].1 < widths[5].1,
            "{widths:?}"
        );
        // zero covariance: the bounds are F itself
        let (lo, hi) =
            fisher_unreliability_bounds(700.0, beta, eta, [[0.0; 2]; 2], z).expect("bounds");
        let f = weibull_unreliability(700.0, beta, eta);
        close(lo, f, 1e-15);
        close(hi, f, 1e-15);
        assert!(fisher_unreliability_bounds(0.0, beta, eta, cov, z).is_none());
        assert!(fisher_unreliability_bounds(10.0, f64::NAN, eta, cov, z).is_none());
        let band = fisher_band(&log_space(10.0, 3000.0, 50), beta, eta, cov, z);
        assert_eq!(band.len(), 50);
        assert!(band.iter().all(|&(_, a, b)| a > 0.0 && b < 1.0 && a <= b));
    }

    fn example() -> WeibullPlot {
        WeibullPlot {
            title: "Bearing <B-12> & seals".into(),
            failures: vec![5100.0, 15000.0, 40000.0],
            suspensions: vec![9500.0, 22000.0],
            show_suspensions: true,
            fit: Some(WeibullLine {
                beta: 1.2,
                eta: 30000.0,
                beta_bounds: Some((0.62, 2.2)),
                eta_bounds: Some((15000.0, 61000.0)),
                confidence: Some(Confidence {
                    level: 0.9,
                    sides: BoundSides::TwoSided,
                }),
            }),
            ..Default::default()
        }
    }

    /// The pixel scale of the paper, read back from the labelled gridlines (1 % and
    /// 63.2 %) and decades, to check positions independently of the drawing code.
    fn paper(svg: &str) -> (impl Fn(f64) -> f64, impl Fn(f64) -> f64) {
        let label_y = |label: &str| {
            let i = svg
                .find(&format!(">{label}</text>"))
                .unwrap_or_else(|| panic!("label {label}"));
            let tag_start = svg[..i].rfind("<text").expect("text");
            num(&svg[tag_start + 1..i], "y")
        };
        let (y1, y63) = (label_y("1"), label_y("63.2"));
        let (a1, a63) = (weibull_y(0.01), 0.0);
        let yscale = move |f: f64| y1 + (weibull_y(f) - a1) / (a63 - a1) * (y63 - y1);
        let label_x = |label: &str| {
            let i = svg.find(&format!(">{label}</text>")).expect("decade label");
            let tag_start = svg[..i].rfind("<text").expect("text");
            num(&svg[tag_start + 1..i], "x")
        };
        let (x3, x4) = (label_x("1000"), label_x("10000"));
        let xscale = move |t: f64| x3 + (t.log10() - 3.0) * (x4 - x3);
        (xscale, yscale)
    }

    #[test]
    fn points_sit_at_their_median_ranks() {
        let p = example();
        let svg = weibull_plot(&p);
        assert_valid(&svg);
        let pts = tags(&svg, "circle class=\"point failure\"");
        assert_eq!(pts.len(), 3);
        let (xs, ys) = paper(&svg);
        let ranks = median_ranks(&p.failures, &p.suspensions);
        for (c, (t, f)) in pts.iter().zip(ranks) {
            close(num(c, "cx"), xs(t), 0.15);
            close(num(c, "cy"), ys(f), 0.15);
        }
        // the first point: F = 0.7/5.4
        close(num(pts[0], "cy"), ys(0.7 / 5.4), 0.15);
        assert_eq!(tags(&svg, "line class=\"suspension\"").len(), 2);
    }

    #[test]
    fn the_fitted_line_passes_through_eta_at_63_percent() {
        let svg = weibull_plot(&example());
        let (xs, ys) = paper(&svg);
        let fit = tags(&svg, "path class=\"fit\"");
        assert_eq!(fit.len(), 1);
        let pts = path_points(attr(fit[0], "d").expect("d"));
        assert_eq!(pts.len(), 2);
        let ((xa, ya), (xb, yb)) = (pts[0], pts[1]);
        let x_eta = xs(30000.0);
        let y_at_eta = ya + (x_eta - xa) / (xb - xa) * (yb - ya);
        close(y_at_eta, ys(1.0 - (-1.0f64).exp()), 0.2);
        // and the slope is β: one decade up is β·ln 10 on the y scale
        let per_decade = (ys(weibull_unreliability(3000.0, 1.2, 30000.0))
            - ys(weibull_unreliability(30000.0, 1.2, 30000.0)))
        .abs();
        let slope = (yb - ya).abs() / (xb - xa).abs() * (xs(10000.0) - xs(1000.0));
        close(slope, per_decade, 0.5);
    }

    #[test]
    fn legend_axes_and_escaping() {
        let svg = weibull_plot(&example());
        let t = texts(&svg);
        assert!(t.contains(&"β = 1.2 [0.6, 2.2]"), "{t:?}");
        assert!(t.contains(&"η = 30000 h [15000, 61000]"), "{t:?}");
        assert!(t.contains(&"90 % two-sided"));
        assert!(t.contains(&"3 failures, 2 suspensions"));
        assert!(t.contains(&"Unreliability F(t) (%)"));
        assert!(t.contains(&"Time to failure, log scale (h)"));
        assert!(t.contains(&"Bearing &lt;B-12&gt; &amp; seals"));
        for label in ["1", "10", "50", "63.2", "90", "99"] {
            assert!(t.contains(&label), "gridline {label}: {t:?}");
        }
        assert!(!svg.contains("<B-12>"));
        assert_eq!(
            with_bounds(1.834, Some((1.521, 2.2)), ""),
            "1.83 [1.52, 2.20]"
        );
        assert_eq!(
            with_bounds(592.2, Some((540.4, 650.0)), "h"),
            "592 h [540, 650]"
        );
    }

    #[test]
    fn band_is_drawn_as_a_polygon() {
        let mut p = example();
        let cov = [[8000.0f64.powi(2), 100.0], [100.0, 0.35f64.powi(2)]];
        p.band = fisher_band(&log_space(1000.0, 100000.0, 40), 1.2, 30000.0, cov, 1.645);
        let svg = weibull_plot(&p);
        assert_valid(&svg);
        let band = tags(&svg, "path class=\"band\"");
        assert_eq!(band.len(), 1);
        let d = attr(band[0], "d").expect("d");
        assert_eq!(path_points(d).len(), 80);
        assert!(d.ends_with('Z'));
    }

    #[test]
    fn no_data_and_edge_inputs() {
        for (f, s) in [
            (vec![], vec![]),
            (vec![], vec![100.0]),
            (vec![0.0, -5.0], vec![]),
            (vec![f64::NAN], vec![]),
        ] {
            let svg = weibull_plot(&WeibullPlot {
                failures: f,
                suspensions: s,
                ..Default::default()
            });
            assert_valid(&svg);
            assert!(svg.contains("class=\"no-data\""));
        }
        let edge: Vec<(Vec<f64>, Option<WeibullLine>)> = vec![
            (vec![500.0], None),
            (vec![7.0, 7.0, 7.0], None),
            (vec![1e-300, 1e300], None),
            (
                vec![1.0, 2.0],
                Some(WeibullLine {
                    beta: 1e6,
                    eta: 1.5,
                    ..Default::default()
                }),
            ),
            (
                vec![1.0, 2.0],
                Some(WeibullLine {
                    beta: f64::NAN,
                    eta: -1.0,
                    beta_bounds: Some((f64::NAN, f64::INFINITY)),
                    ..Default::default()
                }),
            ),
            (
                vec![10.0],
                Some(WeibullLine {
                    beta: 0.5,
                    eta: 1e9,
                    beta_bounds: Some((f64::NEG_INFINITY, 1.0)),
                    eta_bounds: Some((f64::NAN, 2.0)),
                    confidence: Some(Confidence {
                        level: f64::NAN,
                        sides: BoundSides::Lower,
                    }),
                }),
            ),
        ];
        for (f, fit) in edge {
            let svg = weibull_plot(&WeibullPlot {
                failures: f.clone(),
                suspensions: vec![f64::NAN, -3.0, 1e200],
                show_suspensions: true,
                fit,
                band: vec![(1.0, 0.0, 1.0), (10.0, f64::NAN, 0.5), (100.0, -1.0, 2.0)],
                ..Default::default()
            });
            assert_valid(&svg);
            assert!(!svg.contains("no-data"), "{f:?}");
        }
    }

    #[test]
    fn five_thousand_failures_render_fast() {
        // deterministic Weibull(β = 1.5, η = 1000) quantiles with every 4th unit
        // suspended at the same age
        let n = 5000;
        let mut failures = Vec::with_capacity(n);
        let mut suspensions = Vec::new();
        for i in 0..n {
            let q = (i as f64 + 0.5) / n as f64;
            let t = 1000.0 * (-(1.0 - q).ln()).powf(1.0 / 1.5);
            if i % 4 == 3 {
                suspensions.push(t);
            } else {
                failures.push(t);
            }
        }
        let p = WeibullPlot {
            title: "Fleet".into(),
            failures,
            suspensions,
            fit: Some(WeibullLine {
                beta: 1.5,
                eta: 1000.0,
                ..Default::default()
            }),
            ..Default::default()
        };
        let mut best = std::time::Duration::MAX;
        let mut svg = String::new();
        for _ in 0..5 {
            let start = std::time::Instant::now();
            svg = weibull_plot(&p);
            best = best.min(start.elapsed());
        }
        assert_valid(&svg);
        // 3 750 failures on 720 px: coincident points are merged, the curve's shape stays
        let drawn = tags(&svg, "circle class=\"point failure\"").len();
        assert!((200..3750).contains(&drawn), "{drawn} points drawn");
        assert!(svg.len() < 150_000, "{} bytes", svg.len());
        // release builds take about a millisecond; debug builds are ~10× slower
        let limit = if cfg!(debug_assertions) { 100 } else { 10 };
        assert!(best.as_millis() < limit, "{best:?}");
        eprintln!("5000-unit Weibull plot: {best:?}, {} bytes", svg.len());
    }
}
