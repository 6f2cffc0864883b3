//! Reading and writing HTTP at the edges of the client: URLs into targets,
//! redirects, hyper's and the socket's errors into ours, body decoding.

use std::net::SocketAddr;

use bytes::Bytes;

use crate::{HttpError, Request, Response, tls};

pub(crate) struct Target {
    /// The URL as given, parsed again as the cookie jar needs it only
    /// when cookies are involved (a full WHATWG parse costs more than the
    /// rest of this split).
    pub(crate) url: String,
    pub(crate) https: bool,
    pub(crate) host: String,
    pub(crate) port: u16,
    pub(crate) authority: String,
    /// The request line's target: the path for HTTP/1.1, the absolute URL
    /// for HTTP/2 (its :scheme and :authority come from it). Parsed here
    /// once, so a URL requested again is not parsed again.
    pub(crate) h1_uri: hyper::Uri,
    pub(crate) h2_uri: hyper::Uri,
}

impl Target {
    /// The URL as the cookie jar needs it.
    pub(crate) fn cookie_url(&self) -> Option<url::Url> {
        url::Url::parse(&self.url).ok()
    }
}

/// The request a redirect response asks for, if it is one; `None` when
/// `resp` is not a redirect with a usable `Location`.
pub fn redirect(req: &Request, resp: &Response) -> Option<Result<Request, HttpError>> {
    if !matches!(resp.status, 301 | 302 | 303 | 307 | 308) {
        return None;
    }
    let location = resp
        .headers
        .iter()
        .find(|(k, _)| k == "location")
        .map(|(_, v)| v.as_str())?;
    let base = match url::Url::parse(&req.url) {
        Ok(u) => u,
        Err(e) => {
            return Some(Err(HttpError::InvalidRequest(format!(
                "bad URL '{}': {e}",
                req.url
            ))));
        }
    };
    let next = match base.join(location) {
        Ok(u) => u,
        Err(e) => {
            return Some(Err(HttpError::Protocol(format!(
                "redirect to an invalid Location '{location}': {e}"
            ))));
        }
    };
    // As browsers and curl do: 303 becomes GET, and so does a POST that
    // meets 301/302; 307/308 repeat the request as it was.
    let method = req.method.to_ascii_uppercase();
    let to_get = (resp.status == 303 && method != "HEAD")
        || (matches!(resp.status, 301 | 302) && method == "POST");
    let same_origin = next.origin() == base.origin();
    let headers = req
        .headers
        .iter()
        .filter(|(k, _)| {
            let k = k.to_ascii_lowercase();
            // Credentials are not carried to another origin.
            let credential = matches!(
                k.as_str(),
                "authorization" | "cookie" | "proxy-authorization"
            );
            let body_header = to_get && matches!(k.as_str(), "content-type" | "content-length");
            !(body_header || (credential && !same_origin))
        })
        .cloned()
        .collect();
    Some(Ok(Request {
        method: if to_get {
            "GET".into()
        } else {
            req.method.clone()
        },
        url: next.to_string(),
        headers,
        body: if to_get { None } else { req.body.clone() },
        timeout: req.timeout,
        trace: req.trace,
    }))
}

pub(crate) fn parse_url(url: &str) -> Result<Target, HttpError> {
    let uri: hyper::Uri = url
        .parse()
        .map_err(|e| HttpError::InvalidRequest(format!("bad URL '{url}': {e}")))?;
    let https = match uri.scheme_str() {
        Some("https") => true,
        Some("http") => false,
        Some(other) => {
            return Err(HttpError::InvalidRequest(format!(
                "unsupported scheme '{other}' in '{url}' (use http or https)"
            )));
        }
        None => {
            return Err(HttpError::InvalidRequest(format!(
                "URL '{url}' is not absolute (it needs http:// or https://)"
            )));
        }
    };
    let raw_host = uri
        .host()
        .filter(|h| !h.is_empty())
        .ok_or_else(|| HttpError::InvalidRequest(format!("URL '{url}' has no host")))?;
    let host = raw_host
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_ascii_lowercase();
    let port = uri.port_u16().unwrap_or(if https { 443 } else { 80 });
    let authority = match (raw_host.contains(':'), uri.port_u16()) {
        (_, Some(p)) => format!("{raw_host}:{p}"),
        (_, None) => raw_host.to_string(),
    };
    let path = uri
        .path_and_query()
        .map(|p| p.as_str().to_string())
        .filter(|p| !p.is_empty())
        .unwrap_or_else(|| "/".to_string());
    let scheme = if https { "https" } else { "http" };
    let bad = |e: hyper::http::uri::InvalidUri| {
        HttpError::InvalidRequest(format!("bad URL '{url}': {e}"))
    };
    let h1_uri = path.parse().map_err(bad)?;
    let h2_uri = format!("{scheme}://{authority}{path}")
        .parse()
        .map_err(bad)?;
    Ok(Target {
        url: url.to_string(),
        https,
        host,
        port,
        authority,
        h1_uri,
        h2_uri,
    })
}

