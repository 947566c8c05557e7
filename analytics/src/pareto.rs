//! Pareto ordering: bars sorted by count, largest first, with share and cumulative share.

/// One bar of a Pareto chart.
#[derive(Clone, Debug, PartialEq)]
pub struct Bar {
    /// The code or mode; `None` for records without one.
    pub value: Option<String>,
    /// Occurrences with this value.
    pub count: u64,
    /// Occurrences of all values (the sample size).
    pub total: u64,
    /// `count / total`.
    pub share: f64,
    /// Share of this bar and every bar before it.
    pub cumulative_share: f64,
}

/// Sorts `(value, count)` pairs by count (descending; ties by value, `None` last) and adds
/// shares. Bars with a zero count are dropped; an empty or all-zero input gives no bars.
pub fn pareto(mut bars: Vec<(Option<String>, u64)>) -> Vec<Bar> {
    bars.retain(|(_, n)| *n > 0);
    let total: u64 = bars.iter().map(|(_, n)| n).sum();
    bars.sort_by(|a, b| {
        b.1.cmp(&a.1).then_with(|| match (&a.0, &b.0) {
            (Some(x), Some(y)) => x.cmp(y),
            (Some(_), None) => std::cmp::Ordering::Less,
            (None, Some(_)) => std::cmp::Ordering::Greater,
            (None, None) => std::cmp::Ordering::Equal,
        })
    });
    let mut running = 0u64;
    bars.into_iter()
        .map(|(value, count)| {
            running += count;
            Bar {
                value,
                count,
                total,
                share: count as f64 / total as f64,
                cumulative_share: running as f64 / total as f64,
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::pareto;

    #[test]
    fn sorted_descending_with_cumulative_share_ending_at_one() {
        let bars = pareto(vec![
            (Some("E2".into()), 1),
            (None, 1),
            (Some("E1".into()), 6),
            (Some("E3".into()), 2),
            (Some("E4".into()), 0),
        ]);
        let order: Vec<_> = bars.iter().map(|b| b.value.clone()).collect();
        assert_eq!(
            order,
            vec![
                Some("E1".into()),
                Some("E3".into()),
                Some("E2".into()),
                None
            ]
        );
        assert_eq!(bars[0].share, 0.6);
        assert!((bars[1].cumulative_share - 0.8).abs() < 1e-12);
        assert_eq!(bars[3].cumulative_share, 1.0);
        assert!(bars.iter().all(|b| b.total == 10));
        assert!(pareto(vec![]).is_empty());
    }
}
