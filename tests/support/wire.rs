//! The phases against the packets: a network namespace made for the test,
//! with a DNS server that answers late, an HTTP(S) server, a proxy that
//! delays what comes back, and tcpdump capturing its loopback. Each phase
//! of a request is compared with the same span read off its own packets.
//!
//! Needs root (network namespaces), iproute2 and tcpdump; without them
//! [`Lab::start`] says which is missing rather than skipping.

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http_body_util::Full;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};

use super::TestCa;

/// The name the DNS server answers, with 127.0.0.1.
pub const HOST: &str = "wire.test";
/// How late the DNS server answers.
pub const DNS_DELAY: Duration = Duration::from_millis(30);
/// How long the server thinks before it answers a request.
pub const SERVER_DELAY: Duration = Duration::from_millis(5);
/// How much later the proxy hands on what the server sends back.
pub const RETURN_DELAY: Duration = Duration::from_millis(25);
/// The large body, in bytes.
pub const BIG: usize = 8_000_000;
/// The small body, in bytes.
pub const SMALL: usize = 600;

/// A network namespace, removed on drop with the resolv.conf `ip netns exec`
/// shows inside it.
pub struct Netns {
    pub name: String,
    etc: PathBuf,
}

impl Netns {
    pub fn create() -> Result<Netns, String> {
        let name = format!("waymark-wire-{}", std::process::id());
        let out = Command::new("ip")
            .args(["netns", "add", &name])
            .output()
            .map_err(|e| format!("cannot run `ip` (Debian's iproute2): {e}"))?;
        if !out.status.success() {
            return Err(format!(
                "`ip netns add {name}` failed (the wire test needs root to make a network namespace): {}",
                String::from_utf8_lossy(&out.stderr).trim()
            ));
        }
        // `ip netns exec` mounts /etc/netns/NAME/resolv.conf over
        // /etc/resolv.conf for the commands it runs.
        let etc = PathBuf::from("/etc/netns").join(&name);
        let ns = Netns { name, etc };
        std::fs::create_dir_all(&ns.etc).map_err(|e| format!("{}: {e}", ns.etc.display()))?;
        std::fs::write(
            ns.etc.join("resolv.conf"),
            "nameserver 127.0.0.1\noptions timeout:2 attempts:1\n",
        )
        .map_err(|e| format!("{}: {e}", ns.etc.display()))?;
        let up = ns
            .command("ip")
            .args(["link", "set", "lo", "up"])
            .output()
            .map_err(|e| e.to_string())?;
        if !up.status.success() {
            return Err(format!(
                "cannot bring up lo in {}: {}",
                ns.name,
                String::from_utf8_lossy(&up.stderr).trim()
            ));
        }
        Ok(ns)
    }

    /// `program` run inside the namespace.
    pub fn command(&self, program: impl AsRef<std::ffi::OsStr>) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.name]).arg(program);
        c
    }
}

/// Moves the calling thread (and the threads it starts) into the network
/// namespace `name`.
fn enter_netns(name: &str) -> Result<(), String> {
    use std::os::fd::AsRawFd;
    let path = Path::new("/run/netns").join(name);
    let file = std::fs::File::open(&path).map_err(|e| format!("{}: {e}", path.display()))?;
    // SAFETY: setns on an open namespace file only changes this thread's
    // network namespace.
    let rc = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
    if rc != 0 {
        return Err(format!("setns: {}", std::io::Error::last_os_error()));
    }
    Ok(())
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .status();
        let _ = std::fs::remove_dir_all(&self.etc);
    }
}

/// The servers' ports inside the namespace (all on 127.0.0.1).
#[derive(Debug, Clone, Copy)]
pub struct Ports {
    pub http: u16,
    /// TLS offering only HTTP/1.1.
    pub https: u16,
    /// TLS offering h2.
    pub h2: u16,
}

/// The namespace, its servers and the capture.
pub struct Lab {
    pub ns: Netns,
    pub direct: Ports,
    /// The same servers behind the delaying proxy.
    pub proxied: Ports,
    pub ca: TestCa,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
    capture: Option<Child>,
    pcap: PathBuf,
    _dir: tempfile::TempDir,
}

