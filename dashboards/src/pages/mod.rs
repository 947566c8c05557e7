//! One module per page; each exposes its handlers.

pub mod device;
pub mod dispatch;
pub mod fleet;
pub mod operations;
pub mod planner;
pub mod quality;
pub mod sign_in;
