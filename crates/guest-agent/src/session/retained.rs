//! One stream's retained output: what was written and not yet acked, kept
//! so it can be sent again after a reconnect.

use std::collections::VecDeque;

/// One stream's retained output: bytes from offset `base` on.
#[derive(Debug, Default)]
pub(super) struct Retained {
    /// The offset of `data[0]` in the stream.
    pub(super) base: u64,
    /// The bytes not acked yet.
    pub(super) data: VecDeque<u8>,
}

impl Retained {
    pub(super) fn written(&self) -> u64 {
        self.base + self.data.len() as u64
    }

    /// Forgets the bytes below `offset`.
    pub(super) fn drop_below(&mut self, offset: u64) {
        let n = offset.saturating_sub(self.base).min(self.data.len() as u64);
        self.data.drain(..n as usize);
        self.base += n;
    }

    /// Appends up to `max` bytes from `offset` on to `out`; returns how many.
    pub(super) fn copy_from(&self, offset: u64, max: usize, out: &mut Vec<u8>) -> usize {
        let mut skip = offset.saturating_sub(self.base) as usize;
        let mut copied = 0;
        let (a, b) = self.data.as_slices();
        for part in [a, b] {
            let Some(part) = part.get(skip..).filter(|p| !p.is_empty()) else {
                skip = skip.saturating_sub(part.len());
                continue;
            };
            skip = 0;
            let take = part.len().min(max - copied);
            out.extend_from_slice(part.get(..take).unwrap_or_default());
            copied += take;
            if copied == max {
                break;
            }
        }
        copied
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn copies_from_any_offset_and_drops_acked_bytes() {
        let mut r = Retained::default();
        r.data.extend(b"abcdef");
        r.drop_below(4);
        r.data.extend(b"ghij");
        assert_eq!((r.base, r.written()), (4, 10));
        let mut out = Vec::new();
        assert_eq!(r.copy_from(5, 3, &mut out), 3);
        assert_eq!(out, b"fgh");
        out.clear();
        assert_eq!(r.copy_from(8, 100, &mut out), 2);
        assert_eq!(out, b"ij");
        r.drop_below(100);
        assert_eq!((r.base, r.data.len()), (10, 0));
    }
}
