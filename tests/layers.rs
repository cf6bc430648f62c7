//! The layer rule, checked: every top-level module of `src/` sits in one layer of [`LAYERS`],
//! and imports only from the layers that layer lists (and from its own layer). The README's
//! "Layout" section is this table in prose.
//!
//! The source is read as text: an edge is any `crate::X` path (including `use crate::{X, …}`
//! groups), any `super::` chain that climbs out of a top-level module, and, in the binaries,
//! any `memgate::X` path. Test modules count: a test that needs a higher layer belongs there.
//!
//! Edges that break the rule today are listed in [`KNOWN_VIOLATIONS`] with their reason; the
//! test fails when one of them is gone (so the list only shrinks), on any new one, and on any
//! cycle between top-level modules that removing the known violations does not break.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// (layer, its modules, the layers it may import besides its own). Order: bottom to top.
/// `wire` and `exchange` are planned modules (issue 11); they are placed before they exist.
const LAYERS: &[(&str, &[&str], &[&str])] = &[
    // The IR, the config, error types, the clock, and per-key limits and the byte budget
    // (plain state the layers above share): std and crates only.
    ("data", &["ir", "config", "error", "clock", "limits", "budget"], &[]),
    // Process plumbing: the executor, the task set shutdown waits for, systemd's notify
    // socket, the metrics counters. Knows no request and no storage.
    ("infra", &["runtime", "tasks", "notify", "metrics"], &[]),
    // HTTP/1 framing (heads, bodies, SSE) and the accept loop. Below `upstream` as well as
    // `api`, because the upstream client reads responses with the same framing code.
    ("http", &["http"], &["data", "infra"]),
    // One module per wire format, both directions, pure functions.
    ("wire", &["wire"], &["data"]),
    // The storage interface and its backends, and the usage counters buffered in front of it.
    ("store", &["store", "usage"], &["data"]),
    // Connections, endpoint and auth per provider, model name -> candidates.
    (
        "upstream",
        &["upstream", "providers", "router"],
        &["wire", "http", "data", "infra"],
    ),
    // Context assembly, observer, reflector; calls models through its own trait.
    ("memory", &["memory"], &["store", "data", "infra"]),
    // Memory begin -> send with retries and fallbacks -> stream or finish, once per format.
    (
        "exchange",
        &["exchange"],
        &["memory", "upstream", "wire", "http", "store", "data", "infra"],
    ),
    // One handler per endpoint (HTTP and the admin socket), who is calling; errors are
    // rendered only here. Memory's read endpoints read memory and the store directly.
    (
        "api",
        &["api", "admin", "auth"],
        &["exchange", "memory", "wire", "http", "store", "data", "infra"],
    ),
    // Builds everything and wires it together: may import anything.
    (
        "composition",
        &["app", "serve", "reload", "cli", "eval", "main", "bin"],
        &[
            "api", "exchange", "memory", "upstream", "store", "wire", "http", "infra", "data",
        ],
    ),
];

/// "from -> to": edges that break the table today, each with why it is still there. Other
/// parts of issue 11 remove them: memory calls models through its own trait, `wire/` splits
/// out of `providers` and `api`, and `exchange` takes the request path out of `api`.
const KNOWN_VIOLATIONS: &[(&str, &str)] = &[
    (
        "api -> app",
        "handlers take the App state (the request path moves into exchange)",
    ),
    (
        "api -> router",
        "handlers resolve routes themselves (moves into exchange)",
    ),
    (
        "api -> providers",
        "handlers call providers themselves (moves into exchange and wire)",
    ),
    (
        "api -> upstream",
        "handlers retry upstream calls themselves (moves into exchange)",
    ),
];

fn layer_of(module: &str) -> Option<&'static str> {
    LAYERS
        .iter()
        .find(|(_, modules, _)| modules.contains(&module))
        .map(|(layer, _, _)| *layer)
}

fn allowed(from: &str, to: &str) -> bool {
    let (Some(a), Some(b)) = (layer_of(from), layer_of(to)) else {
        return false;
    };
    a == b || LAYERS.iter().any(|(layer, _, may)| *layer == a && may.contains(&b))
}

