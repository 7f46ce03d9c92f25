//! The plan as text (a terminal, a CI log), JSON (for scripts; schema in docs/fleet-workflow.md),
//! Markdown (a pull request comment) and GitHub workflow commands (an annotation on the file and
//! line of each device that does not render).

use std::fmt::Write as _;
use std::path::Path;

use serde_json::{json, Value};

use crate::diag::{github_annotation, Diagnostic};
use crate::plan::changes::count;
use crate::plan::group::{Group, Outcome};
use crate::plan::Plan;

/// The `schema` field of the JSON output; raised only when a field changes meaning or goes away.
pub const JSON_SCHEMA: u64 = 1;
/// Devices named per invalid group in the Markdown comment; the rest are counted.
const MARKDOWN_DEVICES: usize = 20;

fn short(id: &str) -> &str {
    id.get(..12).unwrap_or(id)
}

/// `430 devices: 412 changed, 1 invalid, 12 new, 2 removed, 3 unchanged`.
pub fn summary(plan: &Plan) -> String {
    let mut parts = Vec::new();
    for (word, n) in tallies(plan) {
        if n > 0 {
            parts.push(format!("{n} {word}"));
        }
    }
    format!("{}: {}", count(plan.devices(), "device"), parts.join(", "))
}

fn tallies(plan: &Plan) -> [(&'static str, usize); 6] {
    let n = |w: &str| plan.count(|o| o.word() == w);
    [
        ("changed", n("changed")),
        ("invalid", n("invalid")),
        ("fixed", n("fixed")),
        ("new", n("new")),
        ("removed", n("removed")),
        ("unchanged", n("unchanged")),
    ]
}

/// The devices that do not render at HEAD, each with its diagnostics.
fn invalid(plan: &Plan) -> impl Iterator<Item = (&String, &Vec<Diagnostic>)> {
    plan.groups.iter().flat_map(|g| match &g.outcome {
        Outcome::Invalid(ds) => g.devices.iter().map(|d| (d, ds)).collect::<Vec<_>>(),
        _ => Vec::new(),
    })
}

pub fn text(plan: &Plan) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "tend plan {}..{}: {}",
        short(&plan.base),
        short(&plan.head),
        summary(plan)
    );
    for g in &plan.groups {
        let lines = g.outcome.lines();
        if let [one] = lines.as_slice() {
            let _ = writeln!(out, "{}: {one}", g.size());
        } else {
            let _ = writeln!(out, "{}:", g.size());
            for l in lines {
                let _ = writeln!(out, "  {l}");
            }
        }
    }
    for d in &plan.repo_errors.0 {
        let _ = writeln!(out, "error: {d}");
    }
    let mut first = true;
    for (id, ds) in invalid(plan) {
        if first {
            let _ = writeln!(out, "could not render at HEAD:");
            first = false;
        }
        for d in ds {
            let _ = writeln!(out, "  {id}: {d}");
        }
    }
    out
}

fn group_json(g: &Group) -> Value {
    let mut v = json!({
        "outcome": g.outcome.word(),
        "count": g.devices.len(),
        "devices": g.devices,
        "lines": g.outcome.lines(),
    });
    match &g.outcome {
        Outcome::Changed(cs) => v["changes"] = json!(cs),
        Outcome::Invalid(ds) => v["errors"] = json!(ds),
        _ => {}
    }
    v
}

pub fn json(plan: &Plan) -> String {
    let mut summary = serde_json::Map::new();
    summary.insert("devices".into(), json!(plan.devices()));
    for (word, n) in tallies(plan) {
        summary.insert(word.into(), json!(n));
    }
    let doc = json!({
        "schema": JSON_SCHEMA,
        "base": plan.base,
        "head": plan.head,
        "summary": summary,
        "groups": plan.groups.iter().map(group_json).collect::<Vec<_>>(),
        "errors": plan.repo_errors.0,
    });
    serde_json::to_string_pretty(&doc).unwrap_or_default() + "\n"
}

/// Text for a table cell or list item: `|` would end the cell, a line break the row, and
/// Markdown's own characters would format what is a path or a message.
fn cell(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '\\' | '`' | '*' | '_' | '[' | ']' | '<' | '>' | '|' | '#' | '~' => {
                out.push('\\');
                out.push(c);
            }
            '\n' | '\r' => out.push(' '),
            c => out.push(c),
        }
    }
    out
}

pub fn markdown(plan: &Plan) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "### tend plan {}..{}\n\n{}\n",
        short(&plan.base),
        short(&plan.head),
        cell(&summary(plan))
    );
    if !plan.groups.is_empty() {
        let _ = writeln!(out, "| devices | what changes |\n|---:|---|");
        for g in &plan.groups {
            let lines: Vec<String> = g.outcome.lines().iter().map(|l| cell(l)).collect();
            let _ = writeln!(out, "| {} | {} |", g.devices.len(), lines.join("<br>"));
        }
        out.push('\n');
    }
    if !plan.repo_errors.is_empty() || invalid(plan).next().is_some() {
        let _ = writeln!(out, "#### Could not render at HEAD\n");
        for d in &plan.repo_errors.0 {
            let _ = writeln!(out, "- {}", cell(&d.to_string()));
        }
        for g in &plan.groups {
            let Outcome::Invalid(ds) = &g.outcome else {
                continue;
            };
            let why: Vec<String> = ds.iter().map(|d| cell(&d.to_string())).collect();
            let mut names: Vec<String> = g
                .devices
                .iter()
                .take(MARKDOWN_DEVICES)
                .map(|d| cell(d))
                .collect();
            if g.devices.len() > MARKDOWN_DEVICES {
                names.push(format!("and {} more", g.devices.len() - MARKDOWN_DEVICES));
            }
            let _ = writeln!(out, "- {}: {}", names.join(", "), why.join("; "));
        }
        out.push('\n');
    }
    out
}

/// One `::error` per problem of HEAD at its file and line (once, however many devices share
/// it), then the summary.
pub fn github(plan: &Plan, dir: &Path) -> String {
    let mut out = String::new();
    let mut seen: Vec<&Diagnostic> = Vec::new();
    let all = plan
        .repo_errors
        .0
        .iter()
        .chain(invalid(plan).flat_map(|(_, ds)| ds.iter()));
    for d in all {
        if !seen.contains(&d) {
            seen.push(d);
            let _ = writeln!(out, "{}", github_annotation(dir, d, "tend plan"));
        }
    }
    let _ = writeln!(out, "tend plan: {}", summary(plan));
    out
}
