use super::*;
use crate::admission::Busy;
use std::io::{BufRead, BufReader};

/// A line-echo handler: answers each line; the line `auth KEY` authenticates as KEY.
fn echo(conn: &mut Conn) -> io::Result<()> {
    loop {
        // Byte by byte through `Conn`, so every read is under the connection's deadlines.
        let mut bytes = Vec::new();
        let mut b = [0u8; 1];
        while bytes.last() != Some(&b'\n') {
            if conn.read(&mut b)? == 0 {
                return Ok(());
            }
            bytes.push(b[0]);
        }
        let line =
            String::from_utf8(bytes).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
        if let Some(key) = line.trim().strip_prefix("auth ") {
            conn.authenticated(key.as_bytes())?;
        }
        conn.write_all(line.as_bytes())?;
    }
}

fn start(limits: Limits) -> (SocketAddr, Arc<LiveSessions>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let live = Arc::new(LiveSessions::default());
    let l = live.clone();
    std::thread::spawn(move || serve(listener, limits, l, Arc::new(echo)));
    (addr, live)
}

fn roundtrip(s: &mut TcpStream, line: &str) -> io::Result<String> {
    s.write_all(format!("{line}\n").as_bytes())?;
    let mut r = BufReader::new(s.try_clone()?);
    let mut got = String::new();
    r.read_line(&mut got)?;
    Ok(got.trim().to_string())
}

