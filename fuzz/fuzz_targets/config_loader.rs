//! `config::parse(text, file, base_dir)` on arbitrary text and on mutations of the shipped
//! configurations.
//!
//! Byte 0 picks the mode:
//! - 0: the rest, as (lossy) UTF-8, is the whole file;
//! - 1: structure-aware: a shipped configuration is parsed into a TOML tree, the rest of the
//!   input drives up to eight edits of that tree (replace a value with one of another type or
//!   from elsewhere in the configs, delete a key, add a known or new key, duplicate or drop an
//!   array element, graft a subtree, edit a string), and the tree is written back as TOML;
//! - 2: a shipped configuration with a byte range replaced by the rest of the input.
//!
//! Properties checked: nothing panics; an error list is never empty; every error names the
//! file, has a 1-based line and column inside the text, and prints as `file:LINE:COL: message`
//! on one line (finding F1 in README.md); a
//! configuration that loads also builds a snapshot without panicking.
#![no_main]

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use headland::snapshot::Snapshot;
use libfuzzer_sys::arbitrary::{Result as ArbResult, Unstructured};
use libfuzzer_sys::fuzz_target;
use toml::{Table, Value};

const FILE: &str = "fuzz.toml";

/// The shipped configurations and the directory each is resolved against.
const SHIPPED: [(&str, &str); 10] = [
    ("config", include_str!("../../config/headland.toml")),
    (
        "config/examples",
        include_str!("../../config/examples/single-server.toml"),
    ),
    (
        "config/examples",
        include_str!("../../config/examples/three-region.toml"),
    ),
    (
        "config/examples",
        include_str!("../../config/examples/websocket-app.toml"),
    ),
    (
        "config/tests/valid",
        include_str!("../../config/tests/valid/acme-dns01.toml"),
    ),
    (
        "config/tests/valid",
        include_str!("../../config/tests/valid/acme.toml"),
    ),
    (
        "config/tests/valid",
        include_str!("../../config/tests/valid/balance-policies.toml"),
    ),
    (
        "config/tests/valid",
        include_str!("../../config/tests/valid/health-and-webhooks.toml"),
    ),
    (
        "config/tests/valid",
        include_str!("../../config/tests/valid/ipv6.toml"),
    ),
    (
        "config/tests/valid",
        include_str!("../../config/tests/valid/minimal.toml"),
    ),
];

struct Corpus {
    root: PathBuf,
    trees: Vec<Table>,
    /// Every key name in the shipped configurations.
    keys: Vec<String>,
    /// Every leaf value and table in the shipped configurations.
    values: Vec<Value>,
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let corpus = corpus();
    match mode % 3 {
        0 => check(&String::from_utf8_lossy(rest), &corpus.root),
        1 => {
            let mut u = Unstructured::new(rest);
            let Ok(pick) = u.choose_index(corpus.trees.len()) else {
                return;
            };
            let mut tree = corpus.trees[pick].clone();
            for _ in 0..8 {
                if u.is_empty() || edit(&mut tree, corpus, &mut u).is_err() {
                    break;
                }
            }
            // Some trees cannot be written (a table inside an array of values); skip those.
            if let Ok(text) = toml::to_string(&tree) {
                check(&text, &corpus.root.join(SHIPPED[pick].0));
            }
        }
        _ => {
            let mut u = Unstructured::new(rest);
            let (Ok(pick), Ok(start), Ok(len)) = (
                u.choose_index(SHIPPED.len()),
                u.arbitrary::<u16>(),
                u.arbitrary::<u8>(),
            ) else {
                return;
            };
            let (dir, original) = SHIPPED[pick];
            let start = floor_char_boundary(original, usize::from(start) % (original.len() + 1));
            let end = floor_char_boundary(original, start + usize::from(len)).max(start);
            let insert = String::from_utf8_lossy(u.take_rest());
            let text = format!("{}{insert}{}", &original[..start], &original[end..]);
            check(&text, &corpus.root.join(dir));
        }
    }
});

