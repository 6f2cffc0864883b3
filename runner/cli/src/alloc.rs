//! jemalloc, with huge pages for large blocks only.
//!
//! A large response body arrives into fresh memory: hyper's read buffers
//! grow to megabytes and are kept while the body is gathered. Touching that
//! memory 4 KiB at a time costs one page fault per page (about 2,000 for an
//! 8 MB body), and those faults fell inside the transfer phase: Waymark read
//! 8 MB from loopback about 1 ms slower than curl, which writes into one
//! reused buffer. Huge pages for every block (jemalloc's `thp:always`) closed
//! the gap but cost every process about 30 MiB of resident memory for its
//! small allocations, which `waymark serve` would carry all day. So only a
//! block of 2 MiB or more asks for huge pages: it starts on a huge-page
//! boundary (hyper's 2 MiB read buffer would otherwise hold no whole one),
//! is advised `MADV_HUGEPAGE`, and gives the advice back when freed, so that
//! memory reused for small blocks later is not handed out 2 MiB at a time.
//! The HTTP client then populates a large read buffer in one call before
//! reading into it (`waymark_http`'s `prefault`).
//!
//! The kernel's own policy decides first: only in its `madvise` mode does
//! the request change anything (in `always` mode every block already gets
//! huge pages, in `never` none can), so only then is it made.

use std::alloc::{GlobalAlloc, Layout};
use std::sync::atomic::{AtomicU8, Ordering};

use tikv_jemallocator::Jemalloc;

const HUGE: usize = 2 << 20;

/// The kernel's setting is not read yet.
const UNKNOWN: u8 = 0;
/// The kernel gives huge pages to advised memory only: advise.
const ADVISE: u8 = 1;
/// The kernel gives them to all memory, or to none: advice changes nothing.
const LEAVE: u8 = 2;

pub struct Allocator {
    mode: AtomicU8,
}

impl Allocator {
    pub const fn new() -> Self {
        Allocator {
            mode: AtomicU8::new(UNKNOWN),
        }
    }

    fn advising(&self) -> bool {
        match self.mode.load(Ordering::Relaxed) {
            ADVISE => true,
            LEAVE => false,
            _ => {
                let mode = if kernel_wants_advice() { ADVISE } else { LEAVE };
                self.mode.store(mode, Ordering::Relaxed);
                mode == ADVISE
            }
        }
    }

    /// Advises the huge pages inside a block of `size` bytes, or takes the
    /// advice back. Every allocation passes here: the size test is inlined
    /// into it, the rest kept out of its way.
    #[inline(always)]
    fn advise(&self, ptr: *mut u8, size: usize, huge: bool) {
        if size >= HUGE {
            self.advise_large(ptr, size, huge);
        }
    }

    #[cold]
    #[inline(never)]
    fn advise_large(&self, ptr: *mut u8, size: usize, huge: bool) {
        if ptr.is_null() || !self.advising() {
            return;
        }
        let start = (ptr as usize).next_multiple_of(HUGE);
        let end = (ptr as usize).saturating_add(size) / HUGE * HUGE;
        if end <= start {
            return;
        }
        let advice = if huge {
            libc::MADV_HUGEPAGE
        } else {
            libc::MADV_NOHUGEPAGE
        };
        // Advice only: if the kernel refuses, the block works as before.
        // SAFETY: [start, end) lies inside a block this allocator handed out
        // and still owns; madvise with these flags changes no contents.
        unsafe {
            libc::madvise(start as *mut libc::c_void, end - start, advice);
        }
    }
}

/// Whether `/sys/kernel/mm/transparent_hugepage/enabled` selects `[madvise]`.
/// Read with raw calls: the allocator cannot allocate while it decides.
fn kernel_wants_advice() -> bool {
    let path = c"/sys/kernel/mm/transparent_hugepage/enabled";
    let mut buf = [0u8; 128];
    // SAFETY: a NUL-terminated path, a buffer of the length given, and the
    // descriptor closed once read.
    let n = unsafe {
        let fd = libc::open(path.as_ptr(), libc::O_RDONLY | libc::O_CLOEXEC);
        if fd < 0 {
            return false;
        }
        let n = libc::read(fd, buf.as_mut_ptr().cast(), buf.len());
        libc::close(fd);
        n
    };
    let Ok(n) = usize::try_from(n) else {
        return false;
    };
    buf[..n.min(buf.len())]
        .windows(b"[madvise]".len())
        .any(|w| w == b"[madvise]")
}

/// The layout a block of `layout` is asked of jemalloc with: a block of a
/// huge page or more starts on a huge page, so that all of it can be backed
/// by them (a 2 MiB read buffer at a 4 KiB boundary holds no whole one).
#[inline]
fn placed(layout: Layout) -> Layout {
    if layout.size() < HUGE {
        return layout;
    }
    Layout::from_size_align(layout.size(), layout.align().max(HUGE)).unwrap_or(layout)
}

