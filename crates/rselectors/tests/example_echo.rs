//! Runs `examples/echo_server.rs` in a thread and talks to it: short
//! messages come back, a large one comes back whole and in order while the
//! client reads slower than it writes, and the server stops when the
//! client leaves, as the seed's does.

#[allow(dead_code)]
#[path = "../examples/echo_server.rs"]
mod echo_server;

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::mpsc;
use std::thread;
use std::time::Duration;

const BOUND: Duration = Duration::from_secs(30);

#[test]
fn echo_server_echoes_everything_then_stops() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let addr = listener.local_addr().unwrap();
    let (done_tx, done_rx) = mpsc::channel();
    thread::spawn(move || {
        let result = echo_server::serve(listener).map_err(|e| e.to_string());
        let _ = done_tx.send(result);
    });

    let mut client = TcpStream::connect(addr).unwrap();
    client.set_read_timeout(Some(BOUND)).unwrap();
    client.set_write_timeout(Some(BOUND)).unwrap();
    for message in [&b"It will be repeated."[..], b"This is the message.  "] {
        client.write_all(message).unwrap();
        let mut echo = vec![0; message.len()];
        client.read_exact(&mut echo).unwrap();
        assert_eq!(echo, message);
    }

    // 4 MiB written by one thread while this one reads: more than the
    // socket buffers and the server's per-connection buffer hold.
    let payload: Vec<u8> = (0..4 << 20).map(|i| b'a' + (i % 26) as u8).collect();
    let mut writer = client.try_clone().unwrap();
    let sent = payload.clone();
    let writing = thread::spawn(move || writer.write_all(&sent).map_err(|e| e.to_string()));
    let mut echo = vec![0; payload.len()];
    client.read_exact(&mut echo).unwrap();
    assert_eq!(writing.join().unwrap(), Ok(()));
    assert!(echo == payload, "the echo differs from what was sent");

    // The client leaves: the server shuts down.
    client.shutdown(Shutdown::Both).unwrap();
    drop(client);
    assert_eq!(done_rx.recv_timeout(BOUND), Ok(Ok(())));
}
