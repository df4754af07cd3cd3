//! The session state machines: two-phase push and its idempotence, push-again cases, pull in
//! chunks with resumption, typed errors and messages refused in the wrong state.

mod session_support;

use outpost_protocol::batch::codec::Limits;
use outpost_protocol::message::{Bytes, ErrorCode, Message, PushAgainReason, SessionId};
use outpost_protocol::session::{ClientSession, ServerSession, ServerStore, SessionError};
use outpost_protocol::{SiteId, VersionVector, PROTOCOL_VERSION};
use proptest::prelude::*;
use session_support::*;
use std::collections::HashMap;

const OTHER: SiteId = SiteId([0x22; 16]);
const THIRD: SiteId = SiteId([0x33; 16]);

fn hello(session: u8) -> Message {
    device_hello(SessionId([session; 16]), Vec::new())
}

fn drain(server: &mut ServerSession<MemServer>, store: &mut MemServer) -> Vec<Message> {
    let mut out = vec![];
    while let Some(m) = server.poll(store).unwrap() {
        out.push(m);
    }
    out
}

fn push(session: u8, bytes: Vec<u8>) -> Message {
    Message::Push {
        session: SessionId([session; 16]),
        batch: Bytes(bytes),
    }
}

fn commit(session: u8) -> Message {
    Message::Commit {
        session: SessionId([session; 16]),
    }
}

/// A new server session on `sstore` after a hello for session 4 (its answer drained), then
/// `msgs`, each handled at its time: what the server answered them.
fn answers(sstore: &mut MemServer, msgs: Vec<(Message, u64)>) -> Vec<Message> {
    let mut server = ServerSession::<MemServer>::new(server_config());
    server.handle(hello(4), 0, sstore).unwrap();
    drain(&mut server, sstore);
    for (m, at) in msgs {
        server.handle(m, at, sstore).unwrap();
    }
    drain(&mut server, sstore)
}

/// The server's answer to session 4's commit: push again, for `reason`.
fn push_again(reason: PushAgainReason) -> Vec<Message> {
    vec![Message::PushAgain {
        session: SessionId([4; 16]),
        reason,
    }]
}

#[test]
fn a_full_session_pushes_what_the_server_lacks_and_pulls_what_the_client_lacks() {
    let mut sstore = MemServer::holding(vec![
        batch(OTHER, 1, 2),
        batch(OTHER, 3, 3),
        batch(DEVICE, 1, 1),
    ]);
    let mut cstore = Device::holding(
        DEVICE,
        vec![
            batch(DEVICE, 1, 1),
            batch(DEVICE, 2, 4),
            batch(DEVICE, 5, 6),
        ],
    );
    let mut client = ClientSession::new(client_config(1));
    let mut server = ServerSession::new(server_config());
    let (t, r) = run_to_end(&mut client, &mut cstore, &mut server, &mut sstore);
    r.unwrap();
    // Only what the server lacked was pushed, then committed once.
    let pushes: Vec<_> = t
        .to_server
        .iter()
        .filter(|m| matches!(m, Message::Push { .. }))
        .collect();
    assert_eq!(pushes.len(), 2);
    assert_eq!(sstore.commits, 1);
    assert_eq!(sstore.vector().unwrap().get(&DEVICE.into()), 6);
    // The ack names exactly those batches, and the client recorded it.
    let ack = t
        .to_client
        .iter()
        .find(|m| matches!(m, Message::Ack { .. }))
        .unwrap();
    let Message::Ack { covered, .. } = ack else {
        unreachable!()
    };
    assert_eq!(
        covered
            .iter()
            .map(|c| (c.range.lo, c.range.hi))
            .collect::<Vec<_>>(),
        [(2, 4), (5, 6)]
    );
    assert_eq!(&cstore.acked, covered);
    // The pull brought the other origin's batches, never the client's own.
    assert_eq!(cstore.applied.len(), 2);
    assert!(cstore.applied.iter().all(|(o, _)| *o == OTHER));
    assert_eq!(cstore.vector.get(&OTHER.into()), 3);
    assert!(matches!(t.to_client.last(), Some(Message::PullDone { .. })));
    assert_eq!(t.to_server.last(), Some(&Message::Bye));
    assert!(client.is_done() && server.is_done());
    assert_eq!(client.server_hello().unwrap().site, HUB);
    assert_eq!(server.peer_hello().unwrap().wall_clock_ms, 2_000);
}

#[test]
fn nothing_to_push_goes_straight_to_the_pull() {
    let mut sstore = MemServer::holding(vec![batch(OTHER, 1, 1)]);
    let mut cstore = Device::holding(DEVICE, vec![]);
    let mut client = ClientSession::new(client_config(1));
    let mut server = ServerSession::new(server_config());
    let (t, r) = run_to_end(&mut client, &mut cstore, &mut server, &mut sstore);
    r.unwrap();
    assert!(matches!(t.to_server[1], Message::Pull { .. }));
    assert_eq!(sstore.commits, 0);
    assert_eq!(cstore.applied.len(), 1);
}

#[test]
fn a_retried_commit_with_the_same_session_and_content_gets_the_same_ack() {
    let mut sstore = MemServer::default();
    let own = vec![batch(DEVICE, 1, 3)];
    // First attempt: the ack is lost (the connection drops right after the commit).
    let mut cstore = Device::holding(DEVICE, own.clone());
    let mut client = ClientSession::new(client_config(9));
    let mut server = ServerSession::new(server_config());
    let (t1, r) = run(&mut client, &mut cstore, &mut server, &mut sstore, 1);
    r.unwrap();
    assert_eq!(sstore.commits, 1);
    assert!(cstore.acked.is_empty(), "the ack never arrived");
    // The retry under the same id, pushing against the server's hello vector from before (as a
    // client that resumes its recorded push does), gets the identical ack and stores nothing new.
    let mut server = ServerSession::<MemServer>::new(server_config());
    server.handle(hello(9), 0, &mut sstore).unwrap();
    drain(&mut server, &mut sstore);
    server
        .handle(push(9, own[0].clone()), 0, &mut sstore)
        .unwrap();
    server.handle(commit(9), 0, &mut sstore).unwrap();
    let again = drain(&mut server, &mut sstore);
    let first_ack = sstore.sessions[&SessionId([9; 16])].covered.clone();
    assert_eq!(
        again,
        vec![Message::Ack {
            session: SessionId([9; 16]),
            covered: first_ack
        }]
    );
    assert_eq!(sstore.commits, 1);
    assert_eq!(
        t1.to_server
            .iter()
            .filter(|m| matches!(m, Message::Commit { .. }))
            .count(),
        1
    );
}

#[test]
fn different_content_under_a_committed_session_id_gets_push_again() {
    let mut sstore = MemServer::default();
    let mut server = ServerSession::<MemServer>::new(server_config());
    server.handle(hello(4), 0, &mut sstore).unwrap();
    server
        .handle(push(4, batch(DEVICE, 1, 2)), 0, &mut sstore)
        .unwrap();
    server.handle(commit(4), 0, &mut sstore).unwrap();
    let pushed = vec![(push(4, batch(DEVICE, 1, 3)), 0), (commit(4), 0)];
    assert_eq!(
        answers(&mut sstore, pushed),
        push_again(PushAgainReason::DifferentContent)
    );
    assert_eq!(sstore.commits, 1);
}

