//! Terminal summary and the HTML report.
