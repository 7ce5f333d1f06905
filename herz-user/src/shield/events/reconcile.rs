//! Connection reconcile: established flows whose socket is gone (a peer that died without FIN or RST)
//! are closed by running the tc ingress program on a synthetic RST, so their source's count is right.

use super::*;

impl Worker {
    /// Closes established flows whose socket is gone (two checks in a row, so that a connection whose
    /// final ACK the tc program saw a moment before the kernel created the socket is never touched).
    pub(super) fn reconcile_established(&mut self) -> Result<(), MapError> {
        let flows: Vec<FlowKey> = self.established.keys().filter_map(Result::ok).collect();
        if flows.is_empty() {
            self.suspects.clear();
            return Ok(());
        }
        let sockets = socket_table();
        let mut suspects = HashSet::new();
        for f in flows {
            let tuple = (f.server, f.server_port, f.client, f.client_port);
            if sockets.contains(&tuple) {
                continue;
            }
            if !self.suspects.contains(&f) {
                suspects.insert(f);
                continue;
            }
            let closed = match &self.tc_ingress {
                Some(fd) => inject_rst(fd, &f).is_ok(),
                None => false,
            };
            if closed {
                self.emit(Event::StaleConnection {
                    source: key_to_ip(&herz_common::SourceKey { addr: f.client }),
                    port: f.client_port,
                });
            }
        }
        self.suspects = suspects;
        Ok(())
    }
}

/// (local address, local port, remote address, remote port) of every TCP socket in this network
/// namespace, addresses as 16 bytes (IPv4 mapped).
fn socket_table() -> HashSet<([u8; 16], u16, [u8; 16], u16)> {
    let mut out = HashSet::new();
    for (file, v6) in [("/proc/net/tcp", false), ("/proc/net/tcp6", true)] {
        let Ok(text) = std::fs::read_to_string(file) else {
            continue;
        };
        for line in text.lines().skip(1) {
            let mut cols = line.split_whitespace().skip(1);
            let (Some(local), Some(remote)) = (cols.next(), cols.next()) else {
                continue;
            };
            if let (Some(l), Some(r)) = (parse_proc_addr(local, v6), parse_proc_addr(remote, v6)) {
                out.insert((l.0, l.1, r.0, r.1));
            }
        }
    }
    out
}

/// `0100007F:1BBC` (IPv4) or 32 hex digits (IPv6): each 32-bit word printed as the host-order value of
/// its network-order bytes.
fn parse_proc_addr(s: &str, v6: bool) -> Option<([u8; 16], u16)> {
    let (addr, port) = s.split_once(':')?;
    let port = u16::from_str_radix(port, 16).ok()?;
    let words = if v6 { 4 } else { 1 };
    if addr.len() != words * 8 {
        return None;
    }
    let mut bytes = [0u8; 16];
    let mut raw = Vec::with_capacity(16);
    for i in 0..words {
        let w = u32::from_str_radix(&addr[i * 8..i * 8 + 8], 16).ok()?;
        raw.extend_from_slice(&w.to_ne_bytes());
    }
    if v6 {
        bytes.copy_from_slice(&raw);
    } else {
        bytes = std::net::Ipv4Addr::from(<[u8; 4]>::try_from(&raw[..]).ok()?)
            .to_ipv6_mapped()
            .octets();
    }
    Some((bytes, port))
}

/// A client→server RST for `flow`, as an Ethernet frame.
pub fn rst_frame(flow: &FlowKey) -> Vec<u8> {
    let client = std::net::Ipv6Addr::from(flow.client);
    let server = std::net::Ipv6Addr::from(flow.server);
    let mut tcp = vec![0u8; 20];
    tcp[0..2].copy_from_slice(&flow.client_port.to_be_bytes());
    tcp[2..4].copy_from_slice(&flow.server_port.to_be_bytes());
    tcp[12] = 5 << 4;
    tcp[13] = 0x04; // RST
    let mut f = vec![0x02, 0, 0, 0, 0, 1, 0x02, 0, 0, 0, 0, 2];
    match (client.to_ipv4_mapped(), server.to_ipv4_mapped()) {
        (Some(c), Some(s)) => {
            f.extend_from_slice(&0x0800u16.to_be_bytes());
            let mut ip = vec![0u8; 20];
            ip[0] = 0x45;
            ip[2..4].copy_from_slice(&40u16.to_be_bytes());
            ip[8] = 64;
            ip[9] = 6;
            ip[12..16].copy_from_slice(&c.octets());
            ip[16..20].copy_from_slice(&s.octets());
            f.extend_from_slice(&ip);
        }
        _ => {
            f.extend_from_slice(&0x86ddu16.to_be_bytes());
            let mut ip = vec![0u8; 40];
            ip[0] = 0x60;
            ip[4..6].copy_from_slice(&20u16.to_be_bytes());
            ip[6] = 6;
            ip[7] = 64;
            ip[8..24].copy_from_slice(&flow.client);
            ip[24..40].copy_from_slice(&flow.server);
            f.extend_from_slice(&ip);
        }
    }
    f.extend_from_slice(&tcp);
    f
}

/// Runs the tc ingress program on a synthetic RST for `flow` (BPF_PROG_TEST_RUN).
fn inject_rst(prog: &OwnedFd, flow: &FlowKey) -> std::io::Result<()> {
    herz_sys::bpf::run_once(prog.as_raw_fd(), &rst_frame(flow)).map(|_| ())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proc_net_tcp_addresses() {
        let (a, p) = parse_proc_addr("0100007F:1BBC", false).unwrap();
        assert_eq!(p, 7100);
        assert_eq!(
            std::net::Ipv6Addr::from(a)
                .to_ipv4_mapped()
                .unwrap()
                .octets(),
            [127, 0, 0, 1]
        );
        let (a, _) = parse_proc_addr("B80D0120000000000000000002000000:0050", true).unwrap();
        assert_eq!(
            std::net::Ipv6Addr::from(a),
            "2001:db8::2".parse::<std::net::Ipv6Addr>().unwrap()
        );
        assert!(parse_proc_addr("zz:1", false).is_none());
    }

    #[test]
    fn rst_frames_carry_the_flow() {
        let f = FlowKey {
            client: herz_common::SourceKey::from_ipv4([198, 18, 0, 2]).addr,
            server: herz_common::SourceKey::from_ipv4([198, 18, 0, 1]).addr,
            client_port: 40000,
            server_port: 7100,
            _pad: 0,
        };
        let frame = rst_frame(&f);
        assert_eq!(frame.len(), 14 + 20 + 20);
        assert_eq!(&frame[26..30], &[198, 18, 0, 2]);
        assert_eq!(frame[14 + 20 + 13], 0x04);
    }
}
