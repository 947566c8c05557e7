//! SVG charts drawn in Rust: every chart is a function of its data.
