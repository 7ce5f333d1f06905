//! Socket setup: the options a market-data server needs, in one place.

use std::{io, net::SocketAddr, time::Duration};

use socket2::{Domain, Protocol, SockAddr, Socket, TcpKeepalive, Type};

/// Options applied to every accepted TCP session.
#[derive(Debug, Clone, Copy)]
pub struct TcpSessionOptions {
    /// Keepalive idle time (None: off).
    pub keepalive: Option<Duration>,
    /// TCP_USER_TIMEOUT (None: kernel default).
    pub user_timeout: Option<Duration>,
    /// SO_SNDBUF (None: kernel autotuning).
    pub send_buffer: Option<usize>,
}

/// Applies low-latency and dead-peer options to an accepted session.
pub fn configure_session(stream: &mio::net::TcpStream, opts: TcpSessionOptions) -> io::Result<()> {
    stream.set_nodelay(true)?;
    let sock = socket2::SockRef::from(stream);
    if let Some(idle) = opts.keepalive {
        // Probes every second, three of them: a vanished peer is found within idle + 3 s.
        let ka = TcpKeepalive::new()
            .with_time(idle)
            .with_interval(Duration::from_secs(1))
            .with_retries(3);
        sock.set_tcp_keepalive(&ka)?;
    }
    if let Some(b) = opts.send_buffer {
        sock.set_send_buffer_size(b)?;
    }
    if let Some(t) = opts.user_timeout {
        sock.set_tcp_user_timeout(Some(t))?;
    }
    Ok(())
}

/// Closes a session abortively (RST, no TIME_WAIT), so its fd and buffers are freed at once. Used for
/// dead and evicted peers, never for orderly logouts.
pub fn abort(stream: &mio::net::TcpStream) {
    let _ = socket2::SockRef::from(stream).set_linger(Some(Duration::ZERO));
}

/// A non-blocking TCP listener with SO_REUSEADDR.
pub fn tcp_listener(addr: SocketAddr) -> io::Result<mio::net::TcpListener> {
    let sock = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    sock.set_reuse_address(true)?;
    sock.set_nonblocking(true)?;
    sock.bind(&addr.into())?;
    sock.listen(1024)?;
    Ok(mio::net::TcpListener::from_std(sock.into()))
}

/// A non-blocking UDP socket bound to `addr` (SO_REUSEADDR), with a large receive buffer.
pub fn udp_bound(addr: SocketAddr) -> io::Result<Socket> {
    let sock = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))?;
    sock.set_reuse_address(true)?;
    let _ = sock.set_recv_buffer_size(8 << 20);
    sock.set_nonblocking(true)?;
    sock.bind(&addr.into())?;
    Ok(sock)
}

/// A UDP socket for receiving a feed line: a multicast group joined on `interface`, or a unicast bind.
pub fn udp_feed_line(line: SocketAddr, interface: std::net::IpAddr) -> io::Result<Socket> {
    match (line.ip(), interface) {
        (std::net::IpAddr::V4(group), std::net::IpAddr::V4(iface)) if group.is_multicast() => {
            let sock = Socket::new(Domain::IPV4, Type::DGRAM, Some(Protocol::UDP))?;
            sock.set_reuse_address(true)?;
            sock.set_reuse_port(true)?;
            let _ = sock.set_recv_buffer_size(8 << 20);
            sock.set_nonblocking(true)?;
            sock.bind(&SockAddr::from(SocketAddr::from((group, line.port()))))?;
            sock.join_multicast_v4(&group, &iface)?;
            Ok(sock)
        }
        _ => udp_bound(line),
    }
}

/// A UDP socket connected to a multicast group, sending from `interface` with `ttl`.
pub fn udp_multicast_sender(
    group: SocketAddr,
    interface: std::net::IpAddr,
    ttl: u32,
) -> io::Result<Socket> {
    let sock = Socket::new(Domain::for_address(group), Type::DGRAM, Some(Protocol::UDP))?;
    if let (std::net::IpAddr::V4(iface), true) = (interface, group.is_ipv4()) {
        sock.set_multicast_if_v4(&iface)?;
        sock.set_multicast_ttl_v4(ttl)?;
        // Local subscribers on the same host (and the tests) receive the group too.
        sock.set_multicast_loop_v4(true)?;
        sock.bind(&SocketAddr::from((iface, 0)).into())?;
    }
    let _ = sock.set_send_buffer_size(4 << 20);
    sock.set_nonblocking(true)?;
    sock.connect(&group.into())?;
    Ok(sock)
}
