//! sluice configuration: the TOML file (`file`), its validation (`validate`) and the
//! typed runtime configuration the proxy is built from (`model`).
//!
//! Only this crate touches serde. A config error names the file, the line, the key
//! and what to change; validation never panics and lists every problem it finds
//! (a TOML syntax or type error stops parsing, so it is reported alone).
#![forbid(unsafe_code)]

pub mod defaults;
mod duration;
mod file;
mod gateway;
mod model;
mod parse_problems;
mod size;
mod validate;
mod validate_cache;
mod validate_gateway;
mod validate_limits;
mod validate_listeners;
mod validate_redis;
mod validate_route;
mod validate_tracing;
mod validate_upstream;
mod warnings;

use std::fmt;
use std::path::{Path, PathBuf};

pub use duration::parse_duration;
pub use gateway::*;
pub use model::*;
pub use size::parse_size;
pub use validate_gateway::sha256;
pub use validate_limits::parse_rate;
pub use validate_redis::parse_redis_url;

/// One thing wrong in a config file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// 1-based line in the file.
    pub line: usize,
    /// Dotted key path, e.g. `upstream.api.endpoints[1]`.
    pub key: String,
    /// What is wrong and what to write instead.
    pub message: String,
}

/// Why a config file could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{}: cannot read the config file: {source}", path.display())]
    Read { path: PathBuf, source: std::io::Error },
    #[error("{}", render_problems(path, problems))]
    Invalid { path: PathBuf, problems: Vec<Problem> },
}

impl ConfigError {
    /// The problems found, empty for a read error.
    pub fn problems(&self) -> &[Problem] {
        match self {
            ConfigError::Read { .. } => &[],
            ConfigError::Invalid { problems, .. } => problems,
        }
    }
}

fn render_problems(path: &Path, problems: &[Problem]) -> String {
    let mut out = String::new();
    for (i, p) in problems.iter().enumerate() {
        if i > 0 {
            out.push('\n');
        }
        out.push_str(&format!("{}:{}: {}: {}", path.display(), p.line, p.key, p.message));
    }
    out
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "line {}: {}: {}", self.line, self.key, self.message)
    }
}

/// Reads and validates a config file.
pub fn load(path: &Path) -> Result<Config, ConfigError> {
    let source =
        std::fs::read_to_string(path).map_err(|source| ConfigError::Read { path: path.to_path_buf(), source })?;
    parse(&source, path)
}

/// Validates config text; `path` names the file in errors and anchors relative paths.
/// Every problem is reported in one pass: type errors and unknown keys first (each
/// offending line is set aside so that parsing can go on), then the checks of values.
pub fn parse(source: &str, path: &Path) -> Result<Config, ConfigError> {
    let invalid = |mut problems: Vec<Problem>| {
        problems.sort_by_key(|p| p.line);
        problems.dedup();
        ConfigError::Invalid { path: path.to_path_buf(), problems }
    };
    let (file, mut problems) = deserialize_collecting(source);
    let Some(file) = file else { return Err(invalid(problems)) };
    let base_dir = base_dir(path);
    match validate::validate(file, source, base_dir) {
        Ok(config) if problems.is_empty() => Ok(config),
        Ok(_) => Err(invalid(problems)),
        Err(more) => {
            problems.extend(more);
            Err(invalid(problems))
        }
    }
}

/// The folder relative paths in the file are read from: the file's own, whatever form
/// its path was given in (`ops.toml` has the empty parent: the current folder).
fn base_dir(path: &Path) -> &Path {
    match path.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent,
        _ => Path::new("."),
    }
}

/// At most this many parse problems are collected from one file.
const MAX_PARSE_PROBLEMS: usize = 50;

/// Deserializes the file, collecting each type error or unknown key and blanking the
/// text it came from, then trying again. Blanking keeps every byte offset (and so every
/// line number) of the original. Stops at a problem that blanking cannot step past: a
/// missing required key (blanking would hide the table it belongs to), or no progress.
fn deserialize_collecting(source: &str) -> (Option<file::FileConfig>, Vec<Problem>) {
    let mut text = source.as_bytes().to_vec();
    let mut problems: Vec<Problem> = Vec::new();
    while problems.len() < MAX_PARSE_PROBLEMS {
        let attempt = std::str::from_utf8(&text).map_err(|_| None).and_then(|t| toml::from_str(t).map_err(Some));
        let error = match attempt {
            Ok(file) => return (Some(file), problems),
            Err(None) => break,
            Err(Some(error)) => error,
        };
        let missing = error.message().starts_with("missing field");
        if missing && !problems.is_empty() {
            break; // most likely a key this loop blanked after reporting it
        }
        let problem = parse_problems::problem(source, &error);
        if problems.last() == Some(&problem) {
            break; // no progress
        }
        problems.push(problem);
        let Some(span) = error.span() else { break };
        // An unknown table goes with its keys (else they would land in the table above
        // it); an unknown key near a known one is read as that key (a required key spelt
        // wrong then does not end the search); anything else is blanked.
        if let Some((name, expected)) = parse_problems::unknown_key(error.message()) {
            if let Some(table) = parse_problems::table_range(&text, &span) {
                blank(&mut text, table);
                continue;
            }
            if let Some(near) = parse_problems::did_you_mean(name, &expected) {
                if parse_problems::read_as(&mut text, &span, near) {
                    continue;
                }
            }
        }
        let range = blank_range(&text, span);
        if missing || !text[range.clone()].iter().any(|b| !b.is_ascii_whitespace()) {
            break;
        }
        blank(&mut text, range);
    }
    (None, problems)
}

/// Spaces over `range`, newlines kept (offsets and line numbers stay).
fn blank(text: &mut [u8], range: std::ops::Range<usize>) {
    text[range].iter_mut().filter(|b| **b != b'\n').for_each(|b| *b = b' ');
}

/// What to blank for an error at `span`: the whole `key = value` line(s) when the span
/// is a key or a value after `=`, else (an array element) the span alone.
fn blank_range(text: &[u8], span: std::ops::Range<usize>) -> std::ops::Range<usize> {
    let start = span.start.min(text.len());
    let end = span.end.clamp(start, text.len());
    let line_start = text[..start].iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
    let line_end = |from: usize| text[from..].iter().position(|&b| b == b'\n').map_or(text.len(), |i| from + i);
    let before = String::from_utf8_lossy(&text[line_start..start]);
    let after = String::from_utf8_lossy(&text[end..line_end(end)]);
    let is_value = before.trim_end().ends_with('=');
    let is_key = after.trim_start().starts_with('=');
    if is_value || is_key || start == end {
        line_start..line_end(end)
    } else {
        start..end
    }
}

#[cfg(test)]
mod tests;
