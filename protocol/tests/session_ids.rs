//! Id blocks and pull sizes in the session: requests after the pull, grants stored once, a cut
//! between grant and store retried to the same ranges, empty grants kept pending, grants that do
//! not answer the request refused, and messages refused in the wrong state.

mod session_support;

use outpost_protocol::id_range::{IdGrant, IdRange, RequestId};
use outpost_protocol::message::Message;
use outpost_protocol::session::{ClientSession, ServerSession, SessionError};
use outpost_protocol::SiteId;
use session_support::*;

const OTHER: SiteId = SiteId([0x22; 16]);

fn range(first: u64, last: u64) -> IdRange {
    IdRange { first, last }
}

fn session(
    cstore: &mut Device,
    sstore: &mut MemServer,
    stop_after: usize,
) -> (Transcript, Result<(), SessionError>) {
    let mut client = ClientSession::new(client_config(1));
    let mut server = ServerSession::new(server_config());
    run(&mut client, cstore, &mut server, sstore, stop_after)
}

#[test]
fn pending_reservations_are_asked_after_the_pull_and_stored_once() {
    let mut sstore = MemServer::holding(vec![batch(OTHER, 1, 1)]);
    let mut cstore = Device::holding(DEVICE, vec![]);
    cstore.pending = vec![id_request(1, "patients", 500), id_request(2, "receipts", 3)];
    let (t, r) = session(&mut cstore, &mut sstore, usize::MAX);
    r.unwrap();
    let kinds: Vec<u64> = t.to_server.iter().map(Message::tag).collect();
    // Hello, Pull, IdRequest, IdRequest, Bye: the requests follow the pull, one at a time.
    assert_eq!(kinds, vec![0, 5, 13, 13, 10]);
    assert!(cstore.pending.is_empty());
    assert_eq!(
        cstore.blocks,
        vec![
            ("patients".to_string(), range(1, 500)),
            ("receipts".to_string(), range(1, 3)),
        ]
    );
    // A second sync asks nothing and the server grants nothing more.
    let (t, r) = session(&mut cstore, &mut sstore, usize::MAX);
    r.unwrap();
    assert!(!t.to_server.iter().any(|m| m.tag() == 13));
    assert_eq!(sstore.next_id["patients"], 501);
}

#[test]
fn a_cut_between_grant_and_store_gets_the_same_ranges_on_retry() {
    let mut sstore = MemServer::default();
    let mut cstore = Device::holding(DEVICE, vec![]);
    cstore.pending = vec![id_request(1, "patients", 100)];
    // Hello, PullSize, PullDone reach the client; the grant is lost with the connection.
    let (t, r) = session(&mut cstore, &mut sstore, 3);
    r.unwrap();
    assert_eq!(t.to_server.last().map(Message::tag), Some(13));
    assert!(cstore.blocks.is_empty(), "the grant never arrived");
    assert_eq!(
        sstore.next_id["patients"], 101,
        "but the server recorded it"
    );
    // Another device takes the next numbers meanwhile.
    let mut other = Device::holding(OTHER, vec![]);
    other.pending = vec![id_request(9, "patients", 10)];
    let mut cfg = server_config();
    cfg.peer_site = OTHER;
    let mut server = ServerSession::new(cfg);
    let mut ccfg = client_config(3);
    ccfg.site = OTHER;
    let mut client = ClientSession::new(ccfg);
    run_to_end(&mut client, &mut other, &mut server, &mut sstore)
        .1
        .unwrap();
    assert_eq!(
        other.blocks,
        vec![("patients".to_string(), range(101, 110))]
    );
    // The retry under the same request id gets the recorded block, not a new one.
    let (_, r) = session(&mut cstore, &mut sstore, usize::MAX);
    r.unwrap();
    assert_eq!(cstore.blocks, vec![("patients".to_string(), range(1, 100))]);
    assert_eq!(sstore.next_id["patients"], 111, "nothing granted twice");
}

#[test]
fn an_empty_grant_keeps_the_request_for_the_next_sync() {
    let mut sstore = MemServer {
        id_capacity: Some(50),
        ..MemServer::default()
    };
    let mut cstore = Device::holding(DEVICE, vec![]);
    cstore.pending = vec![id_request(1, "patients", 80)];
    let (t, r) = session(&mut cstore, &mut sstore, usize::MAX);
    r.unwrap();
    let grant = t.to_client.iter().find(|m| m.tag() == 14).unwrap();
    assert!(matches!(grant, Message::IdGrant(g) if g.ranges.is_empty()));
    assert_eq!(cstore.pending.len(), 1, "asked again next sync");
    assert_eq!(t.to_server.last(), Some(&Message::Bye));
    sstore.id_capacity = Some(1_000);
    session(&mut cstore, &mut sstore, usize::MAX).1.unwrap();
    assert!(cstore.pending.is_empty());
    assert_eq!(cstore.blocks, vec![("patients".to_string(), range(1, 80))]);
}

