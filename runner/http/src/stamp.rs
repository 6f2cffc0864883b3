//! DNS over UDP sockets whose reads say when the kernel received each
//! answer (`SO_TIMESTAMPNS`), so resolve ends when the last answer reached
//! the host, not when this process got round to it.
//!
//! A lookup waits tens of milliseconds for its answers with nothing else
//! to do, and on a virtual machine a thread woken from that idle wait runs
//! 0.2 to 0.5 ms after its packet arrived (the wake-up of an idle vCPU);
//! curl and blackbox_exporter show the same lag in their resolve. The
//! kernel stamps each datagram as it is queued to the socket, before any
//! of that.

use std::future::Future;
use std::io;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};
use std::os::fd::AsRawFd;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use hickory_resolver::net::runtime::{
    DnsUdpSocket, RuntimeProvider, TokioHandle, TokioRuntimeProvider, TokioTime,
};
use tokio::io::Interest;

/// Asks the kernel to stamp arriving packets, for the life of the process.
///
/// Linux stamps a packet on arrival only while some socket wants stamps
/// (a static key); turning that on is deferred to a work queue, and off
/// again when the last such socket closes. With only the lookup's own
/// sockets asking, their answers raced the switch and were stamped when
/// read instead. One socket kept open holds it on.
pub(crate) fn keep_stamps_on() {
    static KEEPER: std::sync::OnceLock<Option<std::net::UdpSocket>> = std::sync::OnceLock::new();
    KEEPER.get_or_init(|| {
        let sock = std::net::UdpSocket::bind("127.0.0.1:0").ok()?;
        set_stamps(sock.as_raw_fd());
        Some(sock)
    });
}

/// Asks for the kernel's receive stamps on `fd` (and keeps stamping on,
/// see [`keep_stamps_on`]); a socket that cannot have them reads
/// unstamped (its reads are then timed by when they began).
pub(crate) fn want_stamps(fd: std::os::fd::RawFd) {
    keep_stamps_on();
    set_stamps(fd);
}

