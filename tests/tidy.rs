//! The layout's rules, checked: each module's `crate::` imports go down the
//! layers below (never up, never in a circle), and the modules marked pure
//! use no clock, no file system, no network and no runtime. ARCHITECTURE.md
//! says why each rule is there; this test keeps them true.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// The layers, lowest first. A module may import modules of its own layer
/// or of a layer below it; an import of a module in a higher layer fails.
/// A module that is not listed fails too, so a new file is placed here.
const LAYERS: &[(&str, &[&str])] = &[
    (
        "utilities",
        &[
            "arn",
            "clock",
            "re",
            "redact",
            "backoff",
            "fetch",
            "service::metrics",
        ],
    ),
    (
        "pure cores and references",
        &[
            "input::identity",
            "input::globs",
            "lines::framing",
            "lines::container",
            "lines::multiline",
            "records::batcher",
            "records::compress",
            "records::keying",
            "records::kubernetes",
            "records::aggregate",
            "records::envelope",
            "records::parse",
            "records::time",
            "records::packing",
            "kinesis::stream",
            "kinesis::classify",
            "firehose::name",
        ],
    ),
    (
        "state and shards",
        &[
            "state::store",
            "state::checkpoint",
            "state::budget",
            "state::dead_letter",
            "kinesis::shards",
            "records::metadata",
            "records::pods",
        ],
    ),
    ("configuration", &["config"]),
    ("stages", &["lines::shaping", "records::route"]),
    (
        "tasks",
        &[
            "input::tailer",
            "input::discovery",
            "kinesis::direct",
            "kinesis::sink",
            "firehose::put",
        ],
    ),
    (
        "service",
        &["service::api", "service::status", "service::daemon"],
    ),
];

/// Modules that must stay pure: values in, values out.
const PURE: &[&str] = &[
    "lines::framing",
    "lines::container",
    "lines::multiline",
    "lines::shaping",
    "records::batcher",
    "records::keying",
    "records::kubernetes",
    "records::aggregate",
    "records::compress",
    "records::envelope",
    "records::parse",
    "records::time",
    "kinesis::classify",
    "kinesis::stream",
    "firehose::name",
    "arn",
    "re",
];

/// What a pure module may not name (outside its tests).
const IMPURE: &[&str] = &[
    "std::fs",
    "std::net",
    "std::process",
    "tokio",
    "Instant::now",
    "SystemTime::now",
    "now_ms",
];

/// The folders that hold modules of their own.
const FOLDERS: &[&str] = &[
    "input", "lines", "records", "kinesis", "firehose", "state", "service",
];

fn src() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
}

/// Every module file under `src/` (but `lib.rs` and `main.rs`) with its
/// module name (`config` for all of `config/`).
fn modules() -> Vec<(String, PathBuf)> {
    let mut out = Vec::new();
    let mut dirs = vec![src()];
    while let Some(dir) = dirs.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            panic!("cannot read {}", dir.display());
        };
        for e in entries.flatten() {
            let path = e.path();
            if path.is_dir() {
                dirs.push(path);
                continue;
            }
            if path.extension().and_then(|e| e.to_str()) != Some("rs") {
                continue;
            }
            let rel = path
                .strip_prefix(src())
                .map(Path::to_path_buf)
                .unwrap_or_default();
            let parts: Vec<String> = rel
                .with_extension("")
                .iter()
                .map(|p| p.to_string_lossy().into_owned())
                .collect();
            let name = match parts.as_slice() {
                [one] if one == "lib" || one == "main" => continue,
                [first, ..] if first == "config" => "config".to_string(),
                [_, last] if last == "mod" => continue,
                // A module split into a folder of its own is one module.
                [folder, module, _, ..] => format!("{folder}::{module}"),
                _ => parts.join("::"),
            };
            out.push((name, path));
        }
    }
    out.sort();
    out
}

/// The source without its `#[cfg(test)]` module (tests may do anything).
fn without_tests(text: &str) -> &str {
    match text.find("#[cfg(test)]\nmod tests") {
        Some(i) => &text[..i],
        None => text,
    }
}

