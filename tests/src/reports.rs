//! Reading a run's report.json in tests: which resources ended how.

use serde_json::Value;

/// The resources of `report` whose outcome is `outcome` ("changed", "failed", "skipped" …);
/// none when the report lists no resources.
pub fn with_outcome<'a>(report: &'a Value, outcome: &str) -> Vec<&'a Value> {
    report["resources"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|r| r["outcome"] == outcome)
        .collect()
}

/// "kind id" of every resource the report says changed.
pub fn changed(report: &Value) -> Vec<String> {
    with_outcome(report, "changed")
        .into_iter()
        .map(|r| {
            format!(
                "{} {}",
                r["kind"].as_str().unwrap_or(""),
                r["id"].as_str().unwrap_or("")
            )
        })
        .collect()
}
