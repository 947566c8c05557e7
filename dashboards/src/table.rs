//! Tables every page uses: sortable by a column, filterable by text, both through URL
//! parameters (`sort.<id>=<column>` or `-<column>` for descending, `q.<id>=<text>`), so
//! any view can be linked; downloadable as CSV (`?csv=<id>`), so a chart's data is
//! always reachable as a table or a file.

use axum::http::header;
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Utc};
use maud::{Markup, html};

/// The query parameters of a page request, in order, as given.
#[derive(Clone, Debug, Default)]
pub struct Params(pub Vec<(String, String)>);

impl Params {
    /// Parses a raw query string (`None`: no parameters).
    pub fn parse(raw: Option<&str>) -> Self {
        Self(
            raw.and_then(|q| serde_urlencoded::from_str::<Vec<(String, String)>>(q).ok())
                .unwrap_or_default(),
        )
    }

    /// The last non-empty value of `key`.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.0
            .iter()
            .rev()
            .find(|(k, v)| k == key && !v.trim().is_empty())
            .map(|(_, v)| v.trim())
    }

    /// This page's URL query with `key` set to `value` (`None`: removed), starting `?`.
    pub fn with(&self, key: &str, value: Option<&str>) -> String {
        let mut kept: Vec<(&str, &str)> = self
            .0
            .iter()
            .filter(|(k, v)| k != key && k != "csv" && !v.is_empty())
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        if let Some(v) = value {
            kept.push((key, v));
        }
        if kept.is_empty() {
            return "?".to_owned();
        }
        format!(
            "?{}",
            serde_urlencoded::to_string(&kept).unwrap_or_default()
        )
    }

    /// Hidden inputs carrying every parameter but `except` (for GET filter forms).
    pub fn hidden_except(&self, except: &[&str]) -> Markup {
        html! {
            @for (k, v) in &self.0 {
                @if !except.contains(&k.as_str()) && k != "csv" && !v.is_empty() {
                    input type="hidden" name=(k) value=(v);
                }
            }
        }
    }
}

/// A column: its URL key, its heading, whether it holds numbers (right-aligned).
#[derive(Clone, Copy, Debug)]
pub struct Column {
    pub key: &'static str,
    pub label: &'static str,
    pub numeric: bool,
}

/// A text column.
pub const fn text(key: &'static str, label: &'static str) -> Column {
    Column {
        key,
        label,
        numeric: false,
    }
}

/// A number column.
pub const fn number(key: &'static str, label: &'static str) -> Column {
    Column {
        key,
        label,
        numeric: true,
    }
}

/// What a cell sorts by.
#[derive(Clone, Debug, PartialEq, PartialOrd)]
pub enum Key {
    /// Absent values sort last whichever the direction.
    None,
    Num(f64),
    Text(String),
}

/// One cell: what it sorts by, its text (filter and CSV) and what it shows.
#[derive(Clone, Debug)]
pub struct Cell {
    pub key: Key,
    pub text: String,
    pub html: Option<Markup>,
}

impl Cell {
    /// Plain text, sorted as text.
    pub fn text(s: impl Into<String>) -> Self {
        let text = s.into();
        Self {
            key: Key::Text(text.to_lowercase()),
            text,
            html: None,
        }
    }

    /// A number with at most `digits` decimals (`—` when absent).
    pub fn num(v: Option<f64>, digits: usize) -> Self {
        Self {
            key: v.filter(|v| v.is_finite()).map_or(Key::None, Key::Num),
            text: crate::layout::num(v, digits),
            html: None,
        }
    }

    /// A count.
    pub fn count(v: u64) -> Self {
        Self::num(Some(v as f64), 0)
    }

    /// A time (`—` when absent), sorted by instant.
    pub fn time(t: Option<DateTime<Utc>>) -> Self {
        Self {
            key: t.map_or(Key::None, |t| Key::Num(t.timestamp_millis() as f64)),
            text: t.map(crate::layout::time).unwrap_or_else(|| "—".into()),
            html: None,
        }
    }

    /// The same cell shown as `html` (a link, a badge).
    pub fn shown(mut self, html: Markup) -> Self {
        self.html = Some(html);
        self
    }

    /// A link to `href` showing the cell's text.
    pub fn link(self, href: &str) -> Self {
        let h = html! { a href=(href) { (self.text) } };
        self.shown(h)
    }
}

