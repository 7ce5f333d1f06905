//! Unit tests of the SoupBinTCP codec and the Herz control packets.

use super::{
    herz::{encode_error_packet, encode_filter_packets, encode_skip_packet},
    *,
};
use crate::protocol::tick::Symbol;

fn session() -> Session {
    Session::new("HZ00000001").unwrap()
}

/// Decodes exactly one packet occupying all of `bytes`.
fn one(bytes: &[u8]) -> Packet<'_> {
    let (packet, used) = next_packet(bytes).unwrap().unwrap();
    assert_eq!(used, bytes.len());
    packet
}

#[test]
fn packet_type_table() {
    for t in PacketType::ALL {
        assert_eq!(PacketType::from_byte(t.as_byte()), Some(t));
        assert!(t.allowed_from(Side::Client) || t.allowed_from(Side::Server));
    }
    assert_eq!(PacketType::from_byte(b'X'), None);
    assert_eq!(PacketType::from_byte(b'l'), None);
    assert!(PacketType::Debug.allowed_from(Side::Client));
    assert!(PacketType::Debug.allowed_from(Side::Server));
    assert!(!PacketType::SequencedData.allowed_from(Side::Client));
    assert!(!PacketType::LoginRequest.allowed_from(Side::Server));
    assert_eq!(PacketType::LoginRequest.fixed_payload_len(), Some(46));
    assert_eq!(PacketType::LoginAccepted.fixed_payload_len(), Some(30));
    assert_eq!(PacketType::LoginRejected.fixed_payload_len(), Some(1));
    assert_eq!(PacketType::SequencedData.fixed_payload_len(), None);
    assert_eq!(PacketType::EndOfSession.to_string(), "End of Session");
}

#[test]
fn login_request_exact_bytes() {
    let login = LoginRequest::new("user01", "pass", Session::BLANK, 1).unwrap();
    let mut expected = vec![0x00, 0x2F, b'L'];
    expected.extend_from_slice(b"user01");
    expected.extend_from_slice(b"pass      ");
    expected.extend_from_slice(b"          ");
    expected.extend_from_slice(b"                   1");
    assert_eq!(expected.len(), 49);

    let mut out = Vec::new();
    login.encode(&mut out);
    assert_eq!(out, expected);
    assert_eq!(one(&expected), Packet::LoginRequest(login));
    assert_eq!(LoginRequest::parse(&expected[3..]), Ok(login));
    assert_eq!(login.trimmed_username(), b"user01");
    assert_eq!(login.trimmed_password(), b"pass");
    assert!(login.session.is_blank());
    assert!(login.credentials_match("USER01", "PASS"));
    assert!(!login.credentials_match("user01", "pass2"));
    assert!(!login.credentials_match("user0", "pass"));
    assert!(!login.credentials_match("user01", "pas"));
    assert!(
        !login.credentials_match("user01", "pass      x"),
        "longer than the field"
    );
    assert!(!login.credentials_match("user01", ""));
}

#[test]
fn login_request_with_session_and_big_sequence() {
    let login = LoginRequest::new("u", "", session(), u64::MAX).unwrap();
    let payload = login.to_payload();
    assert_eq!(&payload[..6], b"u     ");
    assert_eq!(&payload[6..16], b"          ");
    assert_eq!(&payload[16..26], b"HZ00000001");
    assert_eq!(&payload[26..], b"18446744073709551615");
    assert_eq!(LoginRequest::parse(&payload), Ok(login));
}

#[test]
fn login_request_field_validation() {
    assert_eq!(
        LoginRequest::new("user012", "p", Session::BLANK, 0),
        Err(SoupError::FieldLength {
            field: "Username",
            max: 6,
            len: 7
        })
    );
    assert_eq!(
        LoginRequest::new("u", "pass word", Session::BLANK, 0)
            .unwrap_err()
            .to_string(),
        "Password byte ' ' (0x20) at position 4 is not allowed (printable ASCII except space)"
    );
}

fn login_payload_with_sequence(field: &[u8; 20]) -> Vec<u8> {
    let mut p = LoginRequest::new("user01", "pass", Session::BLANK, 0)
        .unwrap()
        .to_payload()
        .to_vec();
    p[26..].copy_from_slice(field);
    p
}

