//! The toolkit every reader of `waymark.toml` shares (the config's own
//! sections and each sink's keys): places in the file, the errors that name
//! them, and a [`Reader`] that collects every problem instead of stopping at
//! the first.

use std::fmt;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use toml::Spanned;
use toml::de::{DeValue, ValueDeserializer};

use waymark_record::units::{parse_duration, parse_size};

/// A place in the config file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Place {
    /// The file.
    pub file: PathBuf,
    /// 1-based line.
    pub line: usize,
    /// 1-based column (characters).
    pub column: usize,
    /// The line itself.
    pub text: String,
    /// Width of the marked part, characters.
    pub width: usize,
}

impl Place {
    pub(crate) fn at(file: &Path, src: &str, span: Range<usize>) -> Place {
        let start = span.start.min(src.len());
        let line_start = src[..start].rfind('\n').map_or(0, |i| i + 1);
        let line_end = src[start..].find('\n').map_or(src.len(), |i| start + i);
        let text = src[line_start..line_end].trim_end_matches('\r').to_string();
        let column = src[line_start..start].chars().count() + 1;
        let end = span.end.clamp(start, line_end);
        Place {
            file: file.to_path_buf(),
            line: src[..start].matches('\n').count() + 1,
            column,
            width: src[start..end].chars().count().max(1),
            text,
        }
    }
}

/// One problem in the file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// Where.
    pub place: Place,
    /// Which key, e.g. `journey "login" (#2) → timeout`.
    pub key: String,
    /// What is wrong.
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let p = &self.place;
        let n = p.line.to_string();
        let pad = " ".repeat(n.len());
        writeln!(
            f,
            "{}:{}:{}: {}: {}",
            p.file.display(),
            p.line,
            p.column,
            self.key,
            self.message
        )?;
        writeln!(f, "{pad} |")?;
        writeln!(f, "{n} | {}", p.text)?;
        write!(
            f,
            "{pad} | {}{}",
            " ".repeat(p.column - 1),
            "^".repeat(p.width)
        )
    }
}

/// Everything wrong with a config file.
#[derive(Debug, Clone, thiserror::Error)]
pub struct ConfigErrors(pub Vec<ConfigError>);

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            writeln!(f, "{e}")?;
        }
        write!(
            f,
            "{} problem{} in {}",
            self.0.len(),
            if self.0.len() == 1 { "" } else { "s" },
            self.0
                .first()
                .map(|e| e.place.file.display().to_string())
                .unwrap_or_default()
        )
    }
}

/// A size as `"64MiB"` or a plain integer of bytes.
#[derive(Clone, Debug)]
pub(crate) enum Size {
    Text(String),
    Bytes(i64),
}

impl<'de> Deserialize<'de> for Size {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl serde::de::Visitor<'_> for V {
            type Value = Size;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a size like \"64MiB\" or a number of bytes")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Size, E> {
                Ok(Size::Text(v.to_string()))
            }
            fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<Size, E> {
                Ok(Size::Bytes(v))
            }
        }
        d.deserialize_any(V)
    }
}

/// Collects errors while reading one file.
pub(crate) struct Reader<'a> {
    pub(crate) file: &'a Path,
    pub(crate) src: &'a str,
    pub(crate) errors: Vec<ConfigError>,
}

impl Reader<'_> {
    pub(crate) fn error(
        &mut self,
        span: Range<usize>,
        key: impl Into<String>,
        message: impl fmt::Display,
    ) {
        self.errors.push(ConfigError {
            place: Place::at(self.file, self.src, span),
            key: key.into(),
            message: message.to_string(),
        });
    }

    /// Reads one section with serde; on error, names the key whose key or
    /// value holds the error's position.
    pub(crate) fn section<T: for<'de> Deserialize<'de>>(
        &mut self,
        value: &Spanned<DeValue<'_>>,
        what: &str,
    ) -> Option<T> {
        match T::deserialize(ValueDeserializer::from(value.clone())) {
            Ok(v) => Some(v),
            Err(e) => {
                let span = e.span().unwrap_or_else(|| value.span());
                let key = key_at(value, span.start)
                    .map(|k| format!("{what} → {k}"))
                    .unwrap_or_else(|| what.to_string());
                // serde speaks Rust types; the reader wrote TOML.
                let message = e
                    .message()
                    .replace("expected i64", "expected an integer")
                    .replace("expected a boolean", "expected true or false");
                self.error(span, key, message);
                None
            }
        }
    }

    pub(crate) fn duration(&mut self, v: &Spanned<String>, key: &str) -> Option<Duration> {
        match parse_duration(v.get_ref()) {
            Ok(d) => Some(d),
            Err(e) => {
                self.error(v.span(), key, e);
                None
            }
        }
    }

    pub(crate) fn size(&mut self, v: &Spanned<Size>, key: &str) -> Option<u64> {
        match v.get_ref() {
            Size::Text(t) => match parse_size(t) {
                Ok(n) => Some(n as u64),
                Err(e) => {
                    self.error(v.span(), key, e);
                    None
                }
            },
            Size::Bytes(n) if *n > 0 => Some(*n as u64),
            Size::Bytes(n) => {
                self.error(
                    v.span(),
                    key,
                    format!("{n} is not a size; it must be above 0"),
                );
                None
            }
        }
    }

    pub(crate) fn http_url(&mut self, v: &Spanned<String>, key: &str) -> Option<String> {
        match http_url(v.get_ref()) {
            Ok(u) => Some(u),
            Err(e) => {
                self.error(v.span(), key, e.to_string());
                None
            }
        }
    }

    pub(crate) fn count(&mut self, v: &Spanned<i64>, key: &str, min: i64, max: i64) -> Option<i64> {
        let n = *v.get_ref();
        if (min..=max).contains(&n) {
            Some(n)
        } else {
            self.error(
                v.span(),
                key,
                format!("{n} is out of range: it must be from {min} to {max}"),
            );
            None
        }
    }
}

