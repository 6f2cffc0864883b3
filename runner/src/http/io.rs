//! An I/O wrapper that notes when the first response byte arrives, so
//! "processing" ends at the first byte (as curl's time_starttransfer does)
//! and not when hyper has finished parsing the headers.

use std::pin::Pin;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};
use std::time::Instant;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// Shared between the connection task and the client.
#[derive(Default)]
pub struct FirstByteProbe {
    armed: AtomicBool,
    first: Mutex<Option<Instant>>,
}

impl FirstByteProbe {
    /// Forget the last request's first byte and wait for the next one.
    pub fn arm(&self) {
        if let Ok(mut f) = self.first.lock() {
            *f = None;
        }
        self.armed.store(true, Ordering::Release);
    }

    /// When the first byte after `arm` arrived.
    pub fn first_byte(&self) -> Option<Instant> {
        self.first.lock().ok().and_then(|f| *f)
    }

    fn saw_bytes(&self) {
        if self.armed.swap(false, Ordering::AcqRel)
            && let Ok(mut f) = self.first.lock()
        {
            *f = Some(Instant::now());
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
            self.probe.saw_bytes();
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
