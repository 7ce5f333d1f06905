//! Herz's kernel programs loaded (not attached) for BPF_PROG_TEST_RUN: run a crafted frame, read the maps.

use aya::{
    Ebpf,
    maps::{HashMap, PerCpuArray, PerCpuHashMap},
    programs::{SchedClassifier, TestRun, TestRunOptions, Xdp},
};
use herz_common::{Counter, IPPROTO_TCP, IPPROTO_UDP, PortKey, PortRole, SourceKey, SourceStats};
use herz_user::shield::programs;

/// The loaded object, with the programs loaded into the kernel.
pub struct Programs {
    ebpf: Ebpf,
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
        let mut ebpf = herz_user::shield::load_for_test().expect("loading the eBPF object");
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
        Programs { ebpf }
    }

    /// Runs the XDP program on `frame`; returns its verdict.
    pub fn xdp(&self, frame: &[u8]) -> u32 {
        let xdp: &Xdp = self
            .ebpf
            .program(programs::XDP)
            .unwrap()
            .try_into()
            .unwrap();
        let opts = TestRunOptions {
            data_in: Some(frame),
            ..TestRunOptions::new()
        };
        xdp.test_run(opts).expect("BPF_PROG_TEST_RUN").return_value
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

    /// How many sources are tracked.
    pub fn source_count(&self) -> usize {
        let map: PerCpuHashMap<_, SourceKey, SourceStats> =
            PerCpuHashMap::try_from(self.ebpf.map(herz_common::maps::SOURCES).unwrap()).unwrap();
        map.keys().count()
    }
}