#[test]
fn numeric_fields_are_lenient_but_strict() {
    let ok: [(&[u8; 20], u64); 6] = [
        (b"                  42", 42),
        (b"00000000000000000042", 42),
        (b"     000000000000042", 42),
        (b"                    ", 0),
        (b"00000000000000000000", 0),
        (b"18446744073709551615", u64::MAX),
    ];
    for (field, value) in ok {
        let parsed = LoginRequest::parse(&login_payload_with_sequence(field)).unwrap();
        assert_eq!(parsed.sequence, value, "{}", field.escape_ascii());
    }
    for bad in [
        b"42                  ",
        b"                 4 2",
        b"                 -42",
        b"                 +42",
        b"                 0x2",
        b"                \t 42",
        b"\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\x01",
    ] {
        let err = LoginRequest::parse(&login_payload_with_sequence(bad)).unwrap_err();
        assert!(
            matches!(
                err,
                SoupError::InvalidNumber {
                    field: "Requested Sequence Number",
                    ..
                }
            ),
            "{err}"
        );
    }
    let err =
        LoginRequest::parse(&login_payload_with_sequence(b"                1x42")).unwrap_err();
    assert_eq!(
        err.to_string(),
        "Requested Sequence Number \"                1x42\" is not a right-justified decimal \
         number (leading spaces or zeros, then digits only)"
    );
    let err =
        LoginRequest::parse(&login_payload_with_sequence(b"18446744073709551616")).unwrap_err();
    assert_eq!(
        err.to_string(),
        "Requested Sequence Number \"18446744073709551616\" does not fit in 64 bits"
    );

    // Login Accepted uses the same rules and names its own field.
    let mut accepted = LoginAccepted {
        session: session(),
        sequence: 0,
    }
    .to_payload();
    accepted[29] = b'x';
    assert!(matches!(
        LoginAccepted::parse(&accepted),
        Err(SoupError::InvalidNumber {
            field: "Sequence Number",
            ..
        })
    ));
}

#[test]
fn login_accepted_exact_bytes() {
    let accepted = LoginAccepted {
        session: session(),
        sequence: 1,
    };
    let mut expected = vec![0x00, 0x1F, b'A'];
    expected.extend_from_slice(b"HZ00000001");
    expected.extend_from_slice(b"                   1");
    let mut out = Vec::new();
    accepted.encode(&mut out);
    assert_eq!(out, expected);
    assert_eq!(one(&expected), Packet::LoginAccepted(accepted));

    // A session right-justified by another implementation is kept byte for byte.
    let mut other = expected.clone();
    other[3..13].copy_from_slice(b"     12345");
    let Packet::LoginAccepted(a) = one(&other) else {
        panic!("not a Login Accepted");
    };
    assert_eq!(a.session.as_bytes(), b"     12345");
    assert!(a.session.matches(&Session::new("12345").unwrap()));
}

#[test]
fn login_rejected_exact_bytes() {
    for (reason, byte) in [
        (RejectReason::NotAuthorized, b'A'),
        (RejectReason::SessionNotAvailable, b'S'),
    ] {
        let mut out = Vec::new();
        encode_login_rejected(reason, &mut out);
        assert_eq!(out, [0, 2, b'J', byte]);
        assert_eq!(one(&out), Packet::LoginRejected(reason));
    }
    assert_eq!(
        next_packet(&[0, 2, b'J', b'X']),
        Err(SoupError::InvalidRejectReason { byte: b'X' })
    );
    assert_eq!(
        next_packet(&[0, 2, b'J', b'x']).unwrap_err().to_string(),
        "login reject reason 'x' (0x78) is not 'A' (not authorized) or 'S' (session not available)"
    );
}

