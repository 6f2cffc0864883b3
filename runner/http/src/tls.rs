//! TLS for the timed client: roots, the handshake, and certificate errors
//! in words a QA author understands.

use std::path::Path;
use std::sync::Arc;

use rustls::pki_types::{CertificateDer, ServerName, pem::PemObject};
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;

use super::HttpError;

/// The negotiated TLS session, as recorded.
#[derive(Debug, Clone, PartialEq)]
pub struct TlsInfo {
    /// `TLSv1.3` or `TLSv1.2`.
    pub version: String,
    /// The cipher suite's IANA name.
    pub cipher: String,
    /// The leaf certificate's notAfter.
    pub not_after: Option<std::time::SystemTime>,
}

/// The TLS settings could not be built.
#[derive(Debug, thiserror::Error)]
pub enum TlsConfigError {
    /// The CA file could not be read or holds no certificate.
    #[error("CA file {path}: {reason}")]
    CaFile {
        /// The file given with `--ca-file`.
        path: String,
        /// What was wrong.
        reason: String,
    },
    /// The client key could not be read.
    #[error("client key {path}: {reason}")]
    ClientKey {
        /// The file given with `--client-key`.
        path: String,
        /// What was wrong.
        reason: String,
    },
    /// rustls refused the configuration.
    #[error("TLS configuration: {0}")]
    Rustls(#[from] rustls::Error),
}

/// `--insecure`: any certificate is accepted, but the handshake's signatures
/// are still checked, so the session is at least with the holder of the key
/// the server presented.
#[derive(Debug)]
struct AcceptAnyCertificate(Arc<rustls::crypto::CryptoProvider>);

impl rustls::client::danger::ServerCertVerifier for AcceptAnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// What a run trusts and presents over TLS.
#[derive(Debug, Clone, Default)]
pub struct TlsOptions {
    /// Extra roots (PEM), beside webpki's and the system's.
    pub ca_file: Option<std::path::PathBuf>,
    /// A client certificate chain and its key (PEM), for mTLS.
    pub client_cert: Option<(std::path::PathBuf, std::path::PathBuf)>,
    /// Accept any server certificate. Loud: every record says so.
    pub insecure: bool,
}

fn read_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsConfigError> {
    let err = |reason: String| TlsConfigError::CaFile {
        path: path.display().to_string(),
        reason,
    };
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| err(e.to_string()))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| err(e.to_string()))?;
    if certs.is_empty() {
        return Err(err("no PEM certificate in it".into()));
    }
    Ok(certs)
}

/// The system's trust store (e.g. /etc/ssl/certs), where there is one. A
/// corporate CA installed on the host is trusted as curl would trust it.
fn system_roots() -> &'static [CertificateDer<'static>] {
    static ROOTS: std::sync::OnceLock<Vec<CertificateDer<'static>>> = std::sync::OnceLock::new();
    ROOTS.get_or_init(|| {
        let found = rustls_native_certs::load_native_certs();
        for e in &found.errors {
            tracing::debug!(error = %e, "skipping part of the system trust store");
        }
        found.certs
    })
}

/// webpki roots, the system's roots and every certificate in `ca_file`; h2
/// or HTTP/1.1 by ALPN.
pub fn client_config(ca_file: Option<&Path>) -> Result<rustls::ClientConfig, TlsConfigError> {
    client_config_with(&TlsOptions {
        ca_file: ca_file.map(Path::to_path_buf),
        ..TlsOptions::default()
    })
}