#[test]
fn a_commit_with_nothing_staged_gets_push_again_unknown_session() {
    let mut sstore = MemServer::default();
    assert_eq!(
        answers(&mut sstore, vec![(commit(4), 0)]),
        push_again(PushAgainReason::UnknownSession)
    );
    assert_eq!(sstore.commits, 0);
}

#[test]
fn expired_staging_gets_push_again_and_stores_nothing() {
    let mut sstore = MemServer::default();
    let late = vec![(push(4, batch(DEVICE, 1, 2)), 1_000), (commit(4), 61_001)];
    assert_eq!(
        answers(&mut sstore, late),
        push_again(PushAgainReason::SessionExpired)
    );
    assert_eq!(sstore.commits, 0);
}

#[test]
fn a_push_leaving_a_gap_gets_push_again() {
    let mut sstore = MemServer::default();
    let gap = vec![(push(4, batch(DEVICE, 3, 4)), 0), (commit(4), 0)];
    assert_eq!(answers(&mut sstore, gap), push_again(PushAgainReason::Gap));
    assert!(sstore.batches.is_empty());
}

#[test]
fn the_client_pushes_again_under_a_fresh_session_id_and_gives_up_after_its_limit() {
    // The server already recorded session 5 with other content: the client's first commit is
    // refused, its second (fresh id) is acked.
    let mut sstore = MemServer::default();
    let mut s0 = ServerSession::<MemServer>::new(server_config());
    s0.handle(hello(5), 0, &mut sstore).unwrap();
    s0.handle(push(5, batch(DEVICE, 1, 1)), 0, &mut sstore)
        .unwrap();
    s0.handle(commit(5), 0, &mut sstore).unwrap();
    sstore.batches.clear(); // the server lost the data but not the session record
    let mut cstore = Device::holding(DEVICE, vec![batch(DEVICE, 1, 2)]);
    let mut client = ClientSession::new(client_config(5));
    let mut server = ServerSession::new(server_config());
    let (t, r) = run_to_end(&mut client, &mut cstore, &mut server, &mut sstore);
    r.unwrap();
    assert!(t.to_client.iter().any(|m| matches!(
        m,
        Message::PushAgain {
            reason: PushAgainReason::DifferentContent,
            ..
        }
    )));
    assert_ne!(client.session(), SessionId([5; 16]));
    assert_eq!(sstore.vector().unwrap().get(&DEVICE.into()), 2);
    // With a limit of one attempt the client stops with a typed error.
    let mut cfg = client_config(5);
    cfg.max_push_attempts = 1;
    let mut cstore = Device::holding(DEVICE, vec![batch(DEVICE, 1, 3)]);
    let mut client = ClientSession::new(cfg);
    let mut server = ServerSession::new(server_config());
    let (_, r) = run_to_end(&mut client, &mut cstore, &mut server, &mut sstore);
    assert!(
        matches!(
            r,
            Err(SessionError::PushAttemptsExhausted { attempts: 1, .. })
        ),
        "{r:?}"
    );
}

#[test]
fn an_interrupted_pull_resumes_without_downloading_twice() {
    let server_batches: Vec<Vec<u8>> = (0..10u64)
        .map(|i| batch(if i % 2 == 0 { OTHER } else { THIRD }, i / 2 + 1, i / 2 + 1))
        .collect();
    let mut sstore = MemServer::holding(server_batches);
    let mut cstore = Device::holding(DEVICE, vec![]);
    let mut client = ClientSession::new(client_config(1));
    let mut server = ServerSession::new(server_config());
    // Hello, the pull's size and 4 chunks, then the connection drops.
    let (_, r) = run(&mut client, &mut cstore, &mut server, &mut sstore, 6);
    r.unwrap();
    assert_eq!(cstore.applied.len(), 4);
    let mut client = ClientSession::new(client_config(2));
    let mut server = ServerSession::new(server_config());
    let (t, r) = run_to_end(&mut client, &mut cstore, &mut server, &mut sstore);
    r.unwrap();
    let chunks = t
        .to_client
        .iter()
        .filter(|m| matches!(m, Message::Chunk { .. }))
        .count();
    assert_eq!(chunks, 6, "only what the first pull did not deliver");
    assert_eq!(cstore.vector.get(&OTHER.into()), 5);
    assert_eq!(cstore.vector.get(&THIRD.into()), 5);
}

#[test]
fn messages_not_allowed_in_the_current_state_are_rejected() {
    let mut sstore = MemServer::default();
    // Before hello, a push.
    let mut server = ServerSession::<MemServer>::new(server_config());
    let e = server
        .handle(push(1, batch(DEVICE, 1, 1)), 0, &mut sstore)
        .unwrap_err();
    assert_eq!(
        e,
        SessionError::Unexpected {
            state: "awaiting hello",
            tag: 1
        }
    );
    assert!(matches!(
        e.to_message(),
        Some(Message::Error {
            code: ErrorCode::BadMessage,
            ..
        })
    ));
    assert!(server.poll(&mut sstore).unwrap().is_none());
    assert_eq!(
        server.handle(hello(1), 0, &mut sstore).unwrap_err(),
        SessionError::Finished
    );
    // A server-only message sent to a server.
    let mut server = ServerSession::<MemServer>::new(server_config());
    server.handle(hello(1), 0, &mut sstore).unwrap();
    let e = server
        .handle(
            Message::Chunk {
                batch: Bytes(vec![1]),
            },
            0,
            &mut sstore,
        )
        .unwrap_err();
    assert_eq!(
        e,
        SessionError::Unexpected {
            state: "ready",
            tag: 6
        }
    );
    // A second hello.
    let mut server = ServerSession::<MemServer>::new(server_config());
    server.handle(hello(1), 0, &mut sstore).unwrap();
    assert_eq!(
        server.handle(hello(1), 0, &mut sstore).unwrap_err(),
        SessionError::Unexpected {
            state: "ready",
            tag: 0
        }
    );
    // A client receiving a chunk while it waits for the hello.
    let mut cstore = Device::holding(DEVICE, vec![]);
    let mut client = ClientSession::new(client_config(1));
    client.poll(&mut cstore).unwrap().unwrap();
    let e = client
        .handle(
            Message::Chunk {
                batch: Bytes(batch(OTHER, 1, 1)),
            },
            &mut cstore,
        )
        .unwrap_err();
    assert_eq!(
        e,
        SessionError::Unexpected {
            state: "awaiting hello",
            tag: 6
        }
    );
    assert!(cstore.applied.is_empty());
}

