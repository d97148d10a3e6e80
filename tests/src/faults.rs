//! One line per fault a test injected, with what was expected and what was measured, in a
//! shape `bench/faults` gathers into its table (`fault | case | expected | measured`).

/// Prints the fault suite's row for `case`.
pub fn row(case: &str, expected: &str, measured: &str) {
    // Through the test harness's captured stdout: shown with --nocapture and on failure.
    println!("fault | {case} | {expected} | {measured}");
}
