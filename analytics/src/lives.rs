//! Component lives (the rules live in [`fleetpulse_domain::lives`], where the store
//! builds them too) and their Weibull lives.

pub use fleetpulse_domain::lives::*;

use crate::weibull::Life;

/// The life of `life` for a Weibull fit of `mode` (`None`: of the component, every mode a
/// failure). A failure of another mode is a suspension of this one (competing modes).
pub fn for_mode(life: &ComponentLife, mode: Option<&str>) -> Life {
    Life {
        entry: life.entry,
        exit: life.exit,
        failed: life.fails_in(mode),
    }
}
