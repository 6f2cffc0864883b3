//! Shared by the end-to-end tests: the test guest, a runtime, a test CA, and
//! a scripted loopback HTTP(S) server that injects known delays.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpListener;
use waymark_engine::{RunOptions, Runtime};
use waymark_http::{AllowList, HttpConfig};

pub mod postgres;
pub mod wire;

/// Steps with, for each, the names of its checks (and whether they passed)
/// and its requests' methods and paths: what a journey recorded, whatever
/// language it was written in.
pub type Shape = Vec<(String, Vec<(String, bool)>, Vec<(String, String)>)>;

pub fn shape(rec: &waymark_record::RunRecord) -> Shape {
    rec.steps
        .iter()
        .map(|s| {
            (
                s.name.clone(),
                s.checks
                    .iter()
                    .map(|c| (c.name.clone(), c.passed))
                    .collect(),
                s.requests
                    .iter()
                    .map(|r| {
                        let path = url::Url::parse(&r.url)
                            .map(|u| u.path().to_string())
                            .unwrap_or_default();
                        (r.method.clone(), path)
                    })
                    .collect(),
            )
        })
        .collect()
}

/// The `p` quantile (0–1) of sorted values, nearest rank.
pub fn percentile(sorted: &[f64], p: f64) -> f64 {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

/// `v` in ascending order.
pub fn sorted(mut v: Vec<f64>) -> Vec<f64> {
    v.sort_by(|a, b| a.total_cmp(b));
    v
}

/// The workspace root.
pub fn root() -> PathBuf {
    // The tests belong to runner/cli; the workspace is two levels up.
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// Build the test guest (`tests/guests/hostile`) once per test binary and
/// return its component file.
pub fn hostile_wasm() -> &'static Path {
    static WASM: OnceLock<PathBuf> = OnceLock::new();
    WASM.get_or_init(|| build_guest("guest-hostile", &[]))
}

/// Builds the test guest `package` (under `tests/guests`) for
/// wasm32-wasip2 with `env` set, and returns its component file (built
/// again by the next call with another `env`).
pub fn build_guest(package: &str, env: &[(&str, &str)]) -> PathBuf {
    let target = root().join("target").join("guests");
    let mut cmd = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    cmd.current_dir(root())
        .args([
            "build",
            "--release",
            "--target",
            "wasm32-wasip2",
            "-p",
            package,
        ])
        .env("CARGO_TARGET_DIR", &target)
        .env_remove("CARGO_ENCODED_RUSTFLAGS")
        .env_remove("RUSTFLAGS");
    for (k, v) in env {
        cmd.env(k, v);
    }
    let status = cmd.status().expect("cargo runs");
    assert!(status.success(), "building the test guest {package} failed");
    target
        .join("wasm32-wasip2/release")
        .join(format!("{}.wasm", package.replace('-', "_")))
}

/// One runtime per test binary, with its compile cache in a temp dir.
pub fn runtime() -> &'static Runtime {
    static RT: OnceLock<(Runtime, tempfile::TempDir)> = OnceLock::new();
    let (rt, _) = RT.get_or_init(|| {
        let dir = tempfile::tempdir().expect("temp dir");
        (
            Runtime::new(Some(dir.path().to_path_buf())).expect("runtime"),
            dir,
        )
    });
    rt
}

/// Run options allowing `allow` (and trusting `ca_file`), with `vars`.
pub fn opts(allow: &[String], ca_file: Option<&Path>, vars: &[(&str, &str)]) -> RunOptions {
    let allow = AllowList::parse(allow).expect("valid allow-list");
    let mut o = RunOptions::new(Arc::new(
        HttpConfig::new(allow, ca_file).expect("tls config"),
    ));
    o.vars = vars
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    o.timeout = Duration::from_secs(10);
    o
}

/// A CA made for one test, and a server certificate it signed for
/// `localhost`, `127.0.0.1` and the wire lab's name, valid until 2031-01-01.
pub struct TestCa {
    /// The CA certificate, PEM, in a file (for `--ca-file`).
    pub ca_file: PathBuf,
    /// Server side TLS with the leaf certificate.
    pub server: Arc<rustls::ServerConfig>,
    /// The same server, requiring a client certificate this CA signed.
    pub server_mtls: Arc<rustls::ServerConfig>,
    /// A client certificate and key (PEM files) this CA signed, for mTLS.
    pub client_cert: PathBuf,
    pub client_key: PathBuf,
    /// The leaf's certificate and private key, PEM (for servers run as processes).
    pub leaf_pem: (String, String),
    _dir: tempfile::TempDir,
}

