//! Per-IP admission from outside: a few addresses cannot take every session slot, and a password
//! guesser is throttled, while everybody else keeps logging in.

use std::{
    io::Read,
    net::{Ipv4Addr, SocketAddr, TcpStream},
    time::Duration,
};

use herz_client::soup::{SoupClientError, SoupOptions, SoupSubscriber};
use herz_core::protocol::{moldudp64::Session, soupbintcp::RejectReason};
use herz_tests::dist::{self, Endpoints, LOGIN_TIMEOUT};
use socket2::{Domain, Socket, Type};

/// A TCP connection to `to` from the loopback address `from` (all of 127.0.0.0/8 is local).
fn connect_from(from: Ipv4Addr, to: SocketAddr) -> std::io::Result<TcpStream> {
    let s = Socket::new(Domain::IPV4, Type::STREAM, None)?;
    s.bind(&SocketAddr::from((from, 0)).into())?;
    s.connect_timeout(&to.into(), Duration::from_secs(2))?;
    Ok(s.into())
}

/// Whether the server still holds the connection open (no FIN, no RST within a moment).
fn still_open(s: &mut TcpStream) -> bool {
    s.set_read_timeout(Some(Duration::from_millis(300)))
        .unwrap();
    let mut b = [0u8; 64];
    match s.read(&mut b) {
        Ok(0) => false,
        Ok(_) => true,
        Err(e) => matches!(
            e.kind(),
            std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
        ),
    }
}

fn login_from(from: Ipv4Addr, to: SocketAddr, password: &str) -> Result<(), SoupClientError> {
    let stream = connect_from(from, to).map_err(|source| SoupClientError::Connect {
        addr: to.to_string(),
        source,
    })?;
    let options = SoupOptions {
        login_timeout: LOGIN_TIMEOUT,
        ..SoupOptions::default()
    };
    let mut sub = SoupSubscriber::from_stream(stream, options)?;
    sub.login("tester", password, Session::BLANK, 0, None)
        .map(|_| ())
}

#[test]
fn a_few_addresses_cannot_take_every_slot() {
    let ep = Endpoints::on(Ipv4Addr::LOCALHOST);
    let (_d, _dir) = dist::start(&ep, |c| {
        c.admission.max_pending_per_ip = 4;
        c.subscribers.login_timeout_ms = 60_000;
    });
    let hog = Ipv4Addr::new(127, 0, 0, 2);
    let mut conns: Vec<TcpStream> = (0..10)
        .map(|_| connect_from(hog, ep.subscribers).unwrap())
        .collect();
    let open = conns.iter_mut().map(still_open).filter(|&o| o).count();
    assert_eq!(open, 4, "connections awaiting login from one IP");
    // Everybody else still gets in.
    login_from(Ipv4Addr::new(127, 0, 0, 3), ep.subscribers, "t3st3r").unwrap();
    let refused = dist::sample(&dist::scrape(&ep), "herz_sessions_refused_per_ip_total");
    assert_eq!(refused, 6.0);
}

#[test]
fn a_password_guesser_is_throttled_and_nobody_else() {
    let ep = Endpoints::on(Ipv4Addr::LOCALHOST);
    let (_d, _dir) = dist::start(&ep, |c| c.admission.max_failed_logins = 3);
    let guesser = Ipv4Addr::new(127, 0, 0, 4);
    for guess in ["aaaa", "bbbb", "cccc"] {
        match login_from(guesser, ep.subscribers, guess) {
            Err(SoupClientError::LoginRejected { reason, .. }) => {
                assert_eq!(reason, RejectReason::NotAuthorized)
            }
            other => panic!("expected Login Rejected, got {other:?}"),
        }
    }
    // The next try is refused at the door, even with the right password.
    match login_from(guesser, ep.subscribers, "t3st3r") {
        Err(SoupClientError::LoginRejected { .. }) | Ok(()) => {
            panic!("a throttled IP got to log in or to be told why")
        }
        Err(_) => {}
    }
    login_from(Ipv4Addr::new(127, 0, 0, 5), ep.subscribers, "t3st3r").unwrap();
    let s = dist::scrape(&ep);
    assert!(dist::sample(&s, "herz_logins_throttled_total") >= 1.0);
}
