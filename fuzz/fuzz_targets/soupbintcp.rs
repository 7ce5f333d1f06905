//! Fuzzes SoupBinTCP framing, Login Request parsing and Herz control text: nothing panics,
//! framing makes progress, and decoded packets re-encode to packets that decode the same.
#![no_main]

use herz_core::protocol::soupbintcp::{
    DEFAULT_MAX_CLIENT_PACKET_LEN, HerzControl, LoginRequest, MAX_PACKET_LEN, Packet,
    next_client_packet, next_packet, next_server_packet,
};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // Frame the whole input as one receive buffer, the way a connection loop does.
    let mut rest = data;
    loop {
        match next_packet(rest) {
            Ok(Some((packet, used))) => {
                assert!(used >= 3 && used <= rest.len());
                check_packet(packet);
                rest = &rest[used..];
            }
            Ok(None) => break,
            Err(e) => {
                let _ = e.to_string();
                break;
            }
        }
    }

    // Directional framing never accepts what plain framing rejects.
    for limit in [MAX_PACKET_LEN, DEFAULT_MAX_CLIENT_PACKET_LEN, 16] {
        for result in [next_client_packet(data, limit), next_server_packet(data, limit)] {
            if let Ok(Some((packet, used))) = result {
                assert_eq!(next_packet(data), Ok(Some((packet, used))));
            }
        }
    }

    if let Ok(login) = LoginRequest::parse(data) {
        let again = LoginRequest::parse(&login.to_payload()).unwrap();
        assert_eq!(again, login);
    }

    if let Ok(Some(control)) = HerzControl::parse(data) {
        check_control(control);
    }
});

fn check_packet(packet: Packet<'_>) {
    let mut bytes = Vec::new();
    packet.encode(&mut bytes).unwrap();
    assert_eq!(bytes.len(), packet.encoded_len());
    assert_eq!(next_packet(&bytes), Ok(Some((packet, bytes.len()))));
    if let Packet::Debug(text) = packet
        && let Ok(Some(control)) = HerzControl::parse(text)
    {
        check_control(control);
    }
}

fn check_control(control: HerzControl<'_>) {
    let mut payload = Vec::new();
    control.encode(&mut payload);
    assert_eq!(HerzControl::parse(&payload), Ok(Some(control)));
    if let HerzControl::Filter(filter) = control {
        assert_eq!(
            filter.symbols().count() + filter.prefixes().count(),
            filter.len()
        );
        for symbol in filter.symbols() {
            assert!(filter.matches(symbol.as_padded()));
        }
    }
}
