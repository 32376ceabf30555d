//! sluice configuration: the TOML file (`file`), its validation (`validate`) and the
//! typed runtime configuration the proxy is built from (`model`).
//!
//! Only this crate touches serde. A config error names the file, the line, the key
//! and what to change; validation never panics and lists every problem it finds
//! (a TOML syntax or type error stops parsing, so it is reported alone).
#![forbid(unsafe_code)]

mod duration;
mod file;
mod model;
mod validate;

use std::fmt;
use std::path::{Path, PathBuf};

pub use duration::parse_duration;
pub use model::*;

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
pub fn parse(source: &str, path: &Path) -> Result<Config, ConfigError> {
    let invalid = |problems| ConfigError::Invalid { path: path.to_path_buf(), problems };
    let file: file::FileConfig = toml::from_str(source).map_err(|e| invalid(vec![syntax_problem(source, &e)]))?;
    let base_dir = path.parent().unwrap_or(Path::new("."));
    validate::validate(file, source, base_dir).map_err(invalid)
}

/// Turns a TOML/serde error into a problem; the key is read off the offending line.
fn syntax_problem(source: &str, error: &toml::de::Error) -> Problem {
    let offset = error.span().map(|s| s.start).unwrap_or(0);
    let line = validate::line_of(source, offset);
    let text = source.lines().nth(line - 1).unwrap_or("").trim();
    let key = text.split_once('=').map(|(k, _)| k.trim()).unwrap_or(text).to_string();
    let message = error.message().trim().replace('\n', " ");
    Problem { line, key, message: format!("{message} (in `{text}`)") }
}

#[cfg(test)]
mod tests;
