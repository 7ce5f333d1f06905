//! Small OS helpers: waiting on several file descriptors with a nanosecond timeout.

use std::{
    io,
    os::fd::RawFd,
    time::{Duration, Instant},
};

/// Readable.
pub(crate) const IN: i16 = libc::POLLIN;
/// Writable.
pub(crate) const OUT: i16 = libc::POLLOUT;

/// Waits until one of `fds` (descriptor, events) is ready or `timeout` passes (`None`: forever).
/// Returns the `revents` of each descriptor, in order (all 0 on timeout). `EINTR` counts as a
/// timeout so that callers re-check their own deadlines and flags (e.g. Ctrl-C).
///
/// `ppoll` rather than `poll` because pacing needs sub-millisecond sleeps; timeouts are never
/// rounded down, so a caller never wakes up early and spins.
pub(crate) fn wait<const N: usize>(
    fds: [(RawFd, i16); N],
    timeout: Option<Duration>,
) -> io::Result<[i16; N]> {
    let mut pfds = fds.map(|(fd, events)| libc::pollfd {
        fd,
        events,
        revents: 0,
    });
    let ts = timeout.map(|t| libc::timespec {
        tv_sec: t.as_secs().min(i64::MAX as u64 / 2) as libc::time_t,
        tv_nsec: t.subsec_nanos() as libc::c_long,
    });
    let ts_ptr = ts
        .as_ref()
        .map_or(std::ptr::null(), |t| t as *const libc::timespec);
    // SAFETY: `pfds` is a valid array of N pollfd structs for the duration of the call; `ts_ptr`
    // is null or points to a live timespec; a null sigmask leaves the mask unchanged.
    let rc = unsafe {
        libc::ppoll(
            pfds.as_mut_ptr(),
            N as libc::nfds_t,
            ts_ptr,
            std::ptr::null(),
        )
    };
    if rc < 0 {
        let err = io::Error::last_os_error();
        if err.kind() == io::ErrorKind::Interrupted {
            return Ok([0; N]);
        }
        return Err(err);
    }
    Ok(pfds.map(|p| p.revents))
}

/// Time left until `deadline` (zero if passed); `None` deadline means no limit.
pub(crate) fn remaining(deadline: Option<Instant>, now: Instant) -> Option<Duration> {
    deadline.map(|d| d.saturating_duration_since(now))
}

/// The earlier of two optional deadlines.
pub(crate) fn earliest(a: Option<Instant>, b: Option<Instant>) -> Option<Instant> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, None) => a,
        (None, b) => b,
    }
}
