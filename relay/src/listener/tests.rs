use super::*;
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

#[test]
fn connections_beyond_the_limit_are_closed_at_once() {
    let (addr, _) = start(Limits {
        max_connections: 2,
        ..Limits::default()
    });
    let mut a = TcpStream::connect(addr).unwrap();
    let mut b = TcpStream::connect(addr).unwrap();
    assert_eq!(roundtrip(&mut a, "x").unwrap(), "x");
    assert_eq!(roundtrip(&mut b, "y").unwrap(), "y");
    let mut c = TcpStream::connect(addr).unwrap();
    assert!(closed_by_server(&mut c));
    // A slot frees when a connection ends.
    drop(a);
    assert!(
        eventually(|| TcpStream::connect(addr)
            .and_then(|mut d| roundtrip(&mut d, "z"))
            .is_ok_and(|z| z == "z")),
        "the ended connection's slot was not freed within 5 s"
    );
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
