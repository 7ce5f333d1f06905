//! The blocklist sweep: compares the blocklist with its previous view (blocks and unblocks made by
//! other processes become events) and deletes expired entries, which the kernel only ignores.

use super::*;

impl Worker {
    pub(super) fn snapshot_blocks(&self) -> Result<BTreeMap<Cidr, (u32, u64)>, MapError> {
        let mut out = BTreeMap::new();
        for item in self.block.iter() {
            let (k, e) = item?;
            out.insert(
                Cidr::from_key(k.prefix_len(), k.data()),
                (e.origin, e.created_ns),
            );
        }
        Ok(out)
    }

    /// Deletes expired entries and reports what changed since the last sweep.
    pub(super) fn sweep_blocks(&mut self) -> Result<(), MapError> {
        let now = ktime_now_ns();
        let mut current = BTreeMap::new();
        let mut expired = Vec::new();
        for item in self.block.iter() {
            let (k, e) = item?;
            let cidr = Cidr::from_key(k.prefix_len(), k.data());
            if e.active(now) {
                current.insert(cidr, (e.origin, e.created_ns, e.expires_ns));
            } else {
                expired.push((cidr, e.origin));
            }
        }
        for (cidr, origin) in expired {
            match self.block.remove(&cidr.aya_key()) {
                Ok(()) | Err(MapError::KeyNotFound) => {}
                Err(e) => return Err(e),
            }
            self.blocks_seen.remove(&cidr);
            self.emit(Event::Unblocked {
                cidr,
                origin: origin_label(origin),
                expired: true,
            });
        }
        let mut news = Vec::new();
        for (cidr, (origin, created, expires)) in &current {
            let changed = self.blocks_seen.get(cidr) != Some(&(*origin, *created));
            // Auto-blocks were reported by the kernel's own event.
            if changed && *origin != Origin::AUTO {
                news.push(Event::Blocked {
                    cidr: *cidr,
                    origin: origin_label(*origin),
                    ttl_ms: (*expires != 0).then(|| expires.saturating_sub(now) / 1_000_000),
                });
            }
        }
        let gone: Vec<(Cidr, u32)> = self
            .blocks_seen
            .iter()
            .filter(|(c, _)| !current.contains_key(c))
            .map(|(c, (o, _))| (*c, *o))
            .collect();
        for (cidr, origin) in gone {
            news.push(Event::Unblocked {
                cidr,
                origin: origin_label(origin),
                expired: false,
            });
        }
        self.blocks_seen = current
            .into_iter()
            .map(|(c, (o, created, _))| (c, (o, created)))
            .collect();
        for ev in news {
            self.emit(ev);
        }
        Ok(())
    }
}