impl Lab {
    pub fn start() -> Result<Lab, String> {
        let ns = Netns::create()?;
        let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
        let ca = TestCa::new();
        let pcap = dir.path().join("wire.pcap");
        let mut capture = ns
            .command("tcpdump")
            .args(["-i", "lo", "-n", "-U", "--immediate-mode", "-s", "200"])
            .args(["--time-stamp-precision=nano", "-w"])
            .arg(&pcap)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| format!("cannot run tcpdump (Debian's tcpdump): {e}"))?;
        // tcpdump says "listening on lo" once it captures.
        let mut err = BufReader::new(capture.stderr.take().ok_or("tcpdump's stderr")?);
        let mut line = String::new();
        loop {
            line.clear();
            if err.read_line(&mut line).map_err(|e| e.to_string())? == 0 {
                return Err(format!("tcpdump ended before capturing: {line}"));
            }
            if line.contains("listening on") {
                break;
            }
        }
        std::thread::spawn(move || std::io::copy(&mut err, &mut std::io::sink()));

        let (stop, stopped) = tokio::sync::oneshot::channel();
        let (ports_tx, ports_rx) = std::sync::mpsc::channel();
        let server = ca.server.clone();
        let netns = ns.name.clone();
        let thread = std::thread::spawn(move || {
            if let Err(e) = enter_netns(&netns) {
                let _ = ports_tx.send(Err(e));
                return;
            }
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .expect("runtime");
            rt.block_on(async move {
                let dns = UdpSocket::bind("127.0.0.1:53").await;
                let dns = match dns {
                    Ok(s) => Arc::new(s),
                    Err(e) => {
                        let _ = ports_tx.send(Err(format!("DNS server on 127.0.0.1:53: {e}")));
                        return;
                    }
                };
                tokio::spawn(answer_dns(dns));
                let direct = Ports {
                    http: serve(None).await,
                    https: serve(Some((server.clone(), b"http/1.1".to_vec()))).await,
                    h2: serve(Some((server, b"h2".to_vec()))).await,
                };
                let proxied = Ports {
                    http: proxy(direct.http).await,
                    https: proxy(direct.https).await,
                    h2: proxy(direct.h2).await,
                };
                let _ = ports_tx.send(Ok((direct, proxied)));
                let _ = stopped.await;
            });
        });
        let (direct, proxied) = ports_rx
            .recv()
            .map_err(|_| "the lab's server thread ended".to_string())??;
        Ok(Lab {
            ns,
            direct,
            proxied,
            ca,
            stop: Some(stop),
            thread: Some(thread),
            capture: Some(capture),
            pcap,
            _dir: dir,
        })
    }

    /// The packets captured so far (tcpdump writes each one as it comes).
    pub fn packets(&self) -> Vec<Packet> {
        std::thread::sleep(Duration::from_millis(200));
        let data = std::fs::read(&self.pcap).expect("the capture file");
        parse_pcap(&data)
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        if let Some(mut c) = self.capture.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Answers A queries for anything with 127.0.0.1 and AAAA queries with
/// no address, each `DNS_DELAY` late.
async fn answer_dns(sock: Arc<UdpSocket>) {
    let mut buf = [0u8; 1500];
    loop {
        let Ok((n, from)) = sock.recv_from(&mut buf).await else {
            return;
        };
        let query = buf[..n].to_vec();
        let sock = sock.clone();
        tokio::spawn(async move {
            tokio::time::sleep(DNS_DELAY).await;
            if let Some(answer) = dns_answer(&query) {
                let _ = sock.send_to(&answer, from).await;
            }
        });
    }
}

fn dns_answer(q: &[u8]) -> Option<Vec<u8>> {
    if q.len() < 12 {
        return None;
    }
    let mut i = 12;
    while *q.get(i)? != 0 {
        i += 1 + usize::from(q[i]);
    }
    let qend = i + 5;
    let qtype = u16::from_be_bytes([*q.get(i + 1)?, *q.get(i + 2)?]);
    let a = qtype == 1;
    let mut r = Vec::with_capacity(qend + 16);
    r.extend_from_slice(&q[..2]);
    // A response, recursion desired (as asked) and available, no error.
    r.extend_from_slice(&[0x80 | (q[2] & 0x01), 0x80]);
    r.extend_from_slice(&[0, 1, 0, u8::from(a), 0, 0, 0, 0]);
    r.extend_from_slice(q.get(12..qend)?);
    if a {
        r.extend_from_slice(&[0xc0, 0x0c, 0, 1, 0, 1, 0, 0, 0, 0, 0, 4, 127, 0, 0, 1]);
    }
    Some(r)
}

/// `/small` and `/big` after `SERVER_DELAY`, over plain HTTP/1.1 or TLS with
/// the one ALPN protocol given.
async fn serve(tls: Option<(Arc<rustls::ServerConfig>, Vec<u8>)>) -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let acceptor = tls.map(|(cfg, alpn)| {
        let mut cfg = (*cfg).clone();
        cfg.alpn_protocols = vec![alpn];
        tokio_rustls::TlsAcceptor::from(Arc::new(cfg))
    });
    let big = Bytes::from(vec![b'x'; BIG]);
    let small = Bytes::from(vec![b's'; SMALL]);
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let _ = tcp.set_nodelay(true);
            let acceptor = acceptor.clone();
            let (big, small) = (big.clone(), small.clone());
            let service = hyper::service::service_fn(move |req: hyper::Request<_>| {
                let body = if req.uri().path() == "/big" {
                    big.clone()
                } else {
                    small.clone()
                };
                async move {
                    tokio::time::sleep(SERVER_DELAY).await;
                    Ok::<_, std::convert::Infallible>(hyper::Response::new(Full::new(body)))
                }
            });
            tokio::spawn(super::serve_http(tcp, acceptor, service));
        }
    });
    port
}

