//! An I/O wrapper that notes when the first response byte arrives, so
//! "processing" ends at the first byte (as curl's time_starttransfer does)
//! and not when hyper has finished parsing the headers; it also counts the
//! bytes on the wire, which hyper does not report.
//!
//! On an HTTP/2 connection the socket also carries control frames
//! (SETTINGS, WINDOW_UPDATE, PING) at any time, so there the first byte of
//! a response is the read that brings its HEADERS frame, found by following
//! the frames' 9-byte headers through the stream; its body bytes are the
//! DATA frames' payloads.

use std::pin::Pin;
use std::sync::Mutex;
use std::task::{Context, Poll};
use std::time::Instant;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// Shared between the connection task and the client: what the socket
/// delivered since the current request was sent.
#[derive(Default)]
pub struct FirstByteProbe {
    state: Mutex<ProbeState>,
}

#[derive(Default)]
struct ProbeState {
    armed: bool,
    /// HTTP/2: where the reads are in the frame stream (kept across
    /// requests: frames do not start again with a request).
    frames: Option<Frames>,
    /// HTTP/2: DATA payload bytes since `arm`.
    data_bytes: u64,
    first: Option<Instant>,
    /// When the bytes of the response's last read arrived (HTTP/2: the
    /// last that carried its HEADERS or DATA).
    last: Option<Instant>,
    /// When the bytes of the socket's latest read since `arm` arrived.
    arrived: Option<Instant>,
    /// When the bytes of the last read of the socket after the first byte
    /// arrived.
    socket_last: Option<Instant>,
    /// Bytes read since `arm`.
    bytes: u64,
    /// The start of the response, kept until the end of its head is seen.
    head: Vec<u8>,
    head_len: Option<u64>,
}

/// Enough to find the end of any head hyper would accept.
const HEAD_SCAN_LIMIT: usize = 1 << 20;

impl FirstByteProbe {
    /// The connection speaks HTTP/2 from its next byte on.
    pub fn http2(&self) {
        if let Ok(mut s) = self.state.lock() {
            s.frames = Some(Frames::default());
        }
    }

    /// Forget the last request's bytes and wait for the next response.
    pub fn arm(&self) {
        if let Ok(mut s) = self.state.lock() {
            let frames = s.frames.take();
            *s = ProbeState {
                armed: true,
                frames,
                ..ProbeState::default()
            };
        }
    }

    /// When the first byte after `arm` arrived.
    pub fn first_byte(&self) -> Option<Instant> {
        self.state.lock().ok().and_then(|s| s.first)
    }

    /// When the response's last byte so far arrived (see [`SocketIo`]; the
    /// start of the read that brought it where the kernel gave no stamp).
    pub fn last_byte(&self) -> Option<Instant> {
        let s = self.state.lock().ok()?;
        // A decrypted read that began after its bytes arrived (decryption
        // behind the wire) would end transfer late: under TLS the socket's
        // own stamp says when they came.
        s.socket_last.or(s.last)
    }

    /// A read of the socket brought bytes that had arrived at `at`.
    fn socket_read(&self, at: Instant) {
        if let Ok(mut s) = self.state.lock() {
            s.arrived = Some(at);
            if s.first.is_some() {
                s.socket_last = Some(at);
            }
        }
    }

    /// Bytes on the wire after the response head (body, with any chunk
    /// framing), if the head's end was seen.
    pub fn wire_body_bytes(&self) -> Option<u64> {
        let s = self.state.lock().ok()?;
        if s.frames.is_some() {
            return Some(s.data_bytes);
        }
        s.head_len.map(|h| s.bytes.saturating_sub(h))
    }

