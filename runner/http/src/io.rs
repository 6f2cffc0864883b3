//! An I/O wrapper that notes when the first response byte arrives, so
//! "processing" ends at the first byte (as curl's time_starttransfer does)
//! and not when hyper has finished parsing the headers; it also counts the
//! bytes on the wire, which hyper does not report.

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
    first: Option<Instant>,
    /// Bytes read since `arm`.
    bytes: u64,
    /// The start of the response, kept until the end of its head is seen.
    head: Vec<u8>,
    head_len: Option<u64>,
}

/// Enough to find the end of any head hyper would accept.
const HEAD_SCAN_LIMIT: usize = 1 << 20;

impl FirstByteProbe {
    /// Forget the last request's bytes and wait for the next response.
    pub fn arm(&self) {
        if let Ok(mut s) = self.state.lock() {
            *s = ProbeState {
                armed: true,
                ..ProbeState::default()
            };
        }
    }

    /// When the first byte after `arm` arrived.
    pub fn first_byte(&self) -> Option<Instant> {
        self.state.lock().ok().and_then(|s| s.first)
    }

    /// Bytes on the wire after the response head (body, with any chunk
    /// framing), if the head's end was seen.
    pub fn wire_body_bytes(&self) -> Option<u64> {
        let s = self.state.lock().ok()?;
        s.head_len.map(|h| s.bytes.saturating_sub(h))
    }

    fn saw(&self, data: &[u8]) {
        let Ok(mut s) = self.state.lock() else {
            return;
        };
        if s.armed {
            s.armed = false;
            s.first = Some(Instant::now());
        }
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

/// A stream whose reads feed a [`FirstByteProbe`].
pub struct TimedIo<S> {
    inner: S,
    probe: std::sync::Arc<FirstByteProbe>,
}

impl<S> TimedIo<S> {
    pub fn new(inner: S, probe: std::sync::Arc<FirstByteProbe>) -> Self {
        TimedIo { inner, probe }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for TimedIo<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let res = Pin::new(&mut self.inner).poll_read(cx, buf);
        if matches!(res, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            self.probe.saw(&buf.filled()[before..]);
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