impl TestCa {
    pub fn new() -> Self {
        Self::with_leaf_validity(None)
    }

    /// A leaf that expired on 2021-01-01.
    pub fn expired() -> Self {
        Self::with_leaf_validity(Some((2020, 2021)))
    }

    /// The leaf is valid from January 1st of one year to that of another.
    fn with_leaf_validity(validity: Option<(i32, i32)>) -> Self {
        let ca_key = rcgen::KeyPair::generate().expect("ca key");
        let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("params");
        ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        ca_params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "Waymark Test CA");
        ca_params.key_usages = vec![
            rcgen::KeyUsagePurpose::KeyCertSign,
            rcgen::KeyUsagePurpose::CrlSign,
        ];
        let ca_cert = ca_params.self_signed(&ca_key).expect("ca cert");
        let issuer = rcgen::Issuer::new(ca_params, ca_key);

        let leaf_key = rcgen::KeyPair::generate().expect("leaf key");
        let mut leaf_params = rcgen::CertificateParams::new(vec![
            "localhost".to_string(),
            "127.0.0.1".to_string(),
            wire::HOST.to_string(),
        ])
        .expect("params");
        leaf_params.not_after = rcgen::date_time_ymd(2031, 1, 1);
        if let Some((from, to)) = validity {
            leaf_params.not_before = rcgen::date_time_ymd(from, 1, 1);
            leaf_params.not_after = rcgen::date_time_ymd(to, 1, 1);
        }
        let leaf = leaf_params
            .signed_by(&leaf_key, &issuer)
            .expect("leaf cert");

        let dir = tempfile::tempdir().expect("temp dir");
        let ca_file = dir.path().join("ca.pem");
        std::fs::write(&ca_file, ca_cert.pem()).expect("write ca");

        let client_key_pair = rcgen::KeyPair::generate().expect("client key");
        let mut client_params =
            rcgen::CertificateParams::new(vec!["waymark-probe".to_string()]).expect("params");
        client_params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ClientAuth];
        let client = client_params
            .signed_by(&client_key_pair, &issuer)
            .expect("client cert");
        let client_cert = dir.path().join("client.pem");
        let client_key = dir.path().join("client.key");
        std::fs::write(&client_cert, client.pem()).expect("write");
        std::fs::write(&client_key, client_key_pair.serialize_pem()).expect("write");

        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let key = || {
            rustls::pki_types::PrivateKeyDer::try_from(leaf_key.serialize_der()).expect("key der")
        };
        let server = rustls::ServerConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .expect("versions")
            .with_no_client_auth()
            .with_single_cert(vec![leaf.der().clone()], key())
            .expect("server config");
        let mut client_roots = rustls::RootCertStore::empty();
        client_roots.add(ca_cert.der().clone()).expect("ca root");
        let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
            Arc::new(client_roots),
            provider.clone(),
        )
        .build()
        .expect("client verifier");
        let server_mtls = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("versions")
            .with_client_cert_verifier(verifier)
            .with_single_cert(vec![leaf.der().clone()], key())
            .expect("server config");
        TestCa {
            leaf_pem: (leaf.pem(), leaf_key.serialize_pem()),
            ca_file,
            server: Arc::new(server),
            server_mtls: Arc::new(server_mtls),
            client_cert,
            client_key,
            _dir: dir,
        }
    }
}

/// Picks a status and extra headers from the request path.
pub type Responder = fn(&str) -> (u16, Vec<(String, String)>);

/// What the scripted server does for every request.
#[derive(Clone, Default)]
pub struct Script {
    /// Wait this long after reading the request before the first byte.
    pub ttfb: Duration,
    /// Body chunks, each sent after its delay (the headers go first).
    pub chunks: Vec<(Duration, Vec<u8>)>,
    /// Serve TLS with this config.
    pub tls: Option<Arc<rustls::ServerConfig>>,
    /// Wait this long after accepting before answering the TLS ClientHello.
    pub tls_delay: Duration,
    /// Status and extra headers by request path (default: 200, none).
    pub respond: Option<Responder>,
    /// Misbehave instead of answering (plain TCP only).
    pub fault: Fault,
}