#[test]
fn a_push_under_another_session_id_is_rejected() {
    let mut sstore = MemServer::default();
    let mut server = ServerSession::<MemServer>::new(server_config());
    server.handle(hello(1), 0, &mut sstore).unwrap();
    server
        .handle(push(1, batch(DEVICE, 1, 1)), 0, &mut sstore)
        .unwrap();
    assert_eq!(
        server
            .handle(push(2, batch(DEVICE, 2, 2)), 0, &mut sstore)
            .unwrap_err(),
        SessionError::WrongSession
    );
    let mut server = ServerSession::<MemServer>::new(server_config());
    server.handle(hello(1), 0, &mut sstore).unwrap();
    server
        .handle(push(1, batch(DEVICE, 1, 1)), 0, &mut sstore)
        .unwrap();
    assert_eq!(
        server.handle(commit(2), 0, &mut sstore).unwrap_err(),
        SessionError::WrongSession
    );
}

#[test]
fn a_bad_batch_ends_the_session_and_stores_nothing() {
    let mut sstore = MemServer::default();
    let mut server = ServerSession::<MemServer>::new(server_config());
    server.handle(hello(1), 0, &mut sstore).unwrap();
    let mut bytes = batch(DEVICE, 1, 1);
    let last = bytes.len() - 1;
    bytes[last] ^= 1; // the body hash no longer matches
    let e = server.handle(push(1, bytes), 0, &mut sstore).unwrap_err();
    assert!(matches!(e, SessionError::BadBatch(_)), "{e:?}");
    assert!(matches!(
        e.to_message(),
        Some(Message::Error {
            code: ErrorCode::BadBatch,
            ..
        })
    ));
    assert!(sstore.batches.is_empty());
}

#[test]
fn too_much_staged_data_is_refused() {
    let mut sstore = MemServer::default();
    let mut cfg = server_config();
    let first = batch(DEVICE, 1, 1);
    // Room for the first batch, not for a second one.
    let max = first.len() + 10;
    cfg.max_staged_bytes = max;
    let mut server = ServerSession::<MemServer>::new(cfg);
    server.handle(hello(1), 0, &mut sstore).unwrap();
    server.handle(push(1, first), 0, &mut sstore).unwrap();
    let e = server
        .handle(push(1, batch(DEVICE, 2, 2)), 0, &mut sstore)
        .unwrap_err();
    assert!(
        matches!(e, SessionError::TooLarge { max: m, .. } if m == max),
        "{e:?}"
    );
}

#[test]
fn hello_mismatches_are_typed_errors() {
    let mut sstore = MemServer::default();
    let mut cfg = server_config();
    cfg.fingerprint = Some([8; 32]);
    let mut server = ServerSession::<MemServer>::new(cfg);
    let e = server.handle(hello(1), 0, &mut sstore).unwrap_err();
    assert_eq!(e, SessionError::ConfigMismatch);
    assert!(matches!(
        e.to_message(),
        Some(Message::Error {
            code: ErrorCode::ConfigMismatch,
            ..
        })
    ));
    let mut cfg = server_config();
    cfg.peer_site = OTHER;
    let e = ServerSession::<MemServer>::new(cfg)
        .handle(hello(1), 0, &mut sstore)
        .unwrap_err();
    assert_eq!(
        e,
        SessionError::SiteMismatch {
            hello: DEVICE,
            channel: OTHER
        }
    );
    let Message::Hello(mut h) = hello(1) else {
        unreachable!()
    };
    h.protocol_version = PROTOCOL_VERSION + 1;
    let e = ServerSession::<MemServer>::new(server_config())
        .handle(Message::Hello(h), 0, &mut sstore)
        .unwrap_err();
    assert!(matches!(e, SessionError::UnsupportedVersion { .. }));
    assert!(matches!(
        e.to_message(),
        Some(Message::Error {
            code: ErrorCode::UnsupportedVersion,
            ..
        })
    ));
}

#[test]
fn a_peer_error_ends_the_session_without_an_answer() {
    let mut cstore = Device::holding(DEVICE, vec![]);
    let mut client = ClientSession::new(client_config(1));
    client.poll(&mut cstore).unwrap();
    let e = client
        .handle(
            Message::Error {
                code: ErrorCode::Unauthorized,
                message: "revoked".into(),
            },
            &mut cstore,
        )
        .unwrap_err();
    assert_eq!(e.code(), ErrorCode::Unauthorized);
    assert_eq!(e.to_message(), None);
    assert!(e.to_string().contains("revoked"));
}

/// A device's hello asking its own moshi stream back from seq 2 (a regained scope) is served
/// its own moshi batches above 2 in its pull, beside other origins' as usual, and nothing else
/// of its own origin; without the ask, nothing of its own.
#[test]
fn a_regaining_device_is_served_its_own_batches_of_that_stream_only() {
    use outpost_protocol::batch::codec::decode_header;
    use outpost_protocol::message::Regain;
    use outpost_protocol::StreamId;
    use outpost_testkit::batch::scoped;
    let served = |regain: Vec<Regain>| {
        let mut sstore = MemServer::holding(vec![
            scoped(DEVICE, "moshi", 1, 2),
            scoped(DEVICE, "moshi", 3, 3),
            scoped(DEVICE, "tanga", 1, 1),
            scoped(OTHER, "moshi", 1, 1),
        ]);
        let mut server = ServerSession::<MemServer>::new(server_config());
        let Message::Hello(mut h) = hello(4) else {
            unreachable!()
        };
        h.regain = regain;
        server.handle(Message::Hello(h), 0, &mut sstore).unwrap();
        drain(&mut server, &mut sstore);
        // Its vector states its own tops, as ever.
        let mut vector = VersionVector::new();
        vector.set(StreamId::new(DEVICE, "moshi"), 3);
        vector.set(StreamId::new(DEVICE, "tanga"), 1);
        server
            .handle(Message::Pull { vector }, 0, &mut sstore)
            .unwrap();
        let mut got: Vec<(SiteId, String, u64, u64)> = drain(&mut server, &mut sstore)
            .into_iter()
            .filter_map(|m| match m {
                Message::Chunk { batch } => {
                    let h = decode_header(&batch.0, &Limits::default()).unwrap();
                    Some((h.origin, h.stream, h.range.lo, h.range.hi))
                }
                _ => None,
            })
            .collect();
        got.sort();
        got
    };
    assert_eq!(served(vec![]), [(OTHER, "moshi".to_string(), 1, 1)]);
    let mut want = vec![
        (DEVICE, "moshi".to_string(), 3, 3),
        (OTHER, "moshi".to_string(), 1, 1),
    ];
    want.sort();
    assert_eq!(
        served(vec![Regain {
            scope: "moshi".into(),
            since: 2,
        }]),
        want
    );
}

#[test]
fn a_server_returning_the_clients_own_batch_is_an_error() {
    let mut cstore = Device::holding(DEVICE, vec![]);
    let mut client = ClientSession::new(client_config(1));
    let mut sstore = MemServer::default();
    let mut server = ServerSession::new(server_config());
    let (_, r) = run(&mut client, &mut cstore, &mut server, &mut sstore, 1);
    r.unwrap();
    // The client is now pulling (it had nothing to push).
    let e = client
        .handle(
            Message::Chunk {
                batch: Bytes(batch(DEVICE, 1, 1)),
            },
            &mut cstore,
        )
        .unwrap_err();
    assert_eq!(e, SessionError::OwnBatchReturned);
}

