use std::path::PathBuf;

use serde::Deserialize;
use toml::Spanned;

use crate::sinks::registry::SinkReader;
use crate::spans::Size;

/// A `jsonl` sink.
#[derive(Debug, Clone, PartialEq)]
pub struct JsonlConfig {
    /// File, or `-` for standard output.
    pub path: PathBuf,
    /// Rotate when the file would grow past this (0: never).
    pub max_size: u64,
    /// Rotated files kept (`path.1` … `path.N`).
    pub keep: u32,
}

/// Rotated files kept unless `keep` says otherwise.
pub const DEFAULT_KEEP: u32 = 5;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Raw {
    path: Option<Spanned<String>>,
    max_size: Option<Spanned<Size>>,
    keep: Option<Spanned<i64>>,
}

pub(crate) fn read(s: &mut SinkReader<'_, '_>, raw: Raw) -> Option<JsonlConfig> {
    let Some(p) = &raw.path else {
        s.missing("missing key 'path' (a file, or \"-\" for standard output)");
        return None;
    };
    let path = if p.get_ref() == "-" {
        PathBuf::from("-")
    } else {
        s.base().join(p.get_ref())
    };
    let max_size = raw
        .max_size
        .as_ref()
        .and_then(|v| s.size(v, "max_size"))
        .unwrap_or(0);
    let keep = raw
        .keep
        .as_ref()
        .and_then(|k| s.count(k, "keep", 1, 1000))
        .map_or(DEFAULT_KEEP, |k| k as u32);
    Some(JsonlConfig {
        path,
        max_size,
        keep,
    })
}
