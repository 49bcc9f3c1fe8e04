//! The import layering of `src/`, checked: each folder uses only the folders below it, so
//! that the picture of the house (main, cli > service > relay > commands > delivery > smtp, http, auth > config >
//! message > sys) stays true as code is added. Test-only: it reads the sources.

use std::path::{Path, PathBuf};

/// Each folder (or top-level file) and its height; a file may use `crate::X` only for an
/// `X` lower than its own. Folders of the same height are siblings and use none of each
/// other (smtp, http and auth).
const LAYERS: [(&str, u8); 13] = [
    ("main", 8),
    ("cli", 8),
    ("layering", 8),
    ("service", 7),
    ("relay", 6),
    ("commands", 5),
    ("delivery", 4),
    ("smtp", 3),
    ("auth", 3),
    ("http", 3),
    ("config", 2),
    ("message", 1),
    ("sys", 0),
];

/// Leaf value types anyone may use; they use no other module themselves.
const LEAVES: [&str; 4] = ["error", "secret", "testing", "transcript"];

/// Upward uses not yet removed, each with the refactor that removes it. Keep it empty.
const KNOWN: [(&str, &str); 0] = [];

/// Where a file sits: `src/auth/token.rs` is in `auth`, `src/cli.rs` in `cli`.
fn folder(relative: &Path) -> String {
    let first = relative.components().next().unwrap();
    let name = first.as_os_str().to_string_lossy();
    name.strip_suffix(".rs").unwrap_or(&name).to_string()
}

/// `None` for a leaf.
fn height(folder: &str) -> Option<u8> {
    if LEAVES.contains(&folder) {
        return None;
    }
    let found = LAYERS.iter().find(|(name, _)| *name == folder);
    // Anything else named `crate::X` is an item of main.rs: the top.
    Some(found.map_or(8, |(_, height)| *height))
}

/// The first segment of every `crate::` path in `code`: `crate::auth::token::x` and
/// `crate::{auth::token, sys::signals}` name `auth` (and `sys`).
fn crate_uses(code: &str) -> Vec<String> {
    let mut found = Vec::new();
    for (at, _) in code.match_indices("crate::") {
        let before = code[..at].chars().next_back();
        if before.is_some_and(|c| c.is_alphanumeric() || c == '_') {
            continue; // `my_crate::`, not ours
        }
        let rest = &code[at + "crate::".len()..];
        match rest.strip_prefix('{') {
            Some(group) => {
                let mut depth = 0;
                let mut start = 0;
                for (i, c) in group.char_indices() {
                    match c {
                        '{' => depth += 1,
                        '}' if depth == 0 => {
                            found.push(first_ident(&group[start..i]));
                            break;
                        }
                        '}' => depth -= 1,
                        ',' if depth == 0 => {
                            found.push(first_ident(&group[start..i]));
                            start = i + 1;
                        }
                        _ => {}
                    }
                }
            }
            None => found.push(first_ident(rest)),
        }
    }
    found.retain(|name| !name.is_empty());
    found
}

fn first_ident(text: &str) -> String {
    text.trim_start()
        .chars()
        .take_while(|c| c.is_alphanumeric() || *c == '_')
        .collect()
}

/// The code of a source file without its comments' lines, which may name anything.
fn code_of(text: &str) -> String {
    let code: Vec<&str> = text
        .lines()
        .filter(|line| !line.trim_start().starts_with("//"))
        .collect();
    code.join("\n")
}

fn rust_files(dir: &Path, files: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rust_files(&path, files);
        } else if path.extension().is_some_and(|e| e == "rs") {
            files.push(path);
        }
    }
}

/// Every use of a folder at or above the user's own height, as "file: crate::X".
fn upward_uses(src: &Path) -> Vec<String> {
    let mut files = Vec::new();
    rust_files(src, &mut files);
    files.sort();
    let mut wrong = Vec::new();
    for file in files {
        let relative = file.strip_prefix(src).unwrap();
        let from = folder(relative);
        if from == "layering" {
            continue; // its tests spell out uses, as examples
        }
        let text = std::fs::read_to_string(&file).unwrap();
        for to in crate_uses(&code_of(&text)) {
            if to == from || KNOWN.contains(&(from.as_str(), to.as_str())) {
                continue;
            }
            let allowed = match (height(&from), height(&to)) {
                (_, None) => true,
                (None, Some(_)) => false,
                (Some(mine), Some(theirs)) => theirs < mine,
            };
            let line = format!("src/{}: crate::{to}", relative.display());
            if !allowed && !wrong.contains(&line) {
                wrong.push(line);
            }
        }
    }
    wrong
}

#[test]
fn every_folder_uses_only_the_folders_below_it() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let wrong = upward_uses(&src);
    assert!(
        wrong.is_empty(),
        "these files use a folder at or above their own (main, cli > service > relay > commands > delivery > smtp, http, auth > config > message > sys; error, secret and transcript for all):\n  {}",
        wrong.join("\n  ")
    );
}

#[test]
fn every_file_is_in_a_layer() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    for file in files {
        let folder = folder(file.strip_prefix(&src).unwrap());
        assert!(
            LEAVES.contains(&folder.as_str()) || LAYERS.iter().any(|(name, _)| *name == folder),
            "src/{folder} is in no layer: add it to LAYERS (or LEAVES) in src/layering.rs"
        );
    }
}

#[test]
fn uses_are_found_in_paths_groups_and_not_in_comments() {
    let code = code_of(
        "use crate::auth::token;\nuse crate::{sys::signals, message::{address, intake}};\n// crate::cli in a comment\nlet x = crate::config::Config::default(); other_crate::smtp::x();\n",
    );
    assert_eq!(crate_uses(&code), ["auth", "sys", "message", "config"]);
}

#[test]
fn an_upward_or_sibling_use_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let write = |path: &str, text: &str| {
        let path = dir.path().join(path);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, text).unwrap();
    };
    write(
        "config/mod.rs",
        "use crate::auth::store::StoreKind;\nuse crate::sys::files;\n",
    );
    write(
        "smtp/client.rs",
        "use crate::{error::Error, auth::token};\n",
    );
    write("sys/files.rs", "use crate::error::Result;\n");
    write("error.rs", "use crate::sys::files;\n");
    assert_eq!(
        upward_uses(dir.path()),
        [
            "src/config/mod.rs: crate::auth",
            "src/error.rs: crate::sys",
            "src/smtp/client.rs: crate::auth",
        ]
    );
}