/// The modules `text` names through `crate::` paths.
fn imports(text: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for (i, _) in text.match_indices("crate::") {
        let rest = &text[i + "crate::".len()..];
        let seg = |s: &str| -> String {
            s.chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect()
        };
        let first = seg(rest);
        let name = if FOLDERS.contains(&first.as_str()) {
            let second = rest.get(first.len() + 2..).map(seg).unwrap_or_default();
            format!("{first}::{second}")
        } else {
            first
        };
        out.insert(name);
    }
    out
}

fn layer_of(module: &str) -> Option<usize> {
    LAYERS.iter().position(|(_, ms)| ms.contains(&module))
}

/// The import rules broken by modules and their imports: unplaced
/// modules, imports of a higher layer, and circles.
fn broken(graph: &BTreeMap<String, BTreeSet<String>>) -> Vec<String> {
    let mut out = Vec::new();
    for (m, deps) in graph {
        let Some(mine) = layer_of(m) else {
            out.push(format!("{m}: not in any layer of tests/tidy.rs"));
            continue;
        };
        for d in deps.iter().filter(|d| *d != m) {
            match layer_of(d) {
                Some(theirs) if theirs > mine => out.push(format!(
                    "{m} ({}) imports {d} ({}), a higher layer",
                    LAYERS[mine].0, LAYERS[theirs].0
                )),
                _ => {}
            }
        }
    }
    // Circles: a module that reaches itself.
    for start in graph.keys() {
        let mut seen = BTreeSet::new();
        let mut todo: Vec<&String> = graph[start].iter().filter(|d| *d != start).collect();
        while let Some(d) = todo.pop() {
            if d == start {
                out.push(format!("{start} imports itself through others"));
                break;
            }
            if seen.insert(d.clone())
                && let Some(next) = graph.get(d)
            {
                todo.extend(next.iter().filter(|n| *n != d));
            }
        }
    }
    out
}

#[test]
fn imports_go_down_the_layers_and_pure_modules_stay_pure() {
    let mut graph: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let mut impure = Vec::new();
    for (name, path) in modules() {
        let text =
            std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        let code = without_tests(&text);
        graph.entry(name.clone()).or_default().extend(imports(code));
        if PURE.contains(&name.as_str()) {
            for word in IMPURE.iter().filter(|w| code.contains(**w)) {
                impure.push(format!("{name} ({}) uses {word}", path.display()));
            }
        }
    }
    assert!(graph.len() > 30, "the modules were found ({})", graph.len());
    let broken = broken(&graph);
    assert!(
        broken.is_empty(),
        "imports against the layers:\n{}",
        broken.join("\n")
    );
    assert!(
        impure.is_empty(),
        "pure modules that are not:\n{}",
        impure.join("\n")
    );
}

/// The check itself: a wrong-way import, a circle and an unplaced module
/// are each found.
#[test]
fn the_check_finds_a_wrong_way_import_a_circle_and_an_unplaced_module() {
    let graph = |edges: &[(&str, &str)]| {
        let mut g: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        for (a, b) in edges {
            g.entry(a.to_string()).or_default().insert(b.to_string());
            g.entry(b.to_string()).or_default();
        }
        g
    };
    let up = broken(&graph(&[("records::batcher", "state::checkpoint")]));
    assert_eq!(
        up,
        [
            "records::batcher (pure cores and references) imports state::checkpoint (state and shards), a higher layer"
        ]
    );
    let circle = broken(&graph(&[
        ("lines::framing", "lines::multiline"),
        ("lines::multiline", "lines::framing"),
    ]));
    assert!(
        circle.iter().any(|b| b.contains("imports itself")),
        "{circle:?}"
    );
    let unplaced = broken(&graph(&[("records::new_thing", "clock")]));
    assert!(
        unplaced.iter().any(|b| b.contains("not in any layer")),
        "{unplaced:?}"
    );
    assert_eq!(
        imports("use crate::records::batcher::Record;\nlet x = crate::clock::now_ms();"),
        BTreeSet::from(["records::batcher".to_string(), "clock".to_string()])
    );
}