/// Sets `SO_TIMESTAMPNS` on `fd`.
fn set_stamps(fd: std::os::fd::RawFd) {
    let on: libc::c_int = 1;
    // SAFETY: a valid socket and an int option of the right size.
    let rc = unsafe {
        libc::setsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_TIMESTAMPNS,
            (&on as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc != 0 {
        tracing::debug!(error = %io::Error::last_os_error(), "no receive timestamps on a socket");
    }
}

/// One lookup's span on the network: when its first query was sent and
/// when its last answer reached the host.
#[derive(Default)]
pub(crate) struct AnswerClock {
    span: Mutex<(Option<Instant>, Option<Instant>)>,
    /// An answer too large for UDP was asked again over TCP, whose
    /// arrival is not stamped: the span would end too early.
    tcp: std::sync::atomic::AtomicBool,
}

impl AnswerClock {
    fn sent(&self, at: Instant) {
        if let Ok(mut s) = self.span.lock() {
            s.0 = Some(s.0.map_or(at, |f| f.min(at)));
        }
    }

    fn answered(&self, at: Instant) {
        if let Ok(mut s) = self.span.lock() {
            s.1 = Some(s.1.map_or(at, |l| l.max(at)));
        }
    }

    /// From the first query sent to the last answer's arrival, when both
    /// went over UDP and the answer was stamped.
    pub(crate) fn span(&self) -> Option<(Instant, Instant)> {
        if self.tcp.load(std::sync::atomic::Ordering::Relaxed) {
            return None;
        }
        match self.span.lock().ok().map(|s| *s) {
            Some((Some(first), Some(last))) if first <= last => Some((first, last)),
            _ => None,
        }
    }
}

/// hickory's tokio provider, with UDP sockets that stamp answers into `clock`.
#[derive(Clone)]
pub(crate) struct StampingProvider {
    inner: TokioRuntimeProvider,
    clock: Arc<AnswerClock>,
}

impl StampingProvider {
    pub(crate) fn new(clock: Arc<AnswerClock>) -> Self {
        StampingProvider {
            inner: TokioRuntimeProvider::default(),
            clock,
        }
    }
}

impl RuntimeProvider for StampingProvider {
    type Handle = TokioHandle;
    type Timer = TokioTime;
    type Udp = StampedUdp;
    type Tcp = <TokioRuntimeProvider as RuntimeProvider>::Tcp;

    fn create_handle(&self) -> Self::Handle {
        self.inner.create_handle()
    }

    fn connect_tcp(
        &self,
        server_addr: SocketAddr,
        bind_addr: Option<SocketAddr>,
        timeout: Option<Duration>,
    ) -> Pin<Box<dyn Send + Future<Output = Result<Self::Tcp, io::Error>>>> {
        // Answers too large for UDP come over TCP, unstamped: resolve then
        // runs from the request's start to the lookup's return.
        self.clock
            .tcp
            .store(true, std::sync::atomic::Ordering::Relaxed);
        self.inner.connect_tcp(server_addr, bind_addr, timeout)
    }

    fn bind_udp(
        &self,
        local_addr: SocketAddr,
        _server_addr: SocketAddr,
    ) -> Pin<Box<dyn Send + Future<Output = Result<Self::Udp, io::Error>>>> {
        let clock = self.clock.clone();
        Box::pin(async move {
            let sock = tokio::net::UdpSocket::bind(local_addr).await?;
            want_stamps(sock.as_raw_fd());
            Ok(StampedUdp {
                sock,
                clock,
                opened: Instant::now(),
            })
        })
    }
}

/// A UDP socket for DNS noting when each datagram it reads arrived.
pub(crate) struct StampedUdp {
    sock: tokio::net::UdpSocket,
    clock: Arc<AnswerClock>,
    /// No answer can have arrived before the socket existed: a stamp
    /// earlier than this is a clock that stepped, and is not used.
    opened: Instant,
}

impl DnsUdpSocket for StampedUdp {
    type Time = TokioTime;

    fn poll_recv_from(
        &self,
        cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<io::Result<(usize, SocketAddr)>> {
        loop {
            std::task::ready!(self.sock.poll_recv_ready(cx))?;
            let fd = self.sock.as_raw_fd();
            match self
                .sock
                .try_io(Interest::READABLE, || recv_stamped(fd, buf))
            {
                Ok((n, from, stamp)) => {
                    if let Some(at) = stamp.and_then(|s| to_instant(s, self.opened)) {
                        self.clock.answered(at);
                    }
                    return Poll::Ready(Ok((n, from)));
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                Err(e) => return Poll::Ready(Err(e)),
            }
        }
    }

    fn poll_send_to(
        &self,
        cx: &mut Context<'_>,
        buf: &[u8],
        target: SocketAddr,
    ) -> Poll<io::Result<usize>> {
        let at = Instant::now();
        let sent = self.sock.poll_send_to(cx, buf, target);
        if matches!(sent, Poll::Ready(Ok(_))) {
            self.clock.sent(at);
        }
        sent
    }
}

/// A kernel stamp (the real-time clock) as an instant of the monotonic
/// one: as far before now as the stamp is before the real time now. None
/// when that would be before `floor` or in the future (the real-time clock
/// was stepped in between).
pub(crate) fn to_instant(stamp: SystemTime, floor: Instant) -> Option<Instant> {
    let now = Instant::now();
    let age = SystemTime::now().duration_since(stamp).ok()?;
    let at = now.checked_sub(age)?;
    (at >= floor).then_some(at)
}

/// One `recvmsg` into `buf`: the length, the sender, and the kernel's
/// receive stamp when there is one.
fn recv_stamped(
    fd: std::os::fd::RawFd,
    buf: &mut [u8],
) -> io::Result<(usize, SocketAddr, Option<SystemTime>)> {
    // SAFETY: all-zero is a valid sockaddr_storage.
    let mut from: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
    // SAFETY: the pointer and length describe `buf`.
    let (n, stamp) = unsafe { recvmsg(fd, buf.as_mut_ptr(), buf.len(), Some(&mut from))? };
    let addr = socket_addr(&from).ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::InvalidData,
            "a datagram from an address that is not IP",
        )
    })?;
    Ok((n, addr, stamp))
}

/// One `recvmsg` on a connected stream into `buf`: the length, and when
/// the kernel received the last of the bytes read (under TCP the stamp of
/// the last segment the read took from).
pub(crate) fn recv_stream_stamped(
    fd: std::os::fd::RawFd,
    buf: &mut [std::mem::MaybeUninit<u8>],
) -> io::Result<(usize, Option<SystemTime>)> {
    // SAFETY: the pointer and length describe `buf`, which recvmsg only
    // writes into.
    unsafe { recvmsg(fd, buf.as_mut_ptr().cast(), buf.len(), None) }
}

/// # Safety
/// `buf` must be valid for writes of `len` bytes.
unsafe fn recvmsg(
    fd: std::os::fd::RawFd,
    buf: *mut u8,
    len: usize,
    from: Option<&mut libc::sockaddr_storage>,
) -> io::Result<(usize, Option<SystemTime>)> {
    let mut iov = libc::iovec {
        iov_base: buf.cast(),
        iov_len: len,
    };
    // Room for a timespec's control message, 8-byte aligned.
    let mut control = [0u64; 8];
    // SAFETY: all-zero is a valid msghdr.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    if let Some(from) = from {
        msg.msg_name = (from as *mut libc::sockaddr_storage).cast();
        msg.msg_namelen = std::mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t;
    }
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control.as_mut_ptr().cast();
    msg.msg_controllen = std::mem::size_of_val(&control) as _;
    // SAFETY: every pointer in `msg` points at a live buffer of the length
    // it is given, for the duration of the call.
    let n = unsafe { libc::recvmsg(fd, &mut msg, 0) };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    let mut stamp = None;
    // SAFETY: the CMSG_* walk stays within `msg_controllen`, which the
    // kernel set to what it wrote into `control`.
    unsafe {
        let mut c = libc::CMSG_FIRSTHDR(&msg);
        while !c.is_null() {
            if (*c).cmsg_level == libc::SOL_SOCKET && (*c).cmsg_type == libc::SCM_TIMESTAMPNS {
                let ts: libc::timespec =
                    std::ptr::read_unaligned(libc::CMSG_DATA(c).cast::<libc::timespec>());
                if let (Ok(s), Ok(ns)) = (u64::try_from(ts.tv_sec), u32::try_from(ts.tv_nsec)) {
                    stamp = UNIX_EPOCH.checked_add(Duration::new(s, ns));
                }
            }
            c = libc::CMSG_NXTHDR(&msg, c);
        }
    }
    // n ≥ 0 here.
    Ok((n as usize, stamp))
}

