//! The check that a crate's modules import each other without cycles.
//! Test-only, and shared: `switchyard-control` includes this same file
//! (`#[path]`), so each crate's `cargo test` checks its own `src/`.
//!
//! A top-level module (`src/x.rs` or `src/x/`) uses another when any of its
//! files names `crate::other` (in a path or a `use crate::{..}` group), or,
//! in a top-level file, `super::other`. Submodules count as their parent.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

type Graph = BTreeMap<String, BTreeSet<String>>;

/// Every module of `src` and the modules it uses.
fn graph(src: &Path) -> Graph {
    let mut sources: BTreeMap<String, String> = BTreeMap::new();
    let entries = std::fs::read_dir(src).expect("src/ is readable");
    for entry in entries.flatten() {
        let path = entry.path();
        let Some(name) = path.file_stem().and_then(|n| n.to_str()) else {
            continue;
        };
        if matches!(name, "lib" | "main") {
            continue;
        }
        let mut text = String::new();
        read_all(&path, &mut text);
        sources.entry(name.to_owned()).or_default().push_str(&text);
    }
    let names: BTreeSet<String> = sources.keys().cloned().collect();
    sources
        .iter()
        .map(|(module, text)| {
            let used = uses(text)
                .into_iter()
                .filter(|used| used != module && names.contains(used))
                .collect();
            (module.clone(), used)
        })
        .collect()
}

/// The text of `path`, or of every `.rs` file below it, with `super::`
/// (meaning the crate root only in a top-level file) rewritten.
fn read_all(path: &Path, text: &mut String) {
    if path.is_dir() {
        for entry in std::fs::read_dir(path).expect("readable").flatten() {
            read_all(&entry.path(), text);
        }
        // Inside a directory module, `super::` is a sibling or the parent.
        return;
    }
    if path.extension().is_some_and(|e| e == "rs") {
        let file = std::fs::read_to_string(path).expect("readable");
        let top_level = path
            .parent()
            .and_then(Path::file_name)
            .is_some_and(|dir| dir == "src");
        text.push_str(&if top_level {
            file.replace("super::", "crate::")
        } else {
            file.replace("super::", "")
        });
        text.push('\n');
    }
}

/// The first segment after each `crate::` in `text` (comments skipped),
/// including each item of a `crate::{a, b::c}` group.
fn uses(text: &str) -> BTreeSet<String> {
    let code: String = text
        .lines()
        .map(|line| line.split("//").next().unwrap_or(""))
        .collect::<Vec<_>>()
        .join("\n");
    let mut found = BTreeSet::new();
    for (at, _) in code.match_indices("crate::") {
        let rest = &code[at + "crate::".len()..];
        match rest.strip_prefix('{') {
            Some(group) => {
                let mut depth = 0usize;
                let mut item_start = true;
                for (i, c) in group.char_indices() {
                    match c {
                        '{' => depth += 1,
                        '}' if depth == 0 => break,
                        '}' => depth -= 1,
                        ',' if depth == 0 => item_start = true,
                        c if item_start && (c.is_alphanumeric() || c == '_') => {
                            item_start = false;
                            found.insert(identifier(&group[i..]));
                        }
                        _ => {}
                    }
                }
            }
            None => {
                found.insert(identifier(rest));
            }
        }
    }
    found
}

fn identifier(text: &str) -> String {
    text.chars()
        .take_while(|c| c.is_alphanumeric() || *c == '_')
        .collect()
}

/// A cycle of `graph`, as the modules along it, if there is one.
fn cycle(graph: &Graph) -> Option<Vec<String>> {
    fn visit(
        module: &str,
        graph: &Graph,
        path: &mut Vec<String>,
        done: &mut BTreeSet<String>,
    ) -> Option<Vec<String>> {
        if let Some(start) = path.iter().position(|m| m == module) {
            let mut found = path[start..].to_vec();
            found.push(module.to_owned());
            return Some(found);
        }
        if done.contains(module) {
            return None;
        }
        path.push(module.to_owned());
        for next in graph.get(module).into_iter().flatten() {
            if let Some(found) = visit(next, graph, path, done) {
                return Some(found);
            }
        }
        path.pop();
        done.insert(module.to_owned());
        None
    }
    let mut done = BTreeSet::new();
    graph
        .keys()
        .find_map(|module| visit(module, graph, &mut Vec::new(), &mut done))
}

#[test]
fn modules_import_each_other_without_cycles() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let graph = graph(&src);
    assert!(graph.len() > 5, "modules not found in {}", src.display());
    if let Some(found) = cycle(&graph) {
        panic!(
            "module import cycle in {}: {}",
            src.display(),
            found.join(" → ")
        );
    }
}

#[test]
fn finds_uses_and_cycles() {
    let used = uses("use crate::a::X;\nuse crate::{b::{self, Y}, c};\n// crate::d\nsuper::e();");
    assert_eq!(used, ["a", "b", "c"].map(String::from).into());
    let mut graph = Graph::new();
    graph.insert("a".into(), ["b".into()].into());
    graph.insert("b".into(), ["c".into()].into());
    graph.insert("c".into(), BTreeSet::new());
    assert_eq!(cycle(&graph), None);
    graph.insert("c".into(), ["a".into()].into());
    assert_eq!(
        cycle(&graph),
        Some(["a", "b", "c", "a"].map(String::from).to_vec())
    );
}
