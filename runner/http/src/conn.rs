//! Opening a connection, phase by phase: resolve, the allow-list on the
//! addresses, TCP connect, TLS, and the HTTP/1.1 or HTTP/2 handshake.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use http_body_util::Full;
use hyper::client::conn::{http1, http2};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpStream;

use crate::io::{FirstByteProbe, SocketIo, TimedIo};
use crate::wire::{Target, connect_error, hyper_error};
use crate::{Client, HttpError, Phase, Progress, Timings, TlsInfo, tls};

/// The most one read of an HTTP/1 connection takes from the socket.
const LARGEST_READ: usize = 4 << 20;

/// One connection's request side, HTTP/1.1 or HTTP/2 as ALPN chose.
pub(crate) enum Sender {
    H1(http1::SendRequest<Full<Bytes>>),
    H2(http2::SendRequest<Full<Bytes>>),
}

impl Sender {
    pub(crate) fn is_closed(&self) -> bool {
        match self {
            Sender::H1(s) => s.is_closed(),
            Sender::H2(s) => s.is_closed(),
        }
    }

    pub(crate) async fn send(
        &mut self,
        req: hyper::Request<Full<Bytes>>,
    ) -> hyper::Result<hyper::Response<hyper::body::Incoming>> {
        match self {
            Sender::H1(s) => {
                s.ready().await?;
                s.send_request(req).await
            }
            Sender::H2(s) => {
                s.ready().await?;
                s.send_request(req).await
            }
        }
    }
}

pub(crate) struct Conn {
    pub(crate) sender: Sender,
    pub(crate) probe: Arc<FirstByteProbe>,
    pub(crate) remote: SocketAddr,
    pub(crate) tls: Option<TlsInfo>,
}

impl Client {
    async fn handshake<S>(&self, io: TimedIo<S>, h2: bool) -> Result<Sender, HttpError>
    where
        S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    {
        let io = TokioIo::new(io);
        if h2 {
            let (sender, conn) = http2::Builder::new(TokioExecutor::new())
                .max_header_list_size(
                    u32::try_from(self.config.max_header_bytes).unwrap_or(u32::MAX),
                )
                .handshake(io)
                .await
                .map_err(|e| hyper_error(&e))?;
            drive(conn);
            return Ok(Sender::H2(sender));
        }
        let (sender, conn) = http1::Builder::new()
            .max_header_size(self.config.max_header_bytes)
            // Each read's bytes reach the body's reader through the
            // connection task; large reads of a large body keep that hand-over
            // from pacing the reading (hyper's default stops at ~400 KB).
            .max_buf_size(LARGEST_READ)
            .handshake(io)
            .await
            .map_err(|e| hyper_error(&e))?;
        drive(conn);
        Ok(Sender::H1(sender))
    }

    /// The addresses to connect to, and the lookup's span on the network
    /// (none when no packet was needed or its times are not known).
    async fn resolve(
        &self,
        host: &str,
        port: u16,
    ) -> Result<(Vec<SocketAddr>, Option<(Instant, Instant)>), HttpError> {
        if let Ok(ip) = host.parse::<IpAddr>() {
            return Ok((vec![SocketAddr::new(ip, port)], None));
        }
        let found = self
            .config
            .resolver
            .resolve(host)
            .await
            .map_err(|e| HttpError::Resolve(format!("could not resolve '{host}': {e}")))?;
        if found.addrs.is_empty() {
            return Err(HttpError::Resolve(format!("'{host}' has no address")));
        }
        let addrs = found
            .addrs
            .into_iter()
            .map(|ip| SocketAddr::new(ip, port))
            .collect();
        Ok((addrs, found.network))
    }

    pub(crate) async fn connect(
        &self,
        target: &Target,
        started: Instant,
        progress: &Progress,
        timings: &mut Timings,
    ) -> Result<Conn, HttpError> {
        progress.enter(Phase::Resolve);
        let (resolved_addrs, network) = self.resolve(&target.host, target.port).await?;
        let resolved = Instant::now();
        // Resolve is the lookup's time on the network, from its first query
        // to its last answer's arrival: the resolver setting itself up
        // before, and this thread waking up after, are waymark's time, not
        // the name servers'.
        let resolve = match network {
            Some((asked, answered)) => answered
                .min(resolved)
                .saturating_duration_since(asked.max(started)),
            None => resolved.saturating_duration_since(started),
        };
        // The policy is checked on the addresses we will connect to, so a
        // name cannot be rebound to a forbidden address after the check.
        let mut refusal = None;
        let addrs: Vec<SocketAddr> = resolved_addrs
            .into_iter()
            .filter(|a| match self.config.allow.check_addr(&target.host, *a) {
                Ok(()) => true,
                Err(why) => {
                    refusal.get_or_insert(why);
                    false
                }
            })
            .collect();
        if let (true, Some(why)) = (addrs.is_empty(), refusal) {
            return Err(HttpError::Denied(why.to_string()));
        }
        timings.resolve = resolve;

        progress.enter(Phase::Connect);
        let mut last_err = None;
        let mut tcp = None;
        for addr in &addrs {
            match TcpStream::connect(addr).await {
                Ok(s) => {
                    tcp = Some((s, *addr));
                    break;
                }
                Err(e) => last_err = Some((*addr, e)),
            }
        }
        let (tcp, remote) = match (tcp, last_err) {
            (Some(t), _) => t,
            (None, Some((addr, e))) => return Err(connect_error(addr, &e)),
            (None, None) => {
                return Err(HttpError::Resolve(format!(
                    "'{}' resolved to no address",
                    target.host
                )));
            }
        };
        // Small requests must not wait for Nagle's algorithm.
        let _ = tcp.set_nodelay(true);
        let connected = Instant::now();
        timings.connect = connected.saturating_duration_since(resolved);

        let probe = Arc::new(FirstByteProbe::default());
        let (sender, tls_info) = if target.https {
            progress.enter(Phase::Tls);
            let raw = SocketIo::new(tcp, probe.clone());
            let (stream, info) = tls::handshake(&self.config.tls, &target.host, raw).await?;
            timings.tls = connected.elapsed();
            let h2 = stream.get_ref().1.alpn_protocol() == Some(b"h2");
            if h2 {
                probe.http2();
            }
            (
                self.handshake(TimedIo::new(stream, probe.clone()), h2)
                    .await?,
                Some(info),
            )
        } else {
            (
                self.handshake(
                    TimedIo::new(SocketIo::new(tcp, probe.clone()), probe.clone()),
                    false,
                )
                .await?,
                None,
            )
        };
        Ok(Conn {
            sender,
            probe,
            remote,
            tls: tls_info,
        })
    }
}

/// Run a connection's I/O in its own task until the connection ends.
///
/// Driving an HTTP/1 connection inside the sending task instead was
/// measured slower (load bench, 8 users: 38k → 30k requests/s): each
/// readiness wake-up then resumes the guest's fiber, where a task of its
/// own costs no more than a poll.
fn drive<F>(conn: F)
where
    F: std::future::Future<Output = Result<(), hyper::Error>> + Send + 'static,
{
    tokio::spawn(async move {
        if let Err(e) = conn.await {
            tracing::debug!(error = %e, "connection ended with an error");
        }
    });
}
