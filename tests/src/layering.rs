//! The house rule that keeps the crates readable: a module's imports point one way. Two modules
//! that import each other (directly or round a circle) cannot be read, tested or moved apart, so
//! the unit stage reads every `crate::` path in agent/src and roles/src (outside comments and
//! test modules) and fails on any circle, naming each import in it with its file and line.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Module → (imported module → the first place it is imported).
pub type Graph = BTreeMap<String, BTreeMap<String, String>>;

/// The import graph of one crate's `src/`. `depth` 1: between top-level modules (a folder is one
/// module); 2: between files, a folder's files each being one (`report::metrics`).
pub fn import_graph(src: &Path, depth: usize) -> std::io::Result<Graph> {
    let mut graph = Graph::new();
    for file in rust_files(src)? {
        let rel = file.strip_prefix(src).unwrap_or(&file);
        let Some(module) = module_of(rel, depth) else {
            continue;
        };
        let text = std::fs::read_to_string(&file)?;
        // Test modules may reach anywhere; they sit at the end of a file by convention.
        let code = text.split("#[cfg(test)]").next().unwrap_or("");
        // Comments name modules too ("see `crate::x`"); only code counts.
        let code: String = code
            .lines()
            .map(|l| l.split("//").next().unwrap_or(""))
            .collect::<Vec<_>>()
            .join("\n");
        let parent = module.split("::").next().unwrap_or("").to_string();
        let in_folder = rel.components().count() == 2 && rel.file_name() != Some("mod.rs".as_ref());
        let node = graph.entry(module.clone()).or_default();
        let mut add = |line: usize, segments: Vec<String>| {
            let target = resolve(src, &segments, depth);
            if !target.is_empty() && target != module {
                node.entry(target)
                    .or_insert_with(|| format!("{}:{line}", rel.display()));
            }
        };
        for (line, segments) in crate_paths(&code, "crate::") {
            add(line, segments);
        }
        // `super::x` in a folder's file names a sibling.
        if in_folder && depth > 1 {
            for (line, mut segments) in crate_paths(&code, "super::") {
                segments.insert(0, parent.clone());
                add(line, segments);
            }
        }
    }
    Ok(graph)
}

fn rust_files(dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
        if path.is_dir() {
            if name != "tests" {
                out.extend(rust_files(&path)?);
            }
        } else if name.ends_with(".rs") && name != "tests.rs" {
            out.push(path);
        }
    }
    Ok(out)
}

/// `fetch/http.rs` → `fetch` at depth 1, `fetch::http` at 2; `mod.rs` is its folder; `lib.rs`
/// and `main.rs` are the crate itself, not a module.
fn module_of(rel: &Path, depth: usize) -> Option<String> {
    let mut parts: Vec<&str> = rel.iter().filter_map(|c| c.to_str()).collect();
    if parts.last() == Some(&"mod.rs") {
        parts.pop();
    }
    let parts: Vec<String> = parts
        .iter()
        .take(depth)
        .map(|p| p.strip_suffix(".rs").unwrap_or(p).to_string())
        .collect();
    let first = parts.first()?;
    (!matches!(first.as_str(), "lib" | "main")).then(|| parts.join("::"))
}

/// The module a path names, as deep as `depth` and as the files show: `report::Report` is the
/// module `report` (report/mod.rs), `report::metrics::render` is `report::metrics`.
fn resolve(src: &Path, segments: &[String], depth: usize) -> String {
    let mut dir = src.to_path_buf();
    let mut found = Vec::new();
    for seg in segments.iter().take(depth) {
        let is_module = dir.join(format!("{seg}.rs")).is_file() || dir.join(seg).is_dir();
        if !is_module {
            break;
        }
        found.push(seg.clone());
        dir = dir.join(seg);
    }
    found.join("::")
}

