//! porteiro forbids unsafe code; this crate holds the one foreign call it
//! needs. mimalloc returns freed memory to the operating system only when
//! the thread that owns it allocates again or collects, so a thread that
//! has gone idle after a burst keeps its peak for good: [`collect`] is that
//! collection, called by porteiro's runtime when a worker thread parks.

/// Frees the calling thread's empty mimalloc pages and returns them, with
/// the rest of the process's freed arena memory, to the operating system.
pub fn collect() {
    // SAFETY: mi_collect takes no pointers and has no preconditions: it
    // works on the calling thread's own heap and mimalloc's shared arenas,
    // which it locks itself.
    unsafe { libmimalloc_sys::mi_collect(true) }
}
