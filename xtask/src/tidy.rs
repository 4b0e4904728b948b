//! `cargo xtask tidy`: the code-shape rules a reviewer would otherwise check by hand.
//!
//! - **No import cycles between modules of one crate.** A module may use its parent and
//!   its own children; two siblings (modules under the same parent) may not each use the
//!   other, directly or through other siblings' subtrees. References are read from
//!   `crate::…`, `super::…` and `self::…` paths outside comments.
//! - **Small files.** A source file over [`MAX_LINES`] lines must say why in its module
//!   documentation, with a line starting `//! Long file:`.
//! - **Docs about the present.** No source or document refers to numbered defects or
//!   issues, or to sessions of past work: each reason is stated where it applies.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};

/// Lines a source file may have before its module documentation must say why.
pub const MAX_LINES: usize = 700;

/// Words that point at the history of the work instead of the code as it is.
const HISTORY_WORDS: &[&str] = &["defect", "issue", "session"];

/// Runs every rule over the workspace at `root` and fails listing what broke one.
pub fn run(root: &Path) -> Result<()> {
    let mut problems = Vec::new();
    for krate in crate_sources(root)? {
        let modules = read_modules(&krate)?;
        problems.extend(import_cycles(&modules).into_iter().map(|cycle| {
            format!(
                "{}: modules use each other: {}",
                krate.strip_prefix(root).unwrap_or(&krate).display(),
                cycle.join(" -> ")
            )
        }));
        for file in rust_files(&krate)? {
            let text = fs::read_to_string(&file)?;
            let lines = text.lines().count();
            if lines > MAX_LINES && !text.lines().any(|l| l.starts_with("//! Long file:")) {
                let shown = file.strip_prefix(root).unwrap_or(&file);
                problems.push(format!(
                    "{}: {lines} lines (over {MAX_LINES}) and no `//! Long file:` line saying why",
                    shown.display()
                ));
            }
        }
    }
    for file in history_checked_files(root)? {
        let text =
            fs::read_to_string(&file).with_context(|| format!("reading {}", file.display()))?;
        for (number, line) in text.lines().enumerate() {
            if let Some(word) = history_reference(line) {
                let shown = file.strip_prefix(root).unwrap_or(&file);
                problems.push(format!(
                    "{}:{}: refers to a numbered {word}; state the reason in place",
                    shown.display(),
                    number + 1
                ));
            }
        }
    }
    if !problems.is_empty() {
        bail!("{} problem(s):\n{}", problems.len(), problems.join("\n"));
    }
    eprintln!("xtask: no import cycles, no long files without a reason, no history references");
    Ok(())
}

/// The source folders of the workspace's crates: `crates/*/{src,tests,benches,examples}`
/// and `xtask/src`. Each integration-test or bench folder is a crate of its own.
fn crate_sources(root: &Path) -> Result<Vec<PathBuf>> {
    let mut sources = vec![root.join("xtask/src")];
    for entry in fs::read_dir(root.join("crates")).context("listing crates/")? {
        let dir = entry?.path();
        sources.push(dir.join("src"));
        for kind in ["tests", "benches", "examples"] {
            let Ok(entries) = fs::read_dir(dir.join(kind)) else {
                continue;
            };
            for entry in entries {
                let path = entry?.path();
                if path.is_dir() {
                    sources.push(path);
                }
            }
        }
    }
    sources.retain(|dir| dir.is_dir());
    sources.sort();
    Ok(sources)
}

/// Every `.rs` file under `dir`.
fn rust_files(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut files = Vec::new();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(folder) = pending.pop() {
        for entry in fs::read_dir(&folder)? {
            let path = entry?.path();
            if path.is_dir() {
                pending.push(path);
            } else if path.extension().is_some_and(|e| e == "rs") {
                files.push(path);
            }
        }
    }
    files.sort();
    Ok(files)
}

/// The source of every module under `dir`, keyed by its module path (`""` for the
/// crate root, `"a::b"` for `a/b.rs` or `a/b/mod.rs`).
fn read_modules(dir: &Path) -> Result<BTreeMap<String, String>> {
    let mut modules = BTreeMap::new();
    for path in rust_files(dir)? {
        let relative = path.strip_prefix(dir).unwrap_or(&path);
        let text =
            fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
        modules.insert(module_path(relative), text);
    }
    Ok(modules)
}

