//! Batched datagram syscalls: one `sendmmsg`/`recvmmsg` moves many datagrams. The one home of these
//! loops for the daemon (channels, feeds, re-requests) and the benchmarks.

use std::{io, mem, os::fd::RawFd};

/// Most datagrams moved per syscall.
pub const BATCH: usize = 32;

/// Sends `packets` on a connected datagram socket with as few `sendmmsg` calls as possible. Returns
/// how many were sent (fewer when the socket buffer fills: the rest should be retried later).
pub fn send_connected(fd: RawFd, packets: &[&[u8]]) -> io::Result<usize> {
    let mut sent = 0;
    while sent < packets.len() {
        let chunk = &packets[sent..packets.len().min(sent + BATCH)];
        // SAFETY: a plain-data C struct (or array of them): all-zero bytes are a valid value.
        let mut iovs: [libc::iovec; BATCH] = unsafe { mem::zeroed() };
        // SAFETY: a plain-data C struct (or array of them): all-zero bytes are a valid value.
        let mut msgs: [libc::mmsghdr; BATCH] = unsafe { mem::zeroed() };
        for (i, p) in chunk.iter().enumerate() {
            iovs[i] = libc::iovec {
                iov_base: p.as_ptr() as *mut _,
                iov_len: p.len(),
            };
            msgs[i].msg_hdr.msg_iov = &mut iovs[i];
            msgs[i].msg_hdr.msg_iovlen = 1;
        }
        // SAFETY: msgs/iovs point into `packets`, which outlive the call; the count matches.
        let n = unsafe { libc::sendmmsg(fd, msgs.as_mut_ptr(), chunk.len() as u32, 0) };
        if n < 0 {
            let e = io::Error::last_os_error();
            if sent > 0 && matches!(e.kind(), io::ErrorKind::WouldBlock) {
                return Ok(sent);
            }
            return Err(e);
        }
        sent += n as usize;
        if (n as usize) < chunk.len() {
            break;
        }
    }
    Ok(sent)
}

/// Receive buffers for `recvmmsg`, with the sender address of each datagram.
pub struct RecvBatch {
    bufs: Vec<[u8; 2048]>,
    addrs: Vec<libc::sockaddr_storage>,
    lens: Vec<usize>,
    addr_lens: Vec<libc::socklen_t>,
    count: usize,
}

impl std::fmt::Debug for RecvBatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RecvBatch")
            .field("count", &self.count)
            .finish()
    }
}

impl Default for RecvBatch {
    fn default() -> Self {
        Self {
            bufs: vec![[0u8; 2048]; BATCH],
            // SAFETY: sockaddr_storage is plain data; all-zero is a valid (unspecified) value.
            addrs: vec![unsafe { mem::zeroed() }; BATCH],
            lens: vec![0; BATCH],
            addr_lens: vec![0; BATCH],
            count: 0,
        }
    }
}

impl RecvBatch {
    /// Receives up to [`BATCH`] datagrams without blocking; returns how many (0 when none are waiting).
    pub fn recv(&mut self, fd: RawFd) -> io::Result<usize> {
        self.recv_with(fd, libc::MSG_DONTWAIT)
    }

    /// Receives up to [`BATCH`] datagrams with `recvmmsg` `flags` (e.g. `MSG_WAITFORONE` on a socket
    /// with a receive timeout, to block for the first one); returns how many (0 when the call would
    /// block or timed out).
    pub fn recv_with(&mut self, fd: RawFd, flags: libc::c_int) -> io::Result<usize> {
        // SAFETY: a plain-data C struct (or array of them): all-zero bytes are a valid value.
        let mut iovs: [libc::iovec; BATCH] = unsafe { mem::zeroed() };
        // SAFETY: a plain-data C struct (or array of them): all-zero bytes are a valid value.
        let mut msgs: [libc::mmsghdr; BATCH] = unsafe { mem::zeroed() };
        for i in 0..BATCH {
            iovs[i] = libc::iovec {
                iov_base: self.bufs[i].as_mut_ptr() as *mut _,
                iov_len: self.bufs[i].len(),
            };
            msgs[i].msg_hdr.msg_iov = &mut iovs[i];
            msgs[i].msg_hdr.msg_iovlen = 1;
            msgs[i].msg_hdr.msg_name = &mut self.addrs[i] as *mut _ as *mut _;
            msgs[i].msg_hdr.msg_namelen = mem::size_of::<libc::sockaddr_storage>() as u32;
        }
        // SAFETY: every pointer refers to buffers owned by self for the duration of the call.
        let n = unsafe {
            libc::recvmmsg(
                fd,
                msgs.as_mut_ptr(),
                BATCH as u32,
                flags,
                std::ptr::null_mut(),
            )
        };
        if n < 0 {
            let e = io::Error::last_os_error();
            self.count = 0;
            return if matches!(
                e.kind(),
                io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
            ) {
                Ok(0)
            } else {
                Err(e)
            };
        }
        self.count = n as usize;
        for (i, m) in msgs.iter().take(self.count).enumerate() {
            self.lens[i] = m.msg_len as usize;
            self.addr_lens[i] = m.msg_hdr.msg_namelen;
        }
        Ok(self.count)
    }

    /// Datagram `i` of the last batch and its sender.
    pub fn get(&self, i: usize) -> (&[u8], Option<std::net::SocketAddr>) {
        let addr = storage_to_addr(&self.addrs[i], self.addr_lens[i]);
        (&self.bufs[i][..self.lens[i]], addr)
    }
}

fn storage_to_addr(
    s: &libc::sockaddr_storage,
    len: libc::socklen_t,
) -> Option<std::net::SocketAddr> {
    // SAFETY: the kernel wrote a sockaddr of `len` bytes of the family it reports.
    unsafe {
        match s.ss_family as i32 {
            libc::AF_INET if len as usize >= mem::size_of::<libc::sockaddr_in>() => {
                let a = &*(s as *const _ as *const libc::sockaddr_in);
                Some(std::net::SocketAddr::from((
                    u32::from_be(a.sin_addr.s_addr).to_be_bytes(),
                    u16::from_be(a.sin_port),
                )))
            }
            libc::AF_INET6 if len as usize >= mem::size_of::<libc::sockaddr_in6>() => {
                let a = &*(s as *const _ as *const libc::sockaddr_in6);
                Some(std::net::SocketAddr::from((
                    a.sin6_addr.s6_addr,
                    u16::from_be(a.sin6_port),
                )))
            }
            _ => None,
        }
    }
}
