//! SYN floods for the shield scenarios, and a capture of what the attacker sent.
//!
//! Two ways to put frames into the attacker's veth, because they cost the receiver differently:
//! - [`Method::AfPacket`]: a user-space generator writing frames to an AF_PACKET socket (what trafgen
//!   and hping3 do). The veth hands the receiver an skb, which native XDP must copy into an XDP buffer
//!   before its program runs, so XDP looks little cheaper than netfilter.
//! - [`Method::XdpRedirect`]: frames made in the kernel, as a NIC delivers them: a four-to-sixteen
//!   instruction XDP program (assembled below, checked by the kernel's verifier) run by
//!   `BPF_PROG_TEST_RUN` in live-frames mode, which redirects each frame into the veth. The receiver
//!   gets XDP frames, as from a driver's RX ring.
//!
//! Every flood is bounded in packets and in time, and stops by itself.
//!
//! Spoofed sources are in 198.19.0.0/16 (the benchmarking range). A frame's source is varied
//! without recomputing checksums: the template carries source low half 0x0000, IP id 0xffff and TCP
//! source port 0xffff; a random `v` goes into the address and `!v` into the id and the port, so the
//! ones'-complement sums the IP and TCP checksums cover are unchanged.

use std::{
    io, mem,
    net::Ipv4Addr,
    os::fd::{AsRawFd, FromRawFd, OwnedFd},
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};
use serde::{Deserialize, Serialize};

use crate::sys::{mono_ns, sleep_until_mono};

/// How flood frames reach the veth.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Method {
    /// User-space generator, AF_PACKET socket (`sendmmsg`).
    AfPacket,
    /// In-kernel generator: XDP live frames redirected into the veth.
    XdpRedirect,
}

impl Method {
    /// Short label for tables.
    pub fn label(self) -> &'static str {
        match self {
            Method::AfPacket => "AF_PACKET",
            Method::XdpRedirect => "XDP redirect",
        }
    }
}

/// The frame every flood packet is made from.
#[derive(Debug, Clone, Copy)]
pub struct FrameSpec {
    /// Destination MAC (the victim's veth).
    pub dst_mac: [u8; 6],
    /// Source MAC (the attacker's veth).
    pub src_mac: [u8; 6],
    /// Source address; with `random_source` only its first two octets count.
    pub src: Ipv4Addr,
    /// Victim address.
    pub dst: Ipv4Addr,
    /// Victim port (Herz's subscriber port).
    pub dport: u16,
    /// Vary the source's low 16 bits per frame.
    pub random_source: bool,
}

/// Length of a flood frame: Ethernet, IPv4 without options, TCP without options.
pub const FRAME_LEN: usize = 14 + 20 + 20;
const IP_OFF: usize = 14;
const TCP_OFF: usize = 34;

fn csum_add(mut sum: u32, bytes: &[u8]) -> u32 {
    for pair in bytes.chunks(2) {
        let w = (u32::from(pair[0]) << 8) | u32::from(*pair.get(1).unwrap_or(&0));
        sum += w;
    }
    sum
}

