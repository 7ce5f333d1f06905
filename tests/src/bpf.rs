//! Herz's kernel programs loaded (not attached) for BPF_PROG_TEST_RUN: run a crafted frame, read the maps.

use std::cell::RefCell;

use aya::{
    Ebpf,
    maps::{Array, HashMap, LpmTrie, MapData, PerCpuArray, PerCpuHashMap, RingBuf},
    programs::{SchedClassifier, TestRun, TestRunOptions, Xdp},
};
use herz_common::{
    BlockEntry, Counter, FlowKey, FlowState, IPPROTO_TCP, IPPROTO_UDP, Origin, PeerState, PortKey,
    PortRole, ShieldEvent, ShieldParams, SourceKey, SourceStats, maps,
};
use herz_user::shield::{Cidr, programs};

/// Followed connections, as the tc programs keep them.
pub type Flows = Vec<(FlowKey, FlowState)>;

/// The loaded object, with the programs loaded into the kernel.
pub struct Programs {
    ebpf: Ebpf,
    events: RefCell<Option<RingBuf<MapData>>>,
}

/// XDP verdict values.
pub mod xdp {
    /// XDP_DROP.
    pub const DROP: u32 = 1;
    /// XDP_PASS.
    pub const PASS: u32 = 2;
}

/// tc verdict: TC_ACT_OK.
pub const TC_ACT_OK: u32 = 0;

impl Programs {
    /// Loads the embedded object and its programs; Herz's ports are TCP `tcp_ports` and UDP `udp_ports`.
    pub fn load(tcp_ports: &[u16], udp_ports: &[u16]) -> Programs {
        let ebpf = herz_user::shield::load_for_test().expect("loading the eBPF object");
        Programs::from_ebpf(ebpf, tcp_ports, udp_ports)
    }

    /// As [`Programs::load`], for an object loaded by the caller (another build of the programs).
    pub fn from_ebpf(mut ebpf: Ebpf, tcp_ports: &[u16], udp_ports: &[u16]) -> Programs {
        {
            let mut ports: HashMap<_, PortKey, u32> =
                HashMap::try_from(ebpf.map_mut(herz_common::maps::PORTS).unwrap()).unwrap();
            for p in tcp_ports {
                ports
                    .insert(PortKey::new(IPPROTO_TCP, *p), PortRole::SUBSCRIBER, 0)
                    .unwrap();
            }
            for p in udp_ports {
                ports
                    .insert(PortKey::new(IPPROTO_UDP, *p), PortRole::FEED, 0)
                    .unwrap();
            }
        }
        let xdp: &mut Xdp = ebpf.program_mut(programs::XDP).unwrap().try_into().unwrap();
        xdp.load().expect("XDP program passes the verifier");
        for name in [programs::TC_INGRESS, programs::TC_EGRESS] {
            let tc: &mut SchedClassifier = ebpf.program_mut(name).unwrap().try_into().unwrap();
            tc.load()
                .unwrap_or_else(|e| panic!("{name} passes the verifier: {e:#}"));
        }
        Programs {
            ebpf,
            events: RefCell::new(None),
        }
    }

    /// Runs the XDP program `repeat` times on `frame` in one BPF_PROG_TEST_RUN call; returns the kernel's
    /// mean time per run and the verdict of the last.
    pub fn xdp_repeat(&self, frame: &[u8], repeat: u32) -> (std::time::Duration, u32) {
        let opts = TestRunOptions {
            data_in: Some(frame),
            repeat,
            ..TestRunOptions::new()
        };
        let r = self
            .xdp_program()
            .test_run(opts)
            .expect("BPF_PROG_TEST_RUN");
        (r.duration, r.return_value)
    }

    fn xdp_program(&self) -> &Xdp {
        self.ebpf
            .program(programs::XDP)
            .unwrap()
            .try_into()
            .unwrap()
    }

    /// The XDP program's BPF statistics: total run time and run count (zero unless
    /// `kernel.bpf_stats_enabled` is 1).
    pub fn xdp_stats(&self) -> (std::time::Duration, u64) {
        let info = self.xdp_program().info().expect("program info");
        (info.run_time(), info.run_count())
    }

    /// Runs the XDP program on `frame`; returns its verdict.
    pub fn xdp(&self, frame: &[u8]) -> u32 {
        self.xdp_repeat(frame, 1).1
    }

    /// Runs a tc program (`programs::TC_INGRESS` or `TC_EGRESS`) on `frame`; returns its verdict.
    pub fn tc(&self, program: &str, frame: &[u8]) -> u32 {
        let tc: &SchedClassifier = self.ebpf.program(program).unwrap().try_into().unwrap();
        let opts = TestRunOptions {
            data_in: Some(frame),
            ..TestRunOptions::new()
        };
        tc.test_run(opts).expect("BPF_PROG_TEST_RUN").return_value
    }

    /// A global counter, summed over CPUs.
    pub fn global(&self, c: Counter) -> u64 {
        let arr: PerCpuArray<_, u64> =
            PerCpuArray::try_from(self.ebpf.map(herz_common::maps::GLOBAL).unwrap()).unwrap();
        arr.get(&(c as u32), 0).unwrap().iter().sum()
    }

    /// One source's counters, summed over CPUs.
    pub fn source(&self, key: SourceKey) -> Option<SourceStats> {
        let map: PerCpuHashMap<_, SourceKey, SourceStats> =
            PerCpuHashMap::try_from(self.ebpf.map(herz_common::maps::SOURCES).unwrap()).unwrap();
        let values = map.get(&key, 0).ok()?;
        let mut sum = SourceStats::default();
        for v in values.iter() {
            sum.accumulate(v);
        }
        Some(sum)
    }

