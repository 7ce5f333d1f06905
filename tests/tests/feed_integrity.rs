//! A feed cannot be poisoned by one forged packet: a spoofed heartbeat announcing a far head (from
//! an address the feed accepts) neither skips data nor makes real packets count as duplicates.

use std::{
    net::{Ipv4Addr, SocketAddr, UdpSocket},
    time::Duration,
};

use herz_client::{
    SoupSubscriber,
    mold::{MoldFeedSender, MoldFeedSenderConfig},
};
use herz_core::protocol::moldudp64::{Session, encode_heartbeat};
use herz_tests::dist::{self, Endpoints, LOGIN_TIMEOUT, message, receive_exact};
use herz_user::config::FeedConfig;

#[test]
fn a_forged_heartbeat_does_not_skip_the_feed() {
    let ep = Endpoints::on(Ipv4Addr::LOCALHOST);
    let line = SocketAddr::from(([127, 0, 0, 1], dist::free_port()));
    let session = Session::new("UPSTREAM01").unwrap();
    let mut cfg = MoldFeedSenderConfig::new(session, vec![line]);
    cfg.bind = SocketAddr::from(([127, 0, 0, 1], 0));
    let mut sender = MoldFeedSender::new(cfg).unwrap();
    let (d, _dir) = dist::start(&ep, |c| {
        c.feeds.push(FeedConfig {
            name: "upstream".into(),
            lines: vec![line],
            session: Some(session),
            from_start: true,
            ..Default::default()
        });
    });
    let mut sub = SoupSubscriber::connect(ep.subscribers, LOGIN_TIMEOUT).unwrap();
    sub.login("tester", "t3st3r", Session::BLANK, 1, None)
        .unwrap();
    const N: u64 = 20_000;
    let forger = UdpSocket::bind("127.0.0.1:0").unwrap();
    let mut forged = Vec::new();
    encode_heartbeat(session, 50_000_000, &mut forged);
    for i in 1..=N {
        sender.push(&message(i)).unwrap();
        if i % 100 == 0 {
            sender.flush().unwrap();
        }
        if i == N / 2 {
            sender.flush().unwrap();
            forger.send_to(&forged, line).unwrap();
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    sender.flush().unwrap();
    receive_exact(&mut sub, 1, N, Duration::from_secs(30));
    let m = dist::scrape(&ep);
    assert_eq!(dist::sample(&m, "herz_feed_in_messages_total"), N as f64);
    assert_eq!(dist::sample(&m, "herz_feed_suspicious_jumps_total"), 1.0);
    assert_eq!(dist::sample(&m, "herz_feed_lost_total"), 0.0);
    assert!(d.log().contains("too far to believe"), "{}", d.log());
}