/// A table of a page.
#[derive(Clone, Debug)]
pub struct Table {
    /// Unique on its page: the URL parameters `sort.<id>`, `q.<id>` and `csv=<id>`.
    pub id: &'static str,
    pub caption: String,
    pub columns: Vec<Column>,
    pub rows: Vec<Vec<Cell>>,
    /// Shown instead of an empty table.
    pub empty: String,
    /// Sort when the URL names none: (column key, descending).
    pub default_sort: Option<(&'static str, bool)>,
    /// Offer the text filter (long tables).
    pub filter: bool,
}

impl Table {
    pub fn new(id: &'static str, caption: impl Into<String>, columns: Vec<Column>) -> Self {
        Self {
            id,
            caption: caption.into(),
            columns,
            rows: Vec::new(),
            empty: "Nothing to show.".into(),
            default_sort: None,
            filter: false,
        }
    }

    pub fn empty(mut self, text: impl Into<String>) -> Self {
        self.empty = text.into();
        self
    }

    pub fn sorted_by(mut self, column: &'static str, descending: bool) -> Self {
        self.default_sort = Some((column, descending));
        self
    }

    pub fn filterable(mut self) -> Self {
        self.filter = true;
        self
    }

    pub fn push(&mut self, row: Vec<Cell>) {
        debug_assert_eq!(row.len(), self.columns.len(), "table {}", self.id);
        self.rows.push(row);
    }

    fn sort_param(&self) -> String {
        format!("sort.{}", self.id)
    }

    fn filter_param(&self) -> String {
        format!("q.{}", self.id)
    }

    /// The rows the URL asks for: filtered by `q.<id>` (every word in some cell, any
    /// case), sorted by `sort.<id>`; with the sort in force.
    pub fn view(&self, p: &Params) -> (Vec<&Vec<Cell>>, Option<(usize, bool)>) {
        let words: Vec<String> = p
            .get(&self.filter_param())
            .map(|q| q.split_whitespace().map(str::to_lowercase).collect())
            .unwrap_or_default();
        let mut rows: Vec<&Vec<Cell>> = self
            .rows
            .iter()
            .filter(|row| {
                words.iter().all(|w| {
                    row.iter()
                        .any(|c| c.text.to_lowercase().contains(w.as_str()))
                })
            })
            .collect();
        let asked = p
            .get(&self.sort_param())
            .map(|s| match s.strip_prefix('-') {
                Some(k) => (k.to_owned(), true),
                None => (s.to_owned(), false),
            });
        let sort = asked
            .or_else(|| self.default_sort.map(|(k, d)| (k.to_owned(), d)))
            .and_then(|(k, desc)| {
                self.columns
                    .iter()
                    .position(|c| c.key == k)
                    .map(|i| (i, desc))
            });
        if let Some((i, desc)) = sort {
            rows.sort_by(|a, b| {
                let (x, y) = (&a[i].key, &b[i].key);
                match (x, y) {
                    (Key::None, Key::None) => std::cmp::Ordering::Equal,
                    (Key::None, _) => std::cmp::Ordering::Greater,
                    (_, Key::None) => std::cmp::Ordering::Less,
                    _ => {
                        let o = x.partial_cmp(y).unwrap_or(std::cmp::Ordering::Equal);
                        if desc { o.reverse() } else { o }
                    }
                }
            });
        }
        (rows, sort)
    }

    /// The table as HTML: caption, filter form, sortable headings, rows, CSV link.
    pub fn render(&self, p: &Params) -> Markup {
        let (rows, sort) = self.view(p);
        let filter_param = self.filter_param();
        let sort_param = self.sort_param();
        html! {
            section.table id=(format!("table-{}", self.id)) {
                div.table-head {
                    h3 { (self.caption) }
                    span.count { (rows.len()) " of " (self.rows.len()) }
                    @if self.filter {
                        form.filter method="get" role="search" {
                            (p.hidden_except(&[&filter_param]))
                            label {
                                span.visually-hidden { "Filter " (self.caption) }
                                input type="search" name=(filter_param)
                                    value=(p.get(&filter_param).unwrap_or(""))
                                    placeholder="filter…";
                            }
                            button type="submit" { "Filter" }
                        }
                    }
                    a.csv href=(p.with("csv", Some(self.id)))
                        download=(format!("{}.csv", self.id)) { "CSV" }
                }
                @if rows.is_empty() {
                    p.empty { (self.empty) }
                } @else {
                    div.scroll {
                        table data-table=(self.id) {
                            thead { tr {
                                @for (i, c) in self.columns.iter().enumerate() {
                                    @let current = sort.filter(|(s, _)| *s == i).map(|(_, d)| d);
                                    @let next = if current == Some(false) { format!("-{}", c.key) } else { c.key.to_owned() };
                                    @let aria = match current { Some(false) => "ascending", Some(true) => "descending", None => "none" };
                                    th scope="col" class=[c.numeric.then_some("num")] aria-sort=(aria) {
                                        a href=(p.with(&sort_param, Some(&next))) { (c.label)
                                            @match current { Some(false) => " ▲", Some(true) => " ▼", None => "" }
                                        }
                                    }
                                }
                            } }
                            tbody {
                                @for row in &rows {
                                    tr {
                                        @for (i, cell) in row.iter().enumerate() {
                                            td class=[self.columns[i].numeric.then_some("num")] {
                                                @if let Some(h) = &cell.html { (h) } @else { (cell.text) }
                                            }
                                        }
                                    }
                                }
                            }
                        }
                    }
                }
            }
        }
    }

