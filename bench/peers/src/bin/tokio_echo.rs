//! Echo server on `tokio`'s current-thread runtime: one task per connection, each
//! doing `read` then `write_all`, the way most tokio echo examples are written.

use bench_peers::{announce, bind_listener, die, READ_BUF_SIZE};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// Echoes until EOF or the first error. The task owns its buffer (it lives across
/// awaits); `read_buf` into reserved capacity avoids zeroing 64 KiB per connection, so
/// only the pages actually written count towards RSS.
async fn echo(mut stream: TcpStream) {
    let mut buf: Vec<u8> = Vec::with_capacity(READ_BUF_SIZE);
    loop {
        buf.clear();
        match stream.read_buf(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
        if stream.write_all(&buf).await.is_err() {
            return;
        }
    }
}

fn main() {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .build()
        .unwrap_or_else(|e| die("runtime", e));
    runtime.block_on(async {
        let (listener, local) = bind_listener();
        let listener = TcpListener::from_std(listener).unwrap_or_else(|e| die("listener", e));
        announce(local);
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                // EMFILE and friends: keep serving the connections we have.
                tokio::task::yield_now().await;
                continue;
            };
            // Same as every peer: no Nagle delay on small echoes.
            let _ = stream.set_nodelay(true);
            tokio::spawn(echo(stream));
        }
    });
}