/// Ways a server breaks a response.
#[derive(Clone, Copy, Default, PartialEq, Debug)]
pub enum Fault {
    #[default]
    None,
    /// Announce 1000 more body bytes than it sends, then reset the connection.
    ResetMidBody,
    /// Read the request and never answer.
    NeverAnswer,
    /// Send more body bytes than its Content-Length.
    ExtraBody,
    /// Answer with a status line that is not HTTP.
    MalformedStatus,
}

/// A loopback server that answers every request per its [`Script`].
pub struct ScriptedServer {
    pub addr: SocketAddr,
    pub connections: Arc<AtomicUsize>,
    pub requests: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for ScriptedServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl ScriptedServer {
    pub async fn start(script: Script) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let connections = Arc::new(AtomicUsize::new(0));
        let requests = Arc::new(AtomicUsize::new(0));
        let (c, r) = (connections.clone(), requests.clone());
        let task = tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                c.fetch_add(1, Ordering::SeqCst);
                let script = script.clone();
                let r = r.clone();
                tokio::spawn(async move {
                    let _ = tcp.set_nodelay(true);
                    if script.fault != Fault::None {
                        misbehave(tcp, &script).await;
                        return;
                    }
                    match script.tls.clone() {
                        Some(cfg) => {
                            tokio::time::sleep(script.tls_delay).await;
                            let acceptor = tokio_rustls::TlsAcceptor::from(cfg);
                            if let Ok(tls) = acceptor.accept(tcp).await {
                                serve(tls, &script, &r).await;
                            }
                        }
                        None => serve(tcp, &script, &r).await,
                    }
                });
            }
        });
        ScriptedServer {
            addr,
            connections,
            requests,
            task,
        }
    }

    /// Answers `{"status":"ok"}` at once, over TLS with `tls` if given.
    pub async fn ok(tls: Option<Arc<rustls::ServerConfig>>) -> Self {
        Self::start(Script {
            chunks: ok_body(),
            tls,
            ..Script::default()
        })
        .await
    }

    /// `http://127.0.0.1:PORT` (or https).
    pub fn url(&self, https: bool) -> String {
        format!("{}://{}", if https { "https" } else { "http" }, self.addr)
    }

    pub fn authority(&self) -> String {
        self.addr.to_string()
    }
}

async fn serve<S: AsyncRead + AsyncWrite + Unpin>(
    mut s: S,
    script: &Script,
    requests: &AtomicUsize,
) {
    let mut buf = Vec::new();
    loop {
        // Read one request head (and its body, if it has a length).
        let head_end = loop {
            if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break i + 4;
            }
            let mut chunk = [0u8; 4096];
            match s.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        };
        let raw_head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
        let path = raw_head
            .split_whitespace()
            .nth(1)
            .unwrap_or("/")
            .to_string();
        let head = raw_head.to_ascii_lowercase();
        let body_len: usize = head
            .lines()
            .find_map(|l| l.strip_prefix("content-length:"))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0);
        while buf.len() < head_end + body_len {
            let mut chunk = [0u8; 4096];
            match s.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        }
        buf.drain(..head_end + body_len);
        requests.fetch_add(1, Ordering::SeqCst);

        tokio::time::sleep(script.ttfb).await;
        let total: usize = script.chunks.iter().map(|(_, c)| c.len()).sum();
        let (status, extra) = script
            .respond
            .map(|f| f(&path))
            .unwrap_or((200, Vec::new()));
        let extra: String = extra.iter().map(|(k, v)| format!("{k}: {v}\r\n")).collect();
        let head = format!(
            "HTTP/1.1 {status} X\r\ncontent-type: application/json\r\n{extra}content-length: {total}\r\n\r\n"
        );
        if s.write_all(head.as_bytes()).await.is_err() || s.flush().await.is_err() {
            return;
        }
        for (delay, chunk) in &script.chunks {
            tokio::time::sleep(*delay).await;
            if s.write_all(chunk).await.is_err() || s.flush().await.is_err() {
                return;
            }
        }
    }
}

