//! The status page on the hub's embassy-net stack (AF_PACKET, veth), fetched with a std
//! TcpStream from the other namespace.

mod net_support;

use net_support::{can_run, echo, Veth};
use outpost_hub::net::{HubServices, IpConfig};
use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

fn get(addr: SocketAddr, request: &'static str) -> String {
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(5)).expect("connect");
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    stream.write_all(request.as_bytes()).unwrap();
    let mut response = String::new();
    stream
        .read_to_string(&mut response)
        .expect("read the response");
    response
}

#[test]
fn get_root_from_the_lan_returns_the_rendered_status_page() {
    if !can_run("get_root_from_the_lan_returns_the_rendered_status_page") {
        return;
    }
    static RENDERS: AtomicU32 = AtomicU32::new(0);
    let veth = Veth::new("h", 44);
    let address = veth.start_hub(
        IpConfig::Static {
            address: Ipv4Addr::new(10, 213, 44, 2),
            prefix: 24,
            gateway: None,
        },
        HubServices {
            site: "ffeeddccbbaa99887766554433221100".into(),
            relay_port: 7420,
            relay: echo,
            status_port: Some(80),
            render: || {
                let n = RENDERS.fetch_add(1, Ordering::SeqCst) + 1;
                format!("<html><body><h1>Outpost hub</h1><p>render {n}</p></body></html>")
            },
        },
    );
    let page = SocketAddr::from((address.ip, 80));
    let first = veth.peer(move || get(page, "GET / HTTP/1.0\r\nHost: hub\r\n\r\n"));
    let body = "<html><body><h1>Outpost hub</h1><p>render 1</p></body></html>";
    assert!(first.starts_with("HTTP/1.0 200 OK\r\n"), "{first}");
    assert!(
        first.contains("Content-Type: text/html; charset=utf-8\r\n"),
        "{first}"
    );
    assert!(
        first.contains(&format!("Content-Length: {}\r\n", body.len())),
        "{first}"
    );
    assert!(first.ends_with(&format!("\r\n\r\n{body}")), "{first}");

    // Rendered afresh for each request; other paths are not served.
    let second = veth.peer(move || get(page, "GET / HTTP/1.1\r\nHost: hub\r\n\r\n"));
    assert!(
        second.ends_with("<p>render 2</p></body></html>"),
        "{second}"
    );
    let missing = veth.peer(move || get(page, "GET /secrets HTTP/1.0\r\n\r\n"));
    assert!(
        missing.starts_with("HTTP/1.0 404 Not Found\r\n"),
        "{missing}"
    );
}