/// Polls `done` until it holds or 5 s pass: the server's threads notice a closed or revoked
/// connection soon, but how soon depends on how loaded the machine running the tests is.
fn eventually(mut done: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        if done() {
            return true;
        }
        if Instant::now() > deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// True when the server closes the connection within 5 s (end of stream or a reset); a read
/// that merely times out is not a close.
fn closed_by_server(s: &mut TcpStream) -> bool {
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut b = [0u8; 1];
    match s.read(&mut b) {
        Ok(n) => n == 0,
        Err(e) => !matches!(
            e.kind(),
            io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
        ),
    }
}

/// Reads what the server sends until it closes (within 5 s).
fn until_closed(s: &mut TcpStream) -> Vec<u8> {
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut got = Vec::new();
    let mut b = [0u8; 64];
    loop {
        match s.read(&mut b) {
            Ok(0) | Err(_) => return got,
            Ok(n) => got.extend_from_slice(&b[..n]),
        }
    }
}

#[test]
fn an_idle_pending_connection_gives_its_place_to_a_newer_one_from_its_address() {
    let (addr, _) = start(Limits {
        pending_per_address: 2,
        ..Limits::default()
    });
    let mut a = TcpStream::connect(addr).unwrap();
    let mut b = TcpStream::connect(addr).unwrap();
    assert_eq!(roundtrip(&mut b, "b").unwrap(), "b");
    let mut c = TcpStream::connect(addr).unwrap();
    assert_eq!(roundtrip(&mut c, "c").unwrap(), "c");
    // The oldest was told the port is busy, then closed.
    assert_eq!(until_closed(&mut a), BUSY_NOTICE);
    // An authenticated connection leaves the pending pool: it is never evicted.
    assert_eq!(roundtrip(&mut b, "auth k1").unwrap(), "auth k1");
    let mut d = TcpStream::connect(addr).unwrap();
    let mut e = TcpStream::connect(addr).unwrap();
    assert_eq!(roundtrip(&mut e, "e").unwrap(), "e");
    assert_eq!(until_closed(&mut c), BUSY_NOTICE);
    assert_eq!(roundtrip(&mut b, "still").unwrap(), "still");
    assert_eq!(roundtrip(&mut d, "d").unwrap(), "d");
}

#[test]
fn a_connection_whose_first_handshake_frame_arrived_keeps_its_place() {
    let (addr, _) = start(Limits {
        pending_per_address: 1,
        ..Limits::default()
    });
    // A whole first frame: a length prefix (3) and 3 bytes, then a newline for the echo.
    let mut a = TcpStream::connect(addr).unwrap();
    a.write_all(&[0, 3, b'a', b'b', b'c']).unwrap();
    assert_eq!(roundtrip(&mut a, "").unwrap().as_bytes()[2..], *b"abc");
    // The address's only place is taken by a connection being checked: refused at once.
    let mut b = TcpStream::connect(addr).unwrap();
    assert_eq!(until_closed(&mut b), BUSY_NOTICE);
    assert_eq!(roundtrip(&mut a, "x").unwrap(), "x");
}

#[test]
fn sessions_are_capped_per_key_and_in_all() {
    let limits = Limits {
        max_sessions: 2,
        sessions_per_key: 1,
        ..Limits::default()
    };
    let live = LiveSessions::default();
    let close = || -> SessionCloser { Box::new(|| {}) };
    let a = live.admit(b"k1".to_vec(), close(), &limits).unwrap();
    assert_eq!(
        live.admit(b"k1".to_vec(), close(), &limits),
        Err(Busy::Key { limit: 1 })
    );
    live.admit(b"k2".to_vec(), close(), &limits).unwrap();
    assert_eq!(
        live.admit(b"k3".to_vec(), close(), &limits),
        Err(Busy::Sessions { limit: 2 })
    );
    live.remove(a);
    live.admit(b"k1".to_vec(), close(), &limits).unwrap();
    // Over the std front: a second session of k1 is refused and closed.
    let (addr, _) = start(limits);
    let mut s1 = TcpStream::connect(addr).unwrap();
    assert_eq!(roundtrip(&mut s1, "auth k1").unwrap(), "auth k1");
    let mut s2 = TcpStream::connect(addr).unwrap();
    assert!(roundtrip(&mut s2, "auth k1").map_or(true, |l| l.is_empty()));
    assert!(closed_by_server(&mut s2));
    assert_eq!(roundtrip(&mut s1, "ok").unwrap(), "ok");
}

#[test]
fn a_peer_dribbling_bytes_runs_out_of_handshake_time() {
    let (addr, _) = start(Limits {
        handshake: Duration::from_millis(600),
        ..Limits::default()
    });
    let mut s = TcpStream::connect(addr).unwrap();
    let started = Instant::now();
    // One byte every 200 ms never finishes a line: each read is short, the total is not.
    let mut closed = false;
    for _ in 0..20 {
        if s.write_all(b"a").is_err() {
            closed = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    assert!(closed || closed_by_server(&mut s));
    assert!(started.elapsed() < Duration::from_secs(4));
}

#[test]
fn an_authenticated_session_gets_the_idle_timeout_instead() {
    let (addr, _) = start(Limits {
        handshake: Duration::from_millis(300),
        idle: Duration::from_millis(1500),
        ..Limits::default()
    });
    let mut s = TcpStream::connect(addr).unwrap();
    assert_eq!(roundtrip(&mut s, "auth k1").unwrap(), "auth k1");
    // Past the handshake deadline but within the idle timeout: still served.
    std::thread::sleep(Duration::from_millis(600));
    assert_eq!(roundtrip(&mut s, "still here").unwrap(), "still here");
    // Silent past the idle timeout: closed (closed_by_server waits up to 5 s).
    let silent = Instant::now();
    assert!(closed_by_server(&mut s));
    assert!(
        silent.elapsed() >= Duration::from_millis(1400),
        "closed after {:?} of silence, before the idle timeout",
        silent.elapsed()
    );
}

#[test]
fn revoking_a_key_ends_only_its_sessions() {
    let (addr, live) = start(Limits::default());
    let mut a = TcpStream::connect(addr).unwrap();
    let mut b = TcpStream::connect(addr).unwrap();
    roundtrip(&mut a, "auth stolen").unwrap();
    roundtrip(&mut b, "auth fine").unwrap();
    assert_eq!(live.count(), 2);
    assert_eq!(live.end_revoked(|k| k != b"stolen"), 1);
    assert!(closed_by_server(&mut a));
    assert_eq!(roundtrip(&mut b, "ok").unwrap(), "ok");
    assert!(
        eventually(|| live.count() == 1),
        "{} sessions live",
        live.count()
    );
}

#[test]
fn the_watcher_ends_a_session_soon_after_its_key_is_revoked() {
    let (addr, live) = start(Limits::default());
    let revoked = Arc::new(Mutex::new(false));
    let r = revoked.clone();
    watch_revocations(live.clone(), Duration::from_millis(50), move |k| {
        !(k == b"tablet" && *r.lock().unwrap())
    })
    .unwrap();
    let mut s = TcpStream::connect(addr).unwrap();
    roundtrip(&mut s, "auth tablet").unwrap();
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(roundtrip(&mut s, "still allowed").unwrap(), "still allowed");
    *revoked.lock().unwrap() = true;
    assert!(closed_by_server(&mut s));
}
