//! Unit tests of the MoldUDP64 codec.

use super::*;

fn session() -> Session {
    Session::new("HZ00000001").unwrap()
}

#[test]
fn session_validation() {
    assert_eq!(Session::new("ABC").unwrap().as_bytes(), b"ABC       ");
    assert_eq!(Session::new("").unwrap(), Session::BLANK);
    assert!(Session::BLANK.is_blank());
    assert!(!session().is_blank());
    assert_eq!(
        Session::new("ABCDEFGHIJK"),
        Err(MoldError::SessionLength { len: 11 })
    );
    assert_eq!(
        Session::new("AB C"),
        Err(MoldError::SessionByte {
            byte: b' ',
            position: 2
        })
    );
    assert_eq!(
        Session::new("A\u{7f}").unwrap_err().to_string(),
        "session byte '\\x7f' (0x7f) at position 1 is not allowed (printable ASCII except space)"
    );
    let right = Session::from_bytes(*b"       ABC");
    assert!(right.matches(&Session::new("ABC").unwrap()));
    assert_ne!(right, Session::new("ABC").unwrap());
    assert_eq!(right.to_string(), "ABC");
    assert_eq!(format!("{right:?}"), "Session(\"       ABC\")");
    assert_eq!("X1".parse::<Session>().unwrap().trimmed(), b"X1");
    assert_eq!(Session::default(), Session::BLANK);
}

#[test]
fn header_exact_bytes() {
    let h = Header {
        session: session(),
        sequence: 0x0102_0304_0506_0708,
        count: 0x0A0B,
    };
    let expected = *b"HZ00000001\x01\x02\x03\x04\x05\x06\x07\x08\x0A\x0B";
    assert_eq!(h.to_bytes(), expected);
    assert_eq!(Header::decode(&expected), Ok(h));
    assert_eq!(
        Header::decode(&expected[..19]),
        Err(MoldError::TooShort { len: 19 })
    );
}

#[test]
fn data_packet_exact_bytes() {
    // Session "HZ00000001", sequence 5, two messages "AB" and "" (empty is legal).
    let bytes = b"HZ00000001\0\0\0\0\0\0\0\x05\0\x02\0\x02AB\0\0";
    let p = Packet::parse(bytes).unwrap();
    assert_eq!(p.sequence(), 5);
    assert_eq!(p.message_count(), 2);
    assert!(!p.is_heartbeat() && !p.is_end_of_session());
    assert_eq!(p.next_sequence(), 7);
    assert_eq!(p.messages().len(), 2);
    assert_eq!(p.messages().collect::<Vec<_>>(), [&b"AB"[..], b""]);
    assert_eq!(
        p.sequenced_messages().collect::<Vec<_>>(),
        [(5, &b"AB"[..]), (6, &b""[..])]
    );

    let mut b = PacketBuilder::new(DEFAULT_MAX_PACKET_LEN);
    b.start(session(), 5);
    assert_eq!(b.try_push(b"AB"), Ok(true));
    assert_eq!(b.try_push(b""), Ok(true));
    assert_eq!(b.finish(), bytes);
}

/// The example in docs/PROTOCOL.md section 3, built from the tick and MoldUDP64 codecs.
#[test]
fn docs_example_packet() {
    use crate::protocol::tick::{Aggressor, Quote, Symbol, Trade};
    let ts = 1_764_115_200_000_000_000;
    let quote = Quote {
        symbol: Symbol::new("AAPL").unwrap(),
        timestamp_ns: ts,
        bid_price: 18_912_000_000,
        bid_size: 100,
        ask_price: 18_913_000_000,
        ask_size: 200,
    };
    let trade = Trade {
        symbol: Symbol::new("BRK.B").unwrap(),
        timestamp_ns: ts,
        price: 47_125_500_000_000,
        size: 25,
        trade_id: 9001,
        aggressor: Aggressor::Buy,
    };
    let mut b = PacketBuilder::new(DEFAULT_MAX_PACKET_LEN);
    b.start(Session::new("HZ20261126").unwrap(), 41);
    assert_eq!(b.try_push(&quote.to_bytes()), Ok(true));
    assert_eq!(b.try_push(&trade.to_bytes()), Ok(true));
    // The rows of the hexdump in docs/PROTOCOL.md, verbatim.
    let docs = [
        "48 5a 32 30 32 36 31 31 32 36 00 00 00 00 00 00",
        "00 29 00 02 00 29 51 41 41 50 4c 20 20 20 20 18",
        "7b 65 6d 7e de 00 00 00 00 00 04 67 3e 38 00 00",
        "00 00 64 00 00 00 04 67 4d 7a 40 00 00 00 c8 00",
        "26 54 42 52 4b 2e 42 20 20 20 18 7b 65 6d 7e de",
        "00 00 00 00 2a dc 42 af f7 00 00 00 00 19 00 00",
        "00 00 00 00 23 29 42",
    ];
    let hex: Vec<String> = b.finish().iter().map(|b| format!("{b:02x}")).collect();
    let rows: Vec<String> = hex.chunks(16).map(|row| row.join(" ")).collect();
    assert_eq!(rows, docs);
    let mut request = Vec::new();
    RequestPacket {
        session: Session::new("HZ20261126").unwrap(),
        sequence: 41,
        count: 2,
    }
    .encode(&mut request);
    assert_eq!(request, b"HZ20261126\0\0\0\0\0\0\0\x29\0\x02");
}