    /// The rows the URL asks for as CSV (RFC 4180 quoting), header first.
    pub fn csv(&self, p: &Params) -> String {
        let (rows, _) = self.view(p);
        let mut out = String::new();
        let line = |cells: Vec<&str>, out: &mut String| {
            let quoted: Vec<String> = cells.iter().map(|c| csv_field(c)).collect();
            out.push_str(&quoted.join(","));
            out.push_str("\r\n");
        };
        line(self.columns.iter().map(|c| c.key).collect(), &mut out);
        for row in rows {
            line(
                row.iter()
                    .map(|c| if c.text == "—" { "" } else { c.text.as_str() })
                    .collect(),
                &mut out,
            );
        }
        out
    }
}

fn csv_field(s: &str) -> String {
    // a leading =, +, - or @ would be a formula in a spreadsheet: quote it as text
    let formula =
        s.starts_with(['=', '+', '@']) || (s.starts_with('-') && s.parse::<f64>().is_err());
    if formula {
        return format!("\"'{}\"", s.replace('"', "\"\""));
    }
    if s.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_owned()
    }
}

/// The CSV download a `?csv=<id>` asks for, when one of `tables` has that id.
pub fn csv_download(p: &Params, tables: &[&Table]) -> Option<Response> {
    let id = p.get("csv")?;
    let t = tables.iter().find(|t| t.id == id)?;
    Some(
        (
            [
                (header::CONTENT_TYPE, "text/csv; charset=utf-8".to_owned()),
                (
                    header::CONTENT_DISPOSITION,
                    format!("attachment; filename=\"{}.csv\"", t.id),
                ),
            ],
            t.csv(p),
        )
            .into_response(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Table {
        let mut t = Table::new(
            "devices",
            "Devices",
            vec![text("serial", "Serial"), number("hours", "Hours")],
        )
        .filterable();
        t.push(vec![Cell::text("OC-2"), Cell::num(Some(20.0), 0)]);
        t.push(vec![Cell::text("OC-10"), Cell::num(None, 0)]);
        t.push(vec![Cell::text("VT-1"), Cell::num(Some(5.0), 0)]);
        t
    }

    fn serials(t: &Table, q: &str) -> Vec<String> {
        t.view(&Params::parse(Some(q)))
            .0
            .iter()
            .map(|r| r[0].text.clone())
            .collect()
    }

    #[test]
    fn sorting_and_filtering_follow_the_url() {
        let t = sample();
        assert_eq!(serials(&t, ""), ["OC-2", "OC-10", "VT-1"]);
        assert_eq!(serials(&t, "sort.devices=hours"), ["VT-1", "OC-2", "OC-10"]);
        // absent values stay last when descending too
        assert_eq!(
            serials(&t, "sort.devices=-hours"),
            ["OC-2", "VT-1", "OC-10"]
        );
        assert_eq!(serials(&t, "q.devices=oc"), ["OC-2", "OC-10"]);
        assert_eq!(serials(&t, "q.devices=oc+10"), ["OC-10"]);
        // an unknown column keeps the given order, never fails
        assert_eq!(serials(&t, "sort.devices=nope"), ["OC-2", "OC-10", "VT-1"]);
    }

    #[test]
    fn headings_link_to_the_other_direction_and_keep_other_parameters() {
        let t = sample();
        let html = t
            .render(&Params::parse(Some("model=OC-5A&sort.devices=hours")))
            .into_string();
        assert!(
            html.contains(r#"href="?model=OC-5A&amp;sort.devices=-hours""#),
            "{html}"
        );
        assert!(html.contains(r#"aria-sort="ascending""#));
        assert!(html.contains("3 of 3"));
        let empty = Table::new("x", "X", vec![text("a", "A")]).empty("No orders.");
        assert!(
            empty
                .render(&Params::default())
                .into_string()
                .contains("No orders.")
        );
    }

    #[test]
    fn csv_quotes_what_needs_it_and_defuses_formulas() {
        let mut t = Table::new("t", "T", vec![text("a", "A"), number("b", "B")]);
        t.push(vec![Cell::text("x, \"y\""), Cell::num(Some(-1.5), 1)]);
        t.push(vec![Cell::text("=cmd()"), Cell::num(None, 1)]);
        assert_eq!(
            t.csv(&Params::default()),
            "a,b\r\n\"x, \"\"y\"\"\",-1.5\r\n\"'=cmd()\",\r\n"
        );
    }
}
