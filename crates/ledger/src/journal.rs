//! The undo journal's storage: entries in fixed-size chunks, so that it grows without moving
//! what it holds. A round's results leave about a million entries of 352 bytes in one block;
//! a single vector doubling its way there copied everything it held at each step (about
//! 0.65 GB) and touched fresh pages for twice the final size.

use cairn_primitives::{Standing, StateKey, StateValue, Verdict};

/// What undoing one write restores.
#[derive(Debug)]
pub(crate) enum Undo {
    /// The whole record before the write (`None`: absent), boxed: the largest record is a
    /// device's 272 bytes, which would otherwise size every entry.
    Record(Option<Box<StateValue>>),
    /// Only a device's checking fields before the write: a round's result that changes
    /// nothing else (`State::set_checking`) writes the device in place and copies these few
    /// bytes instead of the whole record.
    Checking {
        standing: Standing,
        tally_uptime: u8,
        tally_verdict: Verdict,
    },
}

impl Undo {
    /// Whether undoing restores the whole record.
    pub(crate) fn is_full(&self) -> bool {
        matches!(self, Self::Record(_))
    }
}

/// One undo entry: a key and what undoing the write restores.
pub(crate) type Entry = (StateKey, Undo);

/// Entries per chunk: 16,384 (about 2.6 MiB).
const CHUNK: usize = 1 << 14;

/// Emptied chunks kept for reuse within a block, at most: a transaction whose entries the
/// block does not need (a round's results from its second and third checkers) empties the
/// chunks it filled, and the next one fills them again without fresh pages.
const SPARE: usize = 64;

/// A vector of entries in chunks of [`CHUNK`]: push, pop and truncate at the end, read and
/// swap by position.
#[derive(Default)]
pub(crate) struct Journal {
    chunks: Vec<Vec<Entry>>,
    len: usize,
    spare: Vec<Vec<Entry>>,
}

impl Journal {
    pub(crate) fn len(&self) -> usize {
        self.len
    }

    #[cfg(test)]
    pub(crate) fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub(crate) fn push(&mut self, e: Entry) {
        match self.chunks.last_mut() {
            Some(c) if c.len() < CHUNK => c.push(e),
            _ => {
                let mut c = self
                    .spare
                    .pop()
                    .unwrap_or_else(|| Vec::with_capacity(CHUNK));
                c.push(e);
                self.chunks.push(c);
            }
        }
        self.len = self.len.saturating_add(1);
    }

    pub(crate) fn pop(&mut self) -> Option<Entry> {
        let last = self.chunks.last_mut()?;
        let e = last.pop();
        if last.is_empty()
            && let Some(c) = self.chunks.pop()
        {
            self.keep_spare(c);
        }
        if e.is_some() {
            self.len = self.len.saturating_sub(1);
        }
        e
    }

    pub(crate) fn get(&self, i: usize) -> Option<&Entry> {
        self.chunks.get(i / CHUNK)?.get(i % CHUNK)
    }

    /// Swaps entries `i` and `j`; nothing when either is out of range.
    pub(crate) fn swap(&mut self, i: usize, j: usize) {
        let (i, j) = (i.min(j), i.max(j));
        let ((ci, oi), (cj, oj)) = ((i / CHUNK, i % CHUNK), (j / CHUNK, j % CHUNK));
        if ci == cj {
            if let Some(c) = self.chunks.get_mut(ci)
                && oi < c.len()
                && oj < c.len()
            {
                c.swap(oi, oj);
            }
            return;
        }
        let (lo, hi) = self.chunks.split_at_mut(cj);
        if let (Some(a), Some(b)) = (
            lo.get_mut(ci).and_then(|c| c.get_mut(oi)),
            hi.first_mut().and_then(|c| c.get_mut(oj)),
        ) {
            std::mem::swap(a, b);
        }
    }

    /// Drops every entry from position `len` on.
    pub(crate) fn truncate(&mut self, len: usize) {
        if len >= self.len {
            return;
        }
        let chunks = len.div_ceil(CHUNK);
        while self.chunks.len() > chunks {
            if let Some(mut c) = self.chunks.pop() {
                c.clear();
                self.keep_spare(c);
            }
        }
        // The last chunk kept holds what is left after the full ones before it.
        let keep = len.saturating_sub(chunks.saturating_sub(1).saturating_mul(CHUNK));
        if let Some(c) = self.chunks.last_mut() {
            c.truncate(keep);
        }
        self.len = len;
    }

    /// Keeps an emptied chunk for reuse, up to [`SPARE`].
    fn keep_spare(&mut self, c: Vec<Entry>) {
        if self.spare.len() < SPARE && c.capacity() == CHUNK {
            self.spare.push(c);
        }
    }

    /// The entries from position `from` on, in order.
    pub(crate) fn iter_from(&self, from: usize) -> impl Iterator<Item = &Entry> {
        let first = from / CHUNK;
        self.chunks
            .iter()
            .skip(first)
            .enumerate()
            .flat_map(move |(n, c)| c.iter().skip(if n == 0 { from % CHUNK } else { 0 }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(i: u64) -> Entry {
        (StateKey::Lease(i), Undo::Record(None))
    }

    fn keys(j: &Journal) -> Vec<u64> {
        j.iter_from(0)
            .map(|(k, _)| match k {
                StateKey::Lease(i) => *i,
                _ => u64::MAX,
            })
            .collect()
    }

    #[test]
    fn a_chunked_journal_behaves_as_one_vector_across_chunk_edges() {
        let n = 3 * CHUNK as u64 + 5;
        let mut j = Journal::default();
        let mut v: Vec<u64> = Vec::new();
        for i in 0..n {
            j.push(entry(i));
            v.push(i);
        }
        assert_eq!((j.len(), keys(&j)), (v.len(), v.clone()));
        assert_eq!(
            j.iter_from(CHUNK - 1).count(),
            v.len() - (CHUNK - 1),
            "from a chunk's last entry"
        );
        assert!(
            j.get(CHUNK)
                .is_some_and(|(k, _)| *k == StateKey::Lease(CHUNK as u64))
        );
        // The last chunk popped empty and pushed again: the emptied chunk is reused.
        for _ in 0..5 {
            assert_eq!(j.pop().map(|(k, _)| k), v.pop().map(StateKey::Lease));
        }
        assert_eq!(j.spare.len(), 1);
        j.push(entry(77));
        v.push(77);
        assert_eq!((j.len(), keys(&j), j.spare.len()), (v.len(), v.clone(), 0));
        while let Some((k, _)) = j.pop() {
            assert_eq!(Some(k), v.pop().map(StateKey::Lease));
        }
        assert!(j.is_empty() && j.chunks.is_empty() && j.get(0).is_none());
    }
}
