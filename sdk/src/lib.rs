//! Write Waymark journeys in Rust.
//!
//! A journey is a function that walks through a user flow: it makes timed
//! HTTP requests, groups them into named steps and records checks. Waymark
//! runs the compiled component in a sandbox and reports every step, check and
//! request phase (resolve, connect, tls, processing, transfer).
//!
//! ```no_run
//! use waymark_sdk::{check, http, step, vars, Result};
//!
//! #[derive(serde::Deserialize)]
//! struct Token { token: String }
//!
//! fn run() -> Result<()> {
//!     let base = vars::require("base_url")?;
//!     let token = step("log in", || -> Result<String> {
//!         let resp = http::post(format!("{base}/login"))
//!             .json(&serde_json::json!({"user": "qa", "password": vars::get("password")}))?
//!             .send()?;
//!         check("status is 200", resp.status == 200);
//!         Ok(resp.json::<Token>()?.token)
//!     })?;
//!     step("profile", || -> Result<()> {
//!         let resp = http::get(format!("{base}/me")).bearer(&token).send()?;
//!         check("status is 200", resp.status == 200);
//!         Ok(())
//!     })
//! }
//!
//! waymark_sdk::journey!(run);
//! # fn main() {}
//! ```
//!
//! Build it with `cargo build --release --target wasm32-wasip2` (crate type
//! `cdylib`) and run it with `waymark run target/wasm32-wasip2/release/NAME.wasm`.
#![deny(missing_docs)]

use std::fmt;
use std::time::Duration;

#[doc(hidden)]
pub mod __bindings {
    wit_bindgen::generate!({
        path: "../wit",
        world: "journey",
        pub_export_macro: true,
        export_macro_name: "__export_journey",
        default_bindings_module: "::waymark_sdk::__bindings",
    });
}

use __bindings::waymark::journey as wit;

/// Declare the journey's entry point: a `fn() -> waymark_sdk::Result<()>`.
///
/// Use it once per journey crate, at the crate root.
#[macro_export]
macro_rules! journey {
    ($run:path) => {
        #[doc(hidden)]
        pub struct __WaymarkJourney;
        impl $crate::__bindings::Guest for __WaymarkJourney {
            fn run() -> ::core::result::Result<(), ::std::string::String> {
                $run().map_err(|e| e.to_string())
            }
        }
        $crate::__bindings::__export_journey!(__WaymarkJourney);
    };
}

/// The error a journey returns: any error converts into it with `?`.
///
/// Its message becomes the run's error message.
pub struct Error {
    message: String,
}

impl Error {
    /// An error with a plain message.
    pub fn msg(message: impl fmt::Display) -> Self {
        Error {
            message: message.to_string(),
        }
    }
}