fn csum_fold(mut sum: u32) -> u16 {
    while sum >> 16 != 0 {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// Builds the template frame: a TCP SYN with valid IP and TCP checksums. `seq` goes into the TCP
/// sequence number (the capture uses it to number the packets).
pub fn frame(spec: &FrameSpec, seq: u32) -> [u8; FRAME_LEN] {
    let mut f = [0u8; FRAME_LEN];
    f[0..6].copy_from_slice(&spec.dst_mac);
    f[6..12].copy_from_slice(&spec.src_mac);
    f[12..14].copy_from_slice(&0x0800u16.to_be_bytes());
    let mut src = spec.src.octets();
    let (id, sport) = if spec.random_source {
        src[2] = 0;
        src[3] = 0;
        (0xffffu16, 0xffffu16)
    } else {
        // A new source port per SYN, as a flooding tool varies it: every SYN is a new handshake.
        (0x1234, 1024 + (seq % 60_000) as u16)
    };
    let ip = &mut f[IP_OFF..IP_OFF + 20];
    ip[0] = 0x45;
    ip[2..4].copy_from_slice(&40u16.to_be_bytes());
    ip[4..6].copy_from_slice(&id.to_be_bytes());
    ip[8] = 64;
    ip[9] = 6;
    ip[12..16].copy_from_slice(&src);
    ip[16..20].copy_from_slice(&spec.dst.octets());
    let c = csum_fold(csum_add(0, ip));
    ip[10..12].copy_from_slice(&c.to_be_bytes());
    let tcp = &mut f[TCP_OFF..TCP_OFF + 20];
    tcp[0..2].copy_from_slice(&sport.to_be_bytes());
    tcp[2..4].copy_from_slice(&spec.dport.to_be_bytes());
    tcp[4..8].copy_from_slice(&seq.to_be_bytes());
    tcp[12] = 5 << 4;
    tcp[13] = 0x02; // SYN
    tcp[14..16].copy_from_slice(&64_240u16.to_be_bytes());
    let mut sum = csum_add(0, &src);
    sum = csum_add(sum, &spec.dst.octets());
    sum += 6 + 20;
    sum = csum_add(sum, tcp);
    let c = csum_fold(sum);
    tcp[16..18].copy_from_slice(&c.to_be_bytes());
    f
}

/// Puts the random `v` into a template made with `random_source` (see the module docs).
pub fn vary(f: &mut [u8; FRAME_LEN], v: u16) {
    f[IP_OFF + 14..IP_OFF + 16].copy_from_slice(&v.to_be_bytes());
    f[IP_OFF + 4..IP_OFF + 6].copy_from_slice(&(!v).to_be_bytes());
    f[TCP_OFF..TCP_OFF + 2].copy_from_slice(&(!v).to_be_bytes());
}

/// Bounds and pacing of one flood.
#[derive(Debug, Clone, Copy)]
pub struct Bounds {
    /// Most frames to send.
    pub max_packets: u64,
    /// Longest it may run.
    pub max_time: Duration,
    /// Frames per second; `None`: as fast as the generator goes.
    pub rate: Option<u64>,
}

/// What a generator did.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize)]
pub struct Sent {
    /// Frames handed to the kernel.
    pub packets: u64,
    /// Seconds it ran.
    pub secs: f64,
}

/// An AF_PACKET socket bound to `ifindex` for sending only (protocol 0: it receives nothing).
pub fn packet_socket(ifindex: i32, protocol: u16) -> io::Result<OwnedFd> {
    // SAFETY: plain socket(2).
    let fd = unsafe {
        libc::socket(
            libc::AF_PACKET,
            libc::SOCK_RAW | libc::SOCK_CLOEXEC,
            i32::from(protocol.to_be()),
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: fd was just created and is owned here.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    // SAFETY: zeroed sockaddr_ll is valid; the fields set below are what bind needs.
    let mut sll: libc::sockaddr_ll = unsafe { mem::zeroed() };
    sll.sll_family = libc::AF_PACKET as u16;
    sll.sll_protocol = protocol.to_be();
    sll.sll_ifindex = ifindex;
    // SAFETY: sll is a live sockaddr_ll of the given size.
    let rc = unsafe {
        libc::bind(
            fd.as_raw_fd(),
            (&sll as *const libc::sockaddr_ll).cast(),
            mem::size_of::<libc::sockaddr_ll>() as u32,
        )
    };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(fd)
}

/// Pacing: sends in slices of one frame interval (at least `min_slice_ns`, at most 1 ms); unpaced: as
/// fast as `send` goes.
fn paced_loop(
    bounds: Bounds,
    min_slice_ns: u64,
    stop: &AtomicBool,
    mut send: impl FnMut(u64) -> anyhow::Result<u64>,
) -> anyhow::Result<Sent> {
    let start = Instant::now();
    let t0 = mono_ns();
    let mut sent = 0u64;
    let mut slice = 0u64;
    while sent < bounds.max_packets
        && !stop.load(Ordering::Relaxed)
        && start.elapsed() < bounds.max_time
    {
        let want = match bounds.rate {
            Some(r) => {
                let slice_ns = (1_000_000_000 / r.max(1)).clamp(min_slice_ns, 1_000_000);
                slice += 1;
                let due = (u128::from(r) * u128::from(slice * slice_ns) / 1_000_000_000) as u64;
                sleep_until_mono(t0 + slice * slice_ns);
                due.min(bounds.max_packets).saturating_sub(sent)
            }
            None => (bounds.max_packets - sent).min(1 << 16),
        };
        if want > 0 {
            sent += send(want)?;
        }
    }
    Ok(Sent {
        packets: sent,
        secs: start.elapsed().as_secs_f64(),
    })
}

/// Floods from user space through an AF_PACKET socket, `sendmmsg` batches of 64 frames. With a random
/// source, 65,536 pre-built frames (as many sources as the in-kernel generator draws from) are
/// cycled; every frame's TCP sequence number is its index. A full veth ring (`ENOBUFS`) is retried,
/// so the count is of frames the kernel accepted.
pub fn af_packet(
    ifindex: i32,
    spec: &FrameSpec,
    bounds: Bounds,
    stop: &AtomicBool,
) -> anyhow::Result<Sent> {
    let fd = packet_socket(ifindex, 0).context("AF_PACKET socket")?;
    const RING: usize = 65_536;
    const BATCH: usize = 64;
    let ring = if spec.random_source { RING } else { 4096 };
    let mut frames: Vec<[u8; FRAME_LEN]> = Vec::with_capacity(ring);
    let mut rng = 0x9e37_79b9_7f4a_7c15u64;
    for i in 0..ring {
        let mut f = frame(spec, i as u32);
        if spec.random_source {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            vary(&mut f, rng as u16);
        }
        frames.push(f);
    }
    let single = !spec.random_source && bounds.rate.is_some();
    let give_up = Instant::now() + bounds.max_time;
    let mut next = 0usize;
    let mut seq = 0u32;
    paced_loop(bounds, 20_000, stop, |want| {
        let mut done = 0u64;
        while done < want {
            let n = ((want - done) as usize).min(BATCH);
            if single {
                // Paced fixed-source floods number every frame (the detection scenario).
                for f in frames.iter_mut().take(n) {
                    *f = frame(spec, seq);
                    seq = seq.wrapping_add(1);
                }
                next = 0;
            }
            // SAFETY: plain-data arrays, zero is valid.
            let mut iovs: [libc::iovec; BATCH] = unsafe { mem::zeroed() };
            // SAFETY: a plain-data C struct (or array of them): all-zero bytes are a valid value.
            let mut msgs: [libc::mmsghdr; BATCH] = unsafe { mem::zeroed() };
            for k in 0..n {
                let f = &frames[(next + k) % ring];
                iovs[k] = libc::iovec {
                    iov_base: f.as_ptr() as *mut _,
                    iov_len: FRAME_LEN,
                };
                msgs[k].msg_hdr.msg_iov = &mut iovs[k];
                msgs[k].msg_hdr.msg_iovlen = 1;
            }
            // SAFETY: msgs/iovs point into `frames`, alive for the call; count matches.
            let rc = unsafe { libc::sendmmsg(fd.as_raw_fd(), msgs.as_mut_ptr(), n as u32, 0) };
            if rc < 0 {
                let e = io::Error::last_os_error();
                if e.raw_os_error() == Some(libc::ENOBUFS) || e.kind() == io::ErrorKind::WouldBlock
                {
                    if stop.load(Ordering::Relaxed) || Instant::now() > give_up {
                        break;
                    }
                    continue;
                }
                bail!("sendmmsg on AF_PACKET: {e}");
            }
            next = (next + rc as usize) % ring;
            done += rc as u64;
        }
        Ok(done)
    })
}

// --- In-kernel generator ---------------------------------------------------------------------

const BPF_PROG_LOAD: libc::c_long = 5;
const BPF_PROG_TYPE_XDP: u32 = 6;
const HELPER_GET_PRANDOM_U32: i32 = 7;
const HELPER_REDIRECT: i32 = 23;

/// One eBPF instruction (`struct bpf_insn`).
#[repr(C)]
#[derive(Clone, Copy)]
struct Insn {
    code: u8,
    regs: u8,
    off: i16,
    imm: i32,
}

const fn insn(code: u8, dst: u8, src: u8, off: i16, imm: i32) -> Insn {
    Insn {
        code,
        regs: (src << 4) | dst,
        off,
        imm,
    }
}

// Opcodes used below.
const MOV64_IMM: u8 = 0xb7; // BPF_ALU64 | BPF_MOV | BPF_K
const MOV64_REG: u8 = 0xbf; // BPF_ALU64 | BPF_MOV | BPF_X
const ADD64_IMM: u8 = 0x07; // BPF_ALU64 | BPF_ADD | BPF_K
const XOR64_IMM: u8 = 0xa7; // BPF_ALU64 | BPF_XOR | BPF_K
const LDX_W: u8 = 0x61; // BPF_LDX | BPF_MEM | BPF_W
const STX_H: u8 = 0x6b; // BPF_STX | BPF_MEM | BPF_H
const JGT_REG: u8 = 0x2d; // BPF_JMP | BPF_JGT | BPF_X
const CALL: u8 = 0x85;
const EXIT: u8 = 0x95;

/// The generator program: optionally writes a random `v` / `!v` into the frame (see the module docs;
/// stores are little-endian, which the ones'-complement sums do not mind), then
/// `return bpf_redirect(ifindex, 0)`.
fn program(ifindex: i32, random_source: bool) -> Vec<Insn> {
    let mut p = Vec::new();
    if random_source {
        p.extend([
            insn(MOV64_REG, 6, 1, 0, 0),                 // r6 = ctx
            insn(CALL, 0, 0, 0, HELPER_GET_PRANDOM_U32), // r0 = random
            insn(MOV64_REG, 7, 0, 0, 0),                 // r7 = r0
            insn(LDX_W, 2, 6, 0, 0),                     // r2 = ctx->data
            insn(LDX_W, 3, 6, 4, 0),                     // r3 = ctx->data_end
            insn(MOV64_REG, 4, 2, 0, 0),                 // r4 = r2
            insn(ADD64_IMM, 4, 0, 0, FRAME_LEN as i32),  // r4 += frame length
            insn(JGT_REG, 4, 3, 4, 0),                   // if r4 > r3 skip the stores
            insn(STX_H, 2, 7, (IP_OFF + 14) as i16, 0),  // source low half = v
            insn(XOR64_IMM, 7, 0, 0, 0xffff),            // r7 = !v (low half)
            insn(STX_H, 2, 7, (IP_OFF + 4) as i16, 0),   // IP id = !v
            insn(STX_H, 2, 7, TCP_OFF as i16, 0),        // TCP source port = !v
        ]);
    }
    p.extend([
        insn(MOV64_IMM, 1, 0, 0, ifindex),
        insn(MOV64_IMM, 2, 0, 0, 0),
        insn(CALL, 0, 0, 0, HELPER_REDIRECT),
        insn(EXIT, 0, 0, 0, 0),
    ]);
    p
}

#[repr(C)]
#[derive(Default)]
struct ProgLoadAttr {
    prog_type: u32,
    insn_cnt: u32,
    insns: u64,
    license: u64,
    log_level: u32,
    log_size: u32,
    log_buf: u64,
    kern_version: u32,
    prog_flags: u32,
    prog_name: [u8; 16],
    prog_ifindex: u32,
    expected_attach_type: u32,
    _rest: [u64; 8],
}

fn load_program(ifindex: i32, random_source: bool) -> anyhow::Result<OwnedFd> {
    let insns = program(ifindex, random_source);
    let license = b"GPL\0";
    let mut log = vec![0u8; 1 << 16];
    let mut name = [0u8; 16];
    name[..14].copy_from_slice(b"herz_bench_gen");
    let attr = ProgLoadAttr {
        prog_type: BPF_PROG_TYPE_XDP,
        insn_cnt: insns.len() as u32,
        insns: insns.as_ptr() as u64,
        license: license.as_ptr() as u64,
        log_level: 1,
        log_size: log.len() as u32,
        log_buf: log.as_mut_ptr() as u64,
        prog_name: name,
        ..ProgLoadAttr::default()
    };
    let mut attr = attr;
    // SAFETY: bpf(2) with a fully initialised attr whose buffers outlive the call (the kernel may
    // write back into it).
    let fd = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            BPF_PROG_LOAD,
            &mut attr as *mut ProgLoadAttr,
            mem::size_of::<ProgLoadAttr>(),
        )
    };
    if fd < 0 {
        let e = io::Error::last_os_error();
        let end = log.iter().position(|&b| b == 0).unwrap_or(log.len());
        bail!(
            "loading the generator program: {e}; verifier: {}",
            String::from_utf8_lossy(&log[..end])
        );
    }
    // SAFETY: the syscall returned a new fd we own.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

/// Floods from the kernel: `BPF_PROG_TEST_RUN` in live-frames mode runs the generator program on
/// copies of the template and redirects each into the veth `ifindex` (in the calling thread's
/// network namespace). Runs on the calling thread's CPU. Pacing sends 1 ms slices.
pub fn xdp_redirect(
    ifindex: i32,
    spec: &FrameSpec,
    bounds: Bounds,
    stop: &AtomicBool,
) -> anyhow::Result<Sent> {
    let prog = load_program(ifindex, spec.random_source)?;
    let data = frame(spec, 0x5eed);
    // Each live-frames run sets up its own page pool (milliseconds): paced runs go in 1 ms slices and
    // still fall short of high rates; the scenario paces with AF_PACKET.
    paced_loop(bounds, 1_000_000, stop, |want| {
        let mut attr = herz_sys::bpf::TestRunAttr {
            prog_fd: prog.as_raw_fd() as u32,
            data_size_in: FRAME_LEN as u32,
            data_in: data.as_ptr() as u64,
            repeat: want.min(u64::from(u32::MAX)) as u32,
            flags: herz_sys::bpf::F_TEST_XDP_LIVE_FRAMES,
            batch_size: 64,
            ..Default::default()
        };
        match herz_sys::bpf::test_run(&mut attr) {
            Ok(()) => Ok(u64::from(attr.repeat)),
            Err(e) if e.raw_os_error() == Some(libc::EINTR) => Ok(0),
            Err(e) => bail!("BPF_PROG_TEST_RUN (live frames): {e}"),
        }
    })
}

/// Runs the flood of `method`.
pub fn run(
    method: Method,
    ifindex: i32,
    spec: &FrameSpec,
    bounds: Bounds,
    stop: &AtomicBool,
) -> anyhow::Result<Sent> {
    match method {
        Method::AfPacket => af_packet(ifindex, spec, bounds, stop),
        Method::XdpRedirect => xdp_redirect(ifindex, spec, bounds, stop),
    }
}

// --- Capture ------------------------------------------------------------------------------------

/// One SYN the attacker sent, as the kernel saw it leave.
#[derive(Debug, Clone, Copy)]
pub struct Captured {
    /// The frame's TCP sequence number (its index in the flood).
    pub seq: u32,
    /// Kernel timestamp (SO_TIMESTAMPNS, CLOCK_REALTIME), ns.
    pub realtime_ns: u64,
}

/// Records the SYNs to `dport` leaving `ifindex` with their kernel timestamps, until `stop` is set.
/// Must be started (it returns a ready socket) before the flood.
pub struct Capture {
    fd: OwnedFd,
    dport: u16,
}

impl Capture {
    /// Opens the capture socket (ETH_P_ALL on the interface, SO_TIMESTAMPNS, 64 MiB buffer).
    pub fn open(ifindex: i32, dport: u16) -> anyhow::Result<Self> {
        let fd = packet_socket(ifindex, libc::ETH_P_ALL as u16).context("capture socket")?;
        let on: libc::c_int = 1;
        let buf: libc::c_int = 64 << 20;
        let tv = libc::timeval {
            tv_sec: 0,
            tv_usec: 50_000,
        };
        // SAFETY: valid fd and option values of the sizes given.
        unsafe {
            libc::setsockopt(
                fd.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_TIMESTAMPNS,
                (&on as *const libc::c_int).cast(),
                4,
            );
            libc::setsockopt(
                fd.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_RCVBUFFORCE,
                (&buf as *const libc::c_int).cast(),
                4,
            );
            libc::setsockopt(
                fd.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_RCVTIMEO,
                (&tv as *const libc::timeval).cast(),
                mem::size_of::<libc::timeval>() as u32,
            );
        }
        Ok(Capture { fd, dport })
    }

    /// Reads until `stop` is set and the socket is drained.
    pub fn collect(self, stop: Arc<AtomicBool>) -> anyhow::Result<Vec<Captured>> {
        let mut out = Vec::new();
        let mut buf = [0u8; 256];
        let mut cbuf = [0u64; 16];
        loop {
            // SAFETY: zeroed plain-data structs, filled in below.
            let mut sll: libc::sockaddr_ll = unsafe { mem::zeroed() };
            let mut iov = libc::iovec {
                iov_base: buf.as_mut_ptr().cast(),
                iov_len: buf.len(),
            };
            // SAFETY: a plain-data C struct (or array of them): all-zero bytes are a valid value.
            let mut msg: libc::msghdr = unsafe { mem::zeroed() };
            msg.msg_name = (&mut sll as *mut libc::sockaddr_ll).cast();
            msg.msg_namelen = mem::size_of::<libc::sockaddr_ll>() as u32;
            msg.msg_iov = &mut iov;
            msg.msg_iovlen = 1;
            msg.msg_control = cbuf.as_mut_ptr().cast();
            msg.msg_controllen = mem::size_of_val(&cbuf);
            // SAFETY: msg points at live buffers for the call.
            let n = unsafe { libc::recvmsg(self.fd.as_raw_fd(), &mut msg, 0) };
            if n < 0 {
                let e = io::Error::last_os_error();
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock
                        | io::ErrorKind::TimedOut
                        | io::ErrorKind::Interrupted
                ) {
                    if stop.load(Ordering::Relaxed) {
                        return Ok(out);
                    }
                    continue;
                }
                bail!("capture: {e}");
            }
            let n = n as usize;
            if sll.sll_pkttype != libc::PACKET_OUTGOING || n < FRAME_LEN {
                continue;
            }
            let f = &buf[..n];
            let is_syn = f[12..14] == [0x08, 0x00]
                && f[IP_OFF + 9] == 6
                && f[TCP_OFF + 2..TCP_OFF + 4] == self.dport.to_be_bytes()
                && f[TCP_OFF + 13] & 0x12 == 0x02;
            if !is_syn {
                continue;
            }
            let mut ts = None;
            // SAFETY: walking the control messages the kernel wrote into cbuf.
            unsafe {
                let mut c = libc::CMSG_FIRSTHDR(&msg);
                while !c.is_null() {
                    if (*c).cmsg_level == libc::SOL_SOCKET && (*c).cmsg_type == libc::SO_TIMESTAMPNS
                    {
                        let t: libc::timespec = std::ptr::read_unaligned(libc::CMSG_DATA(c).cast());
                        ts = Some(t.tv_sec as u64 * 1_000_000_000 + t.tv_nsec as u64);
                    }
                    c = libc::CMSG_NXTHDR(&msg, c);
                }
            }
            let Some(realtime_ns) = ts else {
                bail!("capture: the kernel gave no timestamp");
            };
            let seq = u32::from_be_bytes(f[TCP_OFF + 4..TCP_OFF + 8].try_into().expect("4 bytes"));
            out.push(Captured { seq, realtime_ns });
        }
    }
}

/// CLOCK_REALTIME − CLOCK_MONOTONIC, ns, from the tightest of a few bracketed readings, and that
/// bracket's width (the conversion's uncertainty).
pub fn realtime_offset() -> (i128, u64) {
    let read = |clock| {
        // SAFETY: timespec is plain data; all-zero bytes are a valid value.
        let mut t: libc::timespec = unsafe { mem::zeroed() };
        // SAFETY: clock_gettime writes into the live timespec `t`.
        unsafe { libc::clock_gettime(clock, &mut t) };
        t.tv_sec as i128 * 1_000_000_000 + t.tv_nsec as i128
    };
    let mut best = (0i128, u64::MAX);
    for _ in 0..50 {
        let m0 = read(libc::CLOCK_MONOTONIC);
        let r = read(libc::CLOCK_REALTIME);
        let m1 = read(libc::CLOCK_MONOTONIC);
        let width = (m1 - m0) as u64;
        if width < best.1 {
            best = (r - (m0 + m1) / 2, width);
        }
    }
    best
}

#[cfg(test)]
mod tests {
    use super::*;

    fn verify(f: &[u8; FRAME_LEN]) -> (bool, bool) {
        let ip = &f[IP_OFF..IP_OFF + 20];
        let ip_ok = csum_fold(csum_add(0, ip)) == 0;
        let mut sum = csum_add(0, &ip[12..20]);
        sum += 6 + 20;
        sum = csum_add(sum, &f[TCP_OFF..]);
        (ip_ok, csum_fold(sum) == 0)
    }

    #[test]
    fn varied_frames_keep_valid_checksums() {
        let spec = FrameSpec {
            dst_mac: [2, 0, 0, 0, 0, 1],
            src_mac: [2, 0, 0, 0, 0, 2],
            src: Ipv4Addr::new(198, 19, 0, 0),
            dst: Ipv4Addr::new(198, 18, 251, 1),
            dport: 7000,
            random_source: true,
        };
        let base = frame(&spec, 7);
        assert_eq!(verify(&base), (true, true));
        for v in [0u16, 1, 0x00ff, 0x8000, 0xfffe, 0xffff, 0x1234] {
            let mut f = base;
            vary(&mut f, v);
            assert_eq!(verify(&f), (true, true), "v = {v:#x}");
            assert_eq!(u16::from_be_bytes([f[IP_OFF + 14], f[IP_OFF + 15]]), v);
            // The kernel program stores little-endian: the byte-swapped value must work as well.
            let mut g = base;
            vary(&mut g, v.swap_bytes());
            assert_eq!(verify(&g), (true, true), "swapped v = {v:#x}");
        }
        let fixed = frame(
            &FrameSpec {
                random_source: false,
                src: Ipv4Addr::new(198, 19, 250, 3),
                ..spec
            },
            99,
        );
        assert_eq!(verify(&fixed), (true, true));
        assert_eq!(&fixed[IP_OFF + 12..IP_OFF + 16], &[198, 19, 250, 3]);
    }
}