fn check(text: &str, base_dir: &Path) {
    match headland::config::parse(text, FILE, base_dir) {
        Ok(config) => {
            let snapshot = Snapshot::build(config, 1, None);
            std::hint::black_box(snapshot.routes.routes().len());
        }
        Err(errors) => {
            assert!(!errors.0.is_empty(), "an error list with no error");
            let lines: Vec<&str> = text.split('\n').collect();
            for error in &errors.0 {
                assert_eq!(error.file, FILE);
                assert!(error.line >= 1 && error.column >= 1, "{error}");
                let line = lines.get(error.line - 1).unwrap_or_else(|| {
                    panic!("{error}: line past the end ({} lines)", lines.len())
                });
                assert!(
                    error.column <= line.chars().count() + 1,
                    "{error}: column past the end of the line"
                );
                let shown = error.to_string();
                let prefix = format!("{FILE}:{}:{}: ", error.line, error.column);
                assert!(shown.starts_with(&prefix), "{shown}");
                assert!(!error.message.trim().is_empty(), "{shown}");
                // Finding F1 (fuzz/README.md): a "\n" in a quoted value once broke the
                // one-error-per-line output.
                assert!(!shown.contains('\n'), "error spans lines: {shown:?}");
            }
        }
    }
}

fn floor_char_boundary(text: &str, mut at: usize) -> usize {
    at = at.min(text.len());
    while !text.is_char_boundary(at) {
        at -= 1;
    }
    at
}

fn corpus() -> &'static Corpus {
    static CORPUS: OnceLock<Corpus> = OnceLock::new();
    CORPUS.get_or_init(|| {
        let trees: Vec<Table> = SHIPPED
            .iter()
            .map(|(_, text)| text.parse::<Table>().expect("shipped config is TOML"))
            .collect();
        let mut keys = Vec::new();
        let mut values = Vec::new();
        for tree in &trees {
            collect(&Value::Table(tree.clone()), &mut keys, &mut values);
        }
        keys.sort();
        keys.dedup();
        Corpus {
            root: PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(".."),
            trees,
            keys,
            values,
        }
    })
}

fn collect(value: &Value, keys: &mut Vec<String>, values: &mut Vec<Value>) {
    match value {
        Value::Table(table) => {
            for (key, child) in table {
                keys.push(key.clone());
                collect(child, keys, values);
            }
        }
        Value::Array(items) => items.iter().for_each(|v| collect(v, keys, values)),
        _ => {}
    }
    values.push(value.clone());
}

/// One edit somewhere in the tree.
fn edit(tree: &mut Table, corpus: &Corpus, u: &mut Unstructured<'_>) -> ArbResult<()> {
    let target = pick_table(tree, u)?;
    let keys: Vec<String> = target.keys().cloned().collect();
    match u.int_in_range(0..=6u8)? {
        // Replace a value.
        0 if !keys.is_empty() => {
            let key = u.choose(&keys)?.clone();
            let value = new_value(corpus, u)?;
            target.insert(key, value);
        }
        // Delete a key.
        1 if !keys.is_empty() => {
            let key = u.choose(&keys)?.clone();
            target.remove(&key);
        }
        // Add a key that exists somewhere, or a new one.
        2 => {
            let key = if u.ratio(7u8, 8)? {
                u.choose(&corpus.keys)?.clone()
            } else {
                u.arbitrary::<String>()?
            };
            let value = new_value(corpus, u)?;
            target.insert(key, value);
        }
        // Duplicate or drop an element of an array (a second identical route, no servers).
        3 if !keys.is_empty() => {
            let key = u.choose(&keys)?.clone();
            if let Some(Value::Array(items)) = target.get_mut(&key) {
                if !items.is_empty() {
                    let at = u.choose_index(items.len())?;
                    if u.arbitrary()? {
                        items.push(items[at].clone());
                    } else {
                        items.remove(at);
                    }
                }
            }
        }
        // Edit a string in place.
        4 if !keys.is_empty() => {
            let key = u.choose(&keys)?.clone();
            if let Some(Value::String(text)) = target.get_mut(&key) {
                match u.int_in_range(0..=3u8)? {
                    0 => text.push_str(u.arbitrary::<&str>()?),
                    1 => {
                        let at = floor_char_boundary(text, u.arbitrary::<u8>()?.into());
                        text.truncate(at);
                    }
                    2 => *text = text.to_uppercase(),
                    _ => text.insert_str(0, u.arbitrary::<&str>()?),
                }
            }
        }
        // Graft a table or value from anywhere in the shipped configs under a known key.
        5 => {
            let key = u.choose(&corpus.keys)?.clone();
            let value = u.choose(&corpus.values)?.clone();
            target.insert(key, value);
        }
        // Rename a key (to a known one: moves a value to where another kind is expected).
        _ if !keys.is_empty() => {
            let key = u.choose(&keys)?.clone();
            if let Some(value) = target.remove(&key) {
                let new_key = u.choose(&corpus.keys)?.clone();
                target.insert(new_key, value);
            }
        }
        _ => {}
    }
    Ok(())
}

