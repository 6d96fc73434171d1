//! A heap buffer aligned to the IO block, so O_DIRECT transfers cannot be misaligned.

/// The IO block: alignment of O_DIRECT buffers, offsets and lengths, and the unit a torn write
/// damages.
pub const BLOCK_LEN: usize = 4096;

/// A zero-initialised buffer whose start and length are multiples of [`BLOCK_LEN`].
///
/// Safe code: a `Vec` one block longer than asked, used from its first block-aligned byte. The
/// vector is never resized, so the heap bytes (and the pointers the kernel is given for them) stay
/// where they are for the buffer's life, also when the `AlignedBuf` itself moves.
pub struct AlignedBuf {
    bytes: Vec<u8>,
    /// Invariant: `start + len <= bytes.len()` and `bytes[start..]` begins on a block boundary.
    start: usize,
    len: usize,
}

impl AlignedBuf {
    /// Allocates `len` zeroed bytes. Panics if `len` is zero or not a multiple of BLOCK_LEN.
    pub fn new(len: usize) -> Self {
        assert!(
            len > 0 && len % BLOCK_LEN == 0,
            "AlignedBuf length {len} is not a positive multiple of {BLOCK_LEN}"
        );
        let bytes = vec![0u8; len + BLOCK_LEN];
        let start = bytes.as_ptr().align_offset(BLOCK_LEN);
        assert!(
            start < BLOCK_LEN,
            "no block-aligned start in the allocation"
        );
        Self { bytes, start, len }
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        false
    }

    pub fn as_ptr(&self) -> *const u8 {
        self[..].as_ptr()
    }

    pub fn as_mut_ptr(&mut self) -> *mut u8 {
        self[..].as_mut_ptr()
    }
}

impl std::ops::Deref for AlignedBuf {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        &self.bytes[self.start..self.start + self.len]
    }
}

impl std::ops::DerefMut for AlignedBuf {
    fn deref_mut(&mut self) -> &mut [u8] {
        &mut self.bytes[self.start..self.start + self.len]
    }
}

impl std::fmt::Debug for AlignedBuf {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "AlignedBuf({} bytes)", self.len)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn start_is_block_aligned_and_bytes_are_zero() {
        for blocks in [1, 2, 7] {
            let mut b = AlignedBuf::new(blocks * BLOCK_LEN);
            assert_eq!(b.as_ptr() as usize % BLOCK_LEN, 0);
            assert!(b.iter().all(|&x| x == 0));
            b[BLOCK_LEN - 1] = 9;
            assert_eq!(b[BLOCK_LEN - 1], 9);
        }
    }

    #[test]
    #[should_panic(expected = "not a positive multiple")]
    fn misaligned_length_is_refused() {
        AlignedBuf::new(100);
    }
}