// SAFETY: every block comes from and returns to jemalloc with the layout
// `placed` gives for the caller's, which depends on the caller's alone; the
// advice around it never touches the contents.
unsafe impl GlobalAlloc for Allocator {
    #[inline]
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: a layout of the caller's size, at least as aligned.
        let ptr = unsafe { Jemalloc.alloc(placed(layout)) };
        self.advise(ptr, layout.size(), true);
        ptr
    }

    #[inline]
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        // SAFETY: a layout of the caller's size, at least as aligned.
        let ptr = unsafe { Jemalloc.alloc_zeroed(placed(layout)) };
        self.advise(ptr, layout.size(), true);
        ptr
    }

    #[inline]
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        self.advise(ptr, layout.size(), false);
        // SAFETY: the block, with the layout it was allocated with.
        unsafe { Jemalloc.dealloc(ptr, placed(layout)) }
    }

    #[inline]
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let Ok(wanted) = Layout::from_size_align(new_size, layout.align()) else {
            return std::ptr::null_mut();
        };
        match (placed(layout) == layout, placed(wanted) == wanted) {
            // SAFETY: the caller's block, layout and size, passed on.
            (true, true) => unsafe { Jemalloc.realloc(ptr, layout, new_size) },
            (false, false) => {
                // The old block may be freed by the move; its advice first.
                self.advise(ptr, layout.size(), false);
                // SAFETY: the block with the layout it was allocated with;
                // jemalloc keeps that alignment for the new size.
                let new = unsafe { Jemalloc.realloc(ptr, placed(layout), new_size) };
                if new.is_null() {
                    self.advise(ptr, layout.size(), true);
                } else {
                    self.advise(new, new_size, true);
                }
                new
            }
            // Crossing the huge-page size changes the block's alignment,
            // which jemalloc's realloc cannot: moved by hand.
            // SAFETY: a fresh block of the new layout; the old one copied up
            // to the smaller size, then freed with its own layout.
            _ => unsafe {
                let new = self.alloc(wanted);
                if !new.is_null() {
                    std::ptr::copy_nonoverlapping(ptr, new, layout.size().min(new_size));
                    self.dealloc(ptr, layout);
                }
                new
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_large_block_asks_for_huge_pages_and_gives_them_back() {
        let a = Allocator::new();
        if !a.advising() {
            eprintln!("the kernel's huge pages are not in madvise mode: nothing to check");
            return;
        }
        let layout = Layout::from_size_align(8 << 20, 1).expect("layout");
        // SAFETY: a fresh block of that layout, freed with it.
        unsafe {
            let p = a.alloc(layout);
            assert!(!p.is_null());
            let start = (p as usize).next_multiple_of(HUGE);
            assert!(vma_flag(start, "hg"), "no huge-page advice on the block");
            a.dealloc(p, layout);
            assert!(!vma_flag(start, "hg"), "the advice outlived the block");
        }
    }

    #[test]
    fn a_block_growing_past_a_huge_page_keeps_its_bytes_and_starts_on_one() {
        let a = Allocator::new();
        let small = Layout::from_size_align(1 << 20, 8).expect("layout");
        // SAFETY: each block used within its size and freed with its layout.
        unsafe {
            let p = a.alloc(small);
            assert!(!p.is_null());
            for i in 0..small.size() {
                *p.add(i) = (i % 251) as u8;
            }
            let big = a.realloc(p, small, 3 << 20);
            assert!(!big.is_null());
            assert_eq!(big as usize % HUGE, 0, "a 3 MiB block off a huge page");
            assert!((0..small.size()).all(|i| *big.add(i) == (i % 251) as u8));
            let bigger = a.realloc(big, Layout::from_size_align_unchecked(3 << 20, 8), 5 << 20);
            assert_eq!(bigger as usize % HUGE, 0);
            assert!((0..small.size()).all(|i| *bigger.add(i) == (i % 251) as u8));
            let back = a.realloc(bigger, Layout::from_size_align_unchecked(5 << 20, 8), 4096);
            assert!((0..4096).all(|i| *back.add(i) == (i % 251) as u8));
            a.dealloc(back, Layout::from_size_align_unchecked(4096, 8));
        }
    }

    /// Whether the mapping holding `addr` carries `flag` in its VmFlags.
    fn vma_flag(addr: usize, flag: &str) -> bool {
        let smaps = std::fs::read_to_string("/proc/self/smaps").expect("smaps");
        let mut inside = false;
        for line in smaps.lines() {
            if let Some((range, _)) = line.split_once(' ')
                && let Some((lo, hi)) = range.split_once('-')
                && let (Ok(lo), Ok(hi)) =
                    (usize::from_str_radix(lo, 16), usize::from_str_radix(hi, 16))
            {
                inside = (lo..hi).contains(&addr);
            } else if inside && let Some(flags) = line.strip_prefix("VmFlags:") {
                return flags.split_whitespace().any(|f| f == flag);
            }
        }
        false
    }
}
