//! porteiro's global allocator (crates/porteiro-alloc) gives every block
//! the alignment its type needs, on each of its paths: plain mimalloc for
//! ordinary alignments, the aligned entry points beyond them, zeroed
//! blocks, and blocks that grow.

#[global_allocator]
static ALLOCATOR: porteiro_alloc::Allocator = porteiro_alloc::Allocator;

#[repr(align(32))]
#[derive(Clone, Copy)]
struct A32([u8; 32]);

#[repr(align(128))]
#[derive(Clone, Copy)]
struct A128([u8; 128]);

#[repr(align(4096))]
#[derive(Clone, Copy)]
struct A4096([u8; 4096]);

fn aligned<T>(p: *const T) -> bool {
    (p as usize) % std::mem::align_of::<T>() == 0
}

#[test]
fn blocks_have_their_types_alignment() {
    for n in [1, 3, 17, 100, 1000] {
        let v = vec![A32([1; 32]); n];
        assert!(aligned(v.as_ptr()), "32-byte alignment, {n} items");
        assert!(v.iter().all(|a| a.0 == [1; 32]));
        let v = vec![A128([2; 128]); n];
        assert!(aligned(v.as_ptr()), "128-byte alignment, {n} items");
        assert!(v.iter().all(|a| a.0 == [2; 128]));
        let v = vec![A4096([3; 4096]); n.min(20)];
        assert!(aligned(v.as_ptr()), "4096-byte alignment, {n} items");
        assert!(v.iter().all(|a| a.0 == [3; 4096]));
        // Ordinary alignments, sizes on both sides of mimalloc's small
        // blocks (1 KiB) and not powers of two: the plain path.
        let words: Vec<u64> = (0..n as u64 * 37).collect();
        assert!(aligned(words.as_ptr()));
        let wide: Vec<u128> = (0..n as u128 * 5).collect();
        assert!(aligned(wide.as_ptr()));
        assert_eq!(wide.iter().sum::<u128>(), (0..n as u128 * 5).sum());
    }
}

#[test]
fn zeroed_blocks_are_zero_and_grown_blocks_keep_their_contents() {
    for n in [1, 15, 16, 1000, 4544, 70_000, 3 << 20] {
        let zeroed = vec![0u8; n];
        assert!(zeroed.iter().all(|b| *b == 0), "{n} zeroed bytes");
        let mut grown: Vec<u8> = (0..n).map(|i| i as u8).collect();
        grown.reserve_exact(n * 2 + 3);
        assert!((0..n).all(|i| grown[i] == i as u8), "grown from {n} bytes");
        let mut big: Vec<A128> = vec![A128([7; 128]); n.min(5000)];
        big.reserve_exact(n.min(5000) * 3);
        assert!(aligned(big.as_ptr()), "a 128-aligned block keeps its alignment when it grows");
        assert!(big.iter().all(|a| a.0 == [7; 128]));
        big.shrink_to_fit();
        assert!(aligned(big.as_ptr()));
    }
}
