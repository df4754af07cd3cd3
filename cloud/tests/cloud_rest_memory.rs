//! One authenticated push of about 17 MiB (100,000 records, the most one push may hold) against the real REST server (TLS over TCP, in this
//! process), with a counting global allocator: the heap the push adds at its peak stays within 4x
//! its body (issue 17, finding 4: the body was parsed into a generic JSON tree first, and a 32 MiB
//! push peaked at 2.4 GiB). SQLite's own page cache is allocated outside Rust's allocator and is
//! bounded by its cache size; `cloud_rest_load.rs` watches the whole process's resident size.

mod raw_https;

use outpost_cloud::datadir::{unix_now, DataDir};
use outpost_cloud::https::{self, TlsFiles};
use outpost_cloud::service::Cloud;
use raw_https::Target;
use std::alloc::{GlobalAlloc, Layout, System};
use std::net::{IpAddr, Ipv4Addr, TcpListener};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

/// The system allocator, counting the bytes live now and the most live since the last reset.
struct Counting;

static LIVE: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

fn grew(n: usize) {
    let now = LIVE.fetch_add(n, Ordering::Relaxed) + n;
    PEAK.fetch_max(now, Ordering::Relaxed);
}

fn shrank(n: usize) {
    LIVE.fetch_sub(n, Ordering::Relaxed);
}

// SAFETY: every call is forwarded to `System` with the caller's own arguments, so `System`'s
// guarantees are ours; the counters only observe sizes.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: the caller upholds `alloc`'s contract, which we pass on unchanged.
        let p = unsafe { System.alloc(layout) };
        if !p.is_null() {
            grew(layout.size());
        }
        p
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        // SAFETY: as for `alloc`.
        let p = unsafe { System.alloc_zeroed(layout) };
        if !p.is_null() {
            grew(layout.size());
        }
        p
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: `ptr` came from this allocator (so from `System`) with `layout`.
        unsafe { System.dealloc(ptr, layout) };
        shrank(layout.size());
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: as for `dealloc`, and `new_size` is the caller's valid size.
        let p = unsafe { System.realloc(ptr, layout, new_size) };
        if !p.is_null() {
            if new_size >= layout.size() {
                grew(new_size - layout.size());
            } else {
                shrank(layout.size() - new_size);
            }
        }
        p
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

const LOCAL: IpAddr = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 1));

/// A push of `n` patient records of about 160 bytes each (short keys and values: the shape
/// that cost a JSON tree the most per byte).
fn push_body(prefix: char, n: usize) -> Vec<u8> {
    let mut body = String::with_capacity(n * 170);
    body.push_str("{\"patients\":{\"created\":[");
    for i in 0..n {
        if i > 0 {
            body.push(',');
        }
        body.push_str(&format!(
            "{{\"id\":\"{prefix}{i:07}\",\"name\":\"Patient {i} Devi\",\"age\":{},\"village\":\"Village {}\",\
             \"note\":\"seen for fever, given ORS and zinc, follow-up in 3 days at the clinic\",\"active\":true,\"w\":{}.5}}",
            i % 90,
            i % 40,
            i % 120
        ));
    }
    body.push_str("],\"updated\":[],\"deleted\":[]}}");
    body.into_bytes()
}

#[test]
fn a_17_mib_push_adds_at_most_4x_its_body_to_the_heap() {
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("cloud");
    let (dir, _) = DataDir::init(&path).unwrap();
    outpost_embed::register().unwrap();
    rusqlite::Connection::open(dir.tenant_path())
        .unwrap()
        .execute_batch(
            "CREATE TABLE patients(id TEXT PRIMARY KEY, name TEXT NOT NULL, age INTEGER,
               village TEXT, note TEXT, active INTEGER, w REAL);
             SELECT outpost_track('patients');",
        )
        .unwrap();
    let token = dir
        .control()
        .unwrap()
        .issue_api_token("app", unix_now())
        .unwrap();
    let files = TlsFiles::in_data_dir(&path);
    https::ensure_self_signed(&files).unwrap();
    let tls = https::server_config(&files).unwrap();
    let cloud = Cloud::open(dir, None).unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        let _ = https::serve(listener, tls, cloud);
    });
    let mut target = Target::new(&files.cert, &addr.to_string());
    // Applying 100,000 records in a debug build takes a while.
    target.timeout = std::time::Duration::from_secs(300);

    // Warm up: the runtime's threads, statement caches, the first TLS sessions.
    let small = push_body('w', 100);
    let a = target
        .request(
            LOCAL,
            "POST",
            "/watermelon/sync?last_pulled_at=0",
            Some(&token),
            Some(&small),
        )
        .unwrap();
    assert_eq!(a.status, 200, "{}", a.body);

    let n = 100_000;
    let mut body = push_body('p', n);
    body.shrink_to_fit();
    let size = body.len();
    assert!(size > 16 << 20, "{size}");
    let base = LIVE.load(Ordering::Relaxed);
    PEAK.store(base, Ordering::Relaxed);
    let t0 = Instant::now();
    let a = target
        .request(
            LOCAL,
            "POST",
            "/watermelon/sync?last_pulled_at=0",
            Some(&token),
            Some(&body),
        )
        .unwrap();
    let took = t0.elapsed();
    let peak = PEAK.load(Ordering::Relaxed) - base;
    assert_eq!(a.status, 200, "{}", a.body);
    assert!(a.body.contains(&format!("\"written\":{n}")), "{}", a.body);
    println!(
        "push of {n} records, {:.1} MiB: heap peak +{:.1} MiB = {:.2}x the body, {:.1} s",
        size as f64 / (1 << 20) as f64,
        peak as f64 / (1 << 20) as f64,
        peak as f64 / size as f64,
        took.as_secs_f64()
    );
    assert!(
        peak <= 4 * size,
        "the push added {peak} bytes at its peak for a {size}-byte body"
    );
}