/// `a/b.rs` and `a/b/mod.rs` → `a::b`; `lib.rs`, `main.rs` → the root, `""`.
fn module_path(relative: &Path) -> String {
    let mut parts: Vec<String> = relative
        .iter()
        .map(|p| p.to_string_lossy().trim_end_matches(".rs").to_owned())
        .collect();
    if matches!(
        parts.last().map(String::as_str),
        Some("mod" | "lib" | "main")
    ) {
        parts.pop();
    }
    parts.join("::")
}

/// The module paths `text` (the source of `module`) refers to, resolved to absolute
/// paths. Comment lines are skipped; a path's last segments may name items rather than
/// modules, which [`owning_module`] sorts out.
fn references(module: &str, text: &str) -> Vec<String> {
    let mut found = Vec::new();
    for line in text.lines() {
        let code = line.trim_start();
        if code.starts_with("//") {
            continue;
        }
        for (start, _) in code.match_indices("::") {
            // The segment before `::` must be a path root: `crate`, `super` or `self`,
            // and must not itself follow `::` (as in `sms_core::self`).
            let before = &code[..start];
            let root_len = before
                .chars()
                .rev()
                .take_while(|c| c.is_alphanumeric() || *c == '_')
                .count();
            let root = &before[before.len() - root_len..];
            if !matches!(root, "crate" | "super" | "self")
                || before[..before.len() - root_len].ends_with("::")
            {
                continue;
            }
            if root == "super" && before[..before.len() - root_len].ends_with("super::") {
                continue;
            }
            let base = match resolve_root(module, &code[..start]) {
                Some(base) => base,
                None => continue,
            };
            for tail in path_tails(&code[start + 2..]) {
                let full = if base.is_empty() {
                    tail
                } else if tail.is_empty() {
                    base.clone()
                } else {
                    format!("{base}::{tail}")
                };
                found.push(full);
            }
        }
    }
    found
}

/// The absolute module that a run of `crate::`, `super::` and `self::` segments ending
/// `prefix` stands for, seen from `module`.
fn resolve_root(module: &str, prefix: &str) -> Option<String> {
    // Collect the chain of roots: e.g. `super::super` before the final `::`.
    let mut chain: Vec<&str> = Vec::new();
    let mut rest = prefix;
    loop {
        let len = rest
            .chars()
            .rev()
            .take_while(|c| c.is_alphanumeric() || *c == '_')
            .count();
        let word = &rest[rest.len() - len..];
        if !matches!(word, "crate" | "super" | "self") {
            break;
        }
        chain.push(word);
        rest = &rest[..rest.len() - len];
        match rest.strip_suffix("::") {
            Some(shorter) => rest = shorter,
            None => break,
        }
    }
    chain.reverse();
    let mut current: Vec<&str> = if module.is_empty() {
        Vec::new()
    } else {
        module.split("::").collect()
    };
    for word in chain {
        match word {
            "crate" => current.clear(),
            "super" => {
                current.pop()?;
            }
            _ => {}
        }
    }
    Some(current.join("::"))
}

/// The paths that follow a `::`: one identifier path, or each entry of a `{…}` group
/// (nested groups flattened to their leading path).
fn path_tails(text: &str) -> Vec<String> {
    let text = text.trim_start();
    if let Some(group) = text.strip_prefix('{') {
        let mut depth = 0;
        let mut entries = Vec::new();
        let mut current = String::new();
        for c in group.chars() {
            match c {
                '{' => {
                    depth += 1;
                    current.push(c);
                }
                '}' if depth == 0 => break,
                '}' => {
                    depth -= 1;
                    current.push(c);
                }
                ',' if depth == 0 => entries.push(std::mem::take(&mut current)),
                _ => current.push(c),
            }
        }
        entries.push(current);
        return entries
            .iter()
            .map(|e| leading_path(e))
            .filter(|p| p != "self")
            .collect();
    }
    vec![leading_path(text)]
}

