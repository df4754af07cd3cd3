//! The REST API under hostile load (issue 17, findings 2, 3 and 7), against the real
//! `outpost-cloud run` over real TLS and TCP: strangers on one address (127.0.0.1) flood and
//! trickle, while a client with the token, on another address (127.0.0.2), pulls and pushes.

mod common;
mod raw_https;

use common::*;
use raw_https::{proc_kib, read_answer, target_of, Target};
use std::io::Write;
use std::net::{IpAddr, Ipv4Addr};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const FLOOD: IpAddr = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 1));
const CLIENT: IpAddr = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2));
const LONE: IpAddr = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 3));

/// A running cloud with a `patients` table and a token; the raw client's target.
fn cloud(tmp: &std::path::Path) -> (std::path::PathBuf, Running, String, Target) {
    let (data, run, token) = running_with_patients(tmp);
    let target = target_of(&data, &run.https);
    (data, run, token, target)
}

/// A pull and a push by the token holder from [`CLIENT`], each retried up to 3 times if the
/// server is busy or the connection fails (this machine is shared); returns the slowest.
fn pull_and_push(target: &Target, token: &str, id: &str) -> Duration {
    let mut slowest = Duration::ZERO;
    let body = format!(r#"{{"patients": {{"created": [{{"id": "{id}", "name": "Asha"}}]}}}}"#);
    let pull_at = {
        let (t, a) = with_retries(|| {
            target.request(
                CLIENT,
                "GET",
                "/watermelon/sync?last_pulled_at=null",
                Some(token),
                None,
            )
        });
        slowest = slowest.max(t);
        let v: serde_json::Value = serde_json::from_str(&a.body).unwrap();
        v["timestamp"].as_i64().unwrap()
    };
    let (t, a) = with_retries(|| {
        target.request(
            CLIENT,
            "POST",
            &format!("/watermelon/sync?last_pulled_at={pull_at}"),
            Some(token),
            Some(body.as_bytes()),
        )
    });
    assert!(a.body.contains("\"written\":1"), "{}", a.body);
    slowest.max(t)
}

fn with_retries(
    mut f: impl FnMut() -> std::io::Result<raw_https::Answer>,
) -> (Duration, raw_https::Answer) {
    let mut errors = Vec::new();
    for _ in 0..3 {
        let t0 = Instant::now();
        match f() {
            Ok(a) if a.status == 200 => return (t0.elapsed(), a),
            Ok(a) => errors.push(format!("{} {}", a.status, a.body)),
            Err(e) => errors.push(e.to_string()),
        }
        std::thread::sleep(Duration::from_millis(300));
    }
    panic!("the token holder failed 3 times: {errors:?}");
}

/// Whether the server still holds `tls` open (nothing to read, no close).
fn still_open(tls: &mut raw_https::Tls) -> bool {
    use std::io::{ErrorKind, Read};
    tls.sock
        .set_read_timeout(Some(Duration::from_millis(1)))
        .unwrap();
    match tls.read(&mut [0u8; 16]) {
        Ok(0) => false,
        // The server said something (it does not, to a silent client): still open.
        Ok(_) => true,
        Err(e) => matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut),
    }
}

/// A TLS connection from `from` sending a request head a byte a second that never ends, until
/// the server closes it or `stop`; returns how long it lived and whether the server closed it.
fn trickle(target: &Target, from: IpAddr, stop: &AtomicBool) -> Option<(Duration, bool)> {
    let mut tls = target.connect_from(from).ok()?;
    let born = Instant::now();
    let mut alive = tls
        .write_all(b"GET /watermelon/sync HTTP/1.1\r\nX-Slow: ")
        .and_then(|()| tls.flush())
        .is_ok();
    while alive && !stop.load(Ordering::Relaxed) {
        std::thread::sleep(Duration::from_secs(1));
        alive = tls.write_all(b"a").and_then(|()| tls.flush()).is_ok();
    }
    Some((born.elapsed(), !alive))
}