#[test]
fn empty_packets_exact_bytes() {
    type Case = (fn(&mut Vec<u8>), [u8; 3], Packet<'static>);
    let cases: [Case; 4] = [
        (
            encode_server_heartbeat,
            [0, 1, b'H'],
            Packet::ServerHeartbeat,
        ),
        (encode_end_of_session, [0, 1, b'Z'], Packet::EndOfSession),
        (
            encode_client_heartbeat,
            [0, 1, b'R'],
            Packet::ClientHeartbeat,
        ),
        (encode_logout_request, [0, 1, b'O'], Packet::LogoutRequest),
    ];
    for (encode, bytes, packet) in cases {
        let mut out = Vec::new();
        encode(&mut out);
        assert_eq!(out, bytes);
        assert_eq!(one(&bytes), packet);
    }
}

#[test]
fn data_packets_exact_bytes() {
    let mut out = Vec::new();
    encode_sequenced(b"hello", &mut out).unwrap();
    assert_eq!(out, b"\x00\x06Shello");
    assert_eq!(sequenced_header(5), Ok([0, 6, b'S']));
    assert_eq!(one(&out), Packet::SequencedData(b"hello"));

    out.clear();
    encode_unsequenced(b"", &mut out).unwrap();
    assert_eq!(out, b"\x00\x01U");
    assert_eq!(one(&out), Packet::UnsequencedData(b""));

    out.clear();
    encode_debug(b"hi", &mut out).unwrap();
    assert_eq!(out, b"\x00\x03+hi");
    assert_eq!(one(&out), Packet::Debug(b"hi"));

    assert_eq!(sequenced_header(MAX_PAYLOAD_LEN), Ok([0xFF, 0xFF, b'S']));
    assert_eq!(
        sequenced_header(MAX_PAYLOAD_LEN + 1),
        Err(SoupError::PayloadTooLarge {
            packet: PacketType::SequencedData,
            len: 65535
        })
    );
    let big = vec![0u8; MAX_PAYLOAD_LEN + 1];
    out.clear();
    assert!(encode_sequenced(&big, &mut out).is_err());
    assert!(out.is_empty());
    assert_eq!(
        encode_debug(&big, &mut out).unwrap_err().to_string(),
        "Debug payload of 65535 bytes exceeds the SoupBinTCP maximum of 65534"
    );
}

fn every_packet() -> Vec<Packet<'static>> {
    vec![
        Packet::Debug(b"HERZ SKIP 3 filtered"),
        Packet::LoginAccepted(LoginAccepted {
            session: session(),
            sequence: 77,
        }),
        Packet::LoginRejected(RejectReason::SessionNotAvailable),
        Packet::SequencedData(b"QAAPL    ..."),
        Packet::ServerHeartbeat,
        Packet::EndOfSession,
        Packet::LoginRequest(LoginRequest::new("pub1", "secret", session(), 0).unwrap()),
        Packet::UnsequencedData(b"TMSFT    ..."),
        Packet::ClientHeartbeat,
        Packet::LogoutRequest,
    ]
}

#[test]
fn every_packet_round_trips_in_one_stream() {
    let packets = every_packet();
    let mut stream = Vec::new();
    for p in &packets {
        let before = stream.len();
        p.encode(&mut stream).unwrap();
        assert_eq!(stream.len() - before, p.encoded_len());
    }
    let mut rest = &stream[..];
    let mut decoded = Vec::new();
    while let Some((p, used)) = next_packet(rest).unwrap() {
        decoded.push(p);
        rest = &rest[used..];
    }
    assert!(rest.is_empty());
    assert_eq!(decoded, packets);
}

#[test]
fn streaming_needs_more_bytes() {
    let mut stream = Vec::new();
    LoginRequest::new("user01", "pass", Session::BLANK, 1)
        .unwrap()
        .encode(&mut stream);
    encode_debug(b"HERZ FILTER symbols=AAPL", &mut stream).unwrap();
    let first_len = 49;
    for cut in 0..first_len {
        assert_eq!(next_packet(&stream[..cut]), Ok(None), "cut at {cut}");
    }
    let (p, used) = next_packet(&stream[..first_len]).unwrap().unwrap();
    assert_eq!(used, first_len);
    assert_eq!(p.packet_type(), PacketType::LoginRequest);
    for cut in first_len..stream.len() {
        let (_, used) = next_packet(&stream[..cut]).unwrap().unwrap();
        assert_eq!(used, first_len);
        assert_eq!(next_packet(&stream[first_len..cut]), Ok(None));
    }
}

