use super::*;
use alloc::vec;

const SERVICE_NAME: &[u8] = b"\x08_outpost\x04_tcp\x05local\x00";
const INSTANCE_NAME: &[u8] = b"\x14outpost-0123456789ab\x08_outpost\x04_tcp\x05local\x00";
const HOST_NAME: &[u8] = b"\x14outpost-0123456789ab\x05local\x00";

fn hub() -> HubRecord {
    HubRecord {
        site: "0123456789abcdef0123456789abcdef".into(),
        port: 7420,
        ip: Ipv4Addr::new(10, 0, 0, 2),
    }
}

#[test]
fn query_bytes() {
    let expected = [
        b"\x12\x34\x00\x00\x00\x01\x00\x00\x00\x00\x00\x00".as_slice(),
        SERVICE_NAME,
        b"\x00\x0c\x00\x01",
    ]
    .concat();
    assert_eq!(encode_query(0x1234), expected);
    let parsed = parse(&expected).unwrap();
    assert_eq!(parsed.id, 0x1234);
    assert!(!parsed.is_response());
    assert_eq!(
        parsed.questions,
        vec![Question {
            name: SERVICE.into(),
            qtype: TYPE_PTR,
            unicast_response: false
        }]
    );
}

/// A legacy-unicast answer to a PTR query: id and question echoed, PTR as the answer, SRV, TXT
/// and A as additional records, TTL 10, no cache-flush bits, names uncompressed.
#[test]
fn legacy_unicast_answer_bytes() {
    let query = parse(&encode_query(0x1234)).unwrap();
    let ttl = b"\x00\x00\x00\x0a".as_slice();
    let expected = [
        b"\x12\x34\x84\x00\x00\x01\x00\x01\x00\x00\x00\x03".as_slice(),
        SERVICE_NAME,
        b"\x00\x0c\x00\x01",
        // PTR
        SERVICE_NAME,
        b"\x00\x0c\x00\x01",
        ttl,
        b"\x00\x2a",
        INSTANCE_NAME,
        // SRV: priority 0, weight 0, port 7420, target
        INSTANCE_NAME,
        b"\x00\x21\x00\x01",
        ttl,
        b"\x00\x22\x00\x00\x00\x00\x1c\xfc",
        HOST_NAME,
        // TXT
        INSTANCE_NAME,
        b"\x00\x10\x00\x01",
        ttl,
        b"\x00\x2a\x25site=0123456789abcdef0123456789abcdef\x03v=1",
        // A
        HOST_NAME,
        b"\x00\x01\x00\x01",
        ttl,
        b"\x00\x04\x0a\x00\x00\x02",
    ]
    .concat();
    assert_eq!(answer(&query, &hub(), true).unwrap(), expected);
}

#[test]
fn multicast_answer_has_id_zero_no_question_and_cache_flush_on_unique_records() {
    let query = parse(&encode_query(0x1234)).unwrap();
    let bytes = answer(&query, &hub(), false).unwrap();
    assert_eq!(
        &bytes[..12],
        b"\x00\x00\x84\x00\x00\x00\x00\x01\x00\x00\x00\x03"
    );
    // The PTR record follows the header directly, class IN without the flush bit, TTL 120.
    let ptr_class = 12 + SERVICE_NAME.len() + 2;
    assert_eq!(
        &bytes[ptr_class..ptr_class + 6],
        b"\x00\x01\x00\x00\x00\x78"
    );
    let srv_class = 12 + SERVICE_NAME.len() + 10 + INSTANCE_NAME.len() + INSTANCE_NAME.len() + 2;
    assert_eq!(&bytes[srv_class..srv_class + 2], b"\x80\x01");
}

#[test]
fn answers_round_trip_to_the_hub() {
    let query = parse(&encode_query(7)).unwrap();
    for legacy in [true, false] {
        let message = parse(&answer(&query, &hub(), legacy).unwrap()).unwrap();
        assert!(message.is_response());
        assert_eq!(
            hubs_in(&message),
            vec![FoundHub {
                site: hub().site,
                addr: SocketAddrV4::new(Ipv4Addr::new(10, 0, 0, 2), 7420),
            }]
        );
    }
}

#[test]
fn direct_questions_for_the_instance_and_host_are_answered_case_insensitively() {
    let mut query = parse(&encode_query(1)).unwrap();
    query.questions = vec![
        Question {
            name: "OUTPOST-0123456789AB._outpost._TCP.local".into(),
            qtype: TYPE_SRV,
            unicast_response: true,
        },
        Question {
            name: "outpost-0123456789ab.local".into(),
            qtype: TYPE_ANY,
            unicast_response: true,
        },
    ];
    let bytes = answer(&query, &hub(), false).unwrap();
    assert_eq!(&bytes[4..12], b"\x00\x00\x00\x02\x00\x00\x00\x02");
    let message = parse(&bytes).unwrap();
    let types: Vec<u16> = message.records.iter().map(|r| r.rtype).collect();
    assert_eq!(types, [TYPE_SRV, TYPE_A, TYPE_PTR, TYPE_TXT]);
}

#[test]
fn other_questions_and_responses_get_no_answer() {
    let mut query = parse(&encode_query(1)).unwrap();
    query.questions[0].name = "_http._tcp.local".into();
    assert_eq!(answer(&query, &hub(), false), None);
    let response =
        parse(&answer(&parse(&encode_query(1)).unwrap(), &hub(), false).unwrap()).unwrap();
    assert_eq!(answer(&response, &hub(), false), None);
}

#[test]
fn compressed_names_are_followed() {
    let packet = [
        b"\x00\x00\x84\x00\x00\x00\x00\x01\x00\x00\x00\x00".as_slice(),
        SERVICE_NAME,
        b"\x00\x0c\x00\x01\x00\x00\x00\x78\x00\x06\x03hub\xc0\x0c",
    ]
    .concat();
    let message = parse(&packet).unwrap();
    assert_eq!(
        message.records,
        vec![Record {
            name: SERVICE.into(),
            rtype: TYPE_PTR,
            ttl: 120,
            data: RData::Ptr("hub._outpost._tcp.local".into()),
        }]
    );
}

#[test]
fn malformed_packets_are_errors_not_panics() {
    // A name that points at itself.
    let looping = b"\x00\x00\x00\x00\x00\x01\x00\x00\x00\x00\x00\x00\xc0\x0c\x00\x0c\x00\x01";
    assert_eq!(parse(looping), Err(DnsError::BadName));
    // A reserved label type (0b01xxxxxx).
    let reserved = b"\x00\x00\x00\x00\x00\x01\x00\x00\x00\x00\x00\x00\x41\x00\x00\x0c\x00\x01";
    assert_eq!(parse(reserved), Err(DnsError::BadName));
    // Every truncation of a valid answer.
    let full = answer(&parse(&encode_query(1)).unwrap(), &hub(), true).unwrap();
    for len in 0..full.len() {
        assert_eq!(
            parse(&full[..len]),
            Err(DnsError::Truncated),
            "length {len}"
        );
    }
    // A record whose length runs past the end.
    let mut long = full.clone();
    let last_len = long.len() - 6;
    long[last_len] = 0x10;
    assert_eq!(parse(&long), Err(DnsError::Truncated));
}