    /// `data` came from a read that began at `at`: the bytes were there
    /// by then, so `at` is nearer their arrival than the read's end, which
    /// (under TLS) follows the decryption of all that was waiting.
    fn saw(&self, data: &[u8], at: Instant) {
        let Ok(mut s) = self.state.lock() else {
            return;
        };
        // Bytes read now came with the socket's latest read, or (under TLS)
        // one before it, whose bytes were decrypted then: either way no
        // later than its stamp. A read that began after they arrived (this
        // thread busy, or waking up) is not when they came.
        let at = s.arrived.map_or(at, |a| a.min(at));
        if let Some(frames) = &mut s.frames {
            let (headers, body) = frames.walk(data);
            s.data_bytes += body;
            if s.armed && headers {
                s.armed = false;
                s.first = Some(at);
            }
            if s.first.is_some() && (headers || body > 0) {
                s.last = Some(at);
            }
            return;
        }
        if s.armed {
            s.armed = false;
            s.first = Some(at);
        }
        s.last = Some(at);
        s.bytes += data.len() as u64;
        if s.head_len.is_none() && s.head.len() < HEAD_SCAN_LIMIT {
            // Search from 3 bytes back, in case the terminator straddles reads.
            let from = s.head.len().saturating_sub(3);
            s.head.extend_from_slice(data);
            if let Some(i) = s.head[from..].windows(4).position(|w| w == b"\r\n\r\n") {
                s.head_len = Some((from + i + 4) as u64);
                s.head = Vec::new();
            }
        }
    }
}

/// HTTP/2 frame types that matter here (RFC 9113, section 6).
const DATA: u8 = 0x0;
const HEADERS: u8 = 0x1;

/// A position in an HTTP/2 frame stream: inside a frame's 9-byte header,
/// or inside its payload.
#[derive(Default, Debug)]
struct Frames {
    header: [u8; 9],
    have: usize,
    kind: u8,
    payload_left: u32,
}

impl Frames {
    /// Follows `data` through the frames: whether a HEADERS frame starts in
    /// it, and how many DATA payload bytes it holds.
    fn walk(&mut self, mut data: &[u8]) -> (bool, u64) {
        let mut headers = false;
        let mut body = 0u64;
        while !data.is_empty() {
            if self.payload_left > 0 {
                let n = data.len().min(self.payload_left as usize);
                if self.kind == DATA {
                    body += n as u64;
                }
                // n ≤ payload_left, a u32.
                self.payload_left -= n as u32;
                data = &data[n..];
                continue;
            }
            let n = data.len().min(9 - self.have);
            self.header[self.have..self.have + n].copy_from_slice(&data[..n]);
            self.have += n;
            data = &data[n..];
            if self.have == 9 {
                self.have = 0;
                let h = self.header;
                self.payload_left = u32::from_be_bytes([0, h[0], h[1], h[2]]);
                self.kind = h[3];
                headers |= self.kind == HEADERS;
            }
        }
        (headers, body)
    }
}

/// A stream whose reads feed a [`FirstByteProbe`].
pub struct TimedIo<S> {
    inner: S,
    probe: std::sync::Arc<FirstByteProbe>,
    /// The addresses of hyper's read buffer already populated (see
    /// [`prefault`]): hyper reads into one buffer many times over.
    populated: std::ops::Range<usize>,
}

impl<S> TimedIo<S> {
    /// The stream HTTP reads: its bytes are the response's.
    pub fn new(inner: S, probe: std::sync::Arc<FirstByteProbe>) -> Self {
        TimedIo {
            inner,
            probe,
            populated: 0..0,
        }
    }
}

/// A connection's TCP socket, noting when the bytes each read took had
/// arrived: the kernel's receive stamp of the last segment the read took
/// (`SO_TIMESTAMPNS`). A read begins when this thread gets to it, which
/// after an idle wait or a busy moment (a fresh process running code for the
/// first time) is up to a millisecond after the bytes came; and under TLS
/// one decrypted read may take in several of the socket's (rustls asks for
/// 4 KiB at a time), while rustls decrypts a large body more slowly than
/// loopback delivers it (8 MB: transfer +0.35 to +0.65 ms over the wire
/// when timed by the reads' starts).
///
/// Reading ahead into a larger buffer here was tried twice and dropped:
/// decrypting, not the number of reads, is what falls behind the wire,
/// and the extra copy into rustls's buffer made it worse.
pub struct SocketIo {
    tcp: tokio::net::TcpStream,
    probe: std::sync::Arc<FirstByteProbe>,
    /// When the connection was made: no byte arrived before.
    opened: Instant,
}

