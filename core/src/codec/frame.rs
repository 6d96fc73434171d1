//! The frame: the unit of the log and of every message on the wire.
//!
//! ```text
//!  0               4               8       10  11  12              16
//!  +---------------+---------------+-------+---+---+---------------+
//!  | length  (u32) | crc32c  (u32) | type  |ver|flg| reserved (u32)|
//!  +---------------+---------------+-------+---+---+---------------+
//!  | leadership term id (u64)      | session id (u64)              |
//!  +-------------------------------+-------------------------------+
//!  | timestamp ns (u64)            | payload ... (length - 40 B)   |
//!  +-------------------------------+-------------------------------+
//!  | zero padding up to the next multiple of FRAME_ALIGNMENT       |
//! ```
//!
//! All fields are little-endian. `length` counts header and payload but not the alignment
//! padding; the next frame starts at `align_frame(length)`. The checksum covers the length field
//! and every byte from offset 8 to `length`, so a frame cannot be resized or retyped without
//! failing it. A `length` of zero marks the end of written data: segment files are zero-filled.

use zerocopy::little_endian::{U16, U32, U64};
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout, Unaligned};

use super::DecodeError;

/// Size of [`FrameHeader`] in bytes.
pub const HEADER_LEN: usize = 40;
/// Every frame starts at a multiple of this, so log positions of frames are always aligned.
pub const FRAME_ALIGNMENT: usize = 8;
/// The largest frame the codec accepts (header and payload). Bigger claims are rejected before
/// any buffer is sized from them.
pub const FRAME_LEN_MAX: usize = 16 * 1024 * 1024;
/// The only wire version this build speaks.
pub const VERSION: u8 = 1;

const _: () = assert!(HEADER_LEN % FRAME_ALIGNMENT == 0);
const _: () = assert!(FRAME_ALIGNMENT.is_power_of_two());
const _: () = assert!(FRAME_LEN_MAX % FRAME_ALIGNMENT == 0);

/// Rounds a frame length up to the position where the next frame starts.
#[inline]
pub const fn align_frame(length: usize) -> usize {
    (length + FRAME_ALIGNMENT - 1) & !(FRAME_ALIGNMENT - 1)
}

/// The fixed header in front of every frame. See the module docs for the layout.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned,
)]
#[repr(C)]
pub struct FrameHeader {
    pub length: U32,
    pub crc32c: U32,
    pub frame_type: U16,
    pub version: u8,
    pub flags: u8,
    pub reserved: U32,
    pub term: U64,
    pub session_id: U64,
    pub timestamp_ns: U64,
}

const _: () = assert!(core::mem::size_of::<FrameHeader>() == HEADER_LEN);

/// The header fields a writer chooses; length, checksum and version are filled in by encoding.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FrameMeta {
    pub frame_type: u16,
    pub flags: u8,
    pub term: u64,
    pub session_id: u64,
    pub timestamp_ns: u64,
}

/// A checked frame borrowed from a buffer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Frame<'a> {
    pub meta: FrameMeta,
    pub payload: &'a [u8],
}

impl Frame<'_> {
    /// Bytes this frame occupies in a log or datagram, padding included.
    pub fn encoded_len(&self) -> usize {
        encoded_len(self.payload.len())
    }
}

/// Bytes a frame with `payload_len` bytes of payload occupies, padding included.
#[inline]
pub const fn encoded_len(payload_len: usize) -> usize {
    align_frame(HEADER_LEN + payload_len)
}

fn checksum(bytes: &[u8]) -> u32 {
    // length field, then everything after the checksum field
    crc32c::crc32c_append(crc32c::crc32c(&bytes[0..4]), &bytes[8..])
}

/// Writes one frame into the front of `out` and returns the bytes used, padding included
/// (padding is written as zeros). The caller sizes `out`; a short buffer is a bug.
///
/// Panics if `out` is shorter than [`encoded_len`] or the payload exceeds [`FRAME_LEN_MAX`].
pub fn encode_into(meta: &FrameMeta, payload: &[u8], out: &mut [u8]) -> usize {
    encode_with(meta, payload.len(), out, |dst| dst.copy_from_slice(payload))
}

