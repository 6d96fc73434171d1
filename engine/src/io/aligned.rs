//! A heap buffer aligned to the IO block, so O_DIRECT transfers cannot be misaligned.

use std::alloc::{alloc_zeroed, dealloc, Layout};
use std::ptr::NonNull;

/// The IO block: alignment of O_DIRECT buffers, offsets and lengths, and the unit a torn write
/// damages.
pub const BLOCK_LEN: usize = 4096;

/// A zero-initialised buffer whose start and length are multiples of [`BLOCK_LEN`].
pub struct AlignedBuf {
    /// Invariant: points to `len` initialised bytes allocated with `layout(len)`.
    ptr: NonNull<u8>,
    len: usize,
}

// SAFETY: AlignedBuf owns its allocation exclusively, like Vec<u8>; nothing is shared.
unsafe impl Send for AlignedBuf {}
// SAFETY: shared references only allow reads of the owned bytes, like &Vec<u8>.
unsafe impl Sync for AlignedBuf {}

fn layout(len: usize) -> Layout {
    Layout::from_size_align(len, BLOCK_LEN).expect("buffer length overflows a Layout")
}

impl AlignedBuf {
    /// Allocates `len` zeroed bytes. Panics if `len` is zero or not a multiple of BLOCK_LEN.
    pub fn new(len: usize) -> Self {
        assert!(
            len > 0 && len % BLOCK_LEN == 0,
            "AlignedBuf length {len} is not a positive multiple of {BLOCK_LEN}"
        );
        // SAFETY: the layout has a non-zero size (checked above).
        let raw = unsafe { alloc_zeroed(layout(len)) };
        let Some(ptr) = NonNull::new(raw) else {
            std::alloc::handle_alloc_error(layout(len))
        };
        Self { ptr, len }
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        false
    }

    pub fn as_ptr(&self) -> *const u8 {
        self.ptr.as_ptr()
    }

    pub fn as_mut_ptr(&mut self) -> *mut u8 {
        self.ptr.as_ptr()
    }
}

impl std::ops::Deref for AlignedBuf {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        // SAFETY: ptr points to len initialised bytes we own (struct invariant).
        unsafe { std::slice::from_raw_parts(self.ptr.as_ptr(), self.len) }
    }
}

impl std::ops::DerefMut for AlignedBuf {
    fn deref_mut(&mut self) -> &mut [u8] {
        // SAFETY: as in deref, and &mut self guarantees exclusive access.
        unsafe { std::slice::from_raw_parts_mut(self.ptr.as_ptr(), self.len) }
    }
}

impl Drop for AlignedBuf {
    fn drop(&mut self) {
        // SAFETY: allocated in new() with exactly this layout and not freed before.
        unsafe { dealloc(self.ptr.as_ptr(), layout(self.len)) }
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