/// Rust source with comments, string and char literals blanked out (kept as spaces, so
/// brace depths and paths are all that is left to read).
fn code_only(src: &str) -> String {
    let b = src.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let rest = &b[i..];
        if rest.starts_with(b"//") {
            while i < b.len() && b[i] != b'\n' {
                i += 1;
            }
        } else if rest.starts_with(b"/*") {
            let mut depth = 0;
            while i < b.len() {
                if b[i..].starts_with(b"/*") {
                    depth += 1;
                    i += 2;
                } else if b[i..].starts_with(b"*/") {
                    depth -= 1;
                    i += 2;
                    if depth == 0 {
                        break;
                    }
                } else {
                    i += 1;
                }
            }
        } else if (rest.starts_with(b"r\"") || rest.starts_with(b"r#") || rest.starts_with(b"br"))
            && (i == 0 || !(b[i - 1].is_ascii_alphanumeric() || b[i - 1] == b'_'))
            && raw_string_len(rest).is_some()
        {
            i += raw_string_len(rest).unwrap_or(1);
            out.push(b' ');
        } else if b[i] == b'"' {
            i += 1;
            while i < b.len() && b[i] != b'"' {
                i += if b[i] == b'\\' { 2 } else { 1 };
            }
            i += 1;
            out.push(b' ');
        } else if b[i] == b'\'' {
            // A char literal ('x', '\n', '\u{7f}', '{'), not a lifetime ('a).
            let lit = if rest.get(1) == Some(&b'\\') {
                rest.iter().skip(2).position(|&c| c == b'\'').map(|p| p + 3)
            } else if rest.len() > 2 && rest[2] == b'\'' {
                Some(3)
            } else {
                // A multi-byte char: its closing quote follows within four bytes.
                std::str::from_utf8(&rest[1..rest.len().min(6)])
                    .ok()
                    .or_else(|| std::str::from_utf8(&rest[1..rest.len().min(5)]).ok())
                    .and_then(|s| s.chars().next())
                    .filter(|c| c.len_utf8() > 1 && rest.get(1 + c.len_utf8()) == Some(&b'\''))
                    .map(|c| c.len_utf8() + 2)
            };
            match lit {
                Some(n) => {
                    i += n;
                    out.push(b' ');
                }
                None => {
                    out.push(b'\'');
                    i += 1;
                }
            }
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The length of a raw string literal (`r"…"`, `r#"…"#`, `br"…"`) at the start of `s`.
fn raw_string_len(s: &[u8]) -> Option<usize> {
    let mut i = if s.starts_with(b"br") { 2 } else { 1 };
    let hashes = s[i..].iter().take_while(|&&c| c == b'#').count();
    i += hashes;
    if s.get(i) != Some(&b'"') {
        return None;
    }
    let close: Vec<u8> = std::iter::once(b'"').chain(std::iter::repeat_n(b'#', hashes)).collect();
    let end = s[i + 1..].windows(close.len()).position(|w| w == close.as_slice())?;
    Some(i + 1 + end + close.len())
}

fn ident_at(s: &str) -> &str {
    let end = s.find(|c: char| !(c.is_alphanumeric() || c == '_')).unwrap_or(s.len());
    &s[..end]
}

/// The names a path continues with after `prefix::`: one name, or each first name of a
/// `{a, b::c, …}` group.
fn names_after(rest: &str) -> Vec<String> {
    let rest = rest.trim_start();
    if let Some(group) = rest.strip_prefix('{') {
        let mut names = Vec::new();
        let (mut depth, mut start) = (0, 0);
        for (i, c) in group.char_indices() {
            match c {
                '{' => depth += 1,
                '}' if depth == 0 => {
                    names.push(ident_at(group[start..i].trim()).to_owned());
                    break;
                }
                '}' => depth -= 1,
                ',' if depth == 0 => {
                    names.push(ident_at(group[start..i].trim()).to_owned());
                    start = i + 1;
                }
                _ => {}
            }
        }
        names.into_iter().filter(|n| !n.is_empty()).collect()
    } else {
        vec![ident_at(rest).to_owned()]
    }
}

/// The top-level modules one file refers to. `depth` is how deep the file's own module sits
/// (`src/a.rs` and `src/a/mod.rs`: 1, `src/a/b.rs`: 2); `root` is `crate` in the library and
/// `memgate` in the binaries.
fn references(code: &str, depth: usize, root: &str) -> BTreeSet<String> {
    let mut found = BTreeSet::new();
    let bytes = code.as_bytes();
    let word_start =
        |i: usize| i == 0 || !(bytes[i - 1].is_ascii_alphanumeric() || bytes[i - 1] == b'_' || bytes[i - 1] == b':');
    // Inline `mod x {` blocks deepen `super::`; their brace depths, innermost last.
    let mut inline_mods: Vec<usize> = Vec::new();
    let mut braces = 0usize;
    let mut i = 0;
    while i < code.len() {
        let rest = &code[i..];
        if rest.starts_with('{') {
            braces += 1;
        } else if rest.starts_with('}') {
            if inline_mods.last() == Some(&braces) {
                inline_mods.pop();
            }
            braces = braces.saturating_sub(1);
        } else if word_start(i) && rest.starts_with("mod ") {
            let after = rest[4..].trim_start();
            let name = ident_at(after);
            if after[name.len()..].trim_start().starts_with('{') {
                inline_mods.push(braces + 1);
            }
        } else if word_start(i) && rest.starts_with(root) && rest[root.len()..].starts_with("::") {
            found.extend(names_after(&rest[root.len() + 2..]));
        } else if word_start(i) && rest.starts_with("super::") {
            let mut supers = 0;
            let mut tail = rest;
            while let Some(t) = tail.strip_prefix("super::") {
                supers += 1;
                tail = t.trim_start();
            }
            let level = depth + inline_mods.len();
            assert!(
                supers <= level,
                "`super::` climbs above the crate root in:\n{}",
                &rest[..rest.len().min(80)]
            );
            if supers == level {
                found.extend(names_after(tail));
            }
            i += rest.len() - tail.len();
            continue;
        }
        i += rest.chars().next().map_or(1, char::len_utf8);
    }
    found
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The module graph: top-level module -> the top-level modules it refers to.
fn graph() -> BTreeMap<String, BTreeSet<String>> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    // The top-level modules: what `lib.rs` declares. Other names after `crate::` are items.
    let lib = std::fs::read_to_string(src.join("lib.rs")).unwrap();
    let modules: BTreeSet<String> = code_only(&lib)
        .lines()
        .filter_map(|l| {
            l.trim()
                .strip_prefix("pub mod ")
                .or_else(|| l.trim().strip_prefix("mod "))
        })
        .map(|l| l.trim_end_matches(';').trim().to_owned())
        .collect();
    let mut graph: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for file in files {
        let rel = file.strip_prefix(&src).unwrap();
        let parts: Vec<String> = rel.iter().map(|p| p.to_string_lossy().into_owned()).collect();
        let stem = |s: &str| s.trim_end_matches(".rs").to_owned();
        let (module, depth, root) = match parts.as_slice() {
            [f] if f == "lib.rs" => continue,
            [f] if f == "main.rs" => ("main".to_owned(), 0, "memgate"),
            [d, ..] if d == "bin" => ("bin".to_owned(), 0, "memgate"),
            [f] => (stem(f), 1, "crate"),
            [d, rest @ ..] => {
                let depth = rest.len() + usize::from(rest.last().is_some_and(|f| f != "mod.rs"));
                (d.clone(), depth, "crate")
            }
            [] => unreachable!(),
        };
        let code = code_only(&std::fs::read_to_string(&file).unwrap());
        let edges = graph.entry(module.clone()).or_default();
        for to in references(&code, depth, root) {
            if to != module && modules.contains(&to) {
                edges.insert(to);
            }
        }
    }
    graph
}

fn show(graph: &BTreeMap<String, BTreeSet<String>>) -> String {
    let mut s = String::from("module graph (layer: module -> imports; * = breaks the table):\n");
    for (layer, modules, _) in LAYERS {
        for m in modules.iter().filter(|m| graph.contains_key(**m)) {
            let to: Vec<String> = graph[*m]
                .iter()
                .map(|t| if allowed(m, t) { t.clone() } else { format!("{t}*") })
                .collect();
            s += &format!("  {layer:<11} {m:<9} -> {}\n", to.join(" "));
        }
    }
    s
}

/// Strongly connected components with more than one module (Tarjan's algorithm).
fn cycles(graph: &BTreeMap<String, BTreeSet<String>>) -> Vec<Vec<String>> {
    struct State<'g> {
        graph: &'g BTreeMap<String, BTreeSet<String>>,
        index: BTreeMap<&'g str, usize>,
        low: BTreeMap<&'g str, usize>,
        stack: Vec<&'g str>,
        found: Vec<Vec<String>>,
    }
    fn visit<'g>(s: &mut State<'g>, v: &'g str) {
        let n = s.index.len();
        s.index.insert(v, n);
        s.low.insert(v, n);
        s.stack.push(v);
        let graph = s.graph;
        for w in graph.get(v).into_iter().flatten() {
            let w = w.as_str();
            if !s.index.contains_key(w) {
                visit(s, w);
                let lw = s.low[w];
                let lv = s.low.get_mut(v).unwrap();
                *lv = (*lv).min(lw);
            } else if s.stack.contains(&w) {
                let iw = s.index[w];
                let lv = s.low.get_mut(v).unwrap();
                *lv = (*lv).min(iw);
            }
        }
        if s.low[v] == s.index[v] {
            let mut component = Vec::new();
            while let Some(w) = s.stack.pop() {
                component.push(w.to_owned());
                if w == v {
                    break;
                }
            }
            if component.len() > 1 {
                component.sort();
                s.found.push(component);
            }
        }
    }
    let mut s = State {
        graph,
        index: BTreeMap::new(),
        low: BTreeMap::new(),
        stack: Vec::new(),
        found: Vec::new(),
    };
    for v in graph.keys() {
        if !s.index.contains_key(v.as_str()) {
            visit(&mut s, v);
        }
    }
    s.found
}