#[test]
fn heartbeat_and_end_of_session_exact_bytes() {
    let mut out = Vec::new();
    encode_heartbeat(session(), 42, &mut out);
    assert_eq!(out, b"HZ00000001\0\0\0\0\0\0\0\x2a\0\0");
    let p = Packet::parse(&out).unwrap();
    assert!(p.is_heartbeat());
    assert_eq!(p.next_sequence(), 42);
    assert_eq!(p.messages().count(), 0);

    out.clear();
    encode_end_of_session(session(), 42, &mut out);
    assert_eq!(out, b"HZ00000001\0\0\0\0\0\0\0\x2a\xff\xff");
    let p = Packet::parse(&out).unwrap();
    assert!(p.is_end_of_session() && p.header().is_end_of_session());
    assert_eq!(p.message_count(), 0);
    assert_eq!(p.next_sequence(), 42);
    assert_eq!(p.messages().next(), None);

    // An empty builder finishes as a heartbeat.
    let mut b = PacketBuilder::new(100);
    b.start(session(), 42);
    assert!(b.is_empty());
    assert_eq!(b.finish(), b"HZ00000001\0\0\0\0\0\0\0\x2a\0\0");
}

#[test]
fn malformed_packets() {
    let hdr = |count: u16| {
        Header {
            session: session(),
            sequence: 1,
            count,
        }
        .to_bytes()
        .to_vec()
    };
    assert_eq!(Packet::parse(b""), Err(MoldError::TooShort { len: 0 }));
    assert_eq!(
        Packet::parse(&hdr(1)[..19]),
        Err(MoldError::TooShort { len: 19 })
    );

    let mut p = hdr(0);
    p.push(0);
    assert_eq!(
        Packet::parse(&p),
        Err(MoldError::BlocksInControlPacket {
            kind: "heartbeat",
            extra: 1
        })
    );
    let mut p = hdr(0xFFFF);
    p.extend_from_slice(&[0, 0]);
    assert_eq!(
        Packet::parse(&p).unwrap_err().to_string(),
        "end-of-session packet must have no message blocks, but 2 bytes follow the header"
    );

    // Count says 2, only one block present.
    let mut p = hdr(2);
    p.extend_from_slice(b"\0\x01X");
    assert_eq!(
        Packet::parse(&p),
        Err(MoldError::TruncatedBlockLength {
            index: 1,
            count: 2,
            offset: 23,
            packet_len: 23
        })
    );
    // Half a length field.
    p.push(0);
    assert!(matches!(
        Packet::parse(&p),
        Err(MoldError::TruncatedBlockLength { index: 1, .. })
    ));
    // Declared length beyond the datagram.
    let mut p = hdr(1);
    p.extend_from_slice(b"\0\x05ABC");
    assert_eq!(
        Packet::parse(&p),
        Err(MoldError::TruncatedBlock {
            index: 0,
            count: 1,
            offset: 22,
            declared: 5,
            available: 3
        })
    );
    assert_eq!(
        Packet::parse(&p).unwrap_err().to_string(),
        "message block 0 of 1 declares 5 bytes at offset 22, but only 3 remain"
    );
    // Count says 1, two blocks present.
    let mut p = hdr(1);
    p.extend_from_slice(b"\0\x01X\0\x01Y");
    assert_eq!(
        Packet::parse(&p),
        Err(MoldError::TrailingBytes { count: 1, extra: 3 })
    );
    // Sequence overflow.
    let mut p = Header {
        session: session(),
        sequence: u64::MAX,
        count: 1,
    }
    .to_bytes()
    .to_vec();
    p.extend_from_slice(b"\0\0");
    assert_eq!(
        Packet::parse(&p),
        Err(MoldError::SequenceOverflow {
            sequence: u64::MAX,
            count: 1
        })
    );
}