#[test]
fn live_mode_pulls_again_on_notify_and_answers_pings() {
    let mut sstore = MemServer::default();
    let mut cstore = Device::holding(DEVICE, vec![]);
    let mut cfg = client_config(1);
    cfg.live = true;
    let mut client = ClientSession::new(cfg);
    let mut server = ServerSession::new(server_config());
    let (_, r) = run_to_end(&mut client, &mut cstore, &mut server, &mut sstore);
    r.unwrap();
    assert!(!client.is_done());
    sstore.batches.push(batch(OTHER, 1, 1));
    server.notify();
    server
        .handle(Message::Ping { nonce: 3 }, 0, &mut sstore)
        .unwrap();
    let (t, r) = run_to_end(&mut client, &mut cstore, &mut server, &mut sstore);
    r.unwrap();
    assert_eq!(t.to_client[0], Message::Notify);
    assert_eq!(t.to_client[1], Message::Pong { nonce: 3 });
    assert_eq!(cstore.vector.get(&OTHER.into()), 1);
}

proptest! {
    /// Whatever each side holds and wherever the first connection drops, a second session leaves
    /// the server covering all the client's changes (stored once) and the client covering all the
    /// server's changes of other origins.
    #[test]
    fn sessions_converge_after_any_interruption(
        client_split in proptest::collection::vec(1u64..4, 0..6),
        server_split in proptest::collection::vec(1u64..4, 0..6),
        server_has_own in 0usize..3,
        cut in 0usize..12,
    ) {
        let chain = |origin: SiteId, lens: &[u64]| {
            let mut lo = 1;
            lens.iter().map(|&n| { let b = batch(origin, lo, lo + n - 1); lo += n; b }).collect::<Vec<_>>()
        };
        let own = chain(DEVICE, &client_split);
        let mut held = chain(OTHER, &server_split);
        held.extend(own.iter().take(server_has_own).cloned());
        let mut sstore = MemServer::holding(held.clone());
        let mut cstore = Device::holding(DEVICE, own.clone());
        let mut client = ClientSession::new(client_config(1));
        let mut server = ServerSession::new(server_config());
        let (_, r) = run(&mut client, &mut cstore, &mut server, &mut sstore, cut);
        prop_assert!(r.is_ok());
        let mut client = ClientSession::new(client_config(2));
        let mut server = ServerSession::new(server_config());
        let (_, r) = run(&mut client, &mut cstore, &mut server, &mut sstore, usize::MAX);
        prop_assert!(r.is_ok(), "{:?}", r);
        prop_assert_eq!(sstore.vector().unwrap().get(&DEVICE.into()), client_split.iter().sum::<u64>());
        prop_assert_eq!(cstore.vector.get(&OTHER.into()), server_split.iter().sum::<u64>());
        let mut unique = sstore.batches.clone();
        unique.sort();
        unique.dedup();
        prop_assert_eq!(unique.len(), sstore.batches.len());
        let _ = Limits::default();
    }
}

/// Issue 16: a device's own batch must carry its signature. Unsigned, or signed by another key
/// (a hub re-signing under the device's origin), the whole push is refused with its own code
/// and nothing of it is stored.
#[test]
fn a_devices_batch_not_signed_by_its_key_is_refused_whole() {
    use outpost_protocol::batch::codec::{encode, Limits};
    use outpost_protocol::batch::signature;
    use outpost_protocol::batch::Compression;
    use outpost_protocol::handshake::Keypair;
    use outpost_protocol::SeqRange;
    let unsigned = encode(
        DEVICE,
        SeqRange::new(2, 2).unwrap(),
        vec![],
        &[],
        Compression::None,
    );
    let mut by_hub = unsigned.clone();
    signature::sign(&mut by_hub, &Keypair::from_secret(&[9; 32]).unwrap()).unwrap();
    let mut tampered = batch(DEVICE, 2, 2);
    // The clear header's range, rewritten after signing: byte 4 + 16 (origin) + 1 (stream).
    let header =
        outpost_protocol::batch::codec::decode_header(&tampered, &Limits::default()).unwrap();
    assert_eq!(header.range, SeqRange::new(2, 2).unwrap());
    tampered[4 + 16 + 1 + 1] = 9; // hi: 2 -> 9
    for (what, bad) in [
        ("unsigned", unsigned),
        ("signed by another key", by_hub),
        ("altered after signing", tampered),
    ] {
        let mut sstore = MemServer::default();
        let mut server = ServerSession::<MemServer>::new(server_config());
        server.handle(hello(1), 0, &mut sstore).unwrap();
        drain(&mut server, &mut sstore);
        server
            .handle(push(1, batch(DEVICE, 1, 1)), 0, &mut sstore)
            .unwrap();
        let e = server.handle(push(1, bad), 0, &mut sstore).unwrap_err();
        assert!(
            matches!(e, SessionError::BadSignature { origin, .. } if origin == DEVICE),
            "{what}: {e:?}"
        );
        assert!(
            matches!(
                e.to_message(),
                Some(Message::Error {
                    code: ErrorCode::BadSignature,
                    ..
                })
            ),
            "{what}"
        );
        assert!(sstore.batches.is_empty(), "{what}: nothing stored");
    }
}

/// Control entries come from servers and hubs only: a device sending some ends its session.
#[test]
fn a_device_may_not_send_control_entries() {
    let mut sstore = MemServer::default();
    let mut server = ServerSession::<MemServer>::new(server_config());
    server.handle(hello(1), 0, &mut sstore).unwrap();
    drain(&mut server, &mut sstore);
    let e = server
        .handle(
            Message::Control {
                entries: vec![Bytes(vec![1, 2, 3])],
            },
            0,
            &mut sstore,
        )
        .unwrap_err();
    assert!(
        matches!(e, SessionError::Unexpected { tag: 16, .. }),
        "{e:?}"
    );
}

/// Held, not taken on a relay's word: a hub relaying a batch of an origin whose key the server
/// does not know (no control entry names it) has its whole push refused as "retry later", and
/// nothing of it is stored, not even the batches of origins the server knows.
#[test]
fn a_relayed_batch_of_an_origin_no_entry_names_refuses_the_push_whole() {
    let other = SiteId([0x22; 16]);
    let mut sstore = MemServer::default();
    let mut cfg = server_config();
    cfg.peer_pushes = outpost_protocol::session::PushOrigins::Relayed;
    let mut server = ServerSession::<MemServer>::new(cfg);
    server.handle(hello(1), 0, &mut sstore).unwrap();
    drain(&mut server, &mut sstore);
    // The hub's own batch is verified with its handshake key and staged.
    server
        .handle(push(1, batch(DEVICE, 1, 1)), 0, &mut sstore)
        .unwrap();
    let e = server
        .handle(push(1, batch(other, 1, 1)), 0, &mut sstore)
        .unwrap_err();
    assert!(
        matches!(e, SessionError::KeyUnknown { origin, .. } if origin == other),
        "{e:?}"
    );
    assert!(matches!(
        e.to_message(),
        Some(Message::Error {
            code: ErrorCode::KeyUnknown,
            ..
        })
    ));
    assert!(sstore.batches.is_empty(), "nothing of the push stored");
    assert_eq!(sstore.commits, 0);
}