/// `a::b::C as D, …` → `a::b::C`; stops at the first character outside a path.
fn leading_path(text: &str) -> String {
    let text = text.trim_start();
    let mut end = 0;
    let bytes = text.as_bytes();
    while end < bytes.len() {
        let c = bytes[end] as char;
        if c.is_alphanumeric() || c == '_' {
            end += 1;
        } else if text[end..].starts_with("::")
            && text[end + 2..].starts_with(|c: char| c.is_alphanumeric() || c == '_')
        {
            end += 2;
        } else {
            break;
        }
    }
    text[..end].to_owned()
}

/// The longest prefix of `path` that is a module of the crate.
fn owning_module<'a>(path: &str, modules: &'a BTreeSet<&str>) -> Option<&'a str> {
    let mut candidate = path;
    loop {
        if let Some(found) = modules.get(candidate) {
            return Some(found);
        }
        match candidate.rfind("::") {
            Some(cut) => candidate = &candidate[..cut],
            None => return modules.get("").copied(),
        }
    }
}

/// Cycles among sibling modules, each as the list of modules along it.
fn import_cycles(modules: &BTreeMap<String, String>) -> Vec<Vec<String>> {
    let names: BTreeSet<&str> = modules.keys().map(String::as_str).collect();
    // Edges between siblings: a reference from A to B becomes an edge between the
    // children of their deepest common ancestor that contain A and B.
    let mut edges: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for (module, text) in modules {
        for reference in references(module, text) {
            let Some(target) = owning_module(&reference, &names) else {
                continue;
            };
            if let Some((from, to)) = sibling_edge(module, target) {
                edges.entry(from).or_default().insert(to);
            }
        }
    }
    let mut cycles = Vec::new();
    let mut reported: BTreeSet<BTreeSet<String>> = BTreeSet::new();
    for start in edges.keys() {
        if let Some(cycle) = cycle_from(start, &edges) {
            let members: BTreeSet<String> = cycle.iter().cloned().collect();
            if reported.insert(members) {
                cycles.push(cycle);
            }
        }
    }
    cycles
}

/// The sibling modules that carry a reference from `from` to `to`, or `None` when one
/// contains the other (a module and its parent or children may use each other).
fn sibling_edge(from: &str, to: &str) -> Option<(String, String)> {
    let a: Vec<&str> = from.split("::").filter(|s| !s.is_empty()).collect();
    let b: Vec<&str> = to.split("::").filter(|s| !s.is_empty()).collect();
    let common = a.iter().zip(&b).take_while(|(x, y)| x == y).count();
    if common == a.len() || common == b.len() {
        return None;
    }
    Some((a[..=common].join("::"), b[..=common].join("::")))
}

/// A cycle through `start` in `edges`, found depth first, as `[start, …, start]`.
fn cycle_from(start: &str, edges: &BTreeMap<String, BTreeSet<String>>) -> Option<Vec<String>> {
    let mut stack = vec![(start.to_owned(), vec![start.to_owned()])];
    let mut seen = BTreeSet::new();
    while let Some((node, path)) = stack.pop() {
        for next in edges.get(&node).into_iter().flatten() {
            if next == start {
                let mut cycle = path.clone();
                cycle.push(start.to_owned());
                return Some(cycle);
            }
            if seen.insert(next.clone()) {
                let mut longer = path.clone();
                longer.push(next.clone());
                stack.push((next.clone(), longer));
            }
        }
    }
    None
}

/// Files whose text must not refer to the history of the work: every source file of
/// the workspace, the documentation and the README.
fn history_checked_files(root: &Path) -> Result<Vec<PathBuf>> {
    let mut files = vec![root.join("README.md")];
    let mut pending = vec![root.join("crates"), root.join("docs"), root.join("xtask")];
    while let Some(folder) = pending.pop() {
        for entry in fs::read_dir(&folder)? {
            let path = entry?.path();
            let name = path.file_name().unwrap_or_default().to_string_lossy();
            if path.is_dir() {
                if name != "target" {
                    pending.push(path);
                }
            } else if name.ends_with(".rs") || name.ends_with(".md") || name.ends_with(".toml") {
                files.push(path);
            }
        }
    }
    files.sort();
    Ok(files)
}