#[test]
fn builder_fills_up_and_continues() {
    // Room for header (20) + 3 blocks of 2+8 bytes = 50.
    let mut b = PacketBuilder::new(50);
    assert_eq!(b.max_message_len(), 28);
    b.start(session(), 100);
    for _ in 0..3 {
        assert_eq!(b.try_push(b"12345678"), Ok(true));
    }
    assert_eq!(b.len(), 50);
    assert_eq!(b.try_push(b"12345678"), Ok(false));
    assert_eq!(b.try_push(b""), Ok(false));
    assert_eq!(b.count(), 3);
    assert_eq!(b.next_sequence(), 103);
    let packet = b.finish().to_vec();
    let parsed = Packet::parse(&packet).unwrap();
    assert_eq!(parsed.message_count(), 3);
    assert_eq!(parsed.session(), session());

    let next = b.next_sequence();
    b.start(b.session(), next);
    assert_eq!(b.first_sequence(), 103);
    assert_eq!(b.try_push(b"12345678"), Ok(true));
    assert_eq!(Packet::parse(b.finish()).unwrap().sequence(), 103);

    // Too large even for an empty packet: reported distinctly, builder unchanged.
    let big = [0u8; 29];
    assert_eq!(
        b.try_push(&big),
        Err(MoldError::MessageTooLarge {
            len: 29,
            max_packet_len: 50,
            max_message_len: 28
        })
    );
    assert_eq!(
        b.try_push(&big).unwrap_err().to_string(),
        "message of 29 bytes can never fit: a packet of at most 50 bytes holds messages of \
         at most 28 bytes"
    );
    assert_eq!(b.count(), 1);
    b.start(session(), 0);
    assert_eq!(b.try_push(&big[..28]), Ok(true));
    assert_eq!(b.len(), 50);
}

#[test]
fn builder_respects_max_count() {
    let mut b = PacketBuilder::new(HEADER_LEN + 2 * 0x10000);
    b.start(session(), 1);
    for _ in 0..MAX_MESSAGE_COUNT {
        assert_eq!(b.try_push(b""), Ok(true));
    }
    assert_eq!(b.try_push(b""), Ok(false));
    let p = Packet::parse(b.finish()).unwrap();
    assert_eq!(p.message_count(), MAX_MESSAGE_COUNT);
    assert!(!p.is_end_of_session());

    // A limit beyond what the 16-bit block length can express.
    assert_eq!(b.max_message_len(), 0xFFFF);
    b.start(session(), 1);
    assert!(matches!(
        b.try_push(&vec![0; 0x10000]),
        Err(MoldError::MessageTooLarge { len: 0x10000, .. })
    ));
    assert_eq!(b.try_push(&vec![0; 0xFFFF]), Ok(true));
}

#[test]
#[should_panic(expected = "below the 22 bytes")]
fn builder_rejects_tiny_limit() {
    let _ = PacketBuilder::new(21);
}

#[test]
fn request_packet() {
    let r = RequestPacket {
        session: session(),
        sequence: 1000,
        count: 3,
    };
    let expected = *b"HZ00000001\0\0\0\0\0\0\x03\xe8\0\x03";
    assert_eq!(r.to_bytes(), expected);
    let mut out = Vec::new();
    r.encode(&mut out);
    assert_eq!(out, expected);
    assert_eq!(RequestPacket::decode(&expected), Ok(r));
    assert_eq!(
        RequestPacket::decode(&expected[..19]),
        Err(MoldError::RequestLength { len: 19 })
    );
    let mut long = expected.to_vec();
    long.push(0);
    assert_eq!(
        RequestPacket::decode(&long).unwrap_err().to_string(),
        "re-request packet must be exactly 20 bytes, got 21"
    );
}

#[test]
fn random_bytes_never_panic() {
    let mut state = 0x2545_F491_4F6C_DD1D_u64;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    let mut buf = [0u8; 96];
    for _ in 0..20_000 {
        for b in buf.iter_mut() {
            *b = next() as u8;
        }
        let r = next();
        // Small counts and block lengths so that some inputs are valid.
        buf[18] = 0;
        buf[19] = (r % 5) as u8;
        if r & 0x100 != 0 {
            buf[20] = 0;
            buf[21] = (r >> 16) as u8 % 8;
        }
        let len = (r >> 32) as usize % (buf.len() + 1);
        let input = &buf[..len];
        if let Ok(p) = Packet::parse(input) {
            // Rebuilding yields the same bytes.
            let mut b = PacketBuilder::new(200);
            b.start(p.session(), p.sequence());
            for m in p.messages() {
                assert_eq!(b.try_push(m), Ok(true));
            }
            assert_eq!(b.finish(), input);
            assert_eq!(b.next_sequence(), p.next_sequence());
        }
        if let Ok(r) = RequestPacket::decode(input) {
            assert_eq!(r.to_bytes(), input);
        }
    }
}
