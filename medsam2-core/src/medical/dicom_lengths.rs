//! Declared-length check of DICOM Part-10 files, before `dicom-parser` reads
//! them.
//!
//! `dicom-parser` allocates each value at its declared length before reading
//! it, so a 1 KiB file declaring a 4 GiB element would allocate 4 GiB. This
//! walk (hand-written: the crate offers no bound) follows element headers,
//! sequences, items and pixel fragments exactly as `dicom-encoding` reads them
//! (2- or 4-byte lengths by VR, unknown VRs as UN, sequence VRs from the
//! dictionary in implicit VR) and rejects any length beyond the bytes that
//! follow, nesting deeper than [`MAX_NESTING`], and deflated data sets that
//! inflate beyond [`MAX_DEFLATE_RATIO`] times their size.

use std::io::Read;

use dicom_core::dictionary::{DataDictionary, DataDictionaryEntry, VirtualVr};
use dicom_core::{Tag, VR};
use dicom_dictionary_std::StandardDataDictionary;

use super::volume::MAX_VOXEL_BYTES;

/// Deepest sequence nesting accepted in a file.
const MAX_NESTING: usize = 32;
/// Largest inflation ratio of a deflated data set (deflate's limit is ~1032:1).
const MAX_DEFLATE_RATIO: u64 = 1032;

/// Whether `bytes` have the Part-10 preamble and `DICM` magic.
pub(super) fn has_dicm_magic(bytes: &[u8]) -> bool {
    bytes.len() >= 132 && &bytes[128..132] == b"DICM"
}

const UNDEFINED: u32 = 0xFFFF_FFFF;
const ITEM: (u16, u16) = (0xFFFE, 0xE000);
const ITEM_END: (u16, u16) = (0xFFFE, 0xE00D);
const SEQ_END: (u16, u16) = (0xFFFE, 0xE0DD);

#[derive(Clone, Copy, PartialEq)]
enum End {
    Eof,
    At(usize),
    ItemDelimiter,
}

#[derive(Clone, Copy)]
struct Syntax {
    explicit: bool,
    big_endian: bool,
}

struct Walk<'a> {
    b: &'a [u8],
    pos: usize,
}