async fn misbehave(mut s: tokio::net::TcpStream, script: &Script) {
    let mut buf = Vec::new();
    while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
        let mut chunk = [0u8; 4096];
        match s.read(&mut chunk).await {
            Ok(0) | Err(_) => return,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
    let body = br#"{"status":"ok"}"#;
    match script.fault {
        Fault::None => {}
        Fault::ResetMidBody => {
            let head = format!(
                "HTTP/1.1 200 OK\r\ncontent-length: {}\r\n\r\n",
                body.len() + 1000
            );
            let _ = s.write_all(head.as_bytes()).await;
            let _ = s.write_all(body).await;
            let _ = s.flush().await;
            tokio::time::sleep(Duration::from_millis(20)).await;
            // Linger zero: closing sends RST, not FIN.
            let _ = socket2::SockRef::from(&s).set_linger(Some(Duration::ZERO));
            drop(s);
        }
        Fault::NeverAnswer => {
            tokio::time::sleep(Duration::from_secs(60)).await;
        }
        Fault::ExtraBody => {
            let mut out =
                format!("HTTP/1.1 200 OK\r\ncontent-length: {}\r\n\r\n", body.len()).into_bytes();
            out.extend_from_slice(body);
            out.extend_from_slice(b"SURPRISE-EXTRA-BYTES");
            let _ = s.write_all(&out).await;
            let _ = s.flush().await;
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        Fault::MalformedStatus => {
            let _ = s.write_all(b"HTTP/1.1 two-hundred OK\r\n\r\n").await;
            let _ = s.flush().await;
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

/// A body of `{"status":"ok"}` sent at once.
pub fn ok_body() -> Vec<(Duration, Vec<u8>)> {
    vec![(Duration::ZERO, br#"{"status":"ok"}"#.to_vec())]
}

/// A hyper server for protocol features: compression, cookies, echo.
///
/// - `/gzip`, `/deflate`, `/br`: a 20 KB JSON body in that encoding
///   (`{"ok":true,"pad":"aaaa…"}`), when the request accepts it;
/// - `/set-cookie`: sets `session=abc` (path /), `secure_one=x; Secure` and
///   `gone=y; Max-Age=0`;
/// - `/echo`: answers the request's headers and body as JSON;
/// - `/version`: the HTTP version of the request.
pub struct FeatureServer {
    pub addr: SocketAddr,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for FeatureServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl FeatureServer {
    /// Plain HTTP/1.1, or TLS with ALPN `alpn` (HTTP/2 when `h2` is offered
    /// and chosen).
    pub async fn start(tls: Option<(Arc<rustls::ServerConfig>, Vec<Vec<u8>>)>) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let acceptor = tls.map(|(cfg, alpn)| {
            let mut cfg = (*cfg).clone();
            cfg.alpn_protocols = alpn;
            tokio_rustls::TlsAcceptor::from(Arc::new(cfg))
        });
        let task = tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                let acceptor = acceptor.clone();
                tokio::spawn(serve_http(
                    tcp,
                    acceptor,
                    hyper::service::service_fn(feature_answer),
                ));
            }
        });
        FeatureServer { addr, task }
    }

    pub fn url(&self, https: bool) -> String {
        format!("{}://{}", if https { "https" } else { "http" }, self.addr)
    }
}

async fn feature_answer(
    req: hyper::Request<hyper::body::Incoming>,
) -> Result<hyper::Response<http_body_util::Full<bytes::Bytes>>, std::convert::Infallible> {
    use http_body_util::BodyExt;
    use std::io::Write;
    let path = req.uri().path().to_string();
    let accepts = req
        .headers()
        .get("accept-encoding")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    let mut builder = hyper::Response::builder().status(200);
    let body: Vec<u8> = match path.as_str() {
        "/gzip" | "/deflate" | "/br" => {
            let plain = format!("{{\"ok\":true,\"pad\":\"{}\"}}", "a".repeat(20_000));
            let enc = &path[1..];
            if !accepts.contains(enc) {
                plain.into_bytes()
            } else {
                builder = builder.header("content-encoding", enc);
                match enc {
                    "gzip" => {
                        let mut e = flate2::write::GzEncoder::new(
                            Vec::new(),
                            flate2::Compression::default(),
                        );
                        let _ = e.write_all(plain.as_bytes());
                        e.finish().unwrap_or_default()
                    }
                    "deflate" => {
                        let mut e = flate2::write::ZlibEncoder::new(
                            Vec::new(),
                            flate2::Compression::default(),
                        );
                        let _ = e.write_all(plain.as_bytes());
                        e.finish().unwrap_or_default()
                    }
                    _ => {
                        let mut out = Vec::new();
                        {
                            let mut w = brotli::CompressorWriter::new(&mut out, 4096, 5, 22);
                            let _ = w.write_all(plain.as_bytes());
                        }
                        out
                    }
                }
            }
        }
        "/set-cookie" => {
            builder = builder
                .header("set-cookie", "session=abc; Path=/; HttpOnly")
                .header("set-cookie", "secure_one=x; Path=/; Secure")
                .header("set-cookie", "gone=y; Path=/; Max-Age=0");
            b"{}".to_vec()
        }
        "/version" => format!("{{\"version\":\"{:?}\"}}", req.version()).into_bytes(),
        _ => {
            let headers: serde_json::Map<String, serde_json::Value> = req
                .headers()
                .iter()
                .map(|(k, v)| {
                    (
                        k.as_str().to_string(),
                        serde_json::Value::String(v.to_str().unwrap_or("").to_string()),
                    )
                })
                .collect();
            let body = req
                .into_body()
                .collect()
                .await
                .map(|b| b.to_bytes())
                .unwrap_or_default();
            serde_json::json!({
                "headers": headers,
                "body": String::from_utf8_lossy(&body),
            })
            .to_string()
            .into_bytes()
        }
    };
    Ok(builder
        .body(http_body_util::Full::new(bytes::Bytes::from(body)))
        .unwrap_or_default())
}

/// A loopback HTTP/1.1 server on its own thread that counts what it gets:
/// requests, and the most handled at once. The first `fail_first` requests
/// get a 500, the rest a 200. Each answer waits `delay`.
pub struct CountingServer {
    pub addr: SocketAddr,
    pub requests: Arc<AtomicUsize>,
    /// Connections accepted.
    pub connections: Arc<AtomicUsize>,
    pub max_concurrent: Arc<AtomicUsize>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Drop for CountingServer {
    fn drop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl CountingServer {
    pub fn start(fail_first: usize, delay: Duration) -> Self {
        let std_listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        std_listener.set_nonblocking(true).expect("nonblocking");
        let addr = std_listener.local_addr().expect("addr");
        let requests = Arc::new(AtomicUsize::new(0));
        let max_concurrent = Arc::new(AtomicUsize::new(0));
        let connections = Arc::new(AtomicUsize::new(0));
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let (req, maxc, conns) = (
            requests.clone(),
            max_concurrent.clone(),
            connections.clone(),
        );
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            rt.block_on(async move {
                let listener = TcpListener::from_std(std_listener).expect("listener");
                let current = Arc::new(AtomicUsize::new(0));
                let serve = async {
                    while let Ok((tcp, _)) = listener.accept().await {
                        conns.fetch_add(1, Ordering::SeqCst);
                        let (req, maxc, current) = (req.clone(), maxc.clone(), current.clone());
                        tokio::spawn(async move {
                            let svc = hyper::service::service_fn(move |_r| {
                                let (req, maxc, current) =
                                    (req.clone(), maxc.clone(), current.clone());
                                async move {
                                    let n = req.fetch_add(1, Ordering::SeqCst);
                                    let now = current.fetch_add(1, Ordering::SeqCst) + 1;
                                    maxc.fetch_max(now, Ordering::SeqCst);
                                    tokio::time::sleep(delay).await;
                                    current.fetch_sub(1, Ordering::SeqCst);
                                    let code = if n < fail_first { 500 } else { 200 };
                                    hyper::Response::builder().status(code).body(
                                        http_body_util::Full::new(bytes::Bytes::from_static(
                                            b"{\"ok\":true}",
                                        )),
                                    )
                                }
                            });
                            let io = hyper_util::rt::TokioIo::new(tcp);
                            let _ = hyper::server::conn::http1::Builder::new()
                                .serve_connection(io, svc)
                                .await;
                        });
                    }
                };
                tokio::select! {
                    _ = serve => {}
                    _ = stopped => {}
                }
            });
        });
        CountingServer {
            addr,
            requests,
            connections,
            max_concurrent,
            stop: Some(stop),
            thread: Some(thread),
        }
    }

    pub fn url(&self) -> String {
        format!("http://{}/ok", self.addr)
    }

    pub fn count(&self) -> usize {
        self.requests.load(Ordering::SeqCst)
    }
}

/// One runtime per test binary, shareable with a `waymark serve` Service.
pub fn shared_runtime() -> Arc<Runtime> {
    static RT: OnceLock<(Arc<Runtime>, tempfile::TempDir)> = OnceLock::new();
    let (rt, _) = RT.get_or_init(|| {
        let dir = tempfile::tempdir().expect("temp dir");
        (
            Arc::new(Runtime::new(Some(dir.path().to_path_buf())).expect("runtime")),
            dir,
        )
    });
    rt.clone()
}

/// A child process (a server the test started) killed when dropped.
pub struct Kill(pub std::process::Child);

impl Drop for Kill {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A loopback port free right now, for a server that cannot take port 0.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// VmRSS of a process, in KiB (Linux; 0 when it cannot be read).
pub fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        .unwrap_or(0)
}

/// A process's memory, KiB: RSS as `ps` shows it; PSS, which counts a page
/// mapped N times once (wasmtime maps each instance's copy-on-write memory
/// image from one file, and RSS counts those shared pages once per
/// instance); and its page tables, which neither includes.
#[derive(Clone, Copy, Debug, Default)]
pub struct Memory {
    pub rss: u64,
    pub pss: u64,
    pub page_tables: u64,
}

/// A `kB` field of `/proc/PID/status` (`VmRSS:`, `VmHWM:`), in KiB.
pub fn status_kib(pid: u32, field: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with(field))
        .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        .unwrap_or(0)
}

pub fn memory_kib(pid: u32) -> Memory {
    let field = |file: &str, key: &str| -> u64 {
        std::fs::read_to_string(format!("/proc/{pid}/{file}"))
            .unwrap_or_default()
            .lines()
            .find(|l| l.starts_with(key))
            .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
            .unwrap_or(0)
    };
    Memory {
        rss: field("status", "VmRSS:"),
        pss: field("smaps_rollup", "Pss:"),
        page_tables: field("status", "VmPTE:"),
    }
}

/// RSS (KiB) of `waymark load` with `users` users asleep in `wasm`.
pub fn idle_load_rss(wasm: &Path, vars: &[&str], users: u32, cache: &Path) -> u64 {
    idle_load_memory(wasm, vars, users, cache).rss
}

/// Memory of `waymark load` with `users` users asleep in `wasm` (its
/// `vars` make it sleep), read in the middle of a 15 s step (benches).
pub fn idle_load_memory(wasm: &Path, vars: &[&str], users: u32, cache: &Path) -> Memory {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_waymark"));
    cmd.arg("load").arg(wasm);
    for v in vars {
        cmd.args(["--var", v]);
    }
    let child = cmd
        .args(["--timeout", "60s", "--concurrency", &users.to_string()])
        .args(["--step-duration", "15s", "--warmup", "1s", "--quiet"])
        .env("WAYMARK_CACHE_DIR", cache)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("waymark load starts");
    let kill = Kill(child);
    std::thread::sleep(Duration::from_secs(10));
    memory_kib(kill.0.id())
}

/// Accepts on `listener`, a thread per connection, and answers every
/// request head read there with a 2-byte `200 OK` once `work` returns true
/// (false closes the connection). `work` is shared by every connection.
fn serve_each_request(
    listener: std::net::TcpListener,
    work: impl Fn() -> bool + Send + Sync + 'static,
) {
    answer_each_request(listener, move |_| {
        work().then(|| b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok".to_vec())
    });
}

/// A loopback HTTP/1.1 server (a thread per connection, keep-alive) that
/// answers each request head with what `respond` makes of it; `None`
/// closes the connection.
pub fn answer_each_request(
    listener: std::net::TcpListener,
    respond: impl Fn(&str) -> Option<Vec<u8>> + Send + Sync + 'static,
) {
    let respond = Arc::new(respond);
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(mut conn) = conn else { continue };
            let respond = respond.clone();
            std::thread::spawn(move || {
                use std::io::{Read, Write};
                let _ = conn.set_nodelay(true);
                let mut buf = [0u8; 4096];
                let mut have = Vec::new();
                loop {
                    let Ok(n) = conn.read(&mut buf) else { return };
                    if n == 0 {
                        return;
                    }
                    have.extend_from_slice(&buf[..n]);
                    while let Some(end) = have.windows(4).position(|w| w == b"\r\n\r\n") {
                        let head: Vec<u8> = have.drain(..end + 4).collect();
                        let Some(answer) = respond(&String::from_utf8_lossy(&head)) else {
                            return;
                        };
                        if conn.write_all(&answer).is_err() {
                            return;
                        }
                    }
                }
            });
        }
    });
}

/// Renders `page` in Debian's headless Chromium into the PNG `shot`, at
/// `size` (`WIDTH,HEIGHT`); its profile goes under `home`. True when it did.
pub fn screenshot(page: &Path, shot: &Path, size: &str, home: &Path) -> bool {
    Command::new("chromium")
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--hide-scrollbars",
        ])
        .arg(format!("--window-size={size}"))
        .arg(format!("--screenshot={}", shot.display()))
        .arg(format!("file://{}", page.display()))
        .env("HOME", home)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// A loopback HTTP/1.1 server with a known serialization: each request