/// Only the cloud writes `down` tables, and its batches travel by pull: a pushed batch flagged
/// `down` refuses the whole push, whoever pushes it (a device, or a hub relaying one).
#[test]
fn a_pushed_down_batch_is_refused_whole() {
    use outpost_protocol::batch::Direction;
    use outpost_protocol::session::PushOrigins;
    use outpost_testkit::batch::directed;
    for pushes in [PushOrigins::Own, PushOrigins::Relayed] {
        let mut sstore = MemServer::default();
        let mut cfg = server_config();
        cfg.peer_pushes = pushes;
        let mut server = ServerSession::<MemServer>::new(cfg);
        server.handle(hello(1), 0, &mut sstore).unwrap();
        drain(&mut server, &mut sstore);
        server
            .handle(
                push(1, directed(DEVICE, 1, 1, Direction::Up)),
                0,
                &mut sstore,
            )
            .unwrap();
        let e = server
            .handle(
                push(1, directed(DEVICE, 2, 2, Direction::Down)),
                0,
                &mut sstore,
            )
            .unwrap_err();
        assert!(
            matches!(e, SessionError::DirectionRefused { origin, .. } if origin == DEVICE),
            "{pushes:?}: {e:?}"
        );
        assert!(matches!(
            e.to_message(),
            Some(Message::Error {
                code: ErrorCode::DirectionRefused,
                ..
            })
        ));
        assert!(sstore.batches.is_empty(), "{pushes:?}: nothing stored");
    }
}

/// A cloud restored behind its peers took a new origin (DESIGN section 11, "Durability"): a hub
/// pushes back the batches of the server's earlier origin, retired now, even flagged `down` (they
/// are the cloud's own writes); while that origin is current, the same push is refused whole as
/// the server's own.
#[test]
fn a_relay_pushes_back_the_servers_retired_origin_and_only_once_retired() {
    use outpost_protocol::batch::Direction;
    use outpost_protocol::session::PushOrigins;
    use outpost_testkit::batch::directed;
    for retired in [false, true] {
        let mut sstore = MemServer::default();
        let mut cfg = server_config();
        cfg.peer_pushes = PushOrigins::Relayed;
        if retired {
            sstore.retired = vec![cfg.site];
        }
        let own = cfg.site;
        let mut server = ServerSession::<MemServer>::new(cfg);
        server.handle(hello(1), 0, &mut sstore).unwrap();
        drain(&mut server, &mut sstore);
        let r = server.handle(
            push(1, directed(own, 1, 1, Direction::Down)),
            0,
            &mut sstore,
        );
        if retired {
            r.unwrap();
        } else {
            let e = r.unwrap_err();
            assert!(
                matches!(e, SessionError::ForeignOrigin { origin, .. } if origin == own),
                "{e:?}"
            );
        }
    }
}

/// `up` tables are never served to devices: a device pulls an `up` batch as its signed clear
/// header alone (it covers the range, verifiably, with nothing to apply); a hub pulls it whole.
#[test]
fn up_batches_reach_devices_as_their_signed_clear_header_only() {
    use outpost_protocol::batch::codec::decode_header;
    use outpost_protocol::batch::{signature, Direction};
    use outpost_protocol::session::PushOrigins;
    use outpost_testkit::batch::directed;
    let up = directed(OTHER, 1, 1, Direction::Up);
    let both = directed(OTHER, 2, 2, Direction::Both);
    for pushes in [PushOrigins::Own, PushOrigins::Relayed] {
        let mut sstore = MemServer::holding(vec![up.clone(), both.clone()]);
        let mut cfg = server_config();
        cfg.peer_pushes = pushes;
        let mut server = ServerSession::<MemServer>::new(cfg);
        server.handle(hello(1), 0, &mut sstore).unwrap();
        drain(&mut server, &mut sstore);
        server
            .handle(
                Message::Pull {
                    vector: VersionVector::new(),
                },
                0,
                &mut sstore,
            )
            .unwrap();
        let chunks: Vec<Vec<u8>> = drain(&mut server, &mut sstore)
            .into_iter()
            .filter_map(|m| match m {
                Message::Chunk { batch } => Some(batch.0),
                _ => None,
            })
            .collect();
        assert_eq!(chunks.len(), 2, "{pushes:?}");
        assert_eq!(
            chunks[1], both,
            "{pushes:?}: a `both` batch is served whole"
        );
        let h = decode_header(&chunks[0], &Limits::default()).unwrap();
        assert_eq!(h.range, header(&up).range);
        signature::verify(&h, outpost_testkit::keys::site_keypair(OTHER).public())
            .expect("the withheld header still verifies");
        match pushes {
            PushOrigins::Own => {
                assert!(h.withheld, "a device gets the clear header only");
                assert!(chunks[0].len() < up.len() && up.starts_with(&chunks[0]));
                assert!(
                    outpost_protocol::batch::codec::verify(&chunks[0], &Limits::default()).is_err()
                );
            }
            PushOrigins::Relayed => assert_eq!(chunks[0], up, "a hub gets it whole"),
        }
    }
    // A `both` batch cut after its signature (its clear header is as long as the `up` one's)
    // is a truncated batch, not a withheld one.
    let clear_len = outpost_protocol::batch::codec::withhold(&up)
        .unwrap()
        .unwrap()
        .len();
    assert_eq!(
        outpost_protocol::batch::codec::withhold(&both).unwrap(),
        None
    );
    assert!(matches!(
        decode_header(&both[..clear_len], &Limits::default()),
        Err(outpost_protocol::batch::codec::DecodeError::Truncated { .. })
    ));
}

/// The first relay's time bound (DESIGN section 10, "Time"): a device's push whose clocks run
/// more than a day ahead of the relay's trusted time is refused whole (nothing staged, nothing
/// stored), as `ClockAhead`; a relay stating no trusted time cannot judge and takes it; a
/// relayed batch was judged by its first relay and is not judged again.
#[test]
fn a_device_push_a_day_and_a_minute_ahead_of_trusted_time_is_refused_whole() {
    use outpost_protocol::hlc::MAX_CLOCK_AHEAD_MS;
    use outpost_protocol::session::PushOrigins;
    use outpost_protocol::Hlc;
    let trusted = 1_760_000_000_000u64;
    let stamped = |lo: u64, ms: u64| {
        outpost_testkit::batch::text_rows(
            DEVICE,
            lo,
            lo,
            "t",
            "v",
            [(lo as i64, Hlc::new(ms, 0), "x".to_string())],
        )
    };
    let ahead = trusted + MAX_CLOCK_AHEAD_MS + 60_000;
    for (wall, pushes, refused) in [
        (trusted, PushOrigins::Own, true),
        (0, PushOrigins::Own, false),
        (trusted, PushOrigins::Relayed, false),
    ] {
        let mut sstore = MemServer::default();
        let mut cfg = server_config();
        cfg.wall_clock_ms = wall;
        cfg.peer_pushes = pushes;
        let mut server = ServerSession::<MemServer>::new(cfg);
        server.handle(hello(1), 5, &mut sstore).unwrap();
        drain(&mut server, &mut sstore);
        // A batch within the bound first: the refusal takes it down with the rest of the push.
        server
            .handle(push(1, stamped(1, trusted + 60_000)), 5, &mut sstore)
            .unwrap();
        let r = server.handle(push(1, stamped(2, ahead)), 5, &mut sstore);
        if refused {
            let e = r.unwrap_err();
            assert!(
                matches!(e, SessionError::ClockAhead { trusted_ms, max_hlc, .. }
                    if trusted_ms == trusted && max_hlc == Hlc::new(ahead, 0)),
                "{e:?}"
            );
            assert!(matches!(
                e.to_message(),
                Some(Message::Error {
                    code: ErrorCode::ClockAhead,
                    ..
                })
            ));
            let text = e.to_string();
            assert!(text.contains("more than a day ahead"), "{text}");
            assert!(text.contains("re-stamps"), "{text}");
            assert_eq!(server.staged_bytes(), 0, "nothing stays staged");
            assert!(server.handle(commit(1), 6, &mut sstore).is_err());
            assert!(sstore.batches.is_empty(), "nothing of the push stored");
            assert_eq!(sstore.commits, 0);
        } else {
            r.unwrap();
            server.handle(commit(1), 6, &mut sstore).unwrap();
            assert_eq!(sstore.batches.len(), 2, "wall {wall}, {pushes:?}");
        }
    }
}

