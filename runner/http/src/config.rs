//! What a client may do: the allow-list, TLS, resolver and caps shared by
//! every run of a process, and the settings people write that build them.

use std::collections::HashMap;
use std::sync::Arc;

use crate::{
    AllowList, Overrides, PatternError, Resolve, ResolveEntryError, SystemResolver, TlsConfigError,
    TlsOptions, tls,
};

/// Default cap on one response body.
pub const DEFAULT_MAX_BODY: u64 = 10 * 1024 * 1024;
/// Default cap on requests per run.
pub const DEFAULT_MAX_REQUESTS: u32 = 1000;
/// Default cap on body bytes received per run.
pub const DEFAULT_MAX_TOTAL_BYTES: u64 = 256 * 1024 * 1024;
/// Default cap on a response's status line and headers.
pub const DEFAULT_MAX_HEADER_BYTES: usize = 64 * 1024;
/// Default cap on redirects followed by one request.
pub const DEFAULT_MAX_REDIRECTS: u32 = 10;

/// Settings shared by every run of a process.
#[derive(Clone)]
pub struct HttpConfig {
    /// Hosts the journey may reach.
    pub allow: AllowList,
    /// Root certificates and protocol settings for https.
    pub tls: Arc<rustls::ClientConfig>,
    /// Server certificates are not verified (`--insecure`).
    pub insecure: bool,
    /// Largest response body read, in bytes.
    pub max_body: u64,
    /// Most requests one run may send.
    pub max_requests: u32,
    /// Most body bytes one run may receive.
    pub max_total_bytes: u64,
    /// Largest response head (status line and headers), in bytes.
    pub max_header_bytes: usize,
    /// Most redirects followed for one request.
    pub max_redirects: u32,
    /// Sent as `user-agent` unless the journey sets its own.
    pub user_agent: String,
    /// Turns names into addresses.
    pub resolver: Arc<dyn Resolve>,
}

impl HttpConfig {
    /// webpki roots plus the certificates of `ca_file` (PEM), if given.
    pub fn new(
        allow: AllowList,
        ca_file: Option<&std::path::Path>,
    ) -> Result<Self, TlsConfigError> {
        Self::with_tls(
            allow,
            &TlsOptions {
                ca_file: ca_file.map(std::path::Path::to_path_buf),
                ..TlsOptions::default()
            },
        )
    }

    /// With a client certificate (mTLS) and the insecure switch.
    pub fn with_tls(allow: AllowList, tls_opts: &TlsOptions) -> Result<Self, TlsConfigError> {
        Ok(HttpConfig {
            allow,
            tls: Arc::new(tls::client_config_with(tls_opts)?),
            insecure: tls_opts.insecure,
            max_body: DEFAULT_MAX_BODY,
            max_requests: DEFAULT_MAX_REQUESTS,
            max_total_bytes: DEFAULT_MAX_TOTAL_BYTES,
            max_header_bytes: DEFAULT_MAX_HEADER_BYTES,
            max_redirects: DEFAULT_MAX_REDIRECTS,
            user_agent: format!("waymark/{}", env!("CARGO_PKG_VERSION")),
            resolver: Arc::new(SystemResolver),
        })
    }
}

/// The client settings as people write them (flags of `waymark run` and
/// `waymark load`, keys of a `[[journey]]`), before they are checked.
/// [`HttpSettings::build`] is the one place they become an [`HttpConfig`].
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct HttpSettings {
    /// Allow-list patterns.
    pub allow_hosts: Vec<String>,
    /// `HOST:ADDR` overrides of DNS.
    pub resolve: Vec<String>,
    /// Extra trusted CA certificates (PEM).
    pub ca_file: Option<std::path::PathBuf>,
    /// Client certificate and key (PEM) for mTLS.
    pub client_cert: Option<(std::path::PathBuf, std::path::PathBuf)>,
    /// Accept any server certificate.
    pub insecure: bool,
    /// Most requests per run.
    pub max_requests: u32,
    /// Largest response body.
    pub max_body: u64,
    /// Most body bytes per run.
    pub max_total_bytes: u64,
}

/// Settings that do not make a client; each case names the setting.
#[derive(Debug, thiserror::Error)]
pub enum HttpSettingsError {
    /// A pattern of the allow-list.
    #[error("allow-list: {0}")]
    Allow(#[from] PatternError),
    /// A DNS override.
    #[error("resolve: {0}")]
    Resolve(#[from] ResolveEntryError),
    /// The CA file or the client certificate.
    #[error(transparent)]
    Tls(#[from] TlsConfigError),
}

impl HttpSettings {
    /// The client configuration these settings describe.
    pub fn build(&self) -> Result<HttpConfig, HttpSettingsError> {
        let allow = AllowList::parse(&self.allow_hosts)?;
        let tls = TlsOptions {
            ca_file: self.ca_file.clone(),
            client_cert: self.client_cert.clone(),
            insecure: self.insecure,
        };
        let mut http = HttpConfig::with_tls(allow, &tls)?;
        if !self.resolve.is_empty() {
            let map = self
                .resolve
                .iter()
                .map(|e| Overrides::parse_entry(e))
                .collect::<Result<HashMap<_, _>, _>>()?;
            http.resolver = Arc::new(Overrides::new(map, http.resolver.clone()));
        }
        http.max_requests = self.max_requests;
        http.max_body = self.max_body;
        http.max_total_bytes = self.max_total_bytes;
        Ok(http)
    }
}