impl SocketIo {
    /// Wraps `tcp`, asking the kernel to stamp what arrives on it.
    pub fn new(tcp: tokio::net::TcpStream, probe: std::sync::Arc<FirstByteProbe>) -> Self {
        use std::os::fd::AsRawFd;
        crate::stamp::want_stamps(tcp.as_raw_fd());
        SocketIo {
            tcp,
            probe,
            opened: Instant::now(),
        }
    }
}

impl AsyncRead for SocketIo {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        use std::os::fd::AsRawFd;
        let this = self.get_mut();
        loop {
            std::task::ready!(this.tcp.poll_read_ready(cx))?;
            let at = Instant::now();
            let fd = this.tcp.as_raw_fd();
            // SAFETY: the kernel only writes into the unfilled part, and the
            // `n` bytes it says it wrote are then marked initialised. (Zeroing
            // it first, as `initialize_unfilled` would, costs a memset of
            // hyper's whole read buffer on every read.)
            let unfilled = unsafe { buf.unfilled_mut() };
            match this.tcp.try_io(tokio::io::Interest::READABLE, || {
                crate::stamp::recv_stream_stamped(fd, unfilled)
            }) {
                Ok((n, stamp)) => {
                    // SAFETY: recvmsg wrote these `n` bytes.
                    unsafe { buf.assume_init(n) };
                    buf.advance(n);
                    if n > 0 {
                        // Unstamped (stamps off, or a clock that stepped):
                        // the read's start, as before.
                        let arrived = stamp
                            .and_then(|s| crate::stamp::to_instant(s, this.opened))
                            .unwrap_or(at);
                        this.probe.socket_read(arrived);
                    }
                    return Poll::Ready(Ok(()));
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => continue,
                Err(e) => return Poll::Ready(Err(e)),
            }
        }
    }
}

impl AsyncWrite for SocketIo {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.tcp).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.tcp).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.tcp).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.tcp).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.tcp.is_write_vectored()
    }
}

/// Below this, a read buffer is left to fault its pages in as it is written.
const PREFAULT_FROM: usize = 64 << 10;

