//! Evaluation: metrics, threshold selection, reports.
pub mod evaluate;
pub mod metrics;
pub mod plots;
pub mod report;