#[test]
fn a_grant_that_does_not_answer_the_request_is_refused() {
    let grant = |request: u8, sequence: &str, ranges: Vec<IdRange>| {
        Message::IdGrant(IdGrant {
            request: RequestId([request; 16]),
            sequence: sequence.into(),
            ranges,
        })
    };
    let cases = [
        ("another request", grant(2, "patients", vec![range(1, 10)])),
        ("another sequence", grant(1, "visits", vec![range(1, 10)])),
        ("too few", grant(1, "patients", vec![range(1, 9)])),
        (
            "too many",
            grant(1, "patients", vec![range(1, 5), range(7, 12)]),
        ),
        (
            "not above the floor",
            grant(1, "patients", vec![range(5, 14)]),
        ),
    ];
    for (what, bad) in cases {
        let mut sstore = MemServer::default();
        let mut cstore = Device::holding(DEVICE, vec![]);
        let mut request = id_request(1, "patients", 10);
        request.above = 5;
        cstore.pending = vec![request];
        let mut client = ClientSession::new(client_config(1));
        let mut server = ServerSession::new(server_config());
        // Up to the request: Hello, PullSize and PullDone reach the client.
        run(&mut client, &mut cstore, &mut server, &mut sstore, 3)
            .1
            .unwrap();
        assert_eq!(
            client.handle(bad, &mut cstore),
            Err(SessionError::IdGrantMismatch),
            "{what}"
        );
        assert!(cstore.blocks.is_empty(), "{what}: nothing stored");
    }
}

#[test]
fn id_messages_out_of_turn_are_refused() {
    let mut sstore = MemServer::default();
    let request = Message::IdRequest(id_request(1, "patients", 10));
    // The server: before the hello.
    let mut server = ServerSession::<MemServer>::new(server_config());
    let e = server.handle(request.clone(), 0, &mut sstore).unwrap_err();
    assert!(
        matches!(e, SessionError::Unexpected { tag: 13, .. }),
        "{e:?}"
    );
    assert!(sstore.grants.is_empty());
    // The server: while serving a pull.
    let mut sstore = MemServer::holding(vec![batch(OTHER, 1, 1)]);
    let mut cstore = Device::holding(DEVICE, vec![]);
    let mut client = ClientSession::new(client_config(1));
    let mut server = ServerSession::new(server_config());
    // Hello and PullSize reach the client; the chunk is still to come.
    run(&mut client, &mut cstore, &mut server, &mut sstore, 2)
        .1
        .unwrap();
    let e = server.handle(request, 0, &mut sstore).unwrap_err();
    assert!(matches!(e, SessionError::Unexpected { tag: 13, .. }));
    // The client: a grant while pulling, a chunk while waiting for a grant.
    let e = client
        .handle(
            Message::IdGrant(IdGrant {
                request: RequestId([1; 16]),
                sequence: "patients".into(),
                ranges: vec![],
            }),
            &mut cstore,
        )
        .unwrap_err();
    assert!(matches!(e, SessionError::Unexpected { tag: 14, .. }));
    let mut sstore = MemServer::default();
    let mut cstore = Device::holding(DEVICE, vec![]);
    cstore.pending = vec![id_request(1, "patients", 10)];
    let mut client = ClientSession::new(client_config(1));
    let mut server = ServerSession::new(server_config());
    run(&mut client, &mut cstore, &mut server, &mut sstore, 3)
        .1
        .unwrap();
    let e = client
        .handle(
            Message::PullSize {
                batches: 1,
                bytes: 1,
            },
            &mut cstore,
        )
        .unwrap_err();
    assert!(matches!(e, SessionError::Unexpected { tag: 15, .. }));
}

#[test]
fn the_pull_size_comes_before_the_first_chunk_and_for_an_empty_pull() {
    let held = vec![batch(OTHER, 1, 2), batch(OTHER, 3, 3)];
    let bytes: u64 = held.iter().map(|b| b.len() as u64).sum();
    let mut sstore = MemServer::holding(held);
    let mut cstore = Device::holding(DEVICE, vec![]);
    let (t, r) = session(&mut cstore, &mut sstore, usize::MAX);
    r.unwrap();
    let kinds: Vec<u64> = t.to_client.iter().map(Message::tag).collect();
    assert_eq!(kinds, vec![0, 15, 6, 6, 7]);
    assert_eq!(cstore.pull_sizes, vec![(2, bytes)]);
    let (t, r) = session(&mut cstore, &mut sstore, usize::MAX);
    r.unwrap();
    assert_eq!(
        t.to_client[1],
        Message::PullSize {
            batches: 0,
            bytes: 0
        }
    );
}

#[test]
fn a_live_client_asks_for_ids_before_waiting_and_pulls_after_a_notify_it_missed() {
    let mut sstore = MemServer::default();
    let mut cstore = Device::holding(DEVICE, vec![]);
    cstore.pending = vec![id_request(1, "patients", 10)];
    let mut cfg = client_config(1);
    cfg.live = true;
    let mut client = ClientSession::new(cfg);
    let mut server = ServerSession::new(server_config());
    // Hello, PullSize and PullDone reach the client; its request's grant is lost.
    run(&mut client, &mut cstore, &mut server, &mut sstore, 3)
        .1
        .unwrap();
    assert!(!client.is_live(), "still waiting for the grant");
    // News arrives, then the grant (the server answers the same request id the same way).
    sstore.batches.push(batch(OTHER, 1, 1));
    server.notify();
    server
        .handle(
            Message::IdRequest(id_request(1, "patients", 10)),
            0,
            &mut sstore,
        )
        .unwrap();
    let (t, r) = run_to_end(&mut client, &mut cstore, &mut server, &mut sstore);
    r.unwrap();
    assert_eq!(t.to_client[0], Message::Notify);
    assert_eq!(t.to_client[1].tag(), 14);
    assert_eq!(cstore.blocks, vec![("patients".to_string(), range(1, 10))]);
    assert_eq!(
        cstore.vector.get(&OTHER.into()),
        1,
        "pulled again after the ids"
    );
    assert!(client.is_live());
}
