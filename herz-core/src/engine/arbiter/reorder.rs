//! The arbiter's reorder buffer: messages that arrived early, indexed by sequence number, in one
//! byte arena allocated from the configuration.

#[derive(Debug, Clone, Copy, Default)]
pub(super) struct Slot {
    /// Position in the arena.
    offset: usize,
    len: usize,
    /// The copy came from a re-request reply.
    recovered: bool,
    /// When it arrived: the hole before it has been visible since then.
    arrived: u64,
}

/// Messages that arrived early, indexed by sequence number.
///
/// A ring of `2^k >= window` slots (sequence `s` lives at `s & mask`; buffered sequence numbers
/// lie in `expected + 1 ..= expected + window`, so they never collide), an occupancy bitmap to find the next or
/// previous buffered message 64 slots at a time, and one byte arena. The arena is a bump
/// allocator: it is rewound whenever the buffer empties (the common case: a short gap filled by
/// the other line), and compacted in place when it runs out at its end.
#[derive(Debug, Clone)]
pub(super) struct ReorderBuffer {
    pub(super) window: u64,
    pub(super) mask: u64,
    slots: Box<[Slot]>,
    occupied: Box<[u64]>,
    pub(super) arena: Vec<u8>,
    max_bytes: usize,
    pub(super) live_bytes: usize,
    pub(super) count: usize,
    /// Compaction scratch: ring indices of live slots (capacity = ring size).
    scratch: Vec<u32>,
    /// Compactions so far (tests check the path is exercised).
    pub(super) compactions: u64,
}

impl ReorderBuffer {
    pub(super) fn new(window: usize, max_bytes: usize) -> Self {
        let ring = window.next_power_of_two().max(64);
        ReorderBuffer {
            window: window as u64,
            mask: ring as u64 - 1,
            slots: vec![Slot::default(); ring].into_boxed_slice(),
            occupied: vec![0; ring / 64].into_boxed_slice(),
            arena: Vec::with_capacity(2 * max_bytes),
            max_bytes,
            live_bytes: 0,
            count: 0,
            scratch: Vec::with_capacity(ring),
            compactions: 0,
        }
    }

    #[inline]
    pub(super) fn index(&self, seq: u64) -> usize {
        (seq & self.mask) as usize
    }

    #[inline]
    pub(super) fn contains(&self, seq: u64) -> bool {
        let i = self.index(seq);
        self.occupied[i / 64] & (1 << (i % 64)) != 0
    }

    /// The bytes of a buffered message.
    #[inline]
    pub(super) fn get(&self, seq: u64) -> (&[u8], bool) {
        let s = &self.slots[self.index(seq)];
        (&self.arena[s.offset..s.offset + s.len], s.recovered)
    }

    /// When a buffered message arrived.
    #[inline]
    pub(super) fn arrived(&self, seq: u64) -> u64 {
        self.slots[self.index(seq)].arrived
    }

    /// Frees a buffered message's slot (its bytes stay until the arena is rewound or compacted).
    #[inline]
    pub(super) fn remove(&mut self, seq: u64) {
        let i = self.index(seq);
        self.occupied[i / 64] &= !(1 << (i % 64));
        self.live_bytes -= self.slots[i].len;
        self.count -= 1;
        if self.count == 0 {
            self.arena.clear();
        }
    }

    /// The lowest buffered sequence number in `from..to`. Scans the bitmap a word at a time.
    pub(super) fn next_at_or_after(&self, from: u64, to: u64) -> Option<u64> {
        let mut s = from;
        while s < to {
            let i = self.index(s);
            let word = self.occupied[i / 64] >> (i % 64);
            if word != 0 {
                let found = s + u64::from(word.trailing_zeros());
                return (found < to).then_some(found);
            }
            // The rest of this word holds s .. s + (64 - i % 64).
            s = s.saturating_add(64 - (i % 64) as u64);
        }
        None
    }

    /// The highest buffered sequence number in `from..to`.
    pub(super) fn prev_before(&self, to: u64, from: u64) -> Option<u64> {
        let mut s = to.checked_sub(1)?;
        while s >= from {
            let i = self.index(s);
            let bit = i % 64;
            // Keep bits 0..=bit of the word, moved to the top.
            let word = self.occupied[i / 64] << (63 - bit);
            if word != 0 {
                let found = s - u64::from(word.leading_zeros());
                return (found >= from).then_some(found);
            }
            s = s.checked_sub(bit as u64 + 1)?;
        }
        None
    }

    /// Buffers `msg` as `seq`, which must lie in `expected + 1 ..= expected + window` and not be
    /// buffered yet. Makes room by evicting the highest buffered sequence numbers above `seq`;
    /// returns how many messages were dropped (evicted ones, plus `msg` itself if it still does
    /// not fit).
    pub(super) fn insert(
        &mut self,
        expected: u64,
        seq: u64,
        msg: &[u8],
        recovered: bool,
        now: u64,
    ) -> u64 {
        let mut dropped = 0;
        if msg.len() > self.max_bytes {
            return 1;
        }
        while self.live_bytes + msg.len() > self.max_bytes {
            let top = expected.saturating_add(self.window + 1);
            match self.prev_before(top, seq + 1) {
                Some(highest) => {
                    self.remove(highest);
                    dropped += 1;
                }
                // Everything buffered is below `seq`: `msg` is the one to drop.
                None => return dropped + 1,
            }
        }
        if self.arena.len() + msg.len() > self.arena.capacity() {
            self.compact();
        }
        let i = self.index(seq);
        self.slots[i] = Slot {
            offset: self.arena.len(),
            len: msg.len(),
            recovered,
            arrived: now,
        };
        // Within capacity (checked above): never reallocates.
        self.arena.extend_from_slice(msg);
        self.occupied[i / 64] |= 1 << (i % 64);
        self.live_bytes += msg.len();
        self.count += 1;
        dropped
    }

    /// Moves the live messages to the start of the arena, in arena order so that every copy goes
    /// downwards and never overwrites a message not yet moved. Runs only after at least
    /// `max_bytes` bytes were appended since the previous compaction (the arena is twice
    /// `max_bytes` and at most `max_bytes` are live), so its cost is amortised O(1) per byte.
    pub(super) fn compact(&mut self) {
        self.compactions += 1;
        self.scratch.clear();
        for (w, &word) in self.occupied.iter().enumerate() {
            let mut bits = word;
            while bits != 0 {
                self.scratch.push((w * 64) as u32 + bits.trailing_zeros());
                bits &= bits - 1;
            }
        }
        let slots = &mut self.slots;
        // In place, no allocation (unlike the stable sort).
        self.scratch
            .sort_unstable_by_key(|&i| slots[i as usize].offset);
        let mut to = 0;
        for &i in &self.scratch {
            let slot = &mut slots[i as usize];
            self.arena
                .copy_within(slot.offset..slot.offset + slot.len, to);
            slot.offset = to;
            to += slot.len;
        }
        self.arena.truncate(to);
    }

    pub(super) fn clear(&mut self) {
        self.occupied.fill(0);
        self.arena.clear();
        self.live_bytes = 0;
        self.count = 0;
    }
}