#[test]
fn header_errors_are_reported_early() {
    assert_eq!(next_packet(&[0, 0]), Err(SoupError::ZeroLength));
    assert_eq!(next_packet(&[0]), Ok(None));
    assert_eq!(next_packet(&[]), Ok(None));
    // Unknown type, reported without waiting for the 4 payload bytes.
    assert_eq!(
        next_packet(&[0, 5, b'X']),
        Err(SoupError::UnknownType { byte: b'X' })
    );
    assert_eq!(
        next_packet(&[0, 5, 0]).unwrap_err().to_string(),
        "unknown packet type '\\x00' (0x00)"
    );
    // Length limits.
    assert_eq!(next_packet(&[0xFF, 0xFF]), Ok(None));
    assert_eq!(
        next_client_packet(&[0x04, 0x01], DEFAULT_MAX_CLIENT_PACKET_LEN),
        Err(SoupError::TooLong {
            len: 1025,
            max: 1024
        })
    );
    assert_eq!(
        next_packet_with_limit(&[0x04, 0x01, b'U'], 1024)
            .unwrap_err()
            .to_string(),
        "packet length 1025 exceeds the limit of 1024 bytes"
    );
    assert_eq!(
        next_client_packet(&[0x04, 0x00, b'U'], DEFAULT_MAX_CLIENT_PACKET_LEN),
        Ok(None)
    );
}

#[test]
fn wrong_fixed_lengths() {
    let cases: [(u8, u16, usize); 7] = [
        (b'L', 46, 47),
        (b'L', 48, 47),
        (b'A', 32, 31),
        (b'J', 1, 2),
        (b'J', 3, 2),
        (b'H', 2, 1),
        (b'Z', 5, 1),
    ];
    for (byte, len, expected) in cases {
        let [hi, lo] = len.to_be_bytes();
        let err = next_packet(&[hi, lo, byte]).unwrap_err();
        assert_eq!(
            err,
            SoupError::WrongLength {
                packet: PacketType::from_byte(byte).unwrap(),
                expected,
                actual: usize::from(len),
            }
        );
    }
    for byte in [b'R', b'O'] {
        assert!(matches!(
            next_packet(&[0, 2, byte, 0]),
            Err(SoupError::WrongLength { expected: 1, .. })
        ));
    }
    assert_eq!(
        next_packet(&[0, 46, b'L']).unwrap_err().to_string(),
        "Login Request packet must have length 47 (type byte + 46 payload bytes), got 46"
    );
    assert!(matches!(
        LoginRequest::parse(&[b' '; 45]),
        Err(SoupError::WrongLength { actual: 46, .. })
    ));
    assert!(matches!(
        LoginAccepted::parse(&[b' '; 31]),
        Err(SoupError::WrongLength { actual: 32, .. })
    ));
}

#[test]
fn sides_reject_the_other_sides_packets() {
    let mut s = Vec::new();
    encode_sequenced(b"x", &mut s).unwrap();
    assert_eq!(
        next_client_packet(&s, DEFAULT_MAX_CLIENT_PACKET_LEN),
        Err(SoupError::UnexpectedType {
            packet: PacketType::SequencedData,
            from: Side::Client
        })
    );
    assert_eq!(
        next_client_packet(&s, 1024).unwrap_err().to_string(),
        "a client must not send a Sequenced Data packet ('S')"
    );
    assert!(next_server_packet(&s, MAX_PACKET_LEN).unwrap().is_some());

    let mut l = Vec::new();
    LoginRequest::new("u", "p", Session::BLANK, 0)
        .unwrap()
        .encode(&mut l);
    assert_eq!(
        next_server_packet(&l[..3], MAX_PACKET_LEN),
        Err(SoupError::UnexpectedType {
            packet: PacketType::LoginRequest,
            from: Side::Server
        })
    );
    assert!(next_client_packet(&l, 1024).unwrap().is_some());

    for p in every_packet() {
        let mut bytes = Vec::new();
        p.encode(&mut bytes).unwrap();
        let t = p.packet_type();
        assert_eq!(
            next_client_packet(&bytes, MAX_PACKET_LEN).is_ok(),
            t.allowed_from(Side::Client)
        );
        assert_eq!(
            next_server_packet(&bytes, MAX_PACKET_LEN).is_ok(),
            t.allowed_from(Side::Server)
        );
    }
}

// ---- Herz control extension ----