/// The allowance that keeps the re-stamp floor working: once the relay holds a batch whose
/// clocks reach F (far ahead, admitted where no one could judge it), a device's edit stamped
/// just above F is admitted too (it had to be, or the edit could never leave); a clock two
/// seconds past F is not.
#[test]
fn a_device_push_just_above_the_highest_clock_held_is_admitted() {
    use outpost_protocol::Hlc;
    let trusted = 1_760_000_000_000u64;
    let far = trusted + 10 * outpost_protocol::hlc::MAX_CLOCK_AHEAD_MS;
    let f = Hlc::new(far, 3);
    let held = outpost_testkit::batch::text_rows(OTHER, 1, 1, "t", "v", [(1, f, "F".into())]);
    let edit = |hlc: Hlc| {
        outpost_testkit::batch::text_rows(DEVICE, 1, 1, "t", "v", [(1, hlc, "E".into())])
    };
    for (hlc, admitted) in [
        (f.successor(), true),
        (Hlc::new(far + 1000, 0xffff), true),
        (Hlc::new(far + 2000, 0), false),
    ] {
        let mut sstore = MemServer::holding(vec![held.clone()]);
        let mut cfg = server_config();
        cfg.wall_clock_ms = trusted;
        let mut server = ServerSession::<MemServer>::new(cfg);
        server.handle(hello(1), 5, &mut sstore).unwrap();
        drain(&mut server, &mut sstore);
        let r = server.handle(push(1, edit(hlc)), 5, &mut sstore);
        if admitted {
            r.unwrap();
            server.handle(commit(1), 6, &mut sstore).unwrap();
            assert_eq!(sstore.batches.len(), 2, "{hlc:?}");
        } else {
            let e = r.unwrap_err();
            assert!(
                matches!(e, SessionError::ClockAhead { admitted, .. } if admitted == f),
                "{e:?}"
            );
            assert_eq!(sstore.batches.len(), 1);
        }
    }
}

/// A session serves a peer only the streams of its grant, and the unscoped stream (docs/design.md
/// section 10, "Grants"): a tablet granted `moshi` never receives a `tanga` batch.
#[test]
fn a_pull_serves_only_the_streams_of_the_peers_grant() {
    use outpost_protocol::scope::Scopes;
    use outpost_testkit::batch::scoped;
    let held = vec![
        scoped(OTHER, "", 1, 1),
        scoped(OTHER, "moshi", 1, 2),
        scoped(OTHER, "tanga", 1, 1),
    ];
    for (grant, want) in [
        (Scopes::parse(["moshi"]).unwrap(), vec!["", "moshi"]),
        (Scopes::parse(["tanga"]).unwrap(), vec!["", "tanga"]),
        (Scopes::All, vec!["", "moshi", "tanga"]),
    ] {
        let mut sstore = MemServer::holding(held.clone());
        let mut cfg = server_config();
        cfg.peer_grant = grant.clone();
        let mut server = ServerSession::<MemServer>::new(cfg);
        server.handle(hello(1), 0, &mut sstore).unwrap();
        drain(&mut server, &mut sstore);
        server
            .handle(
                Message::Pull {
                    vector: VersionVector::new(),
                },
                0,
                &mut sstore,
            )
            .unwrap();
        let out = drain(&mut server, &mut sstore);
        let streams: Vec<String> = out
            .iter()
            .filter_map(|m| match m {
                Message::Chunk { batch } => Some(header(&batch.0).stream),
                _ => None,
            })
            .collect();
        assert_eq!(streams, want, "{grant}");
        let done = out.iter().find_map(|m| match m {
            Message::PullDone { vector } => Some(vector.clone()),
            _ => None,
        });
        let done = done.expect("the pull ends");
        assert_eq!(
            done.get(&outpost_protocol::StreamId::new(OTHER, "tanga")),
            u64::from(grant.contains("tanga")),
            "{grant}: the vector covers only what was served"
        );
    }
}

/// A device's push holding a batch of a scope outside its grant is refused whole, with its own
/// error code, nothing stored; a hub's relayed batches are judged by the receiver per origin.
#[test]
fn a_device_push_outside_its_grant_is_refused_whole() {
    use outpost_protocol::scope::Scopes;
    use outpost_protocol::session::PushOrigins;
    use outpost_testkit::batch::scoped;
    for pushes in [PushOrigins::Own, PushOrigins::Relayed] {
        let mut sstore = MemServer::default();
        let mut cfg = server_config();
        cfg.peer_pushes = pushes;
        cfg.peer_grant = Scopes::parse(["moshi"]).unwrap();
        let mut server = ServerSession::<MemServer>::new(cfg);
        server.handle(hello(1), 0, &mut sstore).unwrap();
        drain(&mut server, &mut sstore);
        for b in [scoped(DEVICE, "", 1, 1), scoped(DEVICE, "moshi", 1, 3)] {
            server.handle(push(1, b), 0, &mut sstore).unwrap();
        }
        let r = server.handle(push(1, scoped(DEVICE, "tanga", 1, 1)), 0, &mut sstore);
        match pushes {
            PushOrigins::Own => {
                let e = r.unwrap_err();
                assert!(
                    matches!(&e, SessionError::ScopeRefused { origin, scope, .. }
                        if *origin == DEVICE && scope == "tanga"),
                    "{e:?}"
                );
                assert!(e.to_string().contains("'tanga'"), "{e}");
                assert!(matches!(
                    e.to_message(),
                    Some(Message::Error {
                        code: ErrorCode::ScopeRefused,
                        ..
                    })
                ));
                assert!(sstore.batches.is_empty(), "nothing of the push is stored");
            }
            PushOrigins::Relayed => {
                r.unwrap();
                server.handle(commit(1), 0, &mut sstore).unwrap();
                assert_eq!(
                    sstore.batches.len(),
                    3,
                    "a hub relays every stream it holds"
                );
            }
        }
    }
}