/// The paths a text names after `prefix` (`crate::` or `super::`), with their lines; a use tree
/// (`crate::{a, b::{c, d}}`, which rustfmt spreads over lines) gives each of its paths.
fn crate_paths(code: &str, prefix: &str) -> Vec<(usize, Vec<String>)> {
    let line_of = |at: usize| code[..at].matches('\n').count() + 1;
    let mut out = Vec::new();
    for (i, _) in code.match_indices(prefix) {
        // `crate::` inside `tend_roles::crate::` cannot occur; `super::` inside `super::super::`
        // is counted once, from its first.
        if prefix == "super::" && code[..i].ends_with("super::") {
            continue;
        }
        let start = i + prefix.len();
        let mut paths = Vec::new();
        use_tree(code, start, Vec::new(), &mut paths);
        for (at, path) in paths {
            out.push((line_of(at.max(i)), path));
        }
    }
    out
}

/// Parses one use tree at `at`: `a::b`, `a::{tree, tree}`, `self`, `*`; pushes each full path
/// with the offset it starts at. Returns the offset after the tree.
fn use_tree(
    code: &str,
    mut at: usize,
    base: Vec<String>,
    out: &mut Vec<(usize, Vec<String>)>,
) -> usize {
    let bytes = code.as_bytes();
    let skip_ws = |mut k: usize| {
        while k < bytes.len() && (bytes[k] as char).is_whitespace() {
            k += 1;
        }
        k
    };
    at = skip_ws(at);
    let mut path = base;
    let begin = at;
    loop {
        if at < bytes.len() && bytes[at] == b'{' {
            at += 1;
            loop {
                at = skip_ws(at);
                if at >= bytes.len() || bytes[at] == b'}' {
                    return at + 1;
                }
                at = use_tree(code, at, path.clone(), out);
                at = skip_ws(at);
                if at < bytes.len() && bytes[at] == b',' {
                    at += 1;
                }
            }
        }
        let len = code[at..]
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .count();
        if len == 0 {
            if code[at..].starts_with('*') {
                at += 1;
            }
            if !path.is_empty() {
                out.push((begin, path));
            }
            return at;
        }
        let ident = &code[at..at + len];
        at += len;
        if ident != "self" {
            path.push(ident.to_string());
        }
        if code[at..].starts_with("::") {
            at += 2;
            continue;
        }
        if !path.is_empty() {
            out.push((begin, path));
        }
        return at;
    }
}

/// The graph's circles: strongly connected components of more than one module (Tarjan).
pub fn circles(graph: &Graph) -> Vec<BTreeSet<String>> {
    struct Walk<'g> {
        graph: &'g Graph,
        index: BTreeMap<&'g str, usize>,
        low: BTreeMap<&'g str, usize>,
        stack: Vec<&'g str>,
        on_stack: BTreeSet<&'g str>,
        found: Vec<BTreeSet<String>>,
    }
    impl<'g> Walk<'g> {
        fn visit(&mut self, v: &'g str) {
            let i = self.index.len();
            self.index.insert(v, i);
            self.low.insert(v, i);
            self.stack.push(v);
            self.on_stack.insert(v);
            for w in self.graph.get(v).into_iter().flat_map(|e| e.keys()) {
                let w = w.as_str();
                if !self.index.contains_key(w) {
                    self.visit(w);
                    let lw = self.low[w];
                    let lv = self.low.get_mut(v).expect("visited");
                    *lv = (*lv).min(lw);
                } else if self.on_stack.contains(w) {
                    let iw = self.index[w];
                    let lv = self.low.get_mut(v).expect("visited");
                    *lv = (*lv).min(iw);
                }
            }
            if self.low[v] == self.index[v] {
                let mut component = BTreeSet::new();
                while let Some(w) = self.stack.pop() {
                    self.on_stack.remove(w);
                    component.insert(w.to_string());
                    if w == v {
                        break;
                    }
                }
                if component.len() > 1 {
                    self.found.push(component);
                }
            }
        }
    }
    let mut walk = Walk {
        graph,
        index: BTreeMap::new(),
        low: BTreeMap::new(),
        stack: Vec::new(),
        on_stack: BTreeSet::new(),
        found: Vec::new(),
    };
    for v in graph.keys() {
        if !walk.index.contains_key(v.as_str()) {
            walk.visit(v);
        }
    }
    walk.found
}

