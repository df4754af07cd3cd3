//! In-memory figures for sealing (not a test; run with
//! `cargo test -p outpost-protocol --release --test seal_bench -- --ignored --nocapture`):
//! for W4-sized batches (512 KiB bodies of patient rows, raw and DEFLATE), the time to decode,
//! to seal (`seal_batch`, which also checks the input's hash) and to open and decode
//! (`decode_sealed`), and what sealing and opening add as a share of W4's apply time at the
//! rate docs/performance.md reports (about 120k rows/s); key envelopes wrapped and unwrapped per
//! second.

use outpost_protocol::batch::codec::{self, Limits};
use outpost_protocol::batch::{
    BatchMeta, BodyWriter, CellChange, CellPayload, ColumnSchema, Compression, RowChange,
    TableSchema,
};
use outpost_protocol::handshake::Keypair;
use outpost_protocol::seal::envelope::{unwrap_keys, wrap_keys, KeyEntry, KeySet};
use outpost_protocol::seal::{decode_sealed, seal_batch, DigestKey, ScopeKey};
use outpost_protocol::{Hlc, SeqRange, SiteId, Strategy, Value};
use std::hint::black_box;
use std::time::Instant;

/// W4's apply rate on this machine class (docs/performance.md, "Latest"): rows per second.
const W4_ROWS_PER_SEC: f64 = 120_000.0;

/// A batch of patient rows (uuid-like text key, name, village, age) cut at `body` bytes.
fn patients(body: usize, compression: Compression) -> (Vec<u8>, usize) {
    let col = |n: &str, t: &str| ColumnSchema {
        name: n.into(),
        decl_type: t.into(),
        strategy: Strategy::Lww,
        not_null: false,
    };
    let table = TableSchema {
        scope: None,
        name: "patients".into(),
        columns: vec![
            col("id", "TEXT"),
            col("name", "TEXT"),
            col("village", "TEXT"),
            col("age", "INTEGER"),
        ],
        primary_key: vec![0],
        foreign_keys: vec![],
    };
    let mut w = BodyWriter::new(vec![table]).unwrap();
    w.begin_table(0).unwrap();
    let mut rows = 0;
    while w.len() < body {
        let hlc = Hlc::new(1_760_000_000_000 + rows as u64, 0);
        let cell = |c: u16, v: Value| CellChange {
            column: c,
            hlc,
            payload: CellPayload::Value(v),
        };
        w.push_row(&RowChange {
            key: vec![Value::Text(format!(
                "p-{rows:08}-4b5a-4697-8879-a0b1c2d3e4f5"
            ))],
            existence: 1,
            cells: vec![
                cell(0, Value::Text(format!("Patient {rows} Mwakalinga"))),
                cell(1, Value::Text(format!("Village {}", rows % 300))),
                cell(2, Value::Integer((rows % 90) as i64)),
            ],
        })
        .unwrap();
        rows += 1;
    }
    let meta = BatchMeta {
        stream: "moshi".into(),
        ..BatchMeta::default()
    };
    let range = SeqRange::new(1, rows as u64).unwrap();
    let bytes = codec::finish_batch_with(w, SiteId([1; 16]), range, &meta, compression).unwrap();
    (bytes, rows)
}

/// Seconds per call of `f`, over enough calls to take about half a second.
fn time(mut f: impl FnMut()) -> f64 {
    f();
    let mut n = 1;
    loop {
        let t = Instant::now();
        for _ in 0..n {
            f();
        }
        let s = t.elapsed().as_secs_f64();
        if s > 0.5 {
            return s / n as f64;
        }
        n *= 2;
    }
}

#[test]
#[ignore = "benchmark: prints figures"]
fn sealing_figures() {
    let key = ScopeKey::new(1, [9; 32]).unwrap();
    let limits = Limits::default();
    for compression in [Compression::None, Compression::Deflate] {
        let (plain, rows) = patients(512 << 10, compression);
        let dk = DigestKey::from_bytes([1; 32]);
        let sealed = seal_batch(&plain, &key, &dk, [3; 12]).unwrap();
        let decode = time(|| drop(black_box(codec::decode(&plain, &limits).unwrap())));
        let seal = time(|| drop(black_box(seal_batch(&plain, &key, &dk, [3; 12]).unwrap())));
        let open = time(|| {
            drop(black_box(
                decode_sealed(&sealed, &limits, &dk, |_, _| Some(key.clone())).unwrap(),
            ))
        });
        let apply = rows as f64 / W4_ROWS_PER_SEC;
        let mib = plain.len() as f64 / (1 << 20) as f64;
        println!(
            "{compression:?}: {rows} rows, {} bytes (+{} sealed); decode {:.2} ms; seal {:.2} ms \
             ({:.0} MiB/s); open+decode {:.2} ms (opening adds {:.2} ms); W4 apply of these rows \
             ~{:.0} ms: sealing adds {:.2}% at the writer, opening {:.2}% at the receiver",
            plain.len(),
            sealed.len() - plain.len(),
            decode * 1e3,
            seal * 1e3,
            mib / seal,
            open * 1e3,
            (open - decode) * 1e3,
            apply * 1e3,
            100.0 * seal / apply,
            100.0 * (open - decode).max(0.0) / apply,
        );
    }
    let device = Keypair::from_secret(&[0x31; 32]).unwrap();
    let keys = KeySet {
        digest_key: DigestKey::from_bytes([1; 32]),
        entries: (0..64)
            .map(|i| KeyEntry {
                scope: DigestKey::from_bytes([1; 32]).digest(&format!("clinic-{i}")),
                key: ScopeKey::new(1, [i as u8; 32]).unwrap(),
            })
            .collect(),
    };
    let eph = Keypair::from_secret(&[0x55; 32]).unwrap();
    let env = wrap_keys(&keys, device.public(), eph.clone()).unwrap();
    let wrap = time(|| {
        drop(black_box(
            wrap_keys(&keys, device.public(), eph.clone()).unwrap(),
        ))
    });
    let unwrap = time(|| drop(black_box(unwrap_keys(&env, &device).unwrap())));
    println!(
        "key envelope of 64 keys ({} bytes): wrap {:.0} µs (ephemeral key made by the caller, not \
         counted), unwrap {:.0} µs",
        env.len(),
        wrap * 1e6,
        unwrap * 1e6
    );
}
