//! Deterministic pseudo-random bytes for the decoders' and the transaction's no-panic tests.

/// `len` bytes from the xorshift32 generator whose state is `seed` (never 0).
pub(crate) fn bytes(seed: &mut u32, len: usize) -> Vec<u8> {
    (0..len)
        .map(|_| {
            *seed ^= *seed << 13;
            *seed ^= *seed >> 17;
            *seed ^= *seed << 5;
            *seed as u8
        })
        .collect()
}