#[test]
fn herz_parse_filter() {
    let Some(HerzControl::Filter(f)) =
        HerzControl::parse(b"HERZ FILTER symbols=AAPL,MSFT prefixes=BR,ES").unwrap()
    else {
        panic!("not a filter");
    };
    assert_eq!(f.len(), 4);
    assert!(!f.is_empty());
    let symbols: Vec<String> = f.symbols().map(|s| s.to_string()).collect();
    let prefixes: Vec<String> = f.prefixes().map(|s| s.to_string()).collect();
    assert_eq!(symbols, ["AAPL", "MSFT"]);
    assert_eq!(prefixes, ["BR", "ES"]);
    assert!(f.matches(b"AAPL    "));
    assert!(f.matches(b"BRK.B   "));
    assert!(f.matches(b"ESZ6    "));
    assert!(!f.matches(b"AAP     "));
    assert!(!f.matches(b"AAPLX   "));
    assert!(!f.matches(b"B       "));

    let Some(HerzControl::Filter(only_prefixes)) =
        HerzControl::parse(b"HERZ FILTER prefixes=X").unwrap()
    else {
        panic!("not a filter");
    };
    assert_eq!(only_prefixes.symbols().count(), 0);
    assert!(only_prefixes.matches(b"XYZ     "));

    // Extra spaces are tolerated.
    assert!(matches!(
        HerzControl::parse(b"HERZ  FILTER   symbols=A  "),
        Ok(Some(HerzControl::Filter(_)))
    ));
}

#[test]
fn herz_parse_skip_and_error() {
    assert_eq!(
        HerzControl::parse(b"HERZ SKIP 12 filtered"),
        Ok(Some(HerzControl::Skip {
            count: 12,
            reason: SkipReason::Filtered
        }))
    );
    for (text, reason) in [
        (&b"HERZ SKIP 1 dropped"[..], SkipReason::Dropped),
        (
            b"HERZ SKIP 18446744073709551615 conflated",
            SkipReason::Conflated,
        ),
        (b"HERZ SKIP 3 some-future_reason", SkipReason::Other),
    ] {
        assert!(matches!(
            HerzControl::parse(text),
            Ok(Some(HerzControl::Skip { reason: r, .. })) if r == reason
        ));
    }
    assert_eq!(
        HerzControl::parse(b"HERZ ERROR filter too large, max 1024 entries"),
        Ok(Some(HerzControl::Error(
            "filter too large, max 1024 entries"
        )))
    );
}

#[test]
fn herz_parse_not_herz() {
    for text in [
        &b""[..],
        b"hello",
        b"HERZLICH",
        b"herz SKIP 1 filtered",
        b" HERZ SKIP 1 x",
    ] {
        assert_eq!(
            HerzControl::parse(text),
            Ok(None),
            "{}",
            text.escape_ascii()
        );
    }
}

#[test]
fn herz_parse_malformed() {
    let cases: [(&[u8], &str); 20] = [
        (
            b"HERZ",
            "HERZ control text has no command (expected FILTER, SKIP or ERROR)",
        ),
        (
            b"HERZ   ",
            "HERZ control text has no command (expected FILTER, SKIP or ERROR)",
        ),
        (
            b"HERZ PING",
            "unknown HERZ command \"PING\" (expected FILTER, SKIP or ERROR)",
        ),
        (
            b"HERZ filter symbols=A",
            "unknown HERZ command \"filter\" (expected FILTER, SKIP or ERROR)",
        ),
        (
            b"HERZ FILTER",
            "malformed HERZ FILTER: needs symbols=... and/or prefixes=...: \"HERZ FILTER\"",
        ),
        (
            b"HERZ FILTER symbols=",
            "malformed HERZ FILTER: empty list: \"symbols=\"",
        ),
        (
            b"HERZ FILTER symbols=A,,B",
            "malformed HERZ FILTER: symbols must be 1 to 8 printable ASCII characters except \
             space and ',': \"\"",
        ),
        (
            b"HERZ FILTER symbols=A,TOOLONGSYM",
            "malformed HERZ FILTER: symbols must be 1 to 8 printable ASCII characters except \
             space and ',': \"TOOLONGSYM\"",
        ),
        (
            b"HERZ FILTER prefixes=A\xff",
            "malformed HERZ FILTER: prefixes must be 1 to 8 printable ASCII characters except \
             space and ',': \"A\\xff\"",
        ),
        (
            b"HERZ FILTER symbols",
            "malformed HERZ FILTER: expected key=value: \"symbols\"",
        ),
        (
            b"HERZ FILTER venues=X",
            "malformed HERZ FILTER: unknown key (expected symbols or prefixes): \"venues=X\"",
        ),
        (
            b"HERZ FILTER symbols=A symbols=B",
            "malformed HERZ FILTER: duplicate key: \"symbols=B\"",
        ),
        (
            b"HERZ SKIP 5",
            "malformed HERZ SKIP: expected HERZ SKIP <count> <reason>: \"HERZ SKIP 5\"",
        ),
        (
            b"HERZ SKIP 0 filtered",
            "malformed HERZ SKIP: count must be at least 1: \"0\"",
        ),
        (
            b"HERZ SKIP -1 filtered",
            "malformed HERZ SKIP: count is not a decimal number below 2^64: \"-1\"",
        ),
        (
            b"HERZ SKIP 18446744073709551616 filtered",
            "malformed HERZ SKIP: count is not a decimal number below 2^64: \
             \"18446744073709551616\"",
        ),
        (
            b"HERZ SKIP 5 Filtered",
            "malformed HERZ SKIP: reason is not a lowercase word: \"Filtered\"",
        ),
        (
            b"HERZ SKIP 5 filtered now",
            "malformed HERZ SKIP: unexpected extra text: \"now\"",
        ),
        (
            b"HERZ ERROR",
            "malformed HERZ ERROR: missing text: \"HERZ ERROR\"",
        ),
        (
            b"HERZ ERROR bad\nline",
            "malformed HERZ ERROR: text is not printable ASCII: \"\\nline\"",
        ),
    ];
    for (text, message) in cases {
        let err = HerzControl::parse(text).unwrap_err();
        assert_eq!(err.to_string(), message, "{}", text.escape_ascii());
    }
}

