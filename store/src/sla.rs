//! SLA states as SQL over the `orders` columns: which deadlines count depends on the
//! status (`respond_by` while open, `arrive_by` until in progress, `complete_by` until
//! closed); an order is breached when a counting deadline passed, at risk when less than
//! a fifth of a counting deadline's time (from creation) is left.

use fleetpulse_domain::order::SlaState;
use rusqlite::types::Value as SqlValue;

/// Each counting deadline as (status list, deadline column).
const COUNTING: [(&str, &str); 3] = [
    ("('open')", "respond_by"),
    ("('open', 'acknowledged', 'assigned')", "arrive_by"),
    (
        "('open', 'acknowledged', 'assigned', 'in_progress')",
        "complete_by",
    ),
];

fn breached() -> String {
    let parts: Vec<String> = COUNTING
        .iter()
        .map(|(st, col)| format!("(status IN {st} AND {col} < ?)"))
        .collect();
    format!("({})", parts.join(" OR "))
}

fn at_risk() -> String {
    // 5 * (deadline - now) < deadline - created_at  ⇔  less than 20 % of the time left
    let parts: Vec<String> = COUNTING
        .iter()
        .map(|(st, col)| format!("(status IN {st} AND 5 * ({col} - ?) < {col} - created_at)"))
        .collect();
    format!("({})", parts.join(" OR "))
}

const ACTIVE: &str = "status IN ('open', 'acknowledged', 'assigned', 'in_progress')";

/// The WHERE condition of a state; bind [`args`] in order.
pub(crate) fn condition(state: SlaState) -> String {
    match state {
        SlaState::Breached => breached(),
        SlaState::AtRisk => format!("NOT {} AND {}", breached(), at_risk()),
        SlaState::OnTrack => format!("{ACTIVE} AND NOT {} AND NOT {}", breached(), at_risk()),
    }
}

/// The parameters of [`condition`]: `now` once per placeholder.
pub(crate) fn args(state: SlaState, now: i64) -> Vec<SqlValue> {
    let n = match state {
        SlaState::Breached => 3,
        SlaState::AtRisk | SlaState::OnTrack => 6,
    };
    vec![SqlValue::Integer(now); n]
}