/// Like [`encode_into`], but lets `fill` write the payload in place (no intermediate buffer).
pub fn encode_with(
    meta: &FrameMeta,
    payload_len: usize,
    out: &mut [u8],
    fill: impl FnOnce(&mut [u8]),
) -> usize {
    let length = HEADER_LEN + payload_len;
    assert!(
        length <= FRAME_LEN_MAX,
        "frame of {length} bytes exceeds FRAME_LEN_MAX"
    );
    let total = align_frame(length);
    assert!(
        out.len() >= total,
        "encode buffer of {} bytes, frame needs {total}",
        out.len()
    );
    let header = FrameHeader {
        length: U32::new(length as u32),
        crc32c: U32::new(0),
        frame_type: U16::new(meta.frame_type),
        version: VERSION,
        flags: meta.flags,
        reserved: U32::new(0),
        term: U64::new(meta.term),
        session_id: U64::new(meta.session_id),
        timestamp_ns: U64::new(meta.timestamp_ns),
    };
    out[..HEADER_LEN].copy_from_slice(header.as_bytes());
    fill(&mut out[HEADER_LEN..length]);
    out[length..total].fill(0);
    let crc = checksum(&out[..length]);
    out[4..8].copy_from_slice(&crc.to_le_bytes());
    total
}

/// What [`decode`] found at the front of a buffer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Decoded<'a> {
    /// A valid frame and the bytes it occupies, padding included.
    Frame(Frame<'a>, usize),
    /// A zero length field: no frame was ever written here.
    End,
}

/// Decodes and verifies the frame at the front of `bytes`. Never panics on any input.
pub fn decode(bytes: &[u8]) -> Result<Decoded<'_>, DecodeError> {
    let Ok((header, _)) = FrameHeader::ref_from_prefix(bytes) else {
        if bytes.len() >= 4 && bytes[..4] == [0; 4] {
            return Ok(Decoded::End);
        }
        return Err(DecodeError::Truncated {
            needed: HEADER_LEN,
            available: bytes.len(),
        });
    };
    let length = header.length.get() as usize;
    if length == 0 {
        return Ok(Decoded::End);
    }
    if !(HEADER_LEN..=FRAME_LEN_MAX).contains(&length) {
        return Err(DecodeError::BadLength { length });
    }
    if bytes.len() < length {
        return Err(DecodeError::Truncated {
            needed: length,
            available: bytes.len(),
        });
    }
    let expected = header.crc32c.get();
    let actual = checksum(&bytes[..length]);
    if expected != actual {
        return Err(DecodeError::BadChecksum { expected, actual });
    }
    if header.version != VERSION {
        return Err(DecodeError::WrongVersion {
            found: header.version,
            supported: VERSION,
        });
    }
    let meta = FrameMeta {
        frame_type: header.frame_type.get(),
        flags: header.flags,
        term: header.term.get(),
        session_id: header.session_id.get(),
        timestamp_ns: header.timestamp_ns.get(),
    };
    // A frame at the very end of a buffer may omit its padding (a datagram's last frame).
    let consumed = align_frame(length).min(bytes.len());
    Ok(Decoded::Frame(
        Frame {
            meta,
            payload: &bytes[HEADER_LEN..length],
        },
        consumed,
    ))
}

/// The bytes the frame at the front of `bytes` occupies if it is whole and verified *and*
/// its padding is present and zero, as the log writes it (recovery's check: a flipped padding
/// byte is damage too, though no checksum covers it).
pub fn stored_len(bytes: &[u8]) -> Option<usize> {
    match decode(bytes) {
        Ok(Decoded::Frame(frame, used)) if used == frame.encoded_len() => {
            let length = HEADER_LEN + frame.payload.len();
            bytes[length..used].iter().all(|&b| b == 0).then_some(used)
        }
        _ => None,
    }
}

/// Iterates over the frames packed back to back in `bytes` (a datagram or a log range).
/// Stops at the first zero length; yields the first error and then stops.
pub struct Frames<'a> {
    bytes: &'a [u8],
    offset: usize,
    done: bool,
}

impl<'a> Frames<'a> {
    pub fn new(bytes: &'a [u8]) -> Self {
        Self {
            bytes,
            offset: 0,
            done: false,
        }
    }

    /// Offset of the next frame from the start of the buffer.
    pub fn offset(&self) -> usize {
        self.offset
    }
}

impl<'a> Iterator for Frames<'a> {
    type Item = Result<(usize, Frame<'a>), DecodeError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.done || self.offset >= self.bytes.len() {
            return None;
        }
        match decode(&self.bytes[self.offset..]) {
            Ok(Decoded::Frame(frame, used)) => {
                let at = self.offset;
                self.offset += used;
                Some(Ok((at, frame)))
            }
            Ok(Decoded::End) => {
                self.done = true;
                None
            }
            Err(e) => {
                self.done = true;
                Some(Err(e))
            }
        }
    }
}
