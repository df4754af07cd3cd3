//! Frame and chunking tests: golden bytes, and every rejection.
use super::*;
use alloc::vec;

#[test]
fn a_small_message_is_one_whole_frame_golden() {
    let bytes = encode_message(b"hi");
    assert_eq!(bytes, [0x00, 0x03, 0x00, b'h', b'i']);
    let mut d = MessageDecoder::default();
    let mut input = &bytes[..];
    assert_eq!(d.decode(&mut input), Ok(Some(b"hi".to_vec())));
    assert!(input.is_empty());
    assert_eq!(d.finish(), Ok(()));
}

#[test]
fn a_chunked_message_golden() {
    // max_payload 40: parts carry 35 bytes; 50 bytes make 2 parts then the end frame.
    let message: Vec<u8> = (0..50u8).collect();
    let frames = split_message(&message, 40);
    assert_eq!(frames.len(), 3);
    assert_eq!(frames[0][..5], [0x01, 0, 0, 0, 0]);
    assert_eq!(frames[0][5..], message[..35]);
    assert_eq!(frames[1][..5], [0x01, 0, 0, 0, 1]);
    assert_eq!(frames[1][5..], message[35..]);
    let hash: [u8; 32] = Sha256::digest(&message).into();
    assert_eq!(frames[2][..5], [0x02, 0, 0, 0, 2]);
    assert_eq!(frames[2][5..], hash);
    let mut r = Reassembler::default();
    assert_eq!(r.push(&frames[0]), Ok(None));
    assert_eq!(r.push(&frames[1]), Ok(None));
    assert_eq!(r.push(&frames[2]), Ok(Some(message)));
    assert!(r.is_idle());
}

#[test]
fn a_large_message_round_trips_through_a_byte_at_a_time_stream() {
    let message: Vec<u8> = (0..200_000u32).map(|i| (i * 7 % 251) as u8).collect();
    let stream = encode_message(&message);
    assert_eq!(stream.len(), message.len() + 4 * (2 + 5) + 2 + END_LEN);
    let mut d = MessageDecoder::default();
    let mut got = None;
    for b in &stream {
        let mut one = core::slice::from_ref(b);
        if let Some(m) = d.decode(&mut one).unwrap() {
            got = Some(m);
        }
    }
    assert_eq!(got, Some(message));
    assert_eq!(d.finish(), Ok(()));
}

#[test]
fn zero_and_oversize_lengths_are_rejected_before_allocating() {
    let mut d = FrameDecoder::new();
    assert_eq!(
        d.decode(&mut &[0x00, 0x00][..]),
        Err(FrameError::EmptyFrame)
    );
    // The error is final.
    assert_eq!(
        d.decode(&mut &[0x00, 0x01, 0x00][..]),
        Err(FrameError::EmptyFrame)
    );
    let mut small = FrameDecoder::with_max_len(100);
    assert_eq!(
        small.decode(&mut &[0x00, 0x65][..]),
        Err(FrameError::Oversize { len: 101, max: 100 })
    );
    assert_eq!(encode_frame(&[], &mut vec![]), Err(FrameError::EmptyFrame));
    assert_eq!(
        encode_frame(&vec![0; 65_536], &mut vec![]),
        Err(FrameError::Oversize {
            len: 65_536,
            max: 65_535
        })
    );
}

#[test]
fn a_stream_ending_inside_a_frame_is_truncated() {
    let mut d = FrameDecoder::new();
    assert_eq!(d.decode(&mut &[0x00, 0x05, 1, 2][..]), Ok(None));
    assert!(!d.is_idle());
    assert_eq!(
        d.finish(),
        Err(FrameError::Truncated {
            expected: 7,
            got: 4
        })
    );
    let mut d = FrameDecoder::new();
    assert_eq!(d.decode(&mut &[0x00][..]), Ok(None));
    assert_eq!(
        d.finish(),
        Err(FrameError::Truncated {
            expected: 2,
            got: 1
        })
    );
}

fn parts(n: usize) -> (Vec<u8>, Vec<Vec<u8>>) {
    let message: Vec<u8> = (0..(35 * n) as u32).map(|i| i as u8).collect();
    let frames = split_message(&message, 40);
    assert_eq!(frames.len(), n + 1);
    (message, frames)
}

fn feed(frames: &[&Vec<u8>]) -> Result<Option<Vec<u8>>, FrameError> {
    let mut r = Reassembler::default();
    let mut last = Ok(None);
    for f in frames {
        last = r.push(f);
        last.clone()?;
    }
    last
}

#[test]
fn gaps_duplicates_and_mismatches_each_have_their_error() {
    let (message, f) = parts(3);
    assert_eq!(feed(&[&f[0], &f[1], &f[2], &f[3]]), Ok(Some(message)));
    assert_eq!(
        feed(&[&f[0], &f[2]]),
        Err(FrameError::PartGap {
            expected: 1,
            got: 2
        })
    );
    assert_eq!(
        feed(&[&f[0], &f[1], &f[1]]),
        Err(FrameError::DuplicatePart { index: 1 })
    );
    assert_eq!(
        feed(&[&f[0], &f[1], &f[3]]),
        Err(FrameError::PartCountMismatch {
            declared: 3,
            received: 2
        })
    );
    let mut tampered = f[1].clone();
    tampered[7] ^= 1;
    assert_eq!(
        feed(&[&f[0], &tampered, &f[2], &f[3]]),
        Err(FrameError::MessageHashMismatch)
    );
    assert_eq!(feed(&[&f[3]]), Err(FrameError::EndWithoutParts));
    let whole = vec![0u8, 1, 2];
    assert_eq!(
        feed(&[&f[0], &whole]),
        Err(FrameError::UnfinishedMessage { parts: 1 })
    );
    assert_eq!(
        feed(&[&vec![9u8, 1]]),
        Err(FrameError::UnknownKind { kind: 9 })
    );
    assert_eq!(
        feed(&[&vec![1u8, 0, 0, 0, 0]]),
        Err(FrameError::BadLayout { kind: 1, len: 5 })
    );
    assert_eq!(
        feed(&[&f[0], &f[3][..36].to_vec()]),
        Err(FrameError::BadLayout { kind: 2, len: 36 })
    );
}

#[test]
fn a_message_over_the_limit_is_refused_before_it_is_buffered() {
    let (_, f) = parts(3);
    let mut r = Reassembler::new(60);
    assert_eq!(r.push(&f[0]), Ok(None));
    assert_eq!(
        r.push(&f[1]),
        Err(FrameError::MessageTooLarge { len: 70, max: 60 })
    );
    let mut r = Reassembler::new(1);
    assert_eq!(
        r.push(&[0, 1, 2]),
        Err(FrameError::MessageTooLarge { len: 2, max: 1 })
    );
}

#[test]
fn a_stream_ending_between_parts_is_reported() {
    let (_, f) = parts(2);
    let mut stream = vec![];
    encode_frame(&f[0], &mut stream).unwrap();
    let mut d = MessageDecoder::default();
    assert_eq!(d.decode(&mut &stream[..]), Ok(None));
    assert_eq!(d.finish(), Err(FrameError::EndedInMessage { parts: 1 }));
}

#[test]
fn encrypted_frames_leave_room_for_the_tag() {
    let message = vec![7u8; 100_000];
    for payload in split_message(&message, MAX_PLAINTEXT_LEN) {
        assert!(payload.len() + TAG_LEN <= MAX_FRAME_LEN);
    }
}