/// A device's batch is judged by the grant version it names (docs/design.md section 10, "One
/// decision everywhere"): changes written before a regrant still go up; a batch naming the new
/// version in a scope it lost is refused; a version the relay does not know yet is "retry
/// later", nothing stored.
#[test]
fn a_device_batch_is_judged_by_the_grant_version_it_names() {
    use outpost_protocol::scope::Scopes;
    use outpost_testkit::batch::scoped_under;
    let store = || {
        let mut s = MemServer::default();
        s.grant_versions
            .insert((DEVICE, 1), Scopes::parse(["moshi"]).unwrap());
        s.grant_versions
            .insert((DEVICE, 2), Scopes::parse(["tanga"]).unwrap());
        s
    };
    let session = |sstore: &mut MemServer| {
        let mut cfg = server_config();
        // The device holds version 2 now.
        cfg.peer_grant = Scopes::parse(["tanga"]).unwrap();
        let mut server = ServerSession::<MemServer>::new(cfg);
        server.handle(hello(1), 0, sstore).unwrap();
        drain(&mut server, sstore);
        server
    };
    // Written under version 1, in moshi, pushed after the regrant: it drains.
    let mut sstore = store();
    let mut server = session(&mut sstore);
    server
        .handle(
            push(1, scoped_under(DEVICE, "moshi", 1, 1, 2)),
            0,
            &mut sstore,
        )
        .unwrap();
    server
        .handle(
            push(1, scoped_under(DEVICE, "tanga", 2, 1, 1)),
            0,
            &mut sstore,
        )
        .unwrap();
    server.handle(commit(1), 0, &mut sstore).unwrap();
    assert_eq!(sstore.batches.len(), 2);
    // Naming version 2 in moshi: refused whole.
    let mut sstore = store();
    let mut server = session(&mut sstore);
    let e = server
        .handle(
            push(1, scoped_under(DEVICE, "moshi", 2, 1, 1)),
            0,
            &mut sstore,
        )
        .unwrap_err();
    assert!(matches!(e, SessionError::ScopeRefused { .. }), "{e:?}");
    // A version this relay has not heard of: retry later, nothing stored.
    let mut sstore = store();
    let mut server = session(&mut sstore);
    let e = server
        .handle(
            push(1, scoped_under(DEVICE, "tanga", 3, 1, 1)),
            0,
            &mut sstore,
        )
        .unwrap_err();
    assert!(
        matches!(e, SessionError::GrantUnknown { version: 3, .. }),
        "{e:?}"
    );
    assert!(matches!(
        e.to_message(),
        Some(Message::Error {
            code: ErrorCode::GrantUnknown,
            ..
        })
    ));
    assert!(e.to_string().contains("retry later"), "{e}");
    assert!(sstore.batches.is_empty());
}

/// No push may carry a transfer batch (cells credited to other sites): only the cloud writes
/// them, and its batches travel by pull.
#[test]
fn a_pushed_transfer_batch_is_refused_whole() {
    use outpost_protocol::batch::codec::encode_transfer;
    use outpost_protocol::batch::{Compression, TableChanges, TableSchema};
    use outpost_protocol::session::PushOrigins;
    let t = TableSchema {
        name: "t".into(),
        columns: vec![],
        primary_key: vec![],
        foreign_keys: vec![],
        scope: None,
    };
    let groups = [TableChanges {
        table: 0,
        credit: Some(OTHER),
        rows: vec![],
    }];
    let range = outpost_protocol::SeqRange::new(1, 1).unwrap();
    for pushes in [PushOrigins::Own, PushOrigins::Relayed] {
        let transfer = outpost_testkit::keys::signed(
            encode_transfer(
                DEVICE,
                "",
                range,
                vec![t.clone()],
                &groups,
                Compression::None,
            )
            .unwrap(),
        );
        let mut sstore = MemServer::default();
        let mut cfg = server_config();
        cfg.peer_pushes = pushes;
        let mut server = ServerSession::<MemServer>::new(cfg);
        server.handle(hello(1), 0, &mut sstore).unwrap();
        drain(&mut server, &mut sstore);
        let e = server
            .handle(push(1, transfer), 0, &mut sstore)
            .unwrap_err();
        assert!(
            matches!(e, SessionError::TransferPushed { .. }),
            "{pushes:?}: {e:?}"
        );
        assert!(e.to_string().contains("only the cloud writes"), "{e}");
        assert!(sstore.batches.is_empty());
    }
}

/// A device regranted out of moshi declares in its hello the last moshi seq it will push
/// (docs/design.md section 10, "Regrants"): the relay takes its moshi batches up to that seq,
/// refuses one reaching above it, and keeps the declaration for sessions whose hello does not
/// repeat it.
#[test]
fn a_draining_scope_is_taken_up_to_the_declared_seq_and_no_further() {
    use outpost_protocol::message::Drain;
    use outpost_protocol::scope::Scopes;
    use outpost_testkit::batch::scoped_under;
    let mut sstore = MemServer::default();
    sstore
        .grant_versions
        .insert((DEVICE, 1), Scopes::parse(["moshi"]).unwrap());
    sstore
        .grant_versions
        .insert((DEVICE, 2), Scopes::parse(["tanga"]).unwrap());
    let session = |sstore: &mut MemServer, drains: Vec<Drain>| {
        let mut cfg = server_config();
        cfg.peer_grant = Scopes::parse(["tanga"]).unwrap();
        let mut server = ServerSession::<MemServer>::new(cfg);
        let Message::Hello(mut h) = hello(1) else {
            unreachable!()
        };
        h.drains = drains;
        server.handle(Message::Hello(h), 0, sstore).unwrap();
        drain(&mut server, sstore);
        server
    };
    let declared = vec![Drain {
        scope: "moshi".into(),
        last: 3,
    }];
    let mut server = session(&mut sstore, declared);
    assert_eq!(sstore.drains.get(&(DEVICE, "moshi".into())), Some(&3));
    server
        .handle(
            push(1, scoped_under(DEVICE, "moshi", 1, 1, 3)),
            0,
            &mut sstore,
        )
        .unwrap();
    let e = server
        .handle(
            push(1, scoped_under(DEVICE, "moshi", 1, 4, 4)),
            0,
            &mut sstore,
        )
        .unwrap_err();
    assert!(matches!(e, SessionError::ScopeRefused { .. }), "{e:?}");
    // A later session whose hello declares nothing: the kept declaration judges.
    let mut server = session(&mut sstore, Vec::new());
    let e = server
        .handle(
            push(1, scoped_under(DEVICE, "moshi", 1, 3, 4)),
            0,
            &mut sstore,
        )
        .unwrap_err();
    assert!(matches!(e, SessionError::ScopeRefused { .. }), "{e:?}");
    // The scope granted again: the declaration no longer bounds it.
    let mut cfg = server_config();
    cfg.peer_grant = Scopes::parse(["moshi", "tanga"]).unwrap();
    let mut server = ServerSession::<MemServer>::new(cfg);
    server.handle(hello(2), 0, &mut sstore).unwrap();
    drain(&mut server, &mut sstore);
    server
        .handle(
            push(2, scoped_under(DEVICE, "moshi", 1, 4, 4)),
            0,
            &mut sstore,
        )
        .unwrap();
}