/// A TCP proxy to `target` that passes requests on at once and each read
/// of the answer `RETURN_DELAY` later, in order.
async fn proxy(target: u16) -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let port = listener.local_addr().expect("addr").port();
    tokio::spawn(async move {
        while let Ok((client, _)) = listener.accept().await {
            tokio::spawn(async move {
                let Ok(server) = TcpStream::connect(("127.0.0.1", target)).await else {
                    return;
                };
                let _ = client.set_nodelay(true);
                let _ = server.set_nodelay(true);
                let (mut cr, mut cw) = client.into_split();
                let (mut sr, mut sw) = server.into_split();
                tokio::spawn(async move {
                    let _ = tokio::io::copy(&mut cr, &mut sw).await;
                    let _ = sw.shutdown().await;
                });
                let (tx, mut rx) =
                    tokio::sync::mpsc::unbounded_channel::<(tokio::time::Instant, Vec<u8>)>();
                tokio::spawn(async move {
                    let mut buf = vec![0u8; 256 * 1024];
                    while let Ok(n) = sr.read(&mut buf).await {
                        if n == 0 {
                            break;
                        }
                        let due = tokio::time::Instant::now() + RETURN_DELAY;
                        if tx.send((due, buf[..n].to_vec())).is_err() {
                            break;
                        }
                    }
                });
                while let Some((due, data)) = rx.recv().await {
                    tokio::time::sleep_until(due).await;
                    if cw.write_all(&data).await.is_err() {
                        break;
                    }
                }
                let _ = cw.shutdown().await;
            });
        }
    });
    port
}

/// One captured packet of the namespace's loopback.
#[derive(Debug, Clone, Copy)]
pub struct Packet {
    /// Seconds since the epoch, as the capture stamped it.
    pub t: f64,
    pub udp: bool,
    pub src: u16,
    pub dst: u16,
    /// TCP flags (SYN 0x02, ACK 0x10, FIN 0x01, RST 0x04).
    pub flags: u8,
    /// Payload bytes, from the IP header's length (the capture is cut short).
    pub len: usize,
}

impl Packet {
    fn syn(&self) -> bool {
        self.flags & 0x12 == 0x02
    }
    fn syn_ack(&self) -> bool {
        self.flags & 0x12 == 0x12
    }
    fn fin_or_rst(&self) -> bool {
        self.flags & 0x05 != 0
    }
}