/// Backs a large read buffer with memory in one call before the read.
///
/// hyper grows its read buffer for a large body (to megabytes) and keeps
/// each filled buffer while the body is gathered, so a large body lands in
/// fresh memory. Written by the kernel's copy (or rustls's decryption), each
/// of its 4 KiB pages faulted on its own: about 2,000 faults for 8 MB, which
/// made reading it slower than curl's (one small buffer, reused). Populated
/// at once, the same pages cost one call (and a block of 2 MiB or more is a
/// few huge pages: the binary's allocator places and advises it so). A
/// small buffer, as every request of a load test has, is left alone.
fn prefault(buf: &mut [std::mem::MaybeUninit<u8>]) {
    const PAGE: usize = 4096;
    if buf.len() < PREFAULT_FROM {
        return;
    }
    let from = buf.as_ptr() as usize;
    let start = from.next_multiple_of(PAGE);
    let end = from.saturating_add(buf.len()) / PAGE * PAGE;
    if end > start {
        // Advice only: on a kernel without MADV_POPULATE_WRITE (before
        // 5.14) it fails and the pages fault in as before.
        // SAFETY: [start, end) lies inside `buf`, memory this thread may
        // write; populating writes nothing a reader could see.
        unsafe {
            libc::madvise(
                start as *mut libc::c_void,
                end - start,
                libc::MADV_POPULATE_WRITE,
            );
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for TimedIo<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        // SAFETY: only the addresses are taken; nothing is written here.
        let unfilled = unsafe { buf.unfilled_mut() };
        let (from, to) = (
            unfilled.as_ptr() as usize,
            unfilled.as_ptr_range().end as usize,
        );
        if !(self.populated.contains(&from) && to <= self.populated.end) {
            prefault(unfilled);
            self.populated = from..to;
        }
        let at = Instant::now();
        let res = Pin::new(&mut self.inner).poll_read(cx, buf);
        if matches!(res, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            self.probe.saw(&buf.filled()[before..], at);
        }
        res
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for TimedIo<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(kind: u8, payload: usize) -> Vec<u8> {
        let len = (payload as u32).to_be_bytes();
        let mut f = vec![len[1], len[2], len[3], kind, 0, 0, 0, 0, 1];
        f.extend(std::iter::repeat_n(0xAA, payload));
        f
    }

    #[test]
    fn the_first_byte_of_an_http2_response_is_its_headers_frame() {
        let probe = FirstByteProbe::default();
        probe.http2();
        // The server's SETTINGS arrive before the request is even sent.
        probe.saw(&frame(0x4, 18), Instant::now());
        probe.arm();
        // A WINDOW_UPDATE and a PING, cut across reads, are not the response.
        let mut control = frame(0x8, 4);
        control.extend(frame(0x6, 8));
        probe.saw(&control[..5], Instant::now());
        probe.saw(&control[5..], Instant::now());
        assert_eq!(probe.first_byte(), None);
        // HEADERS, its 9-byte header split over two reads, then two DATA
        // frames whose payload runs across reads.
        let mut response = frame(HEADERS, 40);
        response.extend(frame(DATA, 1000));
        response.extend(frame(DATA, 24));
        probe.saw(&response[..4], Instant::now());
        assert_eq!(
            probe.first_byte(),
            None,
            "half a frame header says nothing yet"
        );
        probe.saw(&response[4..30], Instant::now());
        let first = probe.first_byte().expect("stamped at the HEADERS frame");
        for part in response[30..].chunks(333) {
            probe.saw(part, Instant::now());
        }
        assert_eq!(probe.first_byte(), Some(first), "stamped once");
        assert_eq!(probe.wire_body_bytes(), Some(1024));
        // The next request starts counting again, in the same frame stream.
        probe.arm();
        probe.saw(&frame(HEADERS, 3), Instant::now());
        assert!(probe.first_byte().is_some_and(|t| t >= first));
        assert_eq!(probe.wire_body_bytes(), Some(0));
    }

    /// Faults this thread took while `f` ran.
    fn faults_in(f: impl FnOnce()) -> i64 {
        let minflt = || {
            let mut u = std::mem::MaybeUninit::<libc::rusage>::uninit();
            // SAFETY: getrusage fills the struct it is given.
            unsafe {
                libc::getrusage(libc::RUSAGE_THREAD, u.as_mut_ptr());
                u.assume_init().ru_minflt
            }
        };
        let before = minflt();
        f();
        minflt() - before
    }

    #[test]
    fn a_large_read_buffer_is_backed_before_the_read_writes_it() {
        const LEN: usize = 4 << 20;
        let written = |prefaulted: bool| {
            let mut buf: Vec<u8> = Vec::with_capacity(LEN);
            if prefaulted {
                prefault(&mut buf.spare_capacity_mut()[..LEN]);
            }
            faults_in(|| {
                for b in &mut buf.spare_capacity_mut()[..LEN] {
                    b.write(1);
                }
                std::hint::black_box(&buf);
            })
        };
        let cold = written(false);
        let warm = written(true);
        assert!(cold >= 500, "{cold} faults writing 4 MiB of fresh memory");
        assert!(
            warm < cold / 10,
            "{warm} faults after prefault, {cold} without"
        );
    }

    #[test]
    fn a_small_read_buffer_is_left_to_fault_in_as_written() {
        const PAGE: usize = 4096;
        let len = PREFAULT_FROM / 2;
        // SAFETY: a fresh private mapping of `len` bytes, unmapped below;
        // none of its pages is backed until written.
        unsafe {
            let map = libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            );
            assert_ne!(map, libc::MAP_FAILED);
            let buf = std::slice::from_raw_parts_mut(map.cast::<std::mem::MaybeUninit<u8>>(), len);
            prefault(buf);
            let faults = faults_in(|| {
                for page in buf.chunks_mut(PAGE) {
                    page[0].write(1);
                }
            });
            libc::munmap(map, len);
            // Every page faults as it is written: none was populated.
            assert!(faults >= (len / PAGE) as i64 - 1, "{faults} faults");
        }
    }
}
