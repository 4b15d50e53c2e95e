//! Replays every corpus file (and every crash regression in `fuzz/regressions/TARGET/`)
//! through its target without libFuzzer, on stable Rust:
//! `cargo test --manifest-path fuzz/Cargo.toml`.

use std::fs;
use std::path::Path;

#[test]
fn every_corpus_input_runs_clean() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut total = 0;
    for t in natt_fuzz::TARGETS {
        for sub in ["corpus", "regressions"] {
            let Ok(entries) = fs::read_dir(root.join(sub).join(t.name)) else {
                continue;
            };
            for e in entries {
                let path = e.expect("a directory entry").path();
                // A running fuzzer may remove files it replaced by smaller ones.
                let Ok(bytes) = fs::read(&path) else { continue };
                (t.run)(&bytes);
                total += 1;
            }
        }
    }
    println!("{total} inputs replayed");
    assert!(total > 0, "no corpus");
}