/// waits `outside` (in parallel with the others), then holds one lock
/// shared by all for `held`. Amdahl's serial fraction, and so the USL's σ,
/// is then held ÷ (held + outside), and the throughput ceiling 1 ÷ held.
/// Returns the port and the time actually spent (held, outside), in ns.
pub fn lock_server(held: Duration, outside: Duration) -> (u16, Arc<(AtomicU64, AtomicU64)>) {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let lock = Arc::new(Mutex::new(()));
    let spent = Arc::new((AtomicU64::new(0), AtomicU64::new(0)));
    let counters = spent.clone();
    serve_each_request(listener, move || {
        let t = Instant::now();
        std::thread::sleep(outside);
        let out = t.elapsed();
        let guard = lock.lock().unwrap_or_else(|p| p.into_inner());
        let h = Instant::now();
        std::thread::sleep(held);
        let h = h.elapsed();
        drop(guard);
        spent.0.fetch_add(h.as_nanos() as u64, Ordering::Relaxed);
        spent.1.fetch_add(out.as_nanos() as u64, Ordering::Relaxed);
        true
    });
    (port, counters)
}

/// A server built to follow the Universal Scalability Law with known
/// coefficients: it works in rounds, as a group commit does. A round
/// gathers the requests that arrive within `window` of its first, works
/// on them together for `parallel`, then commits them one after another
/// under its lock: `serial` each, plus `crosstalk` for every other request
/// of the round (each is checked against the others); then it answers
/// them all. A request that arrives during a round waits for the next.
///
/// N closed users with no think time move in step, one round each time,
/// so a round lasts C(N) = P + N·s + c·N(N−1), with P the window, the
/// parallel part and what the network and the client add; the throughput
/// N / C(N) is exactly the USL with λ = 1/(P + s), σ = s/(P + s), κ = c/(P + s).
pub fn group_commit_server(
    window: Duration,
    parallel: Duration,
    serial: Duration,
    crosstalk: Duration,
) -> u16 {
    use std::sync::Condvar;
    use std::sync::mpsc;
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let queue: Arc<(Mutex<Vec<mpsc::Sender<()>>>, Condvar)> =
        Arc::new((Mutex::new(Vec::new()), Condvar::new()));
    let committer = queue.clone();
    std::thread::spawn(move || {
        let (lock, ready) = &*committer;
        loop {
            {
                let mut q = lock.lock().unwrap_or_else(|p| p.into_inner());
                while q.is_empty() {
                    q = ready.wait(q).unwrap_or_else(|p| p.into_inner());
                }
            }
            let start = Instant::now();
            std::thread::sleep(window);
            let round = std::mem::take(&mut *lock.lock().unwrap_or_else(|p| p.into_inner()));
            let b = u32::try_from(round.len()).unwrap_or(u32::MAX);
            let each = serial + crosstalk * b.saturating_sub(1);
            // Deadlines from the round's start, not sleeps in a row:
            // oversleeping one section must not push the next.
            let mut due = start + window + parallel;
            for _ in 0..=b {
                let now = Instant::now();
                if due > now {
                    std::thread::sleep(due - now);
                }
                due += each;
            }
            for done in round {
                let _ = done.send(());
            }
        }
    });
    serve_each_request(listener, move || {
        let (tx, rx) = mpsc::channel();
        {
            let (lock, ready) = &*queue;
            lock.lock().unwrap_or_else(|p| p.into_inner()).push(tx);
            ready.notify_one();
        }
        rx.recv().is_ok()
    });
    port
}