/// The word of a history reference in `line` (one of [`HISTORY_WORDS`] followed by a
/// number and nothing else between them but a space or `#`), case-insensitively.
fn history_reference(line: &str) -> Option<&'static str> {
    let lower = line.to_lowercase();
    HISTORY_WORDS.iter().copied().find(|word| {
        lower.match_indices(word).any(|(at, _)| {
            let starts_word = !lower[..at]
                .chars()
                .next_back()
                .is_some_and(char::is_alphanumeric);
            let after = lower[at + word.len()..].trim_start_matches(' ');
            let after = after.strip_prefix('#').unwrap_or(after);
            starts_word
                && lower[at + word.len()..].starts_with([' ', '#'])
                && after.starts_with(|c: char| c.is_ascii_digit())
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn crate_of(files: &[(&str, &str)]) -> BTreeMap<String, String> {
        files
            .iter()
            .map(|(path, text)| (module_path(Path::new(path)), (*text).to_owned()))
            .collect()
    }

    #[test]
    fn module_paths_follow_the_file_layout() {
        assert_eq!(module_path(Path::new("lib.rs")), "");
        assert_eq!(module_path(Path::new("gateway.rs")), "gateway");
        assert_eq!(module_path(Path::new("gateway/mod.rs")), "gateway");
        assert_eq!(module_path(Path::new("gateway/send.rs")), "gateway::send");
    }

    #[test]
    fn two_siblings_using_each_other_are_a_cycle() {
        let modules = crate_of(&[
            ("lib.rs", "mod route;\nmod write_behind;\n"),
            ("route.rs", "use crate::write_behind::Buffer;\n"),
            (
                "write_behind.rs",
                "use crate::route::{Route, thread_shard};\n",
            ),
        ]);
        let cycles = import_cycles(&modules);
        assert_eq!(cycles.len(), 1, "{cycles:?}");
        assert!(cycles[0].contains(&"route".to_owned()));
        assert!(cycles[0].contains(&"write_behind".to_owned()));
    }

    #[test]
    fn a_cycle_through_a_third_module_and_super_paths_is_found() {
        let modules = crate_of(&[
            ("lib.rs", "mod gateway;\n"),
            ("gateway/mod.rs", "mod send;\nmod attempt;\nmod drain;\n"),
            ("gateway/send.rs", "use super::attempt::run;\n"),
            (
                "gateway/attempt.rs",
                "use super::{drain::Drain, Gateway};\n",
            ),
            ("gateway/drain.rs", "    let x = super::send::go();\n"),
        ]);
        let cycles = import_cycles(&modules);
        assert_eq!(cycles.len(), 1, "{cycles:?}");
        assert_eq!(cycles[0].len(), 4, "{cycles:?}");
    }

    #[test]
    fn parents_and_children_may_use_each_other_and_comments_do_not_count() {
        let modules = crate_of(&[
            (
                "lib.rs",
                "mod gateway;\nuse crate::gateway::send::Outcome;\n",
            ),
            ("gateway/mod.rs", "mod send;\npub use send::Outcome;\n"),
            (
                "gateway/send.rs",
                "use super::Gateway;\nuse crate::Config;\n",
            ),
            (
                "health.rs",
                "/// See [`crate::gateway::Gateway`].\n// use crate::gateway;\n",
            ),
            ("gateway/other.rs", "use crate::health::Health;\n"),
        ]);
        assert!(import_cycles(&modules).is_empty());
        // One-way use between siblings is fine; the reverse use in a comment is ignored.
    }

    #[test]
    fn history_references_are_found_and_ordinary_words_are_not() {
        // Spelled in two pieces so that this file does not break its own rule.
        let numbered = |word: &str, rest: &str| format!("{word}{rest}");
        assert_eq!(
            history_reference(&numbered("// Defect", " 12: the list ended")),
            Some("defect")
        );
        assert_eq!(
            history_reference(&numbered("see issue", " #8")),
            Some("issue")
        );
        assert_eq!(
            history_reference(&numbered("measured in session", " 7")),
            Some("session")
        );
        assert_eq!(history_reference("a session of the database"), None);
        assert_eq!(history_reference("no issue here, 3 times"), None);
        assert_eq!(history_reference(&numbered("reissue", " 4 times")), None);
    }
}