impl Walk<'_> {
    fn u16(&self, at: usize, be: bool) -> u16 {
        let a = [self.b[at], self.b[at + 1]];
        if be {
            u16::from_be_bytes(a)
        } else {
            u16::from_le_bytes(a)
        }
    }

    fn u32(&self, at: usize, be: bool) -> u32 {
        let a = [self.b[at], self.b[at + 1], self.b[at + 2], self.b[at + 3]];
        if be {
            u32::from_be_bytes(a)
        } else {
            u32::from_le_bytes(a)
        }
    }

    fn need(&self, n: usize) -> std::result::Result<(), String> {
        if self.b.len() - self.pos < n {
            return Err(format!("truncated at byte {}", self.pos));
        }
        Ok(())
    }

    fn fits(&self, len: u32, what: (u16, u16)) -> std::result::Result<usize, String> {
        let len = len as usize;
        if len > self.b.len() - self.pos {
            return Err(format!(
                "element ({:04X},{:04X}) declares {len} bytes, only {} remain in the file",
                what.0,
                what.1,
                self.b.len() - self.pos
            ));
        }
        Ok(len)
    }

    /// Walks data elements until `end`.
    fn elements(&mut self, end: End, sx: Syntax, depth: usize) -> std::result::Result<(), String> {
        if depth > MAX_NESTING {
            return Err(format!("sequences nested deeper than {MAX_NESTING}"));
        }
        loop {
            match end {
                End::At(e) if self.pos >= e => {
                    return if self.pos == e {
                        Ok(())
                    } else {
                        Err(format!("element overruns its item at byte {e}"))
                    };
                }
                End::Eof if self.pos == self.b.len() => return Ok(()),
                _ => {}
            }
            if self.element(sx, depth)? && end == End::ItemDelimiter {
                return Ok(());
            }
        }
    }

    /// Walks one data element; `true` when it was an item delimiter.
    fn element(&mut self, sx: Syntax, depth: usize) -> std::result::Result<bool, String> {
        self.need(8)?;
        let be = sx.big_endian;
        let tag = (self.u16(self.pos, be), self.u16(self.pos + 2, be));
        if tag.0 == 0xFFFE {
            self.pos += 8;
            if tag == ITEM_END || tag == SEQ_END {
                // A delimiter (a stray one is ignored by readers).
                return Ok(tag == ITEM_END);
            }
            return Err(format!("unexpected item tag at byte {}", self.pos - 8));
        }
        let (vr, len) = if sx.explicit {
            // As dicom-encoding: these VRs have a 2-byte length; every other
            // one, unknown VRs included (read as UN), a 4-byte length.
            let vr = [self.b[self.pos + 4], self.b[self.pos + 5]];
            let short = matches!(
                &vr,
                b"AE"
                    | b"AS"
                    | b"AT"
                    | b"CS"
                    | b"DA"
                    | b"DS"
                    | b"DT"
                    | b"FL"
                    | b"FD"
                    | b"IS"
                    | b"LO"
                    | b"LT"
                    | b"PN"
                    | b"SH"
                    | b"SL"
                    | b"SS"
                    | b"ST"
                    | b"TM"
                    | b"UI"
                    | b"UL"
                    | b"US"
            );
            let known = short
                || matches!(
                    &vr,
                    b"OB"
                        | b"OD"
                        | b"OF"
                        | b"OL"
                        | b"OV"
                        | b"OW"
                        | b"SQ"
                        | b"SV"
                        | b"UC"
                        | b"UN"
                        | b"UR"
                        | b"UT"
                        | b"UV"
                );
            let vr = if known { vr } else { *b"UN" };
            if !short {
                self.need(12)?;
                let len = self.u32(self.pos + 8, be);
                self.pos += 12;
                (Some(vr), len)
            } else {
                let len = self.u16(self.pos + 6, be) as u32;
                self.pos += 8;
                (Some(vr), len)
            }
        } else {
            let len = self.u32(self.pos + 4, be);
            self.pos += 8;
            // Implicit VR: the parser takes the VR from the dictionary.
            let entry = StandardDataDictionary.by_tag(Tag(tag.0, tag.1));
            let sq = entry.is_some_and(|e| e.vr() == VirtualVr::Exact(VR::SQ));
            (sq.then_some(*b"SQ"), len)
        };
        let is_sq = vr == Some(*b"SQ");
        if len == UNDEFINED {
            if tag == (0x7FE0, 0x0010) && !is_sq {
                self.fragments(be)?;
            } else if vr == Some(*b"UN") {
                // Undefined-length UN holds an implicit VR little-endian sequence.
                let inner = Syntax {
                    explicit: false,
                    big_endian: false,
                };
                self.items(End::ItemDelimiter, inner, depth + 1)?;
            } else {
                self.items(End::ItemDelimiter, sx, depth + 1)?;
            }
        } else {
            let n = self.fits(len, tag)?;
            let starts_with_item =
                n >= 8 && (self.u16(self.pos, be), self.u16(self.pos + 2, be)) == ITEM;
            if is_sq || (!sx.explicit && starts_with_item) {
                self.items(End::At(self.pos + n), sx, depth + 1)?;
            } else {
                self.pos += n;
            }
        }
        Ok(false)
    }

    /// Walks the items of a sequence until `end` (`ItemDelimiter` here meaning
    /// the sequence delimiter).
    fn items(&mut self, end: End, sx: Syntax, depth: usize) -> std::result::Result<(), String> {
        loop {
            if let End::At(e) = end {
                if self.pos >= e {
                    return if self.pos == e {
                        Ok(())
                    } else {
                        Err(format!("item overruns its sequence at byte {e}"))
                    };
                }
            }
            self.need(8)?;
            let be = sx.big_endian;
            let tag = (self.u16(self.pos, be), self.u16(self.pos + 2, be));
            let len = self.u32(self.pos + 4, be);
            self.pos += 8;
            if tag == SEQ_END && end == End::ItemDelimiter {
                return Ok(());
            }
            if tag != ITEM {
                return Err(format!(
                    "expected a sequence item at byte {}, found ({:04X},{:04X})",
                    self.pos - 8,
                    tag.0,
                    tag.1
                ));
            }
            if len == UNDEFINED {
                self.elements(End::ItemDelimiter, sx, depth + 1)?;
            } else {
                let n = self.fits(len, tag)?;
                self.elements(End::At(self.pos + n), sx, depth + 1)?;
            }
        }
    }

    /// Walks the fragments of encapsulated pixel data.
    fn fragments(&mut self, be: bool) -> std::result::Result<(), String> {
        loop {
            self.need(8)?;
            let tag = (self.u16(self.pos, be), self.u16(self.pos + 2, be));
            let len = self.u32(self.pos + 4, be);
            self.pos += 8;
            if tag == SEQ_END {
                return Ok(());
            }
            if tag != ITEM {
                return Err(format!(
                    "expected a pixel data fragment at byte {}",
                    self.pos - 8
                ));
            }
            let n = self.fits(len, tag)?;
            self.pos += n;
        }
    }
}

