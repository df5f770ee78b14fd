//! The seeds' `selectors_echo_server.py`, in Rust.
//!
//! The listening socket is registered with the data `Callback::Accept`, each
//! connection with `Callback::Read`; the main loop looks at `key.data` to
//! know what to do, as the seed calls `key.data(key.fileobj, mask)`. As in
//! the seed, the server stops once a client closes its connection.
//!
//! ```sh
//! cargo run -p rselectors --example echo_server -- --addr 127.0.0.1:10000
//! nc 127.0.0.1 10000      # type lines, they come back; Ctrl-D stops the server
//! ```
//!
//! Unlike the seed's blocking `sendall`, echoes go through a small buffer
//! per connection: what the socket does not take at once waits there, with
//! WRITE interest switched on by `modify_events` until it is gone, so
//! nothing is dropped and a slow client never blocks the others.

use rselectors::{DefaultSelector, Events};
use std::io::{self, ErrorKind, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::fd::{AsRawFd, RawFd};
use std::time::Duration;

/// The file objects: the listening socket or a client connection.
#[derive(Debug)]
pub enum Socket {
    /// The listening socket.
    Server(TcpListener),
    /// A client connection.
    Connection(TcpStream),
}

impl AsRawFd for Socket {
    fn as_raw_fd(&self) -> RawFd {
        match self {
            Socket::Server(server) => server.as_raw_fd(),
            Socket::Connection(connection) => connection.as_raw_fd(),
        }
    }
}

/// What to do when a socket is ready: the seed's callbacks, as `key.data`.
#[derive(Debug)]
pub enum Callback {
    /// `accept(sock, mask)`: a client is connecting.
    Accept,
    /// `read(connection, mask)`: the client sent data or left; `outgoing`
    /// holds what was received and not yet echoed back.
    Read {
        /// Bytes waiting to be written back.
        outgoing: Vec<u8>,
    },
}

type Selector = DefaultSelector<Socket, Callback>;

/// A connection that holds this much unsent stops reading from its client
/// until the client reads: memory stays bounded, nothing is dropped.
const MAX_OUTGOING: usize = 64 * 1024;

fn main() -> io::Result<()> {
    let Some(addr) = parse_addr(std::env::args().skip(1)) else {
        eprintln!("usage: echo_server [--addr HOST:PORT]");
        std::process::exit(2);
    };
    let server = TcpListener::bind(&addr)?;
    server.set_nonblocking(true)?;
    println!("listening on {}", server.local_addr()?);
    serve(server)
}

/// `--addr HOST:PORT` (default the seed's `localhost:10000`).
fn parse_addr(mut args: impl Iterator<Item = String>) -> Option<String> {
    let mut addr = "127.0.0.1:10000".to_owned();
    while let Some(arg) = args.next() {
        match (arg.as_str(), args.next()) {
            ("--addr", Some(value)) => addr = value,
            _ => return None,
        }
    }
    Some(addr)
}

/// The seed's main loop, over a non-blocking listening socket.
pub fn serve(server: TcpListener) -> io::Result<()> {
    let mut mysel = Selector::new()?;
    mysel.register(Socket::Server(server), Events::READ, Callback::Accept)?;
    let mut keep_running = true;
    while keep_running {
        println!("waiting for I/O");
        mysel.select(Some(Duration::from_secs(1)))?;
        while let Some((fd, mask)) = mysel.next_ready() {
            match mysel.get_key(fd)?.data {
                Callback::Accept => accept(&mut mysel, fd)?,
                Callback::Read { .. } => keep_running &= read(&mut mysel, fd, mask)?,
            }
        }
    }
    println!("shutting down");
    mysel.close();
    Ok(())
}

/// Callback for new connections.
fn accept(mysel: &mut Selector, fd: RawFd) -> io::Result<()> {
    let Socket::Server(sock) = &mysel.get_key(fd)?.fileobj else {
        return Ok(());
    };
    let (new_connection, addr) = match sock.accept() {
        Ok(accepted) => accepted,
        // Another wake-up took it, or the client gave up: nothing to do.
        Err(e) if e.kind() == ErrorKind::WouldBlock || e.kind() == ErrorKind::ConnectionAborted => {
            return Ok(())
        }
        Err(e) => return Err(e),
    };
    println!("accept({addr})");
    new_connection.set_nonblocking(true)?;
    let callback = Callback::Read {
        outgoing: Vec::new(),
    };
    mysel.register(Socket::Connection(new_connection), Events::READ, callback)?;
    Ok(())
}

/// Callback for read (and write) events. Returns false once the client
/// closed the connection: the seed then stops the main loop.
fn read(mysel: &mut Selector, fd: RawFd, mask: Events) -> io::Result<bool> {
    let key = mysel.get_key_mut(fd)?;
    let (Socket::Connection(connection), Callback::Read { outgoing }) = (key.fileobj, key.data)
    else {
        return Ok(true);
    };
    let mut open = true;
    if mask.contains(Events::READ) {
        match connection.peer_addr() {
            Ok(client_address) => println!("read({client_address})"),
            Err(_) => println!("read(?)"),
        }
        let mut data = [0; 1024];
        match connection.read(&mut data) {
            Ok(0) => open = false,
            Ok(n) => {
                // A readable client socket has data: echo it back.
                println!("  received {:?}", String::from_utf8_lossy(&data[..n]));
                outgoing.extend_from_slice(&data[..n]);
            }
            Err(e) if is_transient(&e) => {}
            Err(e) => {
                println!("  error: {e}");
                open = false;
            }
        }
    }
    // The seed's `sendall`, without blocking: write what the socket takes.
    while open && !outgoing.is_empty() {
        match connection.write(outgoing) {
            Ok(n) => {
                outgoing.drain(..n);
            }
            Err(e) if e.kind() == ErrorKind::WouldBlock => break,
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) => {
                println!("  error: {e}");
                open = false;
            }
        }
    }
    if !open {
        // Interpret an empty read as a closed connection.
        println!("  closing");
        // The selector hands the connection back; dropping it closes it.
        drop(mysel.unregister(fd)?);
        return Ok(false);
    }
    // Wait for WRITE while something is left to send; stop reading while
    // too much is.
    let interest = match outgoing.len() {
        0 => Events::READ,
        n if n < MAX_OUTGOING => Events::READ | Events::WRITE,
        _ => Events::WRITE,
    };
    mysel.modify_events(fd, interest)?;
    Ok(true)
}

fn is_transient(e: &io::Error) -> bool {
    matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::Interrupted)
}