/// The packets of a libpcap file of an Ethernet-framed (loopback) capture.
pub fn parse_pcap(d: &[u8]) -> Vec<Packet> {
    let u32le = |b: &[u8]| u32::from_le_bytes([b[0], b[1], b[2], b[3]]);
    let be16 = |b: &[u8]| u16::from_be_bytes([b[0], b[1]]);
    assert!(d.len() >= 24, "the capture has no pcap header");
    let nanos = match u32le(&d[0..4]) {
        0xa1b2_3c4d => true,
        0xa1b2_c3d4 => false,
        m => panic!("not a little-endian pcap file (magic {m:#x})"),
    };
    assert_eq!(u32le(&d[20..24]), 1, "the capture's link type is Ethernet");
    let mut out = Vec::new();
    let mut i = 24;
    while i + 16 <= d.len() {
        let sec = f64::from(u32le(&d[i..]));
        let frac = f64::from(u32le(&d[i + 4..]));
        let caplen = u32le(&d[i + 8..]) as usize;
        let p = &d[i + 16..(i + 16 + caplen).min(d.len())];
        i += 16 + caplen;
        let t = sec + frac / if nanos { 1e9 } else { 1e6 };
        if p.len() < 14 + 20 || be16(&p[12..]) != 0x0800 {
            continue;
        }
        let ip = &p[14..];
        let ihl = usize::from(ip[0] & 0x0f) * 4;
        let total = usize::from(be16(&ip[2..]));
        let l4 = &ip[ihl..];
        match ip[9] {
            6 if l4.len() >= 14 => {
                let doff = usize::from(l4[12] >> 4) * 4;
                out.push(Packet {
                    t,
                    udp: false,
                    src: be16(l4),
                    dst: be16(&l4[2..]),
                    flags: l4[13],
                    len: total.saturating_sub(ihl + doff),
                });
            }
            17 if l4.len() >= 8 => out.push(Packet {
                t,
                udp: true,
                src: be16(l4),
                dst: be16(&l4[2..]),
                flags: 0,
                len: total.saturating_sub(ihl + 8),
            }),
            _ => {}
        }
    }
    out
}

/// One request's phases in ms: resolve, connect, tls, processing, transfer.
pub type Phases = [f64; 5];

/// What one request's own packets say its phases were, from the packets
/// captured between `from` and `to` (one process's run) to `port`.
///
/// - resolve: the first DNS query to the last DNS answer;
/// - connect: SYN to SYN-ACK;
/// - tls: SYN-ACK to the client's second TLS flight (its Finished);
/// - processing: the client's first packet after the handshake to the
///   first packet of the answer (the first the server sent at least
///   `SERVER_DELAY` after that, so HTTP/2's SETTINGS and TLS's session
///   tickets are not taken for it);
/// - transfer: the answer's first packet to the last packet the server
///   sent before the client closed.
pub fn wire_phases(
    packets: &[Packet],
    from: f64,
    to: f64,
    port: u16,
    https: bool,
    proxied: bool,
) -> Result<Phases, String> {
    let window: Vec<&Packet> = packets
        .iter()
        .filter(|p| p.t >= from && p.t <= to)
        .collect();
    // The last SYN to the port: a warming request through the proxy makes
    // the proxy connect to the same port before.
    let syn = window
        .iter()
        .rev()
        .find(|p| !p.udp && p.dst == port && p.syn())
        .ok_or("no SYN")?;
    // The lookup just before the SYN: its A and AAAA queries leave
    // together, its answers come back before the SYN.
    let dns: Vec<&&Packet> = window
        .iter()
        .filter(|p| p.udp && (p.dst == 53 || p.src == 53) && p.t < syn.t)
        .collect();
    let last_query = dns
        .iter()
        .rev()
        .find(|p| p.dst == 53)
        .ok_or("no DNS query")?;
    let query = dns
        .iter()
        .find(|p| p.dst == 53 && p.t >= last_query.t - 0.005)
        .ok_or("no DNS query")?;
    let answer = dns
        .iter()
        .rev()
        .find(|p| p.src == 53)
        .ok_or("no DNS answer")?;
    let client = syn.src;
    let conn: Vec<&&Packet> = window
        .iter()
        .filter(|p| {
            !p.udp && ((p.src == client && p.dst == port) || (p.src == port && p.dst == client))
        })
        .collect();
    let syn_ack = conn
        .iter()
        .find(|p| p.src == port && p.syn_ack())
        .ok_or("no SYN-ACK")?;
    let sent: Vec<&&&Packet> = conn
        .iter()
        .filter(|p| p.src == client && p.len > 0)
        .collect();
    let handshake = if https { 2 } else { 0 };
    let tls_done = if https {
        sent.get(1).ok_or("no second TLS flight")?.t
    } else {
        syn_ack.t
    };
    let request = sent.get(handshake).ok_or_else(|| {
        let seq: Vec<String> = conn
            .iter()
            .map(|p| format!("{:.6} {}>{} f{:#x} {}", p.t, p.src, p.dst, p.flags, p.len))
            .collect();
        format!("no request among {seq:?}")
    })?;
    let mut earliest = request.t + SERVER_DELAY.as_secs_f64();
    if proxied {
        earliest += RETURN_DELAY.as_secs_f64();
    }
    let closed = conn
        .iter()
        .find(|p| p.src == client && p.fin_or_rst())
        .map_or(to, |p| p.t);
    let answer_packets: Vec<&&&Packet> = conn
        .iter()
        .filter(|p| p.src == port && p.len > 0 && p.t >= earliest && p.t < closed)
        .collect();
    let first = answer_packets.first().ok_or("no answer")?;
    let last = answer_packets.last().ok_or("no answer")?;
    let ms = |a: f64, b: f64| (b - a) * 1e3;
    Ok([
        ms(query.t, answer.t),
        ms(syn.t, syn_ack.t),
        if https { ms(syn_ack.t, tls_done) } else { 0.0 },
        ms(request.t, first.t),
        ms(first.t, last.t),
    ])
}