/// Checks every declared length of a Part-10 file (preamble, meta group, data set).
pub(super) fn check_lengths(bytes: &[u8]) -> std::result::Result<(), String> {
    if !has_dicm_magic(bytes) {
        return Err("missing \"DICM\" magic".into());
    }
    let mut w = Walk { b: bytes, pos: 132 };
    let meta = Syntax {
        explicit: true,
        big_endian: false,
    };
    // File meta group: explicit VR little endian, group 0002.
    let mut ts = String::new();
    while w.b.len() - w.pos >= 8 && w.u16(w.pos, false) == 0x0002 {
        let start = w.pos;
        let elem = w.u16(w.pos + 2, false);
        w.element(meta, 0)?;
        if elem == 0x0010 {
            // TransferSyntaxUID (VR UI): an 8-byte header, then the value.
            let value = bytes.get(start + 8..w.pos).unwrap_or_default();
            ts = String::from_utf8_lossy(value)
                .trim_matches(|c: char| c == '\0' || c.is_whitespace())
                .to_string();
        }
    }
    if ts.is_empty() {
        return Err("missing TransferSyntaxUID in the file meta group".into());
    }
    let body = &bytes[w.pos..];
    match ts.as_str() {
        "1.2.840.10008.1.2" => Walk { b: body, pos: 0 }.elements(
            End::Eof,
            Syntax {
                explicit: false,
                big_endian: false,
            },
            0,
        ),
        "1.2.840.10008.1.2.2" => Walk { b: body, pos: 0 }.elements(
            End::Eof,
            Syntax {
                explicit: true,
                big_endian: true,
            },
            0,
        ),
        "1.2.840.10008.1.2.1.99" => {
            let cap = (body.len() as u64)
                .saturating_mul(MAX_DEFLATE_RATIO)
                .min(MAX_VOXEL_BYTES);
            let mut inflated = Vec::new();
            flate2::read::DeflateDecoder::new(body)
                .take(cap + 1)
                .read_to_end(&mut inflated)
                .map_err(|e| format!("corrupt deflated data set: {e}"))?;
            if inflated.len() as u64 > cap {
                return Err("deflated data set inflates beyond the size limit".into());
            }
            Walk {
                b: &inflated,
                pos: 0,
            }
            .elements(End::Eof, meta, 0)
        }
        _ => Walk { b: body, pos: 0 }.elements(End::Eof, meta, 0),
    }
}