#[test]
fn herz_filter_entry_limit() {
    let list: Vec<String> = (0..MAX_FILTER_ENTRIES).map(|i| format!("S{i}")).collect();
    let list = list.join(",");
    assert_eq!(Filter::new(&list, "").unwrap().len(), MAX_FILTER_ENTRIES);
    assert_eq!(
        Filter::new(&list, "X"),
        Err(SoupError::HerzFilterTooLarge { entries: 1025 })
    );
    let text = format!("HERZ FILTER symbols={list} prefixes=X");
    assert_eq!(
        HerzControl::parse(text.as_bytes()).unwrap_err().to_string(),
        "HERZ FILTER has 1025 entries, more than the limit of 1024"
    );
    assert!(Filter::new("", "").is_err());
}

#[test]
fn herz_encode_exact_bytes() {
    let mut out = Vec::new();
    encode_skip_packet(12, SkipReason::Filtered, &mut out);
    assert_eq!(out, b"\x00\x16+HERZ SKIP 12 filtered");
    assert_eq!(
        HerzControl::parse(match one(&out) {
            Packet::Debug(text) => text,
            other => panic!("{other:?}"),
        }),
        Ok(Some(HerzControl::Skip {
            count: 12,
            reason: SkipReason::Filtered
        }))
    );

    out.clear();
    let filter = Filter::new("AAPL,MSFT", "BR,ES").unwrap();
    HerzControl::Filter(filter).encode(&mut out);
    assert_eq!(out, b"HERZ FILTER symbols=AAPL,MSFT prefixes=BR,ES");

    out.clear();
    HerzControl::Filter(filter).encode_packet(&mut out).unwrap();
    assert_eq!(
        out,
        b"\x00\x2d+HERZ FILTER symbols=AAPL,MSFT prefixes=BR,ES"
    );

    out.clear();
    encode_error_packet("no", &mut out).unwrap();
    assert_eq!(out, b"\x00\x0e+HERZ ERROR no");

    out.clear();
    encode_skip_packet(u64::MAX, SkipReason::Conflated, &mut out);
    assert_eq!(
        out.len(),
        3 + "HERZ SKIP 18446744073709551615 conflated".len()
    );
}

#[test]
fn herz_round_trips() {
    let filter = Filter::new("A,B", "").unwrap();
    let controls = [
        HerzControl::Filter(filter),
        HerzControl::Skip {
            count: 1,
            reason: SkipReason::Dropped,
        },
        HerzControl::Skip {
            count: 99,
            reason: SkipReason::Other,
        },
        HerzControl::Error("slow consumer"),
        HerzControl::Snapshot,
        HerzControl::Live { next: 1 },
        HerzControl::Live { next: u64::MAX },
    ];
    for c in controls {
        let mut payload = Vec::new();
        c.encode(&mut payload);
        assert_eq!(HerzControl::parse(&payload), Ok(Some(c)));
        let mut packet = Vec::new();
        c.encode_packet(&mut packet).unwrap();
        assert_eq!(one(&packet), Packet::Debug(&payload));
    }
    let huge = "x".repeat(MAX_PAYLOAD_LEN);
    let mut out = vec![1, 2, 3];
    assert!(HerzControl::Error(&huge).encode_packet(&mut out).is_err());
    assert_eq!(out, [1, 2, 3]);
}