/// A hello asking back its own stream of something that is no scope name, or of more than 64
/// scopes, does not decode.
#[test]
fn a_hello_with_bad_regains_does_not_decode() {
    use outpost_protocol::message::{MessageError, Regain, MAX_REGAINS};
    let with = |regain: Vec<Regain>| {
        let Message::Hello(mut h) = hello(1) else {
            unreachable!()
        };
        h.regain = regain;
        Message::decode(&Message::Hello(h).encode(), 1 << 20)
    };
    let r = |scope: &str| Regain {
        scope: scope.into(),
        since: 0,
    };
    assert!(with(vec![r("moshi")]).is_ok());
    for bad in [vec![r("")], vec![r("*")], vec![r("a b")]] {
        assert!(
            matches!(with(bad), Err(MessageError::InvalidField { .. })),
            "a regain that names no scope"
        );
    }
    let many: Vec<Regain> = (0..=MAX_REGAINS).map(|i| r(&format!("s{i}"))).collect();
    assert!(matches!(with(many), Err(MessageError::InvalidField { .. })));
}

/// A hello declaring a drain of something that is no scope name, or more than 64, does not
/// decode.
#[test]
fn a_hello_with_bad_drains_does_not_decode() {
    use outpost_protocol::message::{Drain, MessageError, MAX_DRAINS};
    let with = |drains: Vec<Drain>| {
        let Message::Hello(mut h) = hello(1) else {
            unreachable!()
        };
        h.drains = drains;
        Message::decode(&Message::Hello(h).encode(), 1 << 20)
    };
    let d = |scope: &str| Drain {
        scope: scope.into(),
        last: 1,
    };
    assert!(with(vec![d("moshi")]).is_ok());
    for bad in [vec![d("")], vec![d("*")], vec![d("a b")]] {
        assert!(
            matches!(with(bad), Err(MessageError::InvalidField { .. })),
            "a drain that names no scope"
        );
    }
    let many: Vec<Drain> = (0..=MAX_DRAINS).map(|i| d(&format!("s{i}"))).collect();
    assert!(matches!(with(many), Err(MessageError::InvalidField { .. })));
}

/// A relay refuses a push under a retired key epoch only from a device it handed the current one
/// in this session's hello (issue 20 item 4): sealed under the current epoch it passes; a device
/// handed nothing is not refused; a scope the device drains is not judged.
#[test]
fn a_push_under_a_retired_epoch_is_refused_only_from_a_device_handed_the_current_one() {
    use outpost_protocol::message::SealedKeys;
    use outpost_protocol::scope::Scopes;
    use outpost_protocol::seal::{seal_batch, DigestKey, ScopeKey};
    // Written under version 1 of the device's grant, which held moshi; the relay knows the scope
    // by its digest only, in the stream and in grants and drains alike.
    let dk = DigestKey::from_bytes([0x5d; 32]);
    let wire = dk.wire_scope("moshi");
    let sealed = |lo: u64, epoch: u32| -> Vec<u8> {
        let plain = outpost_testkit::batch::scoped_under(DEVICE, "moshi", 1, lo, lo);
        let key = ScopeKey::new(epoch, [epoch as u8; 32]).unwrap();
        outpost_testkit::keys::signed(seal_batch(&plain, &key, &dk, [lo as u8; 12]).unwrap())
    };
    let moshi = Scopes::parse([wire.as_str()]).unwrap();
    let versions = || HashMap::from([((DEVICE, 1), moshi.clone())]);
    let handed = || MemServer {
        keys: vec![SealedKeys {
            site: DEVICE,
            envelope: Bytes(vec![1, 2, 3]),
        }],
        current_epoch: 2,
        grant_versions: versions(),
        ..MemServer::default()
    };
    let push_one = |store: &mut MemServer, grant: Scopes, batch: Vec<u8>| {
        let mut config = server_config();
        config.peer_grant = grant;
        let mut server = ServerSession::<MemServer>::new(config);
        let mut h = hello(4);
        if let Message::Hello(ref mut h) = h {
            h.drains = vec![outpost_protocol::message::Drain {
                scope: wire.clone(),
                last: 9,
            }];
        }
        server.handle(h, 0, store).unwrap();
        drain(&mut server, store);
        server.handle(push(4, batch), 0, store)
    };
    let mut store = handed();
    let e = push_one(&mut store, Scopes::All, sealed(1, 1)).unwrap_err();
    assert!(
        matches!(
            e,
            SessionError::RetiredEpoch {
                epoch: 1,
                current: 2,
                ..
            }
        ),
        "{e:?}"
    );
    assert_eq!(
        e.to_message(),
        Some(Message::Error {
            code: ErrorCode::RetiredEpoch,
            message: e.to_string(),
        })
    );
    push_one(&mut store, Scopes::All, sealed(1, 2)).unwrap();
    // Handed nothing: it seals under what it holds.
    let mut unhanded = MemServer {
        current_epoch: 2,
        grant_versions: versions(),
        ..MemServer::default()
    };
    push_one(&mut unhanded, Scopes::All, sealed(1, 1)).unwrap();
    // Draining moshi (no longer granted): its own batches pass under the epoch it held.
    let mut draining = handed();
    let tanga = Scopes::parse(["tanga"]).unwrap();
    push_one(&mut draining, tanga, sealed(1, 1)).unwrap();
}

/// A server holding control entries the client lacks sends them right after its hello; the
/// client's push waits for them (they may say the tenant is sealed, or set a table), and starts
/// once they are taken. A server with nothing more lets it push at once.
#[test]
fn the_push_waits_for_the_control_entries_the_servers_hello_announces() {
    let mut cstore = Device::holding(DEVICE, vec![batch(DEVICE, 1, 1)]);
    let mut client = ClientSession::new(client_config(1));
    let mut sstore = MemServer::default();
    let Some(Message::Hello(_)) = client.poll(&mut cstore).unwrap() else {
        panic!("the client opens with its hello");
    };
    let mut server = ServerSession::<MemServer>::new(server_config());
    server.handle(hello(1), 0, &mut sstore).unwrap();
    let Some(Message::Hello(mut answer)) = server.poll(&mut sstore).unwrap() else {
        panic!("the server answers with its hello");
    };
    answer.control.set(SiteId([0xc0; 16]), 3);
    client.handle(Message::Hello(answer), &mut cstore).unwrap();
    assert_eq!(
        client.poll(&mut cstore).unwrap(),
        None,
        "nothing is pushed before the announced entries arrive"
    );
    client
        .handle(
            Message::Control {
                entries: vec![Bytes(vec![1, 2, 3])],
            },
            &mut cstore,
        )
        .unwrap();
    assert!(
        matches!(
            client.poll(&mut cstore).unwrap(),
            Some(Message::Push { .. })
        ),
        "the push starts once they are taken"
    );
}
