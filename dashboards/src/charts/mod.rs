//! SVG charts drawn in Rust: every chart is a function of its data.
//!
//! Each chart function takes a plain struct and returns an SVG string to embed inline
//! in a page: no script, no web font (`system-ui, sans-serif`), a `viewBox` with
//! `width="100%"` so it scales to its container, `role="img"` with a `<title>` and a
//! `<desc>`, labelled axes with units. Elements carry CSS classes (`series s0`, `band`,
//! `point failure`, `axis x`, `marker order`, `span alarm critical`, …) for the page
//! stylesheet, and inline fill/stroke defaults so the SVG also reads well alone. All
//! text is XML-escaped. A chart with nothing to draw renders the "no data" state
//! ([`NO_DATA_TEXT`], class `no-data`); no input makes a chart panic or print NaN.

mod bar;
#[cfg(test)]
mod gallery;
mod reliability;
mod scale;
mod svg;
#[cfg(test)]
mod testutil;
mod tiles;
mod time_series;
mod trend;
mod weibull;

pub use bar::{Bar, BarChart, bar_chart};
pub use reliability::{LifeMarker, ReliabilityCurve, reliability_curve};
pub use scale::{
    LinearScale, MAX_MAGNITUDE, NiceStep, Ticks, TimeScale, TimeStep, TimeTick, TimeUnit,
    clamp_value, format_decade, format_tick, format_value, log10_decades, nice_ticks, time_step,
    time_ticks, widen_domain,
};
pub use svg::{FONT_FAMILY, NO_DATA_TEXT, Size, escape_xml};
pub use tiles::{CountBar, CountSegment, Sparkline, count_bar, sparkline};
pub use time_series::{
    Forecast, MAX_POINTS_PER_SERIES, Marker, Series, Span, Threshold, TimeSeriesChart, time_series,
};
pub use trend::{TrendChart, TrendGroup, TrendPoint, rate_trend};
pub use weibull::{
    BoundSides, Confidence, WeibullLine, WeibullPlot, adjusted_ranks, fisher_band,
    fisher_unreliability_bounds, log_space, median_ranks, weibull_plot, weibull_unreliability,
    weibull_y,
};
