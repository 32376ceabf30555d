//! The layer order ARCHITECTURE.md documents for this crate holds: every module
//! imports only from layers below its own (test code exempt). The order is read from
//! ARCHITECTURE.md itself, so the document and the code cannot drift apart unseen.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

/// The layers, top first, from the line `server → proxy → ...` under "sluice-proxy/".
fn documented_layers() -> Vec<Vec<String>> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let text = std::fs::read_to_string(root.join("ARCHITECTURE.md")).expect("ARCHITECTURE.md");
    let start = text.find("sluice-proxy/             the runtime, in layers").expect("the sluice-proxy entry");
    let line = text[start..].lines().nth(1).expect("the layer line").trim();
    line.split('→').map(|layer| layer.split(',').map(|m| m.trim().to_string()).collect()).collect()
}

/// `code` without its test code: an item after `#[cfg(test)]` (a `mod x { ... }` or a
/// function, to its closing brace; a `mod x;` line, whose file is then test code too,
/// named in the second value).
fn without_tests(code: &str) -> (String, Vec<String>) {
    let mut kept = String::new();
    let mut test_files = Vec::new();
    let mut rest = code;
    while let Some(at) = rest.find("#[cfg(test)]") {
        kept.push_str(&rest[..at]);
        let item = &rest[at + "#[cfg(test)]".len()..];
        let head_end = item.find(['{', ';']).unwrap_or(item.len());
        if item.as_bytes().get(head_end) == Some(&b';') {
            if let Some(name) = item[..head_end].trim().strip_prefix("mod ") {
                test_files.push(name.trim().to_string());
            }
            rest = &item[(head_end + 1).min(item.len())..];
            continue;
        }
        // Skip to the brace that closes the item.
        let mut depth = 0usize;
        let mut end = item.len();
        for (i, c) in item.char_indices().skip_while(|(i, _)| *i < head_end) {
            match c {
                '{' => depth += 1,
                '}' => {
                    depth -= 1;
                    if depth == 0 {
                        end = i + 1;
                        break;
                    }
                }
                _ => {}
            }
        }
        rest = &item[end..];
    }
    kept.push_str(rest);
    (kept, test_files)
}

/// A module's source files (a folder's, or one file), without their test code.
fn sources(src: &Path, module: &str) -> Vec<(PathBuf, String)> {
    let mut files = Vec::new();
    let folder = src.join(module);
    if folder.is_dir() {
        let mut stack = vec![folder];
        while let Some(dir) = stack.pop() {
            for entry in std::fs::read_dir(&dir).expect("read dir") {
                let path = entry.expect("entry").path();
                if path.is_dir() {
                    stack.push(path);
                } else if path.extension().is_some_and(|e| e == "rs") {
                    files.push(path);
                }
            }
        }
    } else {
        files.push(src.join(format!("{module}.rs")));
    }
    let read: Vec<(PathBuf, String, Vec<String>)> = files
        .into_iter()
        .map(|path| {
            let (code, test_files) = without_tests(&std::fs::read_to_string(&path).expect("read source"));
            (path, code, test_files)
        })
        .collect();
    let test_only: Vec<String> = read.iter().flat_map(|(_, _, names)| names.clone()).collect();
    read.into_iter()
        .filter(|(path, _, _)| {
            let stem = path.file_stem().and_then(|s| s.to_str()).unwrap_or("");
            !test_only.iter().any(|name| name == stem)
        })
        .map(|(path, code, _)| (path, code))
        .collect()
}

/// The crate's top-level modules that `code` names: `crate::x::...` and the items of
/// `use crate::{x, y::z}`.
fn imported(code: &str) -> Vec<String> {
    let ident = |s: &str| s.trim().chars().take_while(|c| c.is_ascii_alphanumeric() || *c == '_').collect::<String>();
    let mut names = Vec::new();
    for (at, _) in code.match_indices("crate::") {
        let rest = &code[at + 7..];
        match rest.strip_prefix('{') {
            Some(list) => {
                // The top-level items: split on commas outside nested braces.
                let mut depth = 0;
                let mut item = String::new();
                for c in list.chars() {
                    match c {
                        '{' => depth += 1,
                        '}' if depth == 0 => break,
                        '}' => depth -= 1,
                        ',' if depth == 0 => {
                            names.push(ident(&item));
                            item.clear();
                            continue;
                        }
                        _ => {}
                    }
                    if depth == 0 {
                        item.push(c);
                    }
                }
                names.push(ident(&item));
            }
            None => names.push(ident(rest)),
        }
    }
    names
}

#[test]
fn every_module_imports_only_from_the_layers_below_it() {
    let layers = documented_layers();
    let rank: HashMap<&str, usize> =
        layers.iter().enumerate().flat_map(|(i, layer)| layer.iter().map(move |m| (m.as_str(), i))).collect();
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    // Every module of the crate has its place in the order.
    for entry in std::fs::read_dir(&src).expect("src") {
        let path = entry.expect("entry").path();
        let name = path.file_stem().and_then(|n| n.to_str()).unwrap_or("").to_string();
        if name != "lib" && (path.is_dir() || path.extension().is_some_and(|e| e == "rs")) {
            assert!(rank.contains_key(name.as_str()), "module {name} is missing from ARCHITECTURE.md's layer order");
        }
    }
    let mut crossings = Vec::new();
    for (module, &own) in &rank {
        for (path, code) in sources(&src, module) {
            for used in imported(&code) {
                match rank.get(used.as_str()) {
                    Some(&theirs) if used != *module && theirs <= own => crossings.push(format!(
                        "{}: {module} (layer {own}) uses crate::{used} (layer {theirs})",
                        path.display()
                    )),
                    _ => {}
                }
            }
        }
    }
    assert!(crossings.is_empty(), "imports against the documented order:\n{}", crossings.join("\n"));
}