/// Seconds since the epoch, now.
pub fn now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

/// One kind of request the lab times.
#[derive(Debug, Clone)]
pub struct Case {
    pub name: String,
    pub url: String,
    pub port: u16,
    pub https: bool,
    pub h2: bool,
    pub proxied: bool,
    /// The same protocol and path through the other route (direct or
    /// proxied): a first request that warms a process up.
    pub other: String,
}

/// http, https and h2; small and large bodies; direct and through the proxy.
pub fn cases(lab: &Lab) -> Vec<Case> {
    let mut v = Vec::new();
    for (proxied, ports, others) in [
        (false, lab.direct, lab.proxied),
        (true, lab.proxied, lab.direct),
    ] {
        for (proto, port, other, https) in [
            ("http", ports.http, others.http, false),
            ("https", ports.https, others.https, true),
            ("h2", ports.h2, others.h2, true),
        ] {
            for path in ["/small", "/big"] {
                let via = if proxied { "proxy" } else { "direct" };
                v.push(Case {
                    name: format!("{proto} {path} {via}"),
                    url: url(port, path, https),
                    port,
                    https,
                    h2: proto == "h2",
                    proxied,
                    other: url(other, path, https),
                });
            }
        }
    }
    v
}

/// The URL of a path on a port of the lab.
pub fn url(port: u16, path: &str, https: bool) -> String {
    let scheme = if https { "https" } else { "http" };
    format!("{scheme}://{HOST}:{port}{path}")
}

/// One `waymark run` of the test guest fetching `url` inside the lab: its
/// phases, and the capture window it ran in.
///
/// With `before`, that URL (of another port) is fetched first in the same
/// process, so `url`'s request is a warm process's.
pub fn waymark_run(
    lab: &Lab,
    bin: &Path,
    wasm: &Path,
    cache: &Path,
    before: Option<&str>,
    url: &str,
) -> (Phases, f64, f64) {
    let from = now();
    let mut cmd = lab.ns.command(bin);
    cmd.args(["run"]).arg(wasm).args(["--var", "mode=fetch"]);
    match before {
        Some(b) => cmd.args([
            "--var",
            &format!("url={b}"),
            "--var",
            &format!("then={url}"),
        ]),
        None => cmd.args(["--var", &format!("url={url}")]),
    };
    let out = cmd
        .args(["--allow-host", HOST, "--allow-host", "127.0.0.1"])
        .arg("--ca-file")
        .arg(&lab.ca.ca_file)
        .args(["--max-body", "16MiB", "--format", "json"])
        .env("WAYMARK_CACHE_DIR", cache)
        .output()
        .expect("waymark runs");
    let to = now();
    let v: serde_json::Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stderr)));
    assert_eq!(v["status"], "pass", "{url}: {v}");
    let t = &v["steps"][0]["requests"][usize::from(before.is_some())]["timings_ms"];
    let get = |k: &str| t[k].as_f64().unwrap_or_else(|| panic!("{k} in {t}"));
    (
        [
            get("resolve"),
            get("connect"),
            get("tls"),
            get("processing"),
            get("transfer"),
        ],
        from,
        to,
    )
}

