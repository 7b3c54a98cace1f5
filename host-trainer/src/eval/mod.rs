//! Evaluation: metrics, threshold selection, reports.
pub mod evaluate;
pub mod metrics;
pub mod report;