#[test]
fn a_token_less_upload_is_refused_from_its_head_without_reading_the_body() {
    let tmp = tempfile::tempdir().unwrap();
    let (_data, run, _token, target) = cloud(tmp.path());
    let head = format!(
        "POST /watermelon/sync?last_pulled_at=0 HTTP/1.1\r\nHost: {}\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        target.addr,
        32 << 20
    );

    // The head alone, not a byte of its 32 MiB body: the answer comes at once.
    let mut tls = target.connect_from(FLOOD).unwrap();
    tls.sock
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    tls.write_all(head.as_bytes()).unwrap();
    tls.flush().unwrap();
    let t0 = Instant::now();
    let a = read_answer(&mut tls).expect("an answer before the body was sent");
    assert_eq!(a.status, 401, "{a:?}");
    assert!(a.head.contains("www-authenticate: bearer"), "{}", a.head);
    assert!(a.head.contains("connection: close"), "{}", a.head);
    println!("401 after the head alone in {:?}", t0.elapsed());

    // 16 token-less uploads sending their 32 MiB as fast as they can: the server reads heads
    // only, so its peak resident size hardly moves (it went from 9 to 450 MiB before).
    let pid = run.child.id();
    let before = proc_kib(pid, "VmHWM");
    let uploads: Vec<_> = (0..16)
        .map(|_| {
            let (target, head) = (target.clone(), head.clone());
            std::thread::spawn(move || {
                let Ok(mut tls) = target.connect_from(FLOOD) else {
                    return 0;
                };
                let chunk = vec![b' '; 64 << 10];
                let mut sent = 0usize;
                if tls.write_all(head.as_bytes()).is_err() {
                    return 0;
                }
                while sent < 32 << 20 {
                    if tls.write_all(&chunk).is_err() {
                        break;
                    }
                    sent += chunk.len();
                }
                sent
            })
        })
        .collect();
    let sent: usize = uploads.into_iter().map(|u| u.join().unwrap()).sum();
    std::thread::sleep(Duration::from_millis(200));
    let after = proc_kib(pid, "VmHWM");
    println!(
        "16 token-less uploads: {} MiB written by the clients before the server closed; \
         cloud peak RSS {} -> {} MiB",
        sent >> 20,
        before >> 10,
        after >> 10
    );
    assert!(
        after - before < 32 << 10,
        "the cloud's peak RSS grew from {before} to {after} KiB"
    );
}

#[test]
fn a_percent_0a_in_a_path_does_not_start_a_new_log_line() {
    let tmp = tempfile::tempdir().unwrap();
    let (_data, run, _token, target) = cloud(tmp.path());
    let forged = "2026-01-01T00:00:00.000Z%20INFO%20outpost_cloud%20forged";
    let a = target
        .request(
            FLOOD,
            "GET",
            &format!("/watermelon/sync%0a{forged}"),
            None,
            None,
        )
        .unwrap();
    assert_eq!(a.status, 404, "{a:?}");
    let log = wait_for("the request in the log", || {
        let log = std::fs::read_to_string(&run.stderr).unwrap();
        log.contains("forged").then_some(log)
    });
    for line in log.lines() {
        assert!(
            !line.starts_with("2026-01-01T00:00:00.000Z"),
            "a forged log line:\n{log}"
        );
    }
    assert!(
        log.lines()
            .any(|l| l.contains("https peer=") && l.contains("forged") && l.contains("-> 404")),
        "{log}"
    );
}