/// curl's `-w` timers in ms, read as phases: resolve, connect, tls,
/// processing, transfer, total.
pub fn curl_phases(mut curl: Command, url: &str) -> [f64; 6] {
    let out = curl
        .args(["-s", "-o", "/dev/null", "-w"])
        .arg("%{time_namelookup} %{time_connect} %{time_appconnect} %{time_pretransfer} %{time_starttransfer} %{time_total}")
        .arg(url)
        .output()
        .expect("curl runs");
    let v: Vec<f64> = String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .filter_map(|x| x.parse::<f64>().ok())
        .map(|s| s * 1e3)
        .collect();
    assert_eq!(v.len(), 6, "curl -w output: {out:?}");
    // Plain http: curl's time_appconnect is not a TLS time.
    let tls = if url.starts_with("https") {
        v[2] - v[1]
    } else {
        0.0
    };
    [v[0], v[1] - v[0], tls, v[4] - v[3], v[5] - v[4], v[5]]
}

/// One curl fetching `url` inside the lab, its `-w` timers as phases.
pub fn curl_run(lab: &Lab, url: &str, h2: bool) -> (Phases, f64, f64) {
    let mut curl = lab.ns.command("curl");
    curl.arg("--cacert")
        .arg(&lab.ca.ca_file)
        .arg(if h2 { "--http2" } else { "--http1.1" });
    let from = now();
    let v = curl_phases(curl, url);
    let to = now();
    ([v[0], v[1], v[2], v[3], v[4]], from, to)
}

/// Median and 90th percentile of `v`.
pub fn median_p90(v: &[f64]) -> (f64, f64) {
    let s = super::sorted(v.to_vec());
    (super::percentile(&s, 0.5), super::percentile(&s, 0.9))
}

/// The five phases' names, in [`Phases`] order.
pub const PHASES: [&str; 5] = ["resolve", "connect", "tls", "processing", "transfer"];

/// Per case and phase, the differences (tool − wire).
pub type Differences = HashMap<String, [Vec<f64>; 5]>;

/// A timed run: the case, the tool's phases and the capture window.
pub type Run = (Case, Phases, f64, f64);

/// `samples` runs of each case.
pub fn measure(
    lab: &Lab,
    samples: usize,
    mut run: impl FnMut(&Lab, &Case) -> (Phases, f64, f64),
) -> Vec<Run> {
    let mut runs = Vec::new();
    for case in cases(lab) {
        for _ in 0..samples {
            let (p, from, to) = run(lab, &case);
            runs.push((case.clone(), p, from, to));
        }
    }
    runs
}

/// Compares each run with its packets.
pub fn differences(packets: &[Packet], runs: &[Run]) -> Result<Differences, String> {
    let mut d: Differences = HashMap::new();
    for (case, phases, from, to) in runs {
        let wire = wire_phases(packets, *from, *to, case.port, case.https, case.proxied)
            .map_err(|e| format!("{}: {e} (the tool said {phases:?})", case.name))?;
        let e = d.entry(case.name.clone()).or_default();
        for i in 0..5 {
            e[i].push(phases[i] - wire[i]);
        }
    }
    Ok(d)
}