/// Every metric `/metrics` serves is in the README's list: the counters
/// of `COUNTERS` and the other families of `FAMILIES`, and `service::api`
/// writes no family outside those two tables.
#[test]
fn every_metric_served_is_in_the_readme() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let readme = std::fs::read_to_string(root.join("README.md")).expect("README.md");
    let api = std::fs::read_to_string(src().join("service/api.rs")).expect("api.rs");
    assert_eq!(
        api.matches("# TYPE kinetail_").count(),
        1,
        "api.rs writes `# TYPE` lines in one place, for the tables' families"
    );
    let names: Vec<String> = kinetail::service::metrics::COUNTERS
        .iter()
        .map(|c| c.name)
        .chain(kinetail::service::metrics::FAMILIES.iter().map(|f| f.name))
        .map(|n| format!("kinetail_{n}"))
        .collect();
    assert!(names.len() > 15, "the metrics were found: {names:?}");
    let missing: Vec<&String> = names
        .iter()
        .filter(|n| !readme.contains(&format!("`{n}`")) && !readme.contains(&format!("`{n}{{")))
        .collect();
    assert!(
        missing.is_empty(),
        "metrics served but not in the README: {missing:?}"
    );
}

/// The longest a function may be, in lines, outside tests: a reader holds a
/// function at once, and a longer one has seams to split along.
const MAX_FUNCTION_LINES: usize = 80;

/// The functions of `text` (outside its tests) longer than
/// [`MAX_FUNCTION_LINES`]: `(name, lines)`. A function ends at the first
/// `}` at its own indentation (rustfmt's layout).
fn long_functions(text: &str) -> Vec<(String, usize)> {
    let lines: Vec<&str> = without_tests(text).lines().collect();
    let mut out = Vec::new();
    for (i, line) in lines.iter().enumerate() {
        let trimmed = line.trim_start();
        let indent = &line[..line.len() - trimmed.len()];
        let Some(at) = trimmed.find("fn ") else {
            continue;
        };
        let head = &trimmed[..at];
        let is_fn = head.split_whitespace().all(|w| {
            w == "pub" || w.starts_with("pub(") || w == "async" || w == "const" || w == "unsafe"
        });
        if !is_fn || trimmed.ends_with(';') {
            continue;
        }
        let name: String = trimmed[at + 3..]
            .chars()
            .take_while(|c| c.is_alphanumeric() || *c == '_')
            .collect();
        let close = format!("{indent}}}");
        if let Some(len) = lines[i..].iter().position(|l| l.trim_end() == close)
            && len + 1 > MAX_FUNCTION_LINES
        {
            out.push((name, len + 1));
        }
    }
    out
}

#[test]
fn no_function_is_longer_than_a_reader_holds() {
    let mut long = Vec::new();
    let mut files = modules().into_iter().map(|(_, p)| p).collect::<Vec<_>>();
    files.push(src().join("main.rs"));
    files.push(src().join("lib.rs"));
    // The benchmark and the test kit are read as the daemon is.
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    for dir in ["bench/src", "testkit/src"] {
        let entries = std::fs::read_dir(root.join(dir))
            .unwrap_or_else(|e| panic!("{dir}: {e}"))
            .flatten();
        files.extend(entries.map(|e| e.path()));
    }
    for path in files {
        let text =
            std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        for (name, n) in long_functions(&text) {
            long.push(format!("{}: {name} has {n} lines", path.display()));
        }
    }
    assert!(
        long.is_empty(),
        "functions over {MAX_FUNCTION_LINES} lines:\n{}",
        long.join("\n")
    );
    // The check itself finds a long one.
    let body = "    let x = 1;\n".repeat(MAX_FUNCTION_LINES);
    let long_one = format!("pub async fn f() {{\n{body}}}\n\nfn g() {{\n}}\n");
    assert_eq!(
        long_functions(&long_one),
        [("f".to_string(), MAX_FUNCTION_LINES + 2)]
    );
}
