//! # lenet: LeNet-5 on Fashion-MNIST with any backend
//!
//! (manual written below)

pub mod checkpoint;
pub mod cli;
pub mod data;
pub mod error;
pub mod model;
pub mod plot;
pub mod profile;
pub mod report;
pub mod train;

pub use error::{LenetError, Result};
