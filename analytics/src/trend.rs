//! Failure-rate trend by calendar month: the rate per 1000 device-hours of each month
//! uses the same chi-square bounds as [`crate::mtbf`], on that month's operating hours and
//! failures. Months are counted as `year · 12 + month − 1` (UTC).

/// `YYYY-MM` for a month index `year · 12 + month − 1`.
pub fn month_label(index: i32) -> String {
    format!(
        "{:04}-{:02}",
        index.div_euclid(12),
        index.rem_euclid(12) + 1
    )
}

#[cfg(test)]
mod tests {
    use super::month_label;

    #[test]
    fn month_labels() {
        assert_eq!(month_label(2026 * 12), "2026-01");
        assert_eq!(month_label(2026 * 12 + 11), "2026-12");
    }
}
