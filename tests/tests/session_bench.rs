//! Secure-session figures over loopback, printed (not asserted): full Noise IK handshakes per
//! second against a running `outpost-hub --net std:`, and bulk throughput (MB/s) of a push of
//! ~64 MB of batches and of a second device pulling them back, each through the encrypted channel,
//! the framing layer and the hub's durable mailbox. Ignored by default; run with
//! `cargo test --release -p outpost-tests --test session_bench -- --ignored --nocapture`.
//! Results are recorded in docs/performance.md ("Sessions").

mod support;

use outpost_protocol::batch::codec;
use outpost_protocol::batch::{
    CellChange, CellPayload, ColumnSchema, Compression, RowChange, TableChanges, TableSchema,
};
use outpost_protocol::handshake::Purpose;
use outpost_protocol::{Hlc, SeqRange, SiteId, Strategy, Value};
use std::time::Instant;
use support::*;

const BATCHES: u64 = 64;
const ROWS_PER_BATCH: u64 = 1000;
const NOTE_BYTES: usize = 1000;
const HANDSHAKES: u32 = 300;

/// A batch of `ROWS_PER_BATCH` rows with a ~1 KB note each (about 1 MB), seq `seq`.
fn bulk_batch(origin: SiteId, seq: u64) -> Vec<u8> {
    let table = TableSchema {
        name: "visits".into(),
        columns: vec![
            ColumnSchema {
                name: "id".into(),
                decl_type: "INTEGER".into(),
                strategy: Strategy::Lww,
                not_null: true,
            },
            ColumnSchema {
                name: "notes".into(),
                decl_type: "TEXT".into(),
                strategy: Strategy::Lww,
                not_null: false,
            },
        ],
        primary_key: vec![0],
        foreign_keys: vec![],
    };
    let rows = (0..ROWS_PER_BATCH)
        .map(|i| {
            let key = seq * ROWS_PER_BATCH + i;
            RowChange {
                key: vec![Value::Integer(key as i64)],
                existence: 1,
                cells: vec![CellChange {
                    column: 0,
                    hlc: Hlc::new(1_800_000_000_000 + key, 0),
                    payload: CellPayload::Value(Value::Text(format!(
                        "{key:0>width$}",
                        width = NOTE_BYTES
                    ))),
                }],
            }
        })
        .collect();
    codec::encode(
        origin,
        SeqRange::new(seq, seq).unwrap(),
        vec![table],
        &[TableChanges { table: 0, rows }],
        Compression::None,
    )
}

#[test]
#[ignore = "benchmark: prints figures"]
fn handshakes_per_second_and_bulk_throughput_over_loopback() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("hub");
    let port = free_port();
    let (_hub, addr) = start_hub(
        None,
        &[
            "run",
            "--data",
            data.to_str().unwrap(),
            "--net",
            &format!("std:127.0.0.1:{port}"),
        ],
    );
    let code = code_for(&data, addr);
    let hub = HubInfo::from_code(&code);
    let mut a = Device::new(0xa1);
    let mut b = Device::new(0xb2);
    enroll(&code, &mut a);
    enroll(&code_for(&data, addr), &mut b);

    let t = Instant::now();
    for _ in 0..HANDSHAKES {
        connect(&hub, &mut a, Purpose::Session).expect("handshake");
    }
    let secs = t.elapsed().as_secs_f64();
    println!(
        "handshakes: {HANDSHAKES} full Noise_IK_P256_AESGCM_SHA256 handshakes over loopback in {secs:.2} s = {:.0}/s (each: TCP connect, 2 messages, the hub's counter check and commit)",
        f64::from(HANDSHAKES) / secs
    );

    for seq in 1..=BATCHES {
        a.own.push(bulk_batch(a.site, seq));
    }
    a.written = BATCHES;
    a.vector
        .advance(a.site, SeqRange::new(1, BATCHES).unwrap())
        .unwrap();
    let bytes: usize = a.own.iter().map(Vec::len).sum();
    let mb = bytes as f64 / 1e6;

    let t = Instant::now();
    sync(&hub, &mut a, 1).expect("push");
    let push = t.elapsed().as_secs_f64();
    assert_eq!(a.acked_up_to(), BATCHES, "the hub acknowledged every batch");

    let t = Instant::now();
    sync(&hub, &mut b, 2).expect("pull");
    let pull = t.elapsed().as_secs_f64();
    assert_eq!(b.applied_seqs(a.site), (1..=BATCHES).collect::<Vec<_>>());

    println!(
        "bulk push: {mb:.1} MB in {BATCHES} batches in {push:.2} s = {:.1} MB/s (encrypted, framed, staged, committed with fsync)",
        mb / push
    );
    println!(
        "bulk pull: {mb:.1} MB in {BATCHES} batches in {pull:.2} s = {:.1} MB/s (read from the mailbox, encrypted, framed)",
        mb / pull
    );
}
