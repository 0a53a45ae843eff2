//! delay_proxy: a TCP forwarder that delays each direction by a fixed time, to emulate a WAN round
//! trip on loopback for `contrib/bench.sh` (netem is not available on the test machines).
//!
//! ```text
//! delay_proxy --to 127.0.0.1:PORT --delay-ms 10 [--listen 127.0.0.1:0]
//! ```
//!
//! Prints `listening 127.0.0.1:N` on stdout once bound, then serves until killed. Every accepted
//! connection gets its own upstream connection; each chunk read from one side is written to the
//! other side `delay` after it was read (EOF too), so a request/response pays 2 × delay. Bandwidth
//! is not limited: up to [`MAX_IN_FLIGHT`] bytes per direction may be "on the wire", far more
//! than any bandwidth-delay product the bench reaches. Only the application-level round trip is
//! emulated (both TCP legs are loopback, so TCP's own congestion control does not see the delay):
//! what it shows is how a protocol's windows and round trips behave over a long link.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, mpsc};
use tokio::time::Instant;

/// Bytes per direction read but not yet written (the "link" buffer).
pub const MAX_IN_FLIGHT: usize = 64 << 20;
const READ_CHUNK: usize = 256 << 10;

/// Accepts connections on `listener` forever, forwarding each to `upstream` with `delay` added
/// in each direction.
pub async fn serve(listener: TcpListener, upstream: SocketAddr, delay: Duration) {
    loop {
        let (client, _) = match listener.accept().await {
            Ok(c) => c,
            Err(e) => {
                eprintln!("delay_proxy: accept: {e}");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        tokio::spawn(async move {
            if let Err(e) = forward(client, upstream, delay).await {
                eprintln!("delay_proxy: {upstream}: {e}");
            }
        });
    }
}

async fn forward(client: TcpStream, upstream: SocketAddr, delay: Duration) -> std::io::Result<()> {
    let server = TcpStream::connect(upstream).await?;
    client.set_nodelay(true)?;
    server.set_nodelay(true)?;
    let (cr, cw) = client.into_split();
    let (sr, sw) = server.into_split();
    let up = tokio::spawn(direction(cr, sw, delay));
    let down = tokio::spawn(direction(sr, cw, delay));
    let _ = up.await;
    let _ = down.await;
    Ok(())
}

/// One direction: a reader stamping chunks with their due time, a writer sending them when due.
async fn direction(mut rd: OwnedReadHalf, mut wr: OwnedWriteHalf, delay: Duration) {
    let room = Arc::new(Semaphore::new(MAX_IN_FLIGHT));
    // `None` = EOF (or a read error: the peer sees the end of the stream).
    let (tx, mut rx) = mpsc::unbounded_channel::<(Instant, Option<Bytes>)>();
    let room_r = room.clone();
    let reader = tokio::spawn(async move {
        let mut buf = BytesMut::with_capacity(READ_CHUNK);
        loop {
            buf.reserve(READ_CHUNK);
            match rd.read_buf(&mut buf).await {
                Ok(0) | Err(_) => {
                    let _ = tx.send((Instant::now() + delay, None));
                    return;
                }
                Ok(n) => {
                    let Ok(permit) = room_r.acquire_many(n as u32).await else {
                        return;
                    };
                    permit.forget();
                    let chunk = buf.split().freeze();
                    if tx.send((Instant::now() + delay, Some(chunk))).is_err() {
                        return;
                    }
                }
            }
        }
    });
    while let Some((due, chunk)) = rx.recv().await {
        tokio::time::sleep_until(due).await;
        match chunk {
            Some(c) => {
                if wr.write_all(&c).await.is_err() {
                    break;
                }
                room.add_permits(c.len());
            }
            None => break,
        }
    }
    let _ = wr.shutdown().await;
    // The writer is gone (EOF passed on, or the peer closed): stop reading this direction.
    room.close();
    reader.abort();
}

fn usage() -> ! {
    eprintln!("usage: delay_proxy --to HOST:PORT --delay-ms MS [--listen ADDR:PORT]");
    std::process::exit(2);
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let mut listen: SocketAddr = SocketAddr::from(([127, 0, 0, 1], 0));
    let mut to: Option<SocketAddr> = None;
    let mut delay_ms: Option<u64> = None;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let v = args.next().unwrap_or_else(|| usage());
        match a.as_str() {
            "--listen" => listen = v.parse().unwrap_or_else(|_| usage()),
            "--to" => to = Some(v.parse().unwrap_or_else(|_| usage())),
            "--delay-ms" => delay_ms = Some(v.parse().unwrap_or_else(|_| usage())),
            _ => usage(),
        }
    }
    let (Some(to), Some(delay_ms)) = (to, delay_ms) else {
        usage()
    };
    let listener = match TcpListener::bind(listen).await {
        Ok(l) => l,
        Err(e) => {
            eprintln!("delay_proxy: cannot listen on {listen}: {e}");
            std::process::exit(1);
        }
    };
    match listener.local_addr() {
        Ok(a) => println!("listening {a}"),
        Err(e) => {
            eprintln!("delay_proxy: {e}");
            std::process::exit(1);
        }
    }
    serve(listener, to, Duration::from_millis(delay_ms)).await;
}
