//! What the unit tests share.

use std::io;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::time::{Duration, Instant};

/// The next connection on `listener` (made non-blocking here), waiting at
/// most a few seconds for a connect that is still completing: a test fails
/// rather than hangs.
pub fn accept_within_seconds(listener: &TcpListener) -> (TcpStream, SocketAddr) {
    listener.set_nonblocking(true).unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        match listener.accept() {
            Ok(accepted) => return accepted,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock && Instant::now() < deadline => {
                std::thread::yield_now()
            }
            Err(e) => panic!("accept: {e}"),
        }
    }
}
