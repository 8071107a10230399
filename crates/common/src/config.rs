//! Reading a daemon's TOML config file, with one error type whose message names the file and
//! the field. Each daemon parses the raw file into its own validated `Config`.

use std::path::{Path, PathBuf};

use serde::de::DeserializeOwned;

/// The config file could not be used. The message names the file and the field.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("{path}: field `{field}`: {message}")]
    Field {
        path: PathBuf,
        field: &'static str,
        message: String,
    },
}

/// Reads a config file; a missing file reads as empty (all defaults) unless `required`.
pub fn read_text(path: &Path, required: bool) -> Result<String, ConfigError> {
    match std::fs::read_to_string(path) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound && !required => Ok(String::new()),
        Err(source) => Err(ConfigError::Read {
            path: path.to_owned(),
            source,
        }),
        Ok(text) => Ok(text),
    }
}

/// Parses the raw shape of a config file (unknown fields are refused by the shape itself).
pub fn parse_toml<T: DeserializeOwned>(path: &Path, text: &str) -> Result<T, ConfigError> {
    toml::from_str(text).map_err(|e| ConfigError::Parse {
        path: path.to_owned(),
        message: e.to_string(),
    })
}

/// A maker of field errors for `path`.
pub fn field_error(path: &Path) -> impl Fn(&'static str, String) -> ConfigError + '_ {
    move |field, message| ConfigError::Field {
        path: path.to_owned(),
        field,
        message,
    }
}

/// The settings a daemon kept when it read its file again: those that need a restart.
pub fn restart_needed<'a>(changed: impl IntoIterator<Item = (&'a str, bool)>) -> Vec<&'a str> {
    changed
        .into_iter()
        .filter_map(|(name, differs)| differs.then_some(name))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Raw {
        a: Option<u32>,
    }

    #[test]
    fn errors_name_the_file_and_a_missing_optional_file_is_empty() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.toml");
        assert_eq!(read_text(&path, false).unwrap(), "");
        let e = read_text(&path, true).unwrap_err().to_string();
        assert!(e.contains("x.toml"), "{e}");
        let e = parse_toml::<Raw>(&path, "b = 1").unwrap_err().to_string();
        assert!(e.contains("x.toml") && e.contains("unknown field"), "{e}");
        let e = field_error(&path)("a", "too big".into()).to_string();
        assert!(e.ends_with("field `a`: too big"), "{e}");
        assert_eq!(restart_needed([("x", true), ("y", false)]), ["x"]);
    }
}