fn socket_addr(s: &libc::sockaddr_storage) -> Option<SocketAddr> {
    match libc::c_int::from(s.ss_family) {
        libc::AF_INET => {
            // SAFETY: the family says the storage holds a sockaddr_in.
            let a = unsafe { &*(s as *const libc::sockaddr_storage).cast::<libc::sockaddr_in>() };
            Some(SocketAddr::V4(SocketAddrV4::new(
                Ipv4Addr::from(u32::from_be(a.sin_addr.s_addr)),
                u16::from_be(a.sin_port),
            )))
        }
        libc::AF_INET6 => {
            // SAFETY: the family says the storage holds a sockaddr_in6.
            let a = unsafe { &*(s as *const libc::sockaddr_storage).cast::<libc::sockaddr_in6>() };
            Some(SocketAddr::V6(SocketAddrV6::new(
                Ipv6Addr::from(a.sin6_addr.s6_addr),
                u16::from_be(a.sin6_port),
                a.sin6_flowinfo,
                a.sin6_scope_id,
            )))
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A query goes out, its answer comes back on loopback: the span runs
    /// from the query's send to the answer's arrival, not to its read.
    #[test]
    fn a_lookup_is_timed_from_its_query_to_its_answers_arrival() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        keep_stamps_on();
        // The kernel turns stamping on from a work queue.
        std::thread::sleep(Duration::from_millis(50));
        rt.block_on(async {
            let clock = Arc::new(AnswerClock::default());
            let provider = StampingProvider::new(clock.clone());
            let server = std::net::UdpSocket::bind("127.0.0.1:0").expect("server");
            let server_addr = server.local_addr().expect("addr");
            let sock = provider
                .bind_udp("127.0.0.1:0".parse().expect("addr"), server_addr)
                .await
                .expect("bind");
            let before_query = Instant::now();
            std::future::poll_fn(|cx| sock.poll_send_to(cx, b"query", server_addr))
                .await
                .expect("send");
            assert!(clock.span().is_none(), "no answer yet");
            let mut buf = [0u8; 64];
            let (_, client) = server.recv_from(&mut buf).expect("query");
            let answered = Instant::now();
            server.send_to(b"answer", client).expect("answer");
            // Read well after arrival.
            std::thread::sleep(Duration::from_millis(20));
            let (n, from) = std::future::poll_fn(|cx| sock.poll_recv_from(cx, &mut buf))
                .await
                .expect("recv");
            let read = Instant::now();
            assert_eq!(&buf[..n], b"answer");
            assert_eq!(from, server_addr);
            let (first, last) = clock.span().expect("both ends stamped");
            assert!(first >= before_query && first <= answered);
            assert!(last >= answered, "stamped before the answer was sent");
            assert!(
                read.duration_since(last) >= Duration::from_millis(15),
                "the stamp is the read, not the arrival: {:?} before the read",
                read.duration_since(last)
            );
        });
    }
}