/// A sink's target that is not an http or https URL.
#[derive(Debug, Clone, thiserror::Error)]
#[error("'{0}' is not an http(s) URL")]
pub struct NotHttpUrl(pub String);

/// `text` if it is an http or https URL (what every network sink posts to).
pub fn http_url(text: &str) -> Result<String, NotHttpUrl> {
    match url::Url::parse(text) {
        Ok(u) if u.scheme() == "http" || u.scheme() == "https" => Ok(text.to_string()),
        _ => Err(NotHttpUrl(text.to_string())),
    }
}

/// A listen address: `HOST:PORT`, or `:PORT` for every interface (as Go
/// programs such as Prometheus and blackbox_exporter read it); port 0 picks a
/// free one.
pub fn listen_addr(text: &str) -> Option<std::net::SocketAddr> {
    match text.strip_prefix(':') {
        Some(port) => port
            .parse::<u16>()
            .ok()
            .map(|p| std::net::SocketAddr::from(([0, 0, 0, 0], p))),
        None => text.parse().ok(),
    }
}

/// The key of `table` at byte `pos` (its key or its value), if any.
pub(crate) fn key_at(table: &Spanned<DeValue<'_>>, pos: usize) -> Option<String> {
    let DeValue::Table(t) = table.get_ref() else {
        return None;
    };
    t.iter()
        .find(|(k, v)| k.span().contains(&pos) || v.span().contains(&pos))
        .map(|(k, _)| k.get_ref().to_string())
}

/// Replaces `${env:NAME}` in every string of the tree; `$${` stays a literal `${`.
pub(crate) fn substitute_env(
    value: &mut Spanned<DeValue<'_>>,
    env: &dyn Fn(&str) -> Option<String>,
    missing: &mut Vec<(Range<usize>, String)>,
) {
    let span = value.span();
    match value.get_mut() {
        DeValue::String(s) if s.contains("${") => {
            let mut out = String::with_capacity(s.len());
            let mut rest: &str = s;
            while let Some(i) = rest.find("${") {
                if rest[..i].ends_with('$') {
                    out.push_str(&rest[..i - 1]);
                    out.push_str("${");
                    rest = &rest[i + 2..];
                    continue;
                }
                out.push_str(&rest[..i]);
                let after = &rest[i + 2..];
                let Some(end) = after.find('}') else {
                    out.push_str(&rest[i..]);
                    rest = "";
                    break;
                };
                let inner = &after[..end];
                match inner.strip_prefix("env:") {
                    Some(name) => match env(name) {
                        Some(v) => out.push_str(&v),
                        None => missing.push((span.clone(), name.to_string())),
                    },
                    None => out.push_str(&rest[i..i + 3 + end]),
                }
                rest = &after[end + 1..];
            }
            out.push_str(rest);
            *s = out.into();
        }
        DeValue::Array(a) => {
            for v in a.iter_mut() {
                substitute_env(v, env, missing);
            }
        }
        DeValue::Table(t) => {
            for (_, v) in t.iter_mut() {
                substitute_env(v, env, missing);
            }
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listen_takes_a_bare_port_as_every_interface() {
        assert_eq!(listen_addr(":0"), Some("0.0.0.0:0".parse().expect("addr")));
        assert_eq!(
            listen_addr(":9464"),
            Some("0.0.0.0:9464".parse().expect("addr"))
        );
        assert_eq!(
            listen_addr("[::1]:80"),
            Some("[::1]:80".parse().expect("addr"))
        );
        assert_eq!(listen_addr("localhost"), None);
        assert_eq!(listen_addr(":http"), None);
    }
}
