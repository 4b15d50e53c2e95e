//! Writes every target's seed inputs into `fuzz/corpus/TARGET/seed-NAME` (the fuzzer's
//! finds, named by content hash, are left alone):
//! `cargo run --manifest-path fuzz/Cargo.toml --example seeds`.

use std::fs;
use std::path::Path;

fn main() -> std::io::Result<()> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("corpus");
    for t in natt_fuzz::TARGETS {
        let dir = root.join(t.name);
        fs::create_dir_all(&dir)?;
        let seeds = (t.seeds)();
        for (name, bytes) in &seeds {
            // Every seed runs clean before it is written.
            (t.run)(bytes);
            fs::write(dir.join(format!("seed-{name}")), bytes)?;
        }
        println!("{:<16} {} seeds", t.name, seeds.len());
    }
    Ok(())
}
