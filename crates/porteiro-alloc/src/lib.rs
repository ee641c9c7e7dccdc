//! porteiro forbids unsafe code; this crate holds the foreign calls into
//! mimalloc it needs.
//!
//! [`Allocator`] is mimalloc as the global allocator. The `mimalloc` crate
//! asks for every block through `mi_malloc_aligned`, even at the alignment
//! every block has anyway; for blocks above 1 KiB whose size is not a power
//! of two (a request's future, buffers) that takes mimalloc's
//! over-allocating path, several hundred instructions per block. Here only
//! alignments beyond mimalloc's own guarantee take it, as in std's `System`.
//!
//! [`collect`]: mimalloc returns freed memory to the operating system only
//! when the thread that owns it allocates again or collects, so a thread
//! that has gone idle after a burst keeps its peak for good; porteiro's
//! runtime calls this when a worker thread parks.

use std::alloc::{GlobalAlloc, Layout};
use std::ffi::c_void;

use libmimalloc_sys as mi;

/// The alignment mimalloc gives every block of at least this size
/// (`MI_MAX_ALIGN_SIZE`, `max_align_t`); smaller blocks are aligned to
/// their size rounded up to a power of two.
const GUARANTEED_ALIGN: usize = 16;

/// mimalloc, with its plain entry points wherever they give the alignment
/// asked for.
pub struct Allocator;

fn plain(layout: &Layout) -> bool {
    layout.align() <= GUARANTEED_ALIGN && layout.align() <= layout.size()
}

// SAFETY: every block comes from mimalloc and goes back to it (`mi_free`
// takes blocks of every entry point); sizes and alignments are passed on
// as asked, and the plain entry points are used only where mimalloc's own
// alignment covers the one asked for.
unsafe impl GlobalAlloc for Allocator {
    #[inline]
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: mimalloc's allocation functions take any size; the
        // alignment is a power of two (Layout's invariant).
        unsafe {
            if plain(&layout) {
                mi::mi_malloc(layout.size()).cast()
            } else {
                mi::mi_malloc_aligned(layout.size(), layout.align()).cast()
            }
        }
    }

    #[inline]
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        // SAFETY: as in `alloc`.
        unsafe {
            if plain(&layout) {
                mi::mi_zalloc(layout.size()).cast()
            } else {
                mi::mi_zalloc_aligned(layout.size(), layout.align()).cast()
            }
        }
    }

    #[inline]
    unsafe fn dealloc(&self, ptr: *mut u8, _layout: Layout) {
        // SAFETY: `ptr` came from this allocator (GlobalAlloc's contract).
        unsafe { mi::mi_free(ptr.cast::<c_void>()) }
    }

    #[inline]
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let new = Layout::from_size_align(new_size, layout.align()).unwrap_or(layout);
        // SAFETY: `ptr` came from this allocator with `layout`; the new
        // block keeps the alignment, by mimalloc's guarantee or by asking.
        unsafe {
            if plain(&new) {
                mi::mi_realloc(ptr.cast::<c_void>(), new_size).cast()
            } else {
                mi::mi_realloc_aligned(ptr.cast::<c_void>(), new_size, layout.align()).cast()
            }
        }
    }
}

/// Frees the calling thread's empty mimalloc pages and returns them, with
/// the rest of the process's freed arena memory, to the operating system.
pub fn collect() {
    // SAFETY: mi_collect takes no pointers and has no preconditions: it
    // works on the calling thread's own heap and mimalloc's shared arenas,
    // which it locks itself.
    unsafe { mi::mi_collect(true) }
}