#[test]
fn every_module_imports_only_from_the_layers_below_it() {
    let graph = graph();
    let known: BTreeSet<&str> = KNOWN_VIOLATIONS.iter().map(|(edge, _)| *edge).collect();
    let mut problems = Vec::new();
    for module in graph.keys() {
        if layer_of(module).is_none() {
            problems.push(format!(
                "module `{module}` is in no layer: add it to LAYERS (and the README's Layout)"
            ));
        }
    }
    let mut seen = BTreeSet::new();
    for (from, to) in graph.iter().flat_map(|(f, ts)| ts.iter().map(move |t| (f, t))) {
        let edge = format!("{from} -> {to}");
        if known.contains(edge.as_str()) {
            seen.insert(edge);
        } else if !allowed(from, to) {
            let (a, b) = (layer_of(from).unwrap_or("?"), layer_of(to).unwrap_or("?"));
            problems.push(format!("`{edge}`: layer {a} may not import layer {b}"));
        }
    }
    for (edge, reason) in KNOWN_VIOLATIONS {
        if !seen.contains(*edge) {
            problems.push(format!(
                "`{edge}` ({reason}) no longer occurs: remove it from KNOWN_VIOLATIONS"
            ));
        }
    }
    // A cycle a known violation closes is reported with that violation; any other is new.
    let mut rest = graph.clone();
    for (from, tos) in rest.iter_mut() {
        tos.retain(|to| !known.contains(format!("{from} -> {to}").as_str()));
    }
    for cycle in cycles(&rest) {
        problems.push(format!("import cycle between {}", cycle.join(", ")));
    }
    assert!(problems.is_empty(), "{}\n\n{}", problems.join("\n"), show(&graph));
}

#[test]
fn the_reader_sees_through_groups_supers_and_literals() {
    let code = code_only(
        "use crate::{a, b::{c, d}};\n// crate::comment\nlet s = \"crate::string\"; let r = r#\"crate::raw\"#;\n\
         let c = '{'; fn f<'x>() {}\nmod tests { use super::super::e; fn g() { crate::f::g(); } }\nuse super::h;",
    );
    let found: Vec<String> = references(&code, 1, "crate").into_iter().collect();
    assert_eq!(found, ["a", "b", "e", "f", "h"]);
}
