//! Every configuration file the project ships is checked: `config/tests/valid` loads,
//! each `config/tests/invalid/X.toml` makes `headland check` print exactly `X.expected`, the
//! reference and the examples pass, and a misspelt key anywhere in them is rejected.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::path::{Path, PathBuf};
use std::process::Command;

fn files(dir: &str, extension: &str) -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join(dir);
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.extension().is_some_and(|e| e == extension))
        .collect();
    files.sort();
    files
}

/// Runs `headland check` from the repository root with a relative path, as CI does.
fn check(path: &Path) -> (bool, String, String) {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let relative = path.strip_prefix(root).unwrap();
    let output = Command::new(support::binary())
        .current_dir(root)
        .args(["check", "--config"])
        .arg(relative)
        .output()
        .unwrap();
    (
        output.status.success(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

fn shipped_configs() -> Vec<PathBuf> {
    let mut all = files("config/tests/valid", "toml");
    all.extend(files("config/examples", "toml"));
    all.push(Path::new(env!("CARGO_MANIFEST_DIR")).join("config/headland.toml"));
    all
}

#[test]
fn valid_and_shipped_configs_pass_check() {
    let configs = shipped_configs();
    assert!(
        configs.len() >= 8,
        "expected the valid fixtures, examples and reference"
    );
    for path in configs {
        let (ok, stdout, stderr) = check(&path);
        assert!(ok, "{} failed:\n{stderr}", path.display());
        assert!(stdout.contains(": ok ("), "{stdout}");
    }
}

#[test]
fn invalid_configs_print_exactly_their_expected_errors() {
    let cases = files("config/tests/invalid", "toml");
    assert!(
        cases.len() >= 12,
        "at least 12 invalid cases, found {}",
        cases.len()
    );
    for path in cases {
        let expected_path = path.with_extension("expected");
        let expected = std::fs::read_to_string(&expected_path)
            .unwrap_or_else(|e| panic!("{}: {e}", expected_path.display()));
        let (ok, _, stderr) = check(&path);
        assert!(!ok, "{} was accepted", path.display());
        assert_eq!(stderr, expected, "{}", path.display());
    }
}

#[test]
fn a_misspelt_key_in_any_section_of_a_shipped_config_is_rejected() {
    for path in shipped_configs() {
        let text = std::fs::read_to_string(&path).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        let headers = lines
            .iter()
            .enumerate()
            .filter(|(_, line)| line.trim_start().starts_with('['));
        for (index, header) in headers {
            let mut mutated = lines.clone();
            mutated.insert(index + 1, "bogus_key_xyz = 1");
            let text = mutated.join("\n");
            let errors = headland::config::parse(&text, "mutated.toml", Path::new("/")).expect_err(
                &format!("{}: bogus key after {header} accepted", path.display()),
            );
            let message = errors.to_string();
            assert!(
                message.contains(&format!("mutated.toml:{}:", index + 2))
                    && message.contains("bogus_key_xyz"),
                "{} after {header}: {message}",
                path.display()
            );
        }
    }
}