    /// Adds (or changes) a policed port.
    pub fn add_port(&mut self, proto: u8, port: u16, role: u32) {
        let mut ports: HashMap<_, PortKey, u32> =
            HashMap::try_from(self.ebpf.map_mut(maps::PORTS).unwrap()).unwrap();
        ports.insert(PortKey::new(proto, port), role, 0).unwrap();
    }

    /// Writes the thresholds (a zeroed config turns every rule off).
    pub fn set_params(&mut self, p: &ShieldParams) {
        let mut arr: Array<_, ShieldParams> =
            Array::try_from(self.ebpf.map_mut(maps::CONFIG).unwrap()).unwrap();
        arr.set(0, p, 0).unwrap();
    }

    fn trie_mut<V: aya::Pod>(&mut self, name: &str) -> LpmTrie<&mut MapData, [u8; 16], V> {
        LpmTrie::try_from(self.ebpf.map_mut(name).unwrap()).unwrap()
    }

    /// Adds an allowlist entry.
    pub fn allow(&mut self, cidr: &str) {
        let c: Cidr = cidr.parse().unwrap();
        self.trie_mut::<u32>(maps::ALLOW)
            .insert(&c.aya_key(), Origin::MANUAL, 0)
            .unwrap();
    }

    /// Adds a blocklist entry with `expires_ns` (kernel time; 0 = permanent) and `origin`.
    pub fn block(&mut self, cidr: &str, expires_ns: u64, origin: u32) {
        let c: Cidr = cidr.parse().unwrap();
        let e = BlockEntry {
            expires_ns,
            created_ns: herz_user::shield::cidr::ktime_now_ns(),
            origin,
            reason: 0,
        };
        self.trie_mut::<BlockEntry>(maps::BLOCK)
            .insert(&c.aya_key(), e, 0)
            .unwrap();
    }

    /// Removes a blocklist entry.
    pub fn unblock(&mut self, cidr: &str) {
        let c: Cidr = cidr.parse().unwrap();
        self.trie_mut::<BlockEntry>(maps::BLOCK)
            .remove(&c.aya_key())
            .unwrap();
    }

    /// Every blocklist entry.
    pub fn blocked(&self) -> Vec<(Cidr, BlockEntry)> {
        let trie: LpmTrie<_, [u8; 16], BlockEntry> =
            LpmTrie::try_from(self.ebpf.map(maps::BLOCK).unwrap()).unwrap();
        trie.iter()
            .map(|r| {
                let (k, v) = r.unwrap();
                (Cidr::from_key(k.prefix_len(), k.data()), v)
            })
            .collect()
    }

    /// Adds an allowed feed source (set `ShieldParams::FLAG_FEED_SOURCES` to enforce the list).
    pub fn feed_source(&mut self, cidr: &str) {
        let c: Cidr = cidr.parse().unwrap();
        self.trie_mut::<u32>(maps::FEED_SOURCES)
            .insert(&c.aya_key(), Origin::CONFIG, 0)
            .unwrap();
    }

    /// Marks `key` trusted (or not).
    pub fn set_trusted(&mut self, key: SourceKey, trusted: bool) {
        let mut m: HashMap<_, SourceKey, u64> =
            HashMap::try_from(self.ebpf.map_mut(maps::TRUSTED).unwrap()).unwrap();
        if trusted {
            m.insert(key, 1, 0).unwrap();
        } else {
            m.remove(&key).unwrap();
        }
    }

    /// One source's connection counts, as the tc programs keep them.
    pub fn peer(&self, key: SourceKey) -> Option<PeerState> {
        let m: HashMap<_, SourceKey, PeerState> =
            HashMap::try_from(self.ebpf.map(maps::PEERS).unwrap()).unwrap();
        m.get(&key, 0).ok()
    }

    /// The followed flows: (half-open, established).
    pub fn flows(&self) -> (Flows, Flows) {
        let get = |name| {
            let m: HashMap<_, FlowKey, FlowState> =
                HashMap::try_from(self.ebpf.map(name).unwrap()).unwrap();
            m.iter().map(|r| r.unwrap()).collect::<Vec<_>>()
        };
        (get(maps::HALF_OPEN), get(maps::ESTABLISHED))
    }

    /// Events sent since the last call, oldest first.
    pub fn events(&mut self) -> Vec<ShieldEvent> {
        let mut slot = self.events.borrow_mut();
        if slot.is_none() {
            let map = self.ebpf.take_map(maps::EVENTS).unwrap();
            *slot = Some(RingBuf::try_from(map).unwrap());
        }
        let ring = slot.as_mut().unwrap();
        let mut out = Vec::new();
        while let Some(item) = ring.next() {
            assert_eq!(item.len(), std::mem::size_of::<ShieldEvent>());
            // SAFETY: length checked; plain data.
            out.push(unsafe { std::ptr::read_unaligned(item.as_ptr().cast::<ShieldEvent>()) });
        }
        out
    }

    /// Pins `name` under `dir` (for tests of user-space APIs that open pinned maps).
    pub fn pin(&self, name: &str, dir: &std::path::Path) {
        self.ebpf
            .map(name)
            .unwrap()
            .pin(dir.join(name))
            .unwrap_or_else(|e| panic!("pinning {name}: {e}"));
    }

    /// How many sources are tracked.
    pub fn source_count(&self) -> usize {
        let map: PerCpuHashMap<_, SourceKey, SourceStats> =
            PerCpuHashMap::try_from(self.ebpf.map(herz_common::maps::SOURCES).unwrap()).unwrap();
        map.keys().count()
    }
}
