//! The house rule that keeps the crates readable: a module's imports point one way. Two modules
//! that import each other (directly or round a circle) cannot be read, tested or moved apart, so
//! the unit stage reads every `crate::` path in agent/src and roles/src (outside comments and
//! test modules) and fails on any circle, naming each import in it with its file and line.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Top-level module → (imported top-level module → the first place it is imported).
pub type Graph = BTreeMap<String, BTreeMap<String, String>>;

/// The import graph of one crate's `src/`, between its top-level modules.
pub fn import_graph(src: &Path) -> std::io::Result<Graph> {
    let mut graph = Graph::new();
    for file in rust_files(src)? {
        let rel = file.strip_prefix(src).unwrap_or(&file);
        let Some(module) = top_module(rel) else {
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
        let node = graph.entry(module.clone()).or_default();
        for (line, target) in crate_paths(&code) {
            if target != module {
                node.entry(target)
                    .or_insert_with(|| format!("{}:{line}", rel.display()));
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

/// `fetch/http.rs` → `fetch`; `lib.rs` and `main.rs` are the crate itself, not a module.
fn top_module(rel: &Path) -> Option<String> {
    let first = rel.components().next()?.as_os_str().to_str()?;
    let name = first.strip_suffix(".rs").unwrap_or(first);
    (!matches!(name, "lib" | "main")).then(|| name.to_string())
}

/// The modules a text names, with their lines: `crate::a::…`, and each first name of
/// `use crate::{a, b::{c, d}}` (which rustfmt spreads over lines).
fn crate_paths(code: &str) -> Vec<(usize, String)> {
    let ident = |s: &str| -> String {
        s.chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect()
    };
    let line_of = |at: usize| code[..at].matches('\n').count() + 1;
    let mut out = Vec::new();
    for (i, _) in code.match_indices("crate::") {
        let start = i + "crate::".len();
        let rest = &code[start..];
        if !rest.starts_with('{') {
            let name = ident(rest);
            if !name.is_empty() {
                out.push((line_of(i), name));
            }
            continue;
        }
        // The names right inside the outer braces: after `{` or a `,` at depth one.
        let mut depth = 0;
        let mut expect_name = false;
        for (j, c) in rest.char_indices() {
            match c {
                '{' => {
                    depth += 1;
                    expect_name = depth == 1;
                }
                '}' => {
                    depth -= 1;
                    if depth == 0 {
                        break;
                    }
                }
                ',' if depth == 1 => expect_name = true,
                c if expect_name && !c.is_whitespace() => {
                    expect_name = false;
                    let name = ident(&rest[j..]);
                    if !name.is_empty() && name != "self" {
                        out.push((line_of(start + j), name));
                    }
                }
                _ => {}
            }
        }
    }
    out
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
        let names =
            |code: &str| -> Vec<String> { crate_paths(code).into_iter().map(|(_, m)| m).collect() };
        assert_eq!(
            names("use crate::{\n    report::{Report, Signer},\n    runstate, self,\n};"),
            vec!["report", "runstate"]
        );
        assert_eq!(
            crate_paths("a\nlet x = crate::window::Window::parse(w);")[0].0,
            2
        );
    }

    /// The agent once had ten modules in one circle (apply, config, guard, inventory, metrics,
    /// reboot, report, revert, runstate, status), and roles had host ⇄ platform.
    #[test]
    fn agent_and_roles_imports_have_no_circle() {
        let workspace = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        for krate in ["agent/src", "roles/src"] {
            let g = import_graph(&workspace.join(krate)).unwrap();
            assert!(g.len() > 10, "{krate}: {} modules read", g.len());
            let found = circles(&g);
            assert!(found.is_empty(), "{krate}:\n{}", describe(&g, &found));
        }
    }
}
