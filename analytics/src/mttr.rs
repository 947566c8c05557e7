//! MTTR (mean and median hours from creation to completion of completed repair orders;
//! "hands-on" from start to completion where a start time is known) and first-time-fix
//! rate: a completed repair is fixed first time when no further repair order for the same
//! serial is created within the window after it closed. A repair whose window has not
//! elapsed by the end of the period (or of the data, without a period) and that has no
//! repeat yet is *pending*: counted neither way.

use chrono::{Duration, Utc};
use fleetpulse_domain::reliability::{Period, RepairRecord};

use crate::report::{GroupValue, MttrRow};

/// The first-time-fix verdict of one repair order.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ftf {
    /// Not a completed repair (active or cancelled).
    NotApplicable,
    /// Completed, no further repair order within the window.
    Fixed,
    /// Completed, and another repair order followed within the window.
    Repeat,
    /// Completed, no repeat yet, window not elapsed by the horizon.
    Pending,
}

fn completed(r: &RepairRecord) -> bool {
    r.completed == Some(true) && r.closed_at.is_some()
}

/// The verdict for each repair in `repairs`, in the same order. `device[i]` identifies the
/// serial of `repairs[i]` (any dense id: equal ids are the same serial).
pub fn first_time_fix(
    repairs: &[RepairRecord],
    device: &[u32],
    period: Option<Period>,
    window_days: u32,
) -> Vec<Ftf> {
    let window = Duration::days(i64::from(window_days));
    let horizon = period
        .map(|p| p.to)
        .or_else(|| {
            repairs
                .iter()
                .flat_map(|r| [Some(r.created_at), r.closed_at])
                .flatten()
                .max()
        })
        .unwrap_or_else(Utc::now);
    // orders by serial, then creation time
    let mut order: Vec<usize> = (0..repairs.len()).collect();
    order.sort_by_key(|&i| (device[i], repairs[i].created_at));
    let mut verdict = vec![Ftf::NotApplicable; repairs.len()];
    let mut start = 0;
    while start < order.len() {
        let mut end = start;
        while end < order.len() && device[order[end]] == device[order[start]] {
            end += 1;
        }
        let same_serial = &order[start..end];
        for &i in same_serial {
            let r = &repairs[i];
            let Some(closed) = r.closed_at.filter(|_| completed(r)) else {
                continue;
            };
            let until = closed + window;
            // the serial's first order created after the close
            let from = same_serial.partition_point(|&j| repairs[j].created_at <= closed);
            let repeat = same_serial[from..]
                .iter()
                .any(|&j| j != i && repairs[j].created_at <= until);
            verdict[i] = if repeat {
                Ftf::Repeat
            } else if until > horizon {
                Ftf::Pending
            } else {
                Ftf::Fixed
            };
        }
        start = end;
    }
    verdict
}

/// Accumulates the repair orders of one group.
#[derive(Default)]
pub struct RepairGroup {
    repairs: u64,
    durations: Vec<f64>,
    hands_on: Vec<f64>,
    fixed: u64,
    repeat: u64,
    pending: u64,
}

fn hours(from: chrono::DateTime<Utc>, to: chrono::DateTime<Utc>) -> f64 {
    (to - from).num_milliseconds() as f64 / 3_600_000.0
}

fn mean(v: &[f64]) -> Option<f64> {
    (!v.is_empty()).then(|| v.iter().sum::<f64>() / v.len() as f64)
}

fn median(v: &mut [f64]) -> Option<f64> {
    if v.is_empty() {
        return None;
    }
    v.sort_by(f64::total_cmp);
    let n = v.len();
    Some(if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    })
}

impl RepairGroup {
    /// Adds one repair order; `false` when it is completed but its interval is invalid
    /// (closed before created), so it is left out of MTTR.
    pub fn add(&mut self, r: &RepairRecord, ftf: Ftf) -> bool {
        self.repairs += 1;
        match ftf {
            Ftf::Fixed => self.fixed += 1,
            Ftf::Repeat => self.repeat += 1,
            Ftf::Pending => self.pending += 1,
            Ftf::NotApplicable => {}
        }
        if r.completed != Some(true) {
            return true;
        }
        let Some(closed) = r.closed_at else {
            return false;
        };
        if closed < r.created_at {
            return false;
        }
        self.durations.push(hours(r.created_at, closed));
        if let Some(started) = r.started_at
            && started <= closed
        {
            self.hands_on.push(hours(started, closed));
        }
        true
    }

    /// The table row.
    pub fn row(
        mut self,
        group_label: String,
        group: Vec<GroupValue>,
        ftf_window_days: u32,
    ) -> MttrRow {
        let eligible = self.fixed + self.repeat;
        MttrRow {
            group,
            group_label,
            repairs: self.repairs,
            completed: self.durations.len() as u64,
            mttr_mean_hours: mean(&self.durations),
            mttr_median_hours: median(&mut self.durations),
            hands_on_n: self.hands_on.len() as u64,
            hands_on_mean_hours: mean(&self.hands_on),
            hands_on_median_hours: median(&mut self.hands_on),
            ftf_window_days,
            ftf_eligible: eligible,
            ftf_fixed: self.fixed,
            ftf_pending: self.pending,
            ftf_rate: (eligible > 0).then(|| self.fixed as f64 / eligible as f64),
        }
    }
}