/// The table of one tool's differences: per case, each phase's median and
/// p90 (ms), and how many medians are within `target` ms.
pub fn table(diffs: &Differences, names: &[String], target: f64) -> (String, usize, usize) {
    let mut out = format!(
        "  {:<20} {}\n",
        "case",
        PHASES.map(|p| format!("{p:>17}")).join("")
    );
    let (mut within, mut all) = (0, 0);
    for name in names {
        let Some(d) = diffs.get(name) else { continue };
        out += &format!("  {name:<20}");
        for (i, phase) in PHASES.iter().enumerate() {
            if *phase == "tls" && name.starts_with("http ") {
                out += &format!("{:>17}", "-");
                continue;
            }
            let (m, p) = median_p90(&d[i]);
            all += 1;
            within += usize::from(m.abs() <= target);
            out += &format!("{:>17}", format!("{m:+.3} / {p:+.3}"));
        }
        out.push('\n');
    }
    // Each phase's medians from the lowest case to the highest.
    out += &format!("  {:<20}", "range of medians");
    for (i, phase) in PHASES.iter().enumerate() {
        let medians: Vec<f64> = names
            .iter()
            .filter(|n| !(*phase == "tls" && n.starts_with("http ")))
            .filter_map(|n| diffs.get(n))
            .map(|d| median_p90(&d[i]).0)
            .collect();
        let lo = medians.iter().copied().fold(f64::INFINITY, f64::min);
        let hi = medians.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        out += &format!("{:>17}", format!("{lo:+.2} … {hi:+.2}"));
    }
    out.push('\n');
    (out, within, all)
}

/// Debian's blackbox_exporter inside the lab, probing with its http
/// prober (modules `h1` and `h2`, the lab's CA trusted).
pub struct Blackbox {
    child: Child,
    _dir: tempfile::TempDir,
}

impl Drop for Blackbox {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Where the lab's blackbox_exporter listens.
const BLACKBOX: &str = "127.0.0.1:9115";

impl Blackbox {
    /// `None` when blackbox_exporter is not installed.
    pub fn start(lab: &Lab) -> Option<Blackbox> {
        let dir = tempfile::tempdir().ok()?;
        let config = dir.path().join("blackbox.yml");
        let ca = lab.ca.ca_file.display();
        let module = |name: &str, h2: bool| {
            format!(
                "  {name}:\n    prober: http\n    timeout: 5s\n    http:\n      preferred_ip_protocol: ip4\n      enable_http2: {h2}\n      tls_config:\n        ca_file: {ca}\n"
            )
        };
        std::fs::write(
            &config,
            format!("modules:\n{}{}", module("h1", false), module("h2", true)),
        )
        .ok()?;
        let child = lab
            .ns
            .command("prometheus-blackbox-exporter")
            .arg(format!("--config.file={}", config.display()))
            .arg(format!("--web.listen-address={BLACKBOX}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .ok()?;
        let bb = Blackbox { child, _dir: dir };
        for _ in 0..100 {
            let up = lab
                .ns
                .command("curl")
                .args(["-sf", &format!("http://{BLACKBOX}/-/healthy")])
                .output()
                .is_ok_and(|o| o.status.success());
            if up {
                return Some(bb);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        None
    }

    /// One probe of `url`: blackbox's `probe_http_duration_seconds` phases.
    pub fn probe(&self, lab: &Lab, url: &str, h2: bool) -> (Phases, f64, f64) {
        let module = if h2 { "h2" } else { "h1" };
        let from = now();
        let out = lab
            .ns
            .command("curl")
            .args(["-sf", "-G", &format!("http://{BLACKBOX}/probe")])
            .args(["--data-urlencode", &format!("module={module}")])
            .args(["--data-urlencode", &format!("target={url}")])
            .output()
            .expect("curl runs");
        let to = now();
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(
            text.lines().any(|l| l == "probe_success 1"),
            "blackbox probe of {url} failed: {text}"
        );
        let phase = |p: &str| {
            let key = format!("probe_http_duration_seconds{{phase=\"{p}\"}} ");
            text.lines()
                .find_map(|l| l.strip_prefix(&key))
                .and_then(|v| v.trim().parse::<f64>().ok())
                .map(|s| s * 1e3)
                .unwrap_or_else(|| panic!("no {p} phase in {text}"))
        };
        (PHASES.map(phase), from, to)
    }
}
