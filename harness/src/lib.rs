//! # harness: validated FLOP and throughput reports for every backend
//!
//! (manual below is completed as the modules land)

pub mod ceilings;
pub mod error;
pub mod machine;
pub mod measure;
pub mod ops;
pub mod problem;
pub mod results;
pub mod timing;