pub(crate) fn connect_error(addr: SocketAddr, e: &std::io::Error) -> HttpError {
    use std::io::ErrorKind;
    let what = match e.kind() {
        ErrorKind::ConnectionRefused => "connection refused".to_string(),
        ErrorKind::TimedOut => "connection timed out".to_string(),
        ErrorKind::HostUnreachable | ErrorKind::NetworkUnreachable => "unreachable".to_string(),
        _ => e.to_string(),
    };
    HttpError::Connect(format!("{addr}: {what}"))
}

pub(crate) fn hyper_error(e: &hyper::Error) -> HttpError {
    use std::error::Error as _;
    // With TLS 1.3 the server judges our client certificate after the
    // handshake, so its refusal arrives on the first read.
    let mut source = e.source();
    while let Some(s) = source {
        if let Some(r) = s.downcast_ref::<rustls::Error>() {
            return HttpError::Tls(tls::rustls_words("", r));
        }
        if let Some(r) = s
            .downcast_ref::<std::io::Error>()
            .and_then(|io| io.get_ref())
            .and_then(|inner| inner.downcast_ref::<rustls::Error>())
        {
            return HttpError::Tls(tls::rustls_words("", r));
        }
        source = s.source();
    }
    let cause = e.source().map(|s| format!(": {s}")).unwrap_or_default();
    if e.is_parse_too_large() {
        HttpError::Limit("header size: the response head is larger than the limit".into())
    } else if e.is_parse() || e.is_parse_status() {
        HttpError::Malformed(format!("the response head could not be parsed{cause}"))
    } else if e.is_incomplete_message() {
        HttpError::Reset("the connection closed before the response head was complete".into())
    } else if e.is_timeout() {
        HttpError::Timeout(format!("the server did not answer in time{cause}"))
    } else {
        HttpError::Protocol(format!("{e}{cause}"))
    }
}

/// Decode a compressed body, never past `max` bytes (a small gzip can
/// expand to gigabytes).
pub(crate) fn decode_body(encoding: &str, raw: Bytes, max: u64) -> Result<Bytes, HttpError> {
    use std::io::Read;
    let encoding = encoding.trim().to_ascii_lowercase();
    let reader: Box<dyn Read> = match encoding.as_str() {
        "gzip" | "x-gzip" => Box::new(flate2::read::MultiGzDecoder::new(std::io::Cursor::new(raw))),
        // "deflate" is zlib-wrapped by the standard; some servers send it raw.
        "deflate" if raw.first().is_some_and(|b| b & 0x0f == 8) => {
            Box::new(flate2::read::ZlibDecoder::new(std::io::Cursor::new(raw)))
        }
        "deflate" => Box::new(flate2::read::DeflateDecoder::new(std::io::Cursor::new(raw))),
        "br" => Box::new(brotli::Decompressor::new(std::io::Cursor::new(raw), 8192)),
        "identity" | "" => return Ok(raw),
        other => {
            return Err(HttpError::Protocol(format!(
                "the server used content-encoding '{other}', which was not asked for"
            )));
        }
    };
    let mut out = Vec::new();
    reader.take(max + 1).read_to_end(&mut out).map_err(|e| {
        HttpError::Protocol(format!("the {encoding} body could not be decoded: {e}"))
    })?;
    if out.len() as u64 > max {
        return Err(HttpError::TooLarge(max));
    }
    Ok(Bytes::from(out))
}

pub(crate) fn header_value<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
}

pub(crate) fn headers_have(headers: &[(String, String)], name: &str) -> bool {
    header_value(headers, name).is_some()
}

pub(crate) fn version_name(v: hyper::Version) -> &'static str {
    match v {
        hyper::Version::HTTP_09 => "HTTP/0.9",
        hyper::Version::HTTP_10 => "HTTP/1.0",
        hyper::Version::HTTP_11 => "HTTP/1.1",
        hyper::Version::HTTP_2 => "HTTP/2",
        hyper::Version::HTTP_3 => "HTTP/3",
        _ => "HTTP/?",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_split_into_targets() {
        let t = parse_url("https://API.example.com/a?b=1").expect("valid");
        assert!(t.https);
        assert_eq!((t.host.as_str(), t.port), ("api.example.com", 443));
        assert_eq!(t.h1_uri, "/a?b=1");
        assert_eq!(t.h2_uri, "https://API.example.com/a?b=1");
        let t = parse_url("http://[::1]:8080").expect("valid");
        assert_eq!((t.host.as_str(), t.port), ("::1", 8080));
        assert_eq!(t.authority, "[::1]:8080");
        assert_eq!(t.h1_uri, "/");
        assert_eq!(t.h2_uri, "http://[::1]:8080/");
    }

    #[test]
    fn bad_urls_are_invalid_requests() {
        for bad in ["/relative", "ftp://x/", "not a url", "http://"] {
            let e = parse_url(bad).err().expect(bad);
            assert_eq!(e.kind(), crate::HttpErrorKind::InvalidRequest, "{bad}: {e}");
        }
    }
}