#[test]
fn herz_filter_splits_into_packets() {
    let symbols: Vec<String> = (0..300).map(|i| format!("SYM{i}")).collect();
    let symbols = symbols.join(",");
    let prefixes: Vec<String> = (0..50).map(|i| format!("P{i}")).collect();
    let prefixes = prefixes.join(",");
    let filter = Filter::new(&symbols, &prefixes).unwrap();

    let mut out = vec![0xAB];
    let n = encode_filter_packets(&filter, DEFAULT_MAX_CLIENT_PACKET_LEN, &mut out).unwrap();
    assert!(n > 1, "{n} packets");
    let mut rest = &out[1..];
    let (mut got_symbols, mut got_prefixes) = (Vec::new(), Vec::new());
    let mut packets = 0;
    while let Some((p, used)) = next_client_packet(rest, DEFAULT_MAX_CLIENT_PACKET_LEN).unwrap() {
        let Packet::Debug(text) = p else {
            panic!("{p:?}")
        };
        let Some(HerzControl::Filter(f)) = HerzControl::parse(text).unwrap() else {
            panic!("not a filter")
        };
        got_symbols.extend(f.symbols());
        got_prefixes.extend(f.prefixes());
        packets += 1;
        rest = &rest[used..];
    }
    assert!(rest.is_empty());
    assert_eq!(packets, n);
    assert_eq!(got_symbols, filter.symbols().collect::<Vec<_>>());
    assert_eq!(got_prefixes, filter.prefixes().collect::<Vec<_>>());

    // A small filter is one packet, identical to encode_packet.
    let small = Filter::new("AAPL", "").unwrap();
    let mut a = Vec::new();
    assert_eq!(encode_filter_packets(&small, 1024, &mut a), Ok(1));
    let mut b = Vec::new();
    HerzControl::Filter(small).encode_packet(&mut b).unwrap();
    assert_eq!(a, b);

    // Too small a limit for one entry leaves `out` unchanged.
    let mut out = vec![7];
    let err = encode_filter_packets(&Filter::new("AAPL", "").unwrap(), 20, &mut out).unwrap_err();
    assert_eq!(
        err.to_string(),
        "a packet limit of 20 bytes cannot carry the HERZ FILTER entry \"AAPL\" (25 bytes needed)"
    );
    assert_eq!(out, [7]);
    // Exactly enough: one entry per packet.
    let two = Filter::new("AAPL,MSFT", "").unwrap();
    let mut out = Vec::new();
    assert_eq!(encode_filter_packets(&two, 25, &mut out), Ok(2));
}

