//! The examples a user of the facade sees name no crate but `natt` (and `std`), and every one
//! of them is compiled by the facade's doc tests (`shown_examples` in `src/lib.rs`).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)]

use std::fs;
use std::path::{Path, PathBuf};

/// The workspace's `crates` directory.
fn crates_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// The example files of the crates natt re-exports items of: `(crate, file name, text)`.
fn example_files() -> Vec<(String, String, String)> {
    let mut found = Vec::new();
    for entry in fs::read_dir(crates_dir()).unwrap() {
        let krate = entry.unwrap().path();
        let Ok(docs) = fs::read_dir(krate.join("doc")) else {
            continue;
        };
        for doc in docs {
            let path = doc.unwrap().path();
            if path.extension().is_some_and(|e| e == "md") {
                found.push((
                    krate.file_name().unwrap().to_string_lossy().into_owned(),
                    path.file_name().unwrap().to_string_lossy().into_owned(),
                    fs::read_to_string(&path).unwrap(),
                ));
            }
        }
    }
    found.sort();
    found
}

/// The crates a user of natt alone cannot name, found in `code`.
fn foreign_crates(code: &str) -> Vec<String> {
    // String literals (IPv6 addresses such as "[2001:db8::1]:9") are not paths.
    let mut in_string = false;
    let code: String = code
        .chars()
        .map(|c| {
            if c == '"' {
                in_string = !in_string;
            }
            if in_string && c != '"' { ' ' } else { c }
        })
        .collect();
    let code = code.as_str();
    let mut foreign = Vec::new();
    for (i, _) in code.match_indices("::") {
        let head = &code[..i];
        let start = head
            .rfind(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .map_or(0, |p| p + 1);
        let name = &head[start..];
        let qualified = head[..start].ends_with("::");
        let turbofish = code[i + 2..].starts_with('<');
        let allowed = qualified
            || turbofish
            || name.is_empty()
            || name.starts_with(char::is_uppercase)
            || ["natt", "std", "core", "alloc", "self", "crate", "super"].contains(&name);
        if !allowed {
            foreign.push(name.to_owned());
        }
    }
    foreign
}

#[test]
fn the_foreign_crate_check_finds_what_it_should() {
    assert_eq!(
        foreign_crates("use natt_core::MappedUdpSocket; let s: socket2::Socket = t.parse::<u8>();"),
        ["natt_core", "socket2"]
    );
    assert!(foreign_crates("use natt::socket2::Socket; natt::core::arbiter::Claim::X; String::new()").is_empty());
    assert!(foreign_crates(r#"ServerName::parse("[2001:db8::1]:9", 3478)"#).is_empty());
}

#[test]
fn shown_examples_name_no_crate_but_natt() {
    let files = example_files();
    assert!(files.len() >= 16, "{} example files", files.len());
    for (krate, name, text) in files {
        assert!(text.contains("```"), "{krate}/doc/{name} holds no code block");
        let foreign = foreign_crates(&text);
        assert!(
            foreign.is_empty(),
            "{krate}/doc/{name} names {foreign:?}: write natt::..."
        );
    }
}

#[test]
fn every_shown_example_is_compiled_through_the_facade_and_shown_by_its_crate() {
    let facade = fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("src/lib.rs")).unwrap();
    for (krate, name, _) in example_files() {
        let path = format!("\"../../{krate}/doc/{name}\"");
        assert!(facade.contains(&path), "{path} is not in natt's shown_examples");
        let shown = format!("include_str!(\"../doc/{name}\")");
        let src = crates_dir().join(&krate).join("src");
        let used = fs::read_dir(&src)
            .unwrap()
            .any(|f| fs::read_to_string(f.unwrap().path()).is_ok_and(|s| s.contains(&shown)));
        assert!(used, "{krate}/doc/{name} is shown by no item of {krate}");
    }
}

#[test]
fn the_readme_library_example_names_no_crate_but_natt() {
    let readme = fs::read_to_string(crates_dir().join("../README.md")).unwrap();
    let library = readme.split("\n## Library\n").nth(1).expect("a \"## Library\" section");
    let block = library
        .split("```rust")
        .nth(1)
        .and_then(|b| b.split("\n```").next())
        .expect("a rust code block under \"## Library\"");
    assert!(block.contains("fn main()"), "{block}");
    assert!(
        block.contains("port_mappings.release()"),
        "the crate docs say to release: {block}"
    );
    assert!(block.contains("is_punch_packet"), "{block}");
    let foreign = foreign_crates(block);
    assert!(foreign.is_empty(), "the README's library example names {foreign:?}");
}
