//! The pages planners, quality engineers and dispatchers look at, served by the binary
//! beside the API: rendered on the server (maud, checked at compile time), charts drawn
//! as SVG in Rust ([`charts`]), every asset embedded, a little hand-written script only
//! where a page must change live.

pub mod charts;
