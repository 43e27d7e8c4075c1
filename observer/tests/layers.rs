//! The library's modules point one way: kernel → decode → event → explain → sinks. This reads
//! the `crate::` paths of every source file (test code left out), builds the graph of the
//! top-level modules and fails on any circle, and on the output model (`model`) or the shared
//! helpers below it depending on anything above them.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// The top-level module a source file belongs to (`src/conflict/rules.rs` → `conflict`).
fn module_of(rel: &Path) -> String {
    let first = rel
        .components()
        .next()
        .unwrap()
        .as_os_str()
        .to_string_lossy();
    first.trim_end_matches(".rs").to_string()
}

/// The file without its test code: `*_tests.rs` and `tests.rs` files, and what follows a
/// `#[cfg(test)]` attribute at the start of a line (tests sit at the end of a file), and
/// comment lines.
fn non_test(rel: &Path, text: &str) -> String {
    let name = rel.file_name().unwrap().to_string_lossy();
    if name.ends_with("_tests.rs") || name == "tests.rs" {
        return String::new();
    }
    let code = match text.find("\n#[cfg(test)]") {
        Some(i) => &text[..i],
        None => text,
    };
    // Comments may name any module (a doc saying who fills a type is no dependency).
    code.lines()
        .filter(|l| !l.trim_start().starts_with("//"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// The identifier `text` starts with.
fn ident(text: &str) -> String {
    text.chars()
        .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
        .collect()
}

fn uses(text: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for (i, _) in text.match_indices("crate::") {
        let rest = &text[i + "crate::".len()..];
        out.insert(ident(rest));
        // `use crate::{a, b::c}`
        if let Some(list) = rest.strip_prefix('{') {
            let list = &list[..list.find('}').unwrap_or(list.len())];
            out.extend(list.split(',').map(|item| ident(item.trim())));
        }
    }
    out.remove("");
    out
}

fn graph() -> BTreeMap<String, BTreeSet<String>> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut graph: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let mut stack = vec![src.clone()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
                continue;
            }
            if path.extension().is_none_or(|e| e != "rs") {
                continue;
            }
            let rel = path.strip_prefix(&src).unwrap();
            let module = module_of(rel);
            if module == "lib" || module == "main" {
                continue;
            }
            let text = non_test(rel, &std::fs::read_to_string(&path).unwrap());
            let deps = graph.entry(module.clone()).or_default();
            for used in uses(&text) {
                if used != module {
                    deps.insert(used);
                }
            }
        }
    }
    // Items of lib.rs itself (`crate::page_size`) are not modules.
    let modules: BTreeSet<String> = graph.keys().cloned().collect();
    for deps in graph.values_mut() {
        deps.retain(|d| modules.contains(d));
    }
    graph
}

/// A circle through `start`, if there is one.
fn circle(graph: &BTreeMap<String, BTreeSet<String>>, start: &str) -> Option<Vec<String>> {
    fn walk(
        g: &BTreeMap<String, BTreeSet<String>>,
        start: &str,
        at: &str,
        path: &mut Vec<String>,
        seen: &mut BTreeSet<String>,
    ) -> bool {
        for next in &g[at] {
            if next == start {
                path.push(next.clone());
                return true;
            }
            if seen.insert(next.clone()) {
                path.push(next.clone());
                if walk(g, start, next, path, seen) {
                    return true;
                }
                path.pop();
            }
        }
        false
    }
    let mut path = vec![start.to_string()];
    walk(graph, start, start, &mut path, &mut BTreeSet::new()).then_some(path)
}

#[test]
fn no_module_depends_on_itself_through_others() {
    let g = graph();
    let circles: Vec<String> = g
        .keys()
        .filter_map(|m| circle(&g, m))
        .map(|c| c.join(" → "))
        .collect();
    assert!(circles.is_empty(), "circles: {circles:#?}");
}

#[test]
fn the_model_and_the_shared_helpers_sit_below_everything() {
    let g = graph();
    // What each bottom module may use.
    let allowed: [(&str, &[&str]); 7] = [
        ("termsafe", &[]),
        ("model", &["sockopt"]),
        ("sockopt", &[]),
        ("netns", &[]),
        ("errno", &[]),
        ("timefmt", &[]),
        ("kernel", &["btf", "offsets"]),
    ];
    for (module, may) in allowed {
        let extra: Vec<&String> = g[module]
            .iter()
            .filter(|d| !may.contains(&d.as_str()))
            .collect();
        assert!(extra.is_empty(), "{module} uses {extra:?}");
    }
}

#[test]
fn the_checks_can_fail() {
    let mut g: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    g.insert("a".into(), ["b".to_string()].into());
    g.insert("b".into(), ["a".to_string()].into());
    assert_eq!(circle(&g, "a").unwrap(), ["a", "b", "a"]);
    assert_eq!(
        uses("use crate::{model::X, sink};\nlet x = crate::errno::name(1);"),
        ["errno", "model", "sink"].map(String::from).into()
    );
}