/// The contract the docs promise: with SKIP markers, a filtered client's implicit counter always
/// equals the journal sequence, so a reconnect at any point resumes without loss or duplicates.
#[test]
fn herz_filtered_client_resumes_exactly() {
    let journal: Vec<Symbol> = (0..200)
        .map(|i| Symbol::new(["AAPL", "MSFT", "BRK.B", "IBM"][i * 7 % 4]).unwrap())
        .collect();
    let filter = Filter::new("AAPL", "BR").unwrap();
    let wanted: Vec<u64> = (1..=journal.len() as u64)
        .filter(|&seq| filter.matches(journal[seq as usize - 1].as_padded()))
        .collect();

    // Server: everything from `from` on, skips coalesced, flushed before the next S packet.
    let serve = |from: u64, out: &mut Vec<u8>| {
        let mut pending = 0;
        for seq in from..=journal.len() as u64 {
            let symbol = journal[seq as usize - 1];
            if filter.matches(symbol.as_padded()) {
                if pending > 0 {
                    encode_skip_packet(pending, SkipReason::Filtered, out);
                    pending = 0;
                }
                encode_sequenced(&seq.to_be_bytes(), out).unwrap();
            } else {
                pending += 1;
            }
        }
        if pending > 0 {
            encode_skip_packet(pending, SkipReason::Filtered, out);
        }
    };

    for disconnect_after in [0usize, 1, 2, 5, 17, 60, 1000] {
        let mut received = Vec::new();
        let mut next_seq = 1u64;
        let mut stream = Vec::new();
        serve(next_seq, &mut stream);
        let mut rest = &stream[..];
        // First connection: read `disconnect_after` packets, then the link drops.
        for _ in 0..disconnect_after {
            let Some((p, used)) = next_server_packet(rest, MAX_PACKET_LEN).unwrap() else {
                break;
            };
            rest = &rest[used..];
            match p {
                Packet::SequencedData(msg) => {
                    assert_eq!(u64::from_be_bytes(msg.try_into().unwrap()), next_seq);
                    received.push(next_seq);
                    next_seq += 1;
                }
                Packet::Debug(text) => match HerzControl::parse(text).unwrap() {
                    Some(HerzControl::Skip { count, .. }) => next_seq += count,
                    other => panic!("{other:?}"),
                },
                other => panic!("{other:?}"),
            }
        }
        // Reconnect with the counter.
        let mut stream = Vec::new();
        serve(next_seq, &mut stream);
        let mut rest = &stream[..];
        while let Some((p, used)) = next_server_packet(rest, MAX_PACKET_LEN).unwrap() {
            rest = &rest[used..];
            match p {
                Packet::SequencedData(msg) => {
                    assert_eq!(u64::from_be_bytes(msg.try_into().unwrap()), next_seq);
                    received.push(next_seq);
                    next_seq += 1;
                }
                Packet::Debug(text) => {
                    if let Some(HerzControl::Skip { count, .. }) = HerzControl::parse(text).unwrap()
                    {
                        next_seq += count;
                    }
                }
                other => panic!("{other:?}"),
            }
        }
        assert_eq!(received, wanted, "disconnect after {disconnect_after}");
        assert_eq!(next_seq, journal.len() as u64 + 1);
    }
}

#[test]
fn random_bytes_never_panic() {
    let mut state = 0xD1B5_4A32_D192_ED03_u64;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    let types = b"+AJSHZLURO";
    let mut buf = [0u8; 128];
    for _ in 0..20_000 {
        for b in buf.iter_mut() {
            *b = next() as u8;
        }
        let r = next();
        // Bias towards plausible headers so that deeper paths are reached.
        if r & 1 == 0 {
            buf[0] = 0;
            buf[1] = (r >> 8) as u8 % 64;
            buf[2] = types[(r >> 16) as usize % types.len()];
        }
        if r & 2 == 0 {
            buf[3..8].copy_from_slice(b"HERZ ");
        }
        let len = (r >> 32) as usize % (buf.len() + 1);
        let mut rest = &buf[..len];
        for limit in [MAX_PACKET_LEN, 32] {
            let _ = next_client_packet(rest, limit);
            let _ = next_server_packet(rest, limit);
        }
        while let Ok(Some((p, used))) = next_packet(rest) {
            let mut again = Vec::new();
            p.encode(&mut again).unwrap();
            // Everything but numeric fields (leading zeros) re-encodes byte for byte.
            if !matches!(p, Packet::LoginRequest(_) | Packet::LoginAccepted(_)) {
                assert_eq!(again, &rest[..used]);
            }
            assert_eq!(next_packet(&again), Ok(Some((p, again.len()))));
            if let Packet::Debug(text) = p
                && let Ok(Some(c)) = HerzControl::parse(text)
            {
                let mut payload = Vec::new();
                c.encode(&mut payload);
                assert_eq!(HerzControl::parse(&payload), Ok(Some(c)));
            }
            rest = &rest[used..];
        }
        let _ = LoginRequest::parse(&buf[..len.min(46)]);
        let _ = HerzControl::parse(&buf[3..len.max(3)]);
    }
}

#[test]
fn herz_snapshot_and_live_are_strict() {
    assert_eq!(
        HerzControl::parse(b"HERZ SNAPSHOT"),
        Ok(Some(HerzControl::Snapshot))
    );
    assert_eq!(
        HerzControl::parse(b"HERZ  LIVE   42"),
        Ok(Some(HerzControl::Live { next: 42 }))
    );
    for bad in [
        &b"HERZ SNAPSHOT now"[..],
        b"HERZ LIVE",
        b"HERZ LIVE 0",
        b"HERZ LIVE x",
        b"HERZ LIVE 1 2",
        b"HERZ LIVE 18446744073709551616",
    ] {
        assert!(
            HerzControl::parse(bad).is_err(),
            "{}",
            String::from_utf8_lossy(bad)
        );
    }
}
