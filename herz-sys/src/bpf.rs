//! `BPF_PROG_TEST_RUN` through bpf(2) directly, for programs that are not aya objects: the shield's
//! event thread runs its tc program on a synthetic RST (a program fd it holds), and the shield benchmark
//! floods from the kernel with a hand-assembled XDP program in live-frames mode.

use std::{io, os::fd::RawFd};

/// `BPF_PROG_TEST_RUN`'s command number.
const BPF_PROG_TEST_RUN: libc::c_long = 10;

/// `BPF_F_TEST_XDP_LIVE_FRAMES`: redirected frames really leave (kernel ≥ 5.18).
pub const F_TEST_XDP_LIVE_FRAMES: u32 = 1 << 1;

/// The `test` member of `union bpf_attr` (kernel ≥ 5.18 layout: `batch_size` last).
#[repr(C)]
#[derive(Debug, Default, Clone, Copy)]
pub struct TestRunAttr {
    /// The program.
    pub prog_fd: u32,
    /// Out: the program's return value (of the last run).
    pub retval: u32,
    /// Bytes of `data_in`.
    pub data_size_in: u32,
    /// In: room in `data_out`; out: bytes written.
    pub data_size_out: u32,
    /// The packet.
    pub data_in: u64,
    /// Where the packet as the program left it goes (0: nowhere).
    pub data_out: u64,
    /// How many runs (0 counts as 1).
    pub repeat: u32,
    /// Out: mean ns per run.
    pub duration: u32,
    /// Bytes of `ctx_in`.
    pub ctx_size_in: u32,
    /// Room in `ctx_out`.
    pub ctx_size_out: u32,
    /// Context in.
    pub ctx_in: u64,
    /// Context out.
    pub ctx_out: u64,
    /// `F_TEST_*` flags.
    pub flags: u32,
    /// CPU to run on (with `BPF_F_TEST_RUN_ON_CPU`).
    pub cpu: u32,
    /// Frames per batch in live-frames mode.
    pub batch_size: u32,
    /// Padding to the union's alignment.
    pub _pad: u32,
}

/// Runs `prog_fd` on `data` once; returns its return value. The packet as the program left it is
/// discarded.
pub fn run_once(prog_fd: RawFd, data: &[u8]) -> io::Result<u32> {
    let mut out = vec![0u8; data.len() + 256];
    let mut attr = TestRunAttr {
        prog_fd: prog_fd as u32,
        data_size_in: data.len() as u32,
        data_in: data.as_ptr() as u64,
        data_size_out: out.len() as u32,
        data_out: out.as_mut_ptr() as u64,
        repeat: 1,
        ..TestRunAttr::default()
    };
    test_run(&mut attr)?;
    Ok(attr.retval)
}

/// `bpf(BPF_PROG_TEST_RUN, attr)`. The caller keeps every buffer `attr` points to alive for the call.
pub fn test_run(attr: &mut TestRunAttr) -> io::Result<()> {
    // SAFETY: bpf(2) with a correctly laid out, fully initialised attr; the buffers it points to are the
    // caller's and outlive the call (see above). The kernel writes back only into `attr` and `data_out`.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            BPF_PROG_TEST_RUN,
            attr as *mut TestRunAttr,
            std::mem::size_of::<TestRunAttr>(),
        )
    };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_attr_has_the_kernels_layout() {
        // Offsets of struct bpf_attr's test member (include/uapi/linux/bpf.h).
        assert_eq!(std::mem::offset_of!(TestRunAttr, data_in), 16);
        assert_eq!(std::mem::offset_of!(TestRunAttr, repeat), 32);
        assert_eq!(std::mem::offset_of!(TestRunAttr, ctx_in), 48);
        assert_eq!(std::mem::offset_of!(TestRunAttr, flags), 64);
        assert_eq!(std::mem::offset_of!(TestRunAttr, batch_size), 72);
        assert_eq!(std::mem::size_of::<TestRunAttr>(), 80);
    }

    #[test]
    fn a_bad_program_fd_is_an_error_not_a_crash() {
        let e = run_once(-1, &[0u8; 64]).unwrap_err();
        assert!(
            matches!(
                e.raw_os_error(),
                Some(libc::EBADF | libc::EPERM | libc::EINVAL)
            ),
            "{e}"
        );
    }
}
