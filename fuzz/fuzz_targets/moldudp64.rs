//! Fuzzes MoldUDP64 parsing: downstream packets and re-requests never panic, and whatever
//! parses rebuilds to the same bytes.
#![no_main]

use herz_core::protocol::moldudp64::{
    HEADER_LEN, Packet, PacketBuilder, RequestPacket, encode_end_of_session, encode_heartbeat,
};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(packet) = Packet::parse(data) {
        let messages: Vec<&[u8]> = packet.messages().collect();
        assert_eq!(messages.len(), usize::from(packet.message_count()));
        assert_eq!(packet.messages().len(), messages.len());

        let mut rebuilt = Vec::new();
        if packet.is_heartbeat() {
            encode_heartbeat(packet.session(), packet.sequence(), &mut rebuilt);
        } else if packet.is_end_of_session() {
            encode_end_of_session(packet.session(), packet.sequence(), &mut rebuilt);
        } else {
            // The builder must accept exactly these messages into a packet of this size.
            let mut builder = PacketBuilder::new(data.len().max(HEADER_LEN + 2));
            builder.start(packet.session(), packet.sequence());
            for msg in &messages {
                assert_eq!(builder.try_push(msg), Ok(true));
            }
            assert_eq!(builder.next_sequence(), packet.next_sequence());
            rebuilt.extend_from_slice(builder.finish());
        }
        assert_eq!(rebuilt, data);

        for (i, (seq, msg)) in packet.sequenced_messages().enumerate() {
            assert_eq!(seq, packet.sequence() + i as u64);
            assert_eq!(msg, messages[i]);
        }
    }

    match RequestPacket::decode(data) {
        Ok(request) => {
            assert_eq!(request.to_bytes(), data);
            let mut out = Vec::new();
            request.encode(&mut out);
            assert_eq!(out, data);
        }
        Err(e) => {
            assert_ne!(data.len(), 20, "{e}");
            let _ = e.to_string();
        }
    }
});
