//! The process's one clock (issue 23).
//!
//! Every "now" of a running process (rules, SLA timers, the analytics worker's schedule,
//! retention, silent-device detection, prediction horizons, the simulator) is read from
//! one [`Clock`]. `serve` runs on the wall clock. `demo --speed N` runs on a simulated
//! clock that starts at a chosen instant and advances N times faster than the wall
//! clock, so that device timestamps, runtime hours, wear, SLA deadlines and statistics
//! stay consistent with each other at any speed.
//!
//! A clock is cheap to copy and needs no lock: a simulated clock is an origin (a wall
//! instant, read from the monotonic clock, and the simulated instant it stands for) and a
//! speed.

use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use serde::Serialize;

/// Which clock a process runs on.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub enum Clock {
    /// The system's wall clock.
    #[default]
    Wall,
    /// A clock that stands at one instant (loading a history that ends there, tests).
    Fixed(DateTime<Utc>),
    /// Simulated time: `start` at the wall instant `origin`, `speed` simulated seconds per
    /// wall second after it.
    Simulated {
        origin: Instant,
        start: DateTime<Utc>,
        speed: f64,
    },
}

/// What `/health` says about the clock.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ClockStatus {
    /// `wall` or `simulated`.
    pub kind: &'static str,
    /// The clock's current time.
    pub now: DateTime<Utc>,
    /// Simulated seconds per wall second (1 on the wall clock).
    pub speed: f64,
}

impl Clock {
    /// A simulated clock that reads `start` now and runs `speed` times faster than the
    /// wall clock. `speed` must be a positive, finite number.
    pub fn simulated(start: DateTime<Utc>, speed: f64) -> Result<Clock, String> {
        if !(speed.is_finite() && speed > 0.0) {
            return Err(format!("clock speed {speed} must be a positive number"));
        }
        Ok(Clock::Simulated {
            origin: Instant::now(),
            start,
            speed,
        })
    }

    /// The clock's current time.
    pub fn now(&self) -> DateTime<Utc> {
        match *self {
            Clock::Wall => Utc::now(),
            Clock::Fixed(t) => t,
            Clock::Simulated {
                origin,
                start,
                speed,
            } => start + sim_elapsed(origin.elapsed(), speed),
        }
    }

    /// Simulated seconds per wall second (1 on the wall clock).
    pub fn speed(&self) -> f64 {
        match *self {
            Clock::Wall => 1.0,
            Clock::Fixed(_) => 0.0,
            Clock::Simulated { speed, .. } => speed,
        }
    }

    /// Whether this is not the wall clock.
    pub fn is_simulated(&self) -> bool {
        !matches!(self, Clock::Wall)
    }

    /// How long the wall clock takes for `d` of this clock's time to pass (at least 1 ms
    /// for a positive `d`, so that a fast clock never turns a schedule into a busy loop).
    pub fn wall_duration(&self, d: Duration) -> Duration {
        match *self {
            Clock::Wall | Clock::Fixed(_) => d,
            Clock::Simulated { speed, .. } => {
                if d.is_zero() {
                    return d;
                }
                Duration::from_secs_f64(d.as_secs_f64() / speed).max(Duration::from_millis(1))
            }
        }
    }

    /// What `/health` shows.
    pub fn status(&self) -> ClockStatus {
        ClockStatus {
            kind: match self {
                Clock::Wall => "wall",
                Clock::Fixed(_) => "fixed",
                Clock::Simulated { .. } => "simulated",
            },
            now: self.now(),
            speed: self.speed(),
        }
    }
}

fn sim_elapsed(wall: Duration, speed: f64) -> chrono::Duration {
    let ms = (wall.as_secs_f64() * speed * 1000.0).round();
    // beyond about 292 million years the clock stands still rather than wrapping
    chrono::Duration::milliseconds(if ms.is_finite() {
        ms as i64
    } else {
        i64::MAX / 4
    })
    .min(chrono::Duration::days(100_000 * 365))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_simulated_clock_starts_at_its_start_and_runs_at_its_speed() {
        let start = DateTime::parse_from_rfc3339("2026-01-01T00:00:00Z")
            .expect("a time")
            .with_timezone(&Utc);
        let c = Clock::simulated(start, 3600.0).expect("a clock");
        let t0 = c.now();
        assert!(
            t0 >= start && t0 < start + chrono::Duration::seconds(60),
            "{t0}"
        );
        std::thread::sleep(Duration::from_millis(50));
        let t1 = c.now();
        // 50 ms of wall time at 3600x is at least 180 s
        assert!(t1 - t0 >= chrono::Duration::seconds(180), "{t0} {t1}");
        assert_eq!(
            c.wall_duration(Duration::from_secs(3600)),
            Duration::from_secs(1)
        );
        assert_eq!(
            c.wall_duration(Duration::from_secs(1)),
            Duration::from_millis(1)
        );
        assert_eq!(c.status().kind, "simulated");
        assert!(Clock::simulated(start, 0.0).is_err());
        assert!(Clock::simulated(start, f64::NAN).is_err());
    }

    #[test]
    fn the_wall_clock_is_the_system_time() {
        let c = Clock::Wall;
        let d = (c.now() - Utc::now()).num_milliseconds().abs();
        assert!(d < 1000, "{d}");
        assert_eq!(
            c.wall_duration(Duration::from_secs(5)),
            Duration::from_secs(5)
        );
        assert_eq!(c.status().kind, "wall");
    }
}