#[test]
fn trickling_connections_neither_outlive_the_request_deadline_nor_keep_a_token_holder_out() {
    let tmp = tempfile::tempdir().unwrap();
    let (_data, _run, token, target) = cloud(tmp.path());
    let unloaded = pull_and_push(&target, &token, "before");
    let stop = Arc::new(AtomicBool::new(false));

    // One trickling connection alone on its address (nothing evicts it): the whole request has
    // 15 s, however steadily its bytes come.
    let lone = {
        let (target, stop) = (target.clone(), stop.clone());
        std::thread::spawn(move || trickle(&target, LONE, &stop).expect("admitted"))
    };

    // 100 slowloris connections from one address, each reconnecting when closed.
    let closed = Arc::new(Mutex::new(0usize));
    let attackers: Vec<_> = (0..100)
        .map(|_| {
            let (target, stop, closed) = (target.clone(), stop.clone(), closed.clone());
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    match trickle(&target, FLOOD, &stop) {
                        Some((_, true)) => *closed.lock().unwrap() += 1,
                        Some((_, false)) => {}
                        None => std::thread::sleep(Duration::from_millis(200)),
                    }
                }
            })
        })
        .collect();

    let t0 = Instant::now();
    let mut slowest = Duration::ZERO;
    let mut n = 0;
    while t0.elapsed() < Duration::from_secs(20) {
        std::thread::sleep(Duration::from_secs(2));
        slowest = slowest.max(pull_and_push(&target, &token, &format!("during-{n}")));
        n += 1;
    }
    let (lived, closed_by_server) = lone.join().unwrap();
    stop.store(true, Ordering::Relaxed);
    for a in attackers {
        a.join().unwrap();
    }
    println!(
        "token holder: {n} pull+push rounds under a slowloris flood, slowest request {slowest:?} \
         (unloaded {unloaded:?}); {} flood connections closed by the server; the lone trickler \
         was closed after {lived:?}",
        closed.lock().unwrap()
    );
    // 15 s for a whole request, plus up to 2 s before a client notices the close, plus slack.
    assert!(closed_by_server, "the lone trickler was never closed");
    assert!(
        lived >= Duration::from_secs(14) && lived < Duration::from_secs(19),
        "the lone trickler lived {lived:?}"
    );
}

#[test]
fn a_1000_connection_flood_keeps_the_cloud_small_and_lets_a_token_holder_in() {
    let tmp = tempfile::tempdir().unwrap();
    let (_data, run, token, target) = cloud(tmp.path());
    let pid = run.child.id();
    let unloaded = pull_and_push(&target, &token, "before");
    let idle_rss = proc_kib(pid, "VmRSS");

    // 1,000 connections, from one address, then from 40: each finishes its TLS handshake if
    // admitted and then sends nothing; all are held open while the token holder works.
    let flood = |addresses: u8| {
        let threads: Vec<_> = (0..8)
            .map(|t| {
                let target = target.clone();
                std::thread::spawn(move || {
                    let mut held = Vec::new();
                    let mut admitted = 0;
                    for i in 0..125u32 {
                        let from = if addresses == 1 {
                            FLOOD
                        } else {
                            IpAddr::V4(Ipv4Addr::new(
                                127,
                                0,
                                1,
                                1 + ((t * 125 + i) % u32::from(addresses)) as u8,
                            ))
                        };
                        match target.connect_from(from) {
                            Ok(tls) => {
                                admitted += 1;
                                held.push(tls);
                            }
                            Err(_) => continue,
                        }
                    }
                    (admitted, held)
                })
            })
            .collect();
        let mut held = Vec::new();
        let mut admitted = 0;
        for t in threads {
            let (a, h) = t.join().unwrap();
            admitted += a;
            held.extend(h);
        }
        (admitted, held)
    };

    let (admitted, mut held) = flood(1);
    let during = pull_and_push(&target, &token, "during");
    let rss_one = proc_kib(pid, "VmRSS");
    // Strangers older than 2 s make room for newer ones, so more than 32 may have been
    // admitted on a slow machine; at most 32 are open at once.
    let open = held.iter_mut().map(still_open).filter(|&o| o).count();
    drop(held);
    let (admitted_many, held) = flood(40);
    let rss_many = proc_kib(pid, "VmRSS");
    // Every slot for strangers is taken; once they have had 2 s to show a token, the oldest
    // makes room for the token holder.
    std::thread::sleep(Duration::from_millis(2500));
    let full = pull_and_push(&target, &token, "full");
    drop(held);
    println!(
        "1,000 connections from 1 address: {admitted} admitted, {open} still open, cloud RSS {} MiB (idle {} MiB), \
         token holder's slowest request {during:?} (unloaded {unloaded:?}); from 40 addresses: \
         {admitted_many} admitted, cloud RSS {} MiB, token holder's slowest request {full:?}",
        rss_one >> 10,
        idle_rss >> 10,
        rss_many >> 10
    );
    assert!(open <= 32, "{open} connections open from one address");
    assert!(rss_one < 256 << 10 && rss_many < 256 << 10);
}