impl<E: std::error::Error> From<E> for Error {
    fn from(e: E) -> Self {
        Error::msg(e)
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl fmt::Debug for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

/// `Result` with [`Error`] as the default error type.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Return early from a journey with a formatted error message.
#[macro_export]
macro_rules! bail {
    ($($arg:tt)*) => {
        return ::core::result::Result::Err($crate::Error::msg(::std::format!($($arg)*)))
    };
}

/// Run `f` as a named step: its requests and checks are grouped under `name`
/// in the report, with the step's duration.
///
/// Steps may nest; the step ends when `f` returns, whatever it returns.
pub fn step<T>(name: &str, f: impl FnOnce() -> T) -> T {
    wit::report::step_start(name);
    let out = f();
    wit::report::step_end();
    out
}

/// Record a check. A failed check makes the run fail but does not stop the
/// journey. Returns `passed`, so it can guard the next action.
pub fn check(name: &str, passed: bool) -> bool {
    wit::report::check(name, passed, None);
    passed
}

/// Record a check with a detail line (shown in the report), such as the
/// value that was seen.
pub fn check_detail(name: &str, passed: bool, detail: impl fmt::Display) -> bool {
    wit::report::check(name, passed, Some(&detail.to_string()));
    passed
}

/// Check that `actual == expected`; on failure the detail says both values.
pub fn check_eq<T: PartialEq + fmt::Debug>(name: &str, actual: T, expected: T) -> bool {
    let passed = actual == expected;
    let detail = (!passed).then(|| format!("expected {expected:?}, got {actual:?}"));
    wit::report::check(name, passed, detail.as_deref());
    passed
}

/// Pause the journey (think time). The host thread is not held while waiting.
pub fn sleep(duration: Duration) {
    let ms = u32::try_from(duration.as_millis()).unwrap_or(u32::MAX);
    wit::report::sleep(ms);
}

/// Log lines that become part of the run's record.
pub mod log {
    use super::wit::report::{self, Level};

    /// Log at debug level.
    pub fn debug(message: impl AsRef<str>) {
        report::log(Level::Debug, message.as_ref());
    }
    /// Log at info level.
    pub fn info(message: impl AsRef<str>) {
        report::log(Level::Info, message.as_ref());
    }
    /// Log at warn level.
    pub fn warn(message: impl AsRef<str>) {
        report::log(Level::Warn, message.as_ref());
    }
    /// Log at error level.
    pub fn error(message: impl AsRef<str>) {
        report::log(Level::Error, message.as_ref());
    }
}

/// Variables and secrets the run was started with (`--var`, `--secret`).
pub mod vars {
    /// The value of `name`, if it was given.
    pub fn get(name: &str) -> Option<String> {
        super::wit::vars::get(name)
    }

    /// The value of `name`, or an error saying it is missing.
    pub fn require(name: &str) -> crate::Result<String> {
        get(name).ok_or_else(|| crate::Error::msg(format!("variable '{name}' is not set")))
    }

    /// The value of `name`, or `default` when it was not given.
    pub fn get_or(name: &str, default: &str) -> String {
        get(name).unwrap_or_else(|| default.to_string())
    }
}

/// Timed HTTP requests. Every request is measured phase by phase and appears
/// in the report under the current step.
pub mod http {
    use super::wit::http as w;
    use std::fmt;
    use std::time::Duration;

    pub use w::{Timings, TlsInfo};

    /// Start a `GET` request.
    pub fn get(url: impl Into<String>) -> RequestBuilder {
        request("GET", url)
    }
    /// Start a `POST` request.
    pub fn post(url: impl Into<String>) -> RequestBuilder {
        request("POST", url)
    }
    /// Start a `PUT` request.
    pub fn put(url: impl Into<String>) -> RequestBuilder {
        request("PUT", url)
    }
    /// Start a `PATCH` request.
    pub fn patch(url: impl Into<String>) -> RequestBuilder {
        request("PATCH", url)
    }
    /// Start a `DELETE` request.
    pub fn delete(url: impl Into<String>) -> RequestBuilder {
        request("DELETE", url)
    }
    /// Start a `HEAD` request.
    pub fn head(url: impl Into<String>) -> RequestBuilder {
        request("HEAD", url)
    }

    /// The cookies of the run's jar (set by earlier responses) that a
    /// request to `url` would carry.
    pub fn cookies(url: &str) -> Vec<(String, String)> {
        w::cookies(url)
    }

    /// Empty the run's cookie jar.
    pub fn clear_cookies() {
        w::clear_cookies();
    }

    /// Start a request with any method.
    pub fn request(method: &str, url: impl Into<String>) -> RequestBuilder {
        RequestBuilder {
            req: w::Request {
                method: method.to_string(),
                url: url.into(),
                headers: Vec::new(),
                body: None,
                timeout_ms: None,
                follow_redirects: None,
                trace: None,
            },
        }
    }

    /// A request being built; finish it with [`RequestBuilder::send`].
    #[must_use = "a request does nothing until it is sent"]
    pub struct RequestBuilder {
        req: w::Request,
    }

    impl RequestBuilder {
        /// Add a header.
        pub fn header(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
            self.req.headers.push((name.into(), value.into()));
            self
        }

        /// Add `Authorization: Bearer TOKEN`.
        pub fn bearer(self, token: &str) -> Self {
            self.header("authorization", format!("Bearer {token}"))
        }

        /// Set the body.
        pub fn body(mut self, body: impl Into<Vec<u8>>) -> Self {
            self.req.body = Some(body.into());
            self
        }

        /// Set a JSON body and `content-type: application/json`.
        pub fn json<T: serde::Serialize + ?Sized>(self, value: &T) -> crate::Result<Self> {
            let body = serde_json::to_vec(value)?;
            Ok(self.header("content-type", "application/json").body(body))
        }

        /// Send a W3C `traceparent` header (the default) or not.
        pub fn trace(mut self, on: bool) -> Self {
            self.req.trace = Some(on);
            self
        }

        /// Follow redirects (the default) or return a 3xx as it is.
        pub fn follow_redirects(mut self, follow: bool) -> Self {
            self.req.follow_redirects = Some(follow);
            self
        }

        /// Set a form body (`application/x-www-form-urlencoded`).
        pub fn form(self, fields: &[(&str, &str)]) -> Self {
            let body = fields
                .iter()
                .map(|(k, v)| format!("{}={}", form_encode(k), form_encode(v)))
                .collect::<Vec<_>>()
                .join("&");
            self.header("content-type", "application/x-www-form-urlencoded")
                .body(body)
        }

        /// Fail the request with `timeout` if it takes longer than `limit`.
        pub fn timeout(mut self, limit: Duration) -> Self {
            self.req.timeout_ms = Some(u32::try_from(limit.as_millis()).unwrap_or(u32::MAX));
            self
        }

        /// Send the request and read the whole response.
        ///
        /// A response with any status (404, 500, ...) is `Ok`; `Err` means no
        /// response was received.
        pub fn send(self) -> Result<Response, HttpError> {
            w::send(&self.req)
                .map(|r| Response {
                    status: r.status,
                    headers: r.headers,
                    body: r.body,
                    wire_bytes: r.wire_bytes,
                    timings: r.timings,
                    http_version: r.http_version,
                    remote_addr: r.remote_addr,
                    reused_connection: r.reused_connection,
                    tls: r.tls,
                })
                .map_err(HttpError::from_wit)
        }
    }

    fn form_encode(s: &str) -> String {
        let mut out = String::with_capacity(s.len());
        for b in s.bytes() {
            match b {
                b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'*' => {
                    out.push(char::from(b))
                }
                b' ' => out.push('+'),
                _ => out.push_str(&format!("%{b:02X}")),
            }
        }
        out
    }

    /// A complete HTTP response.
    #[derive(Debug, Clone)]
    pub struct Response {
        /// Status code.
        pub status: u16,
        /// Response headers, in order (names lower-case).
        pub headers: Vec<(String, String)>,
        /// The whole body (decoded, when the server compressed it).
        pub body: Vec<u8>,
        /// Body bytes as they came over the wire (before decoding).
        pub wire_bytes: u64,
        /// Phase durations.
        pub timings: Timings,
        /// e.g. `HTTP/1.1`.
        pub http_version: String,
        /// The peer's `ip:port`.
        pub remote_addr: Option<String>,
        /// True when a kept-alive connection was used.
        pub reused_connection: bool,
        /// The TLS session, for https.
        pub tls: Option<TlsInfo>,
    }

    impl Response {
        /// Parse the body as JSON.
        pub fn json<T: serde::de::DeserializeOwned>(&self) -> crate::Result<T> {
            serde_json::from_slice(&self.body).map_err(|e| {
                crate::Error::msg(format!("response body is not the expected JSON: {e}"))
            })
        }

        /// The body as text (invalid UTF-8 replaced).
        pub fn text(&self) -> String {
            String::from_utf8_lossy(&self.body).into_owned()
        }

        /// The first value of header `name` (case-insensitive).
        pub fn header(&self, name: &str) -> Option<&str> {
            self.headers
                .iter()
                .find(|(k, _)| k.eq_ignore_ascii_case(name))
                .map(|(_, v)| v.as_str())
        }

        /// True for 2xx statuses.
        pub fn is_success(&self) -> bool {
            (200..300).contains(&self.status)
        }
    }

    /// Why a request got no response: the world's `http-error` cases, each
    /// with the host's message (or, for `TooLarge`, the cap in bytes).
    #[derive(Debug, Clone, PartialEq, Eq)]
    #[non_exhaustive]
    pub enum HttpError {
        /// The sandbox refused the host or its address.
        Denied(String),
        /// The request could not be sent as written (bad URL, header, method).
        InvalidRequest(String),
        /// The name did not resolve.
        Resolve(String),
        /// No connection could be opened.
        Connect(String),
        /// The TLS handshake failed (certificate, protocol).
        Tls(String),
        /// A time limit expired.
        Timeout(String),
        /// The server broke HTTP.
        Protocol(String),
        /// The response could not be read (bad encoding, truncated).
        Malformed(String),
        /// The server closed or reset the connection.
        Reset(String),
        /// The body is larger than the cap, in bytes.
        TooLarge(u64),
        /// A per-run limit (requests, bytes) was reached.
        Limit(String),
    }

    impl HttpError {
        pub(crate) fn from_wit(e: w::HttpError) -> Self {
            match e {
                w::HttpError::Denied(m) => HttpError::Denied(m),
                w::HttpError::InvalidRequest(m) => HttpError::InvalidRequest(m),
                w::HttpError::Resolve(m) => HttpError::Resolve(m),
                w::HttpError::Connect(m) => HttpError::Connect(m),
                w::HttpError::Tls(m) => HttpError::Tls(m),
                w::HttpError::Timeout(m) => HttpError::Timeout(m),
                w::HttpError::Protocol(m) => HttpError::Protocol(m),
                w::HttpError::Malformed(m) => HttpError::Malformed(m),
                w::HttpError::Reset(m) => HttpError::Reset(m),
                w::HttpError::TooLarge(n) => HttpError::TooLarge(n),
                w::HttpError::Limit(m) => HttpError::Limit(m),
            }
        }

        /// True when the sandbox refused the host.
        pub fn is_denied(&self) -> bool {
            matches!(self, HttpError::Denied(_))
        }

        /// True when a time limit expired.
        pub fn is_timeout(&self) -> bool {
            matches!(self, HttpError::Timeout(_))
        }

        /// True when the name did not resolve or no connection opened.
        pub fn is_connect(&self) -> bool {
            matches!(self, HttpError::Resolve(_) | HttpError::Connect(_))
        }

        /// True when the TLS handshake failed.
        pub fn is_tls(&self) -> bool {
            matches!(self, HttpError::Tls(_))
        }

        /// True when the server broke the exchange (protocol, malformed
        /// response, reset).
        pub fn is_server_fault(&self) -> bool {
            matches!(
                self,
                HttpError::Protocol(_) | HttpError::Malformed(_) | HttpError::Reset(_)
            )
        }

        /// The case's name as the world and the record write it: `denied`,
        /// `invalid-request`, `resolve`, `connect`, `tls`, `timeout`,
        /// `protocol`, `malformed`, `reset`, `too-large` or `limit`.
        pub fn kind(&self) -> &'static str {
            match self {
                HttpError::Denied(_) => "denied",
                HttpError::InvalidRequest(_) => "invalid-request",
                HttpError::Resolve(_) => "resolve",
                HttpError::Connect(_) => "connect",
                HttpError::Tls(_) => "tls",
                HttpError::Timeout(_) => "timeout",
                HttpError::Protocol(_) => "protocol",
                HttpError::Malformed(_) => "malformed",
                HttpError::Reset(_) => "reset",
                HttpError::TooLarge(_) => "too-large",
                HttpError::Limit(_) => "limit",
            }
        }
    }

    impl fmt::Display for HttpError {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            match self {
                HttpError::Denied(m) => write!(f, "denied: {m}"),
                HttpError::InvalidRequest(m) => write!(f, "invalid request: {m}"),
                HttpError::Resolve(m) => write!(f, "could not resolve: {m}"),
                HttpError::Connect(m) => write!(f, "could not connect: {m}"),
                HttpError::Tls(m) => write!(f, "TLS failed: {m}"),
                HttpError::Timeout(m) => write!(f, "timed out: {m}"),
                HttpError::Protocol(m) => write!(f, "protocol error: {m}"),
                HttpError::Malformed(m) => write!(f, "malformed response: {m}"),
                HttpError::Reset(m) => write!(f, "connection reset: {m}"),
                HttpError::TooLarge(n) => write!(f, "response body larger than {n} bytes"),
                HttpError::Limit(m) => write!(f, "limit reached: {m}"),
            }
        }
    }

    impl std::error::Error for HttpError {}
}