/// As [`client_config`], with a client certificate and the insecure switch.
pub fn client_config_with(opts: &TlsOptions) -> Result<rustls::ClientConfig, TlsConfigError> {
    let mut roots = rustls::RootCertStore::empty();
    roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    // A bad certificate in the system store is skipped, not fatal.
    let _ = roots.add_parsable_certificates(system_roots().iter().cloned());
    if let Some(path) = &opts.ca_file {
        for cert in read_certs(path)? {
            roots.add(cert).map_err(|e| TlsConfigError::CaFile {
                path: path.display().to_string(),
                reason: format!("certificate rejected: {e}"),
            })?;
        }
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots);
    let mut config = match &opts.client_cert {
        None => builder.with_no_client_auth(),
        Some((cert, key)) => {
            let chain = read_certs(cert)?;
            let key = rustls::pki_types::PrivateKeyDer::from_pem_file(key).map_err(|e| {
                TlsConfigError::ClientKey {
                    path: key.display().to_string(),
                    reason: e.to_string(),
                }
            })?;
            builder.with_client_auth_cert(chain, key)?
        }
    };
    if opts.insecure {
        config
            .dangerous()
            .set_certificate_verifier(Arc::new(AcceptAnyCertificate(provider)));
    }
    // HTTP/2 when the server offers it, HTTP/1.1 otherwise.
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(config)
}

/// Run the TLS handshake over `tcp`.
pub async fn handshake<S>(
    config: &Arc<rustls::ClientConfig>,
    host: &str,
    tcp: S,
) -> Result<(TlsStream<S>, TlsInfo), HttpError>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let name = ServerName::try_from(host.to_string())
        .map_err(|_| HttpError::InvalidRequest(format!("'{host}' is not a valid TLS name")))?;
    let stream = TlsConnector::from(config.clone())
        .connect(name, tcp)
        .await
        .map_err(|e| tls_error(host, &e))?;
    let (_, conn) = stream.get_ref();
    let info = TlsInfo {
        version: match conn.protocol_version() {
            Some(rustls::ProtocolVersion::TLSv1_3) => "TLSv1.3".into(),
            Some(rustls::ProtocolVersion::TLSv1_2) => "TLSv1.2".into(),
            Some(v) => format!("{v:?}"),
            None => "unknown".into(),
        },
        cipher: conn
            .negotiated_cipher_suite()
            .map(|s| format!("{:?}", s.suite()))
            .unwrap_or_default(),
        not_after: conn
            .peer_certificates()
            .and_then(|c| c.first())
            .and_then(|leaf| not_after(leaf)),
    };
    Ok((stream, info))
}

fn not_after(cert: &CertificateDer<'_>) -> Option<std::time::SystemTime> {
    let (_, parsed) = x509_parser::parse_x509_certificate(cert.as_ref()).ok()?;
    let secs = parsed.validity().not_after.timestamp();
    let offset = std::time::Duration::from_secs(secs.unsigned_abs());
    if secs >= 0 {
        std::time::UNIX_EPOCH.checked_add(offset)
    } else {
        std::time::UNIX_EPOCH.checked_sub(offset)
    }
}

fn tls_error(host: &str, e: &std::io::Error) -> HttpError {
    let words = match e
        .get_ref()
        .and_then(|inner| inner.downcast_ref::<rustls::Error>())
    {
        Some(r) => rustls_words(host, r),
        None => format!("handshake failed: {e}"),
    };
    HttpError::Tls(words)
}

/// A TLS failure in plain words.
pub(super) fn rustls_words(host: &str, e: &rustls::Error) -> String {
    use rustls::AlertDescription as A;
    use rustls::CertificateError as C;
    match e {
        rustls::Error::InvalidCertificate(c) => match c {
            C::Expired | C::ExpiredContext { .. } => "the server's certificate has expired".into(),
            C::NotValidYet | C::NotValidYetContext { .. } => {
                "the server's certificate is not valid yet".into()
            }
            C::NotValidForName | C::NotValidForNameContext { .. } => {
                format!("the server's certificate is not valid for '{host}' (wrong host)")
            }
            C::UnknownIssuer => "the server's certificate was issued by an unknown authority \
                 (unknown issuer; pass the CA with --ca-file)"
                .into(),
            C::Revoked => "the server's certificate has been revoked".into(),
            other => format!("the server's certificate was rejected: {other:?}"),
        },
        rustls::Error::AlertReceived(A::CertificateRequired) => {
            "the server requires a client certificate (pass --client-cert and --client-key)".into()
        }
        rustls::Error::AlertReceived(A::BadCertificate | A::UnknownCA | A::CertificateUnknown) => {
            "the server refused our client certificate".into()
        }
        other => format!("handshake failed: {other}"),
    }
}