/// A table somewhere in the tree: walk down through tables and arrays of tables. The path
/// is chosen on a shared borrow first, then followed mutably.
fn pick_table<'t>(tree: &'t mut Table, u: &mut Unstructured<'_>) -> ArbResult<&'t mut Table> {
    let mut path: Vec<(String, usize)> = Vec::new();
    let mut current: &Table = tree;
    for _ in 0..6 {
        if !u.arbitrary::<bool>()? {
            break;
        }
        let children: Vec<&String> = current
            .iter()
            .filter(|(_, v)| match v {
                Value::Table(_) => true,
                Value::Array(items) => items.iter().any(Value::is_table),
                _ => false,
            })
            .map(|(k, _)| k)
            .collect();
        if children.is_empty() {
            break;
        }
        let key = *u.choose(&children)?;
        let choice = usize::from(u.arbitrary::<u8>()?);
        current = match current.get(key) {
            Some(Value::Table(table)) => table,
            Some(Value::Array(items)) => match items.get(choice % items.len().max(1)) {
                Some(Value::Table(table)) => table,
                _ => break,
            },
            _ => break,
        };
        path.push((key.clone(), choice));
    }
    let mut current = tree;
    for (key, choice) in path {
        current = match current.get_mut(&key) {
            Some(Value::Table(table)) => table,
            Some(Value::Array(items)) => {
                let len = items.len().max(1);
                match items.get_mut(choice % len) {
                    Some(Value::Table(table)) => table,
                    _ => unreachable!("checked on the way down"),
                }
            }
            _ => unreachable!("checked on the way down"),
        };
    }
    Ok(current)
}

/// A value of any type: one seen in the shipped configs, or a new one, often an edge case.
fn new_value(corpus: &Corpus, u: &mut Unstructured<'_>) -> ArbResult<Value> {
    Ok(match u.int_in_range(0..=9u8)? {
        0..=2 => u.choose(&corpus.values)?.clone(),
        3 => Value::String(u.arbitrary()?),
        4 => Value::String(
            u.choose(&[
                "",
                " ",
                "0",
                "0s",
                "-1s",
                "1ms",
                "10/s",
                "0/s",
                "1/0s",
                "99999999999h",
                "1 GiB",
                "0.0.0.0:0",
                "[::]:65535",
                "256.1.1.1:80",
                "::ffff:1.2.3.4",
                "10.0.0.0/33",
                "*",
                "*.",
                "*.*.example.com",
                ".",
                "..",
                "/",
                "//",
                "/../",
                "%2F",
                "\u{0}",
                "é",
                "example.com.",
                "EXAMPLE.COM",
                "xn--",
                "a..b",
                "http-01",
                "dns-01",
                "http://[::1",
                "https://",
                "mailto:",
                "2xx",
                "5xx,200-299",
                "999",
                "@",
            ])?
            .to_string(),
        ),
        5 => Value::Integer(*u.choose(&[
            0,
            -1,
            1,
            i64::MAX,
            i64::MIN,
            u32::MAX as i64,
            u32::MAX as i64 + 1,
            u16::MAX as i64 + 1,
            u64::MAX as i64,
        ])?),
        6 => Value::Integer(u.arbitrary()?),
        7 => Value::Float(*u.choose(&[f64::NAN, f64::INFINITY, -0.0, 1e308, -1.5, 0.5])?),
        8 => Value::Boolean(u.arbitrary()?),
        _ => {
            if u.arbitrary()? {
                Value::Array(vec![u.choose(&corpus.values)?.clone()])
            } else {
                Value::Table(Table::new())
            }
        }
    })
}