/// Each circle with the imports that close it, for a failure message.
pub fn describe(graph: &Graph, found: &[BTreeSet<String>]) -> String {
    let mut out = String::new();
    for component in found {
        out.push_str(&format!(
            "circle: {}\n",
            component.iter().cloned().collect::<Vec<_>>().join(", ")
        ));
        for a in component {
            for (b, at) in &graph[a] {
                if component.contains(b) {
                    out.push_str(&format!("  {a} -> {b} ({at})\n"));
                }
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn graph(edges: &[(&str, &str)]) -> Graph {
        let mut g = Graph::new();
        for (a, b) in edges {
            g.entry(a.to_string())
                .or_default()
                .insert(b.to_string(), "x.rs:1".into());
            g.entry(b.to_string()).or_default();
        }
        g
    }

    #[test]
    fn a_circle_of_three_is_found_and_a_chain_is_not() {
        let g = graph(&[("a", "b"), ("b", "c"), ("c", "a"), ("c", "d")]);
        let found = circles(&g);
        assert_eq!(found.len(), 1);
        assert_eq!(found[0].len(), 3);
        assert!(describe(&g, &found).contains("c -> a"));
        assert!(circles(&graph(&[("a", "b"), ("b", "c")])).is_empty());
    }

    #[test]
    fn grouped_uses_and_paths_name_their_modules() {
        let names = |code: &str| -> Vec<String> {
            crate_paths(code, "crate::")
                .into_iter()
                .map(|(_, m)| m.join("::"))
                .collect()
        };
        assert_eq!(
            names("use crate::{\n    report::{Report, metrics::render},\n    runstate, self,\n};"),
            vec!["report::Report", "report::metrics::render", "runstate"]
        );
        assert_eq!(
            crate_paths("a\nlet x = crate::window::Window::parse(w);", "crate::")[0].0,
            2
        );
    }

    /// The floors of agent/src, lowest first: a module may import from its own floor or below,
    /// never above. docs/architecture.md draws the same picture.
    const AGENT_FLOORS: &[&[&str]] = &[
        &["diag", "yaml", "exit", "clock", "journal", "logging", "net"],
        &["device"],
        &["source"],
        &["safety"],
        &["fleet"],
        &["report"],
        &["converge"],
        &["revert"],
        &["run"],
        &["gate", "inspect", "plan"],
        &["cli"],
    ];

    fn workspace() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
    }

    /// The agent once had ten modules in one circle (apply, config, guard, inventory, metrics,
    /// reboot, report, revert, runstate, status), and roles had host ⇄ platform.
    #[test]
    fn agent_and_roles_imports_have_no_circle() {
        for krate in ["agent/src", "roles/src"] {
            for depth in [1, 2] {
                let g = import_graph(&workspace().join(krate), depth).unwrap();
                assert!(g.len() > 10, "{krate}: {} modules read", g.len());
                let found = circles(&g);
                assert!(
                    found.is_empty(),
                    "{krate} (depth {depth}):\n{}",
                    describe(&g, &found)
                );
            }
        }
    }

    /// The first folder layout had `device/config.rs` importing fetch's defaults from `source/`
    /// and `fleet/validate.rs` importing prune's settings from `converge/`: arrows upward.
    #[test]
    fn agent_folders_import_only_from_their_floor_or_below() {
        let g = import_graph(&workspace().join("agent/src"), 1).unwrap();
        let floor = |m: &str| AGENT_FLOORS.iter().position(|f| f.contains(&m));
        let mut wrong = Vec::new();
        for (module, imports) in &g {
            let Some(own) = floor(module) else {
                wrong.push(format!("{module} is on no floor: add it to AGENT_FLOORS (tests/src/layering.rs) and docs/architecture.md"));
                continue;
            };
            for (target, at) in imports {
                if floor(target).is_some_and(|t| t > own) {
                    wrong.push(format!(
                        "{module} -> {target} ({at}) imports from a higher floor"
                    ));
                }
            }
        }
        assert!(wrong.is_empty(), "{}", wrong.join("\n"));
    }
}
