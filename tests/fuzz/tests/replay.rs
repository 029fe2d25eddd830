//! Every file of every corpus (`corpus/NAME/`) and every crash input (`regressions/NAME/`)
//! through its target, as CI runs them: no instrumented build, no fuzzer. A target without a
//! corpus directory, and a directory without a target, fail the test.

use std::fs;
use std::path::{Path, PathBuf};

fn inputs(dir: &Path) -> Vec<PathBuf> {
    let Ok(entries) = fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut files: Vec<PathBuf> = entries
        .map(|e| e.expect("a readable directory entry").path())
        .filter(|p| p.is_file())
        .collect();
    files.sort();
    files
}

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).to_path_buf()
}

#[test]
fn every_corpus_and_regression_input_runs_through_its_target_without_a_panic() {
    let mut failed = Vec::new();
    for (name, target) in isthmus_fuzz::TARGETS {
        let corpus = inputs(&root().join("corpus").join(name));
        assert!(!corpus.is_empty(), "corpus/{name}/ has no seeds");
        let regressions = inputs(&root().join("regressions").join(name));
        for path in corpus.iter().chain(&regressions) {
            let data = fs::read(path).expect("a readable input");
            if std::panic::catch_unwind(|| target(&data)).is_err() {
                failed.push(path.display().to_string());
            }
        }
        eprintln!(
            "{name}: {} corpus files, {} regressions",
            corpus.len(),
            regressions.len()
        );
    }
    assert!(failed.is_empty(), "inputs that panic: {failed:#?}");
}

#[test]
fn every_directory_has_a_target_and_every_target_a_fuzz_target_file() {
    let names: Vec<&str> = isthmus_fuzz::TARGETS.iter().map(|(n, _)| *n).collect();
    for dir in ["corpus", "regressions"] {
        let Ok(entries) = fs::read_dir(root().join(dir)) else {
            continue;
        };
        for e in entries {
            let name = e.expect("a readable directory entry").file_name();
            let name = name.to_string_lossy();
            assert!(names.contains(&name.as_ref()), "{dir}/{name} has no target");
        }
    }
    for name in names {
        let file = root()
            .join("cargo-fuzz/fuzz_targets")
            .join(format!("{name}.rs"));
        let text = fs::read_to_string(&file).unwrap_or_default();
        assert!(
            text.contains(&format!("isthmus_fuzz::{name}::run(")),
            "{} must call isthmus_fuzz::{name}::run",
            file.display()
        );
    }
}