static QUIET: std::sync::RwLock<()> = std::sync::RwLock::new(());

/// Held by a test that measures timing: no other test of its binary that
/// holds [`not_alone`] runs meanwhile (tests of one binary run side by side).
pub fn alone() -> std::sync::RwLockWriteGuard<'static, ()> {
    QUIET.write().unwrap_or_else(|p| p.into_inner())
}

/// Held by the other tests of a binary with an [`alone`] test.
pub fn not_alone() -> std::sync::RwLockReadGuard<'static, ()> {
    QUIET.read().unwrap_or_else(|p| p.into_inner())
}

/// Serves one connection with `service`: plain HTTP/1.1, or TLS with HTTP/2
/// when ALPN chose h2 and HTTP/1.1 otherwise.
pub async fn serve_http<S>(
    tcp: tokio::net::TcpStream,
    acceptor: Option<tokio_rustls::TlsAcceptor>,
    service: S,
) where
    S: hyper::service::Service<
            hyper::Request<hyper::body::Incoming>,
            Response = hyper::Response<http_body_util::Full<bytes::Bytes>>,
            Error = std::convert::Infallible,
        > + Send
        + 'static,
    S::Future: Send + 'static,
{
    let Some(acceptor) = acceptor else {
        let io = hyper_util::rt::TokioIo::new(tcp);
        let _ = hyper::server::conn::http1::Builder::new()
            .serve_connection(io, service)
            .await;
        return;
    };
    let Ok(tls) = acceptor.accept(tcp).await else {
        return;
    };
    let h2 = tls.get_ref().1.alpn_protocol() == Some(b"h2");
    let io = hyper_util::rt::TokioIo::new(tls);
    if h2 {
        let _ = hyper::server::conn::http2::Builder::new(hyper_util::rt::TokioExecutor::new())
            .serve_connection(io, service)
            .await;
    } else {
        let _ = hyper::server::conn::http1::Builder::new()
            .serve_connection(io, service)
            .await;
    }
}

