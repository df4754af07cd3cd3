//! Message unit tests (golden bytes for every message are in `tests/golden.rs`).
use super::*;
use alloc::vec;

#[test]
fn the_tag_is_the_first_byte_of_the_encoding() {
    let s = SessionId([1; 16]);
    for m in [
        Message::Commit { session: s },
        Message::Notify,
        Message::Bye,
        Message::Ping { nonce: 1 },
        Message::Pong { nonce: 2 },
        Message::Chunk {
            batch: Bytes(vec![1, 2]),
        },
    ] {
        assert_eq!(m.encode()[0] as u64, m.tag());
    }
}

#[test]
fn an_ack_with_an_empty_range_is_refused() {
    let m = Message::Ack {
        session: SessionId([1; 16]),
        covered: vec![Covered {
            origin: SiteId([2; 16]),
            scope: String::new(),
            range: SeqRange { lo: 3, hi: 2 },
            batch_sha256: [0; 32],
        }],
    };
    assert_eq!(
        Message::decode(&m.encode(), 1000),
        Err(MessageError::InvalidField {
            what: "ack range is empty or starts at 0"
        })
    );
}

#[test]
fn a_tag_too_wide_for_u64_is_a_bad_varint() {
    assert_eq!(
        Message::decode(&[0xff; 11], 1000),
        Err(MessageError::BadVarint)
    );
    assert_eq!(Message::decode(&[0x80], 1000), Err(MessageError::Truncated));
}