/// A `waymark serve` process (its command given: config, environment),
/// killed when dropped.
pub struct ServeProcess {
    pub child: std::process::Child,
    /// Where `/healthz`, `/status`, `/metrics` and the UI answer.
    pub listen: std::net::SocketAddr,
}

impl Drop for ServeProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl ServeProcess {
    /// Spawns `cmd` (a `waymark serve … --log-format json`) and waits for
    /// its "started" line; panics with the lines it wrote when it does not.
    pub fn start(mut cmd: Command) -> ServeProcess {
        use std::io::BufRead;
        let mut child = cmd
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("spawn waymark serve");
        let stderr = child.stderr.take().expect("stderr");
        // Owned from here on, so a failed start below still kills it.
        let mut serve = ServeProcess {
            child,
            listen: std::net::SocketAddr::from(([127, 0, 0, 1], 0)),
        };
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            // Read to the end: a runner whose stderr is closed fails its writes.
            for line in std::io::BufReader::new(stderr)
                .lines()
                .map_while(Result::ok)
            {
                let _ = tx.send(line);
            }
        });
        let t = std::time::Instant::now();
        let mut seen = Vec::new();
        loop {
            let line = rx
                .recv_timeout(Duration::from_secs(120).saturating_sub(t.elapsed()))
                .unwrap_or_else(|_| panic!("serve did not start:\n{}", seen.join("\n")));
            let v: serde_json::Value = serde_json::from_str(&line).unwrap_or_default();
            if v["message"] == "waymark serve started" {
                serve.listen = v["listen"]
                    .as_str()
                    .and_then(|a| a.parse().ok())
                    .expect("serve listens");
                return serve;
            }
            seen.push(line);
        }
    }

    /// `GET path`: status and body.
    pub fn get(&self, path: &str) -> (u16, String) {
        http_get(self.listen, path)
    }

    /// SIGTERM, and the exit within 30 s.
    pub fn stop(mut self) -> std::process::ExitStatus {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let t = std::time::Instant::now();
        loop {
            if let Some(s) = self.child.try_wait().expect("wait") {
                return s;
            }
            assert!(t.elapsed() < Duration::from_secs(30), "serve did not stop");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

/// `GET path` of a loopback server in one HTTP/1.1 exchange: status and body.
pub fn http_get(addr: SocketAddr, path: &str) -> (u16, String) {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    write!(
        s,
        "GET {path} HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n"
    )
    .expect("write");
    let mut answer = String::new();
    s.read_to_string(&mut answer).expect("read");
    let code = answer
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = answer
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    (code, body)
}
