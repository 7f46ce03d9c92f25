//! A TCP relay on 127.0.0.1 in front of a loopback server, that does to the server's answers what
//! a bad network does: cuts them short, resets the connection, flips a byte, or stops sending
//! while holding the connection open. Issue 9's network-fault suite puts it between a device and
//! the git server.
//!
//! It relays bytes, not HTTP: behind TLS it cannot pick a message, so a fault is placed by
//! connection number and byte offset in the server's answer. [`FaultyRelay::traffic`] tells, from
//! a clean run, how many bytes each connection carried, so that a fault lands mid-transfer.

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{ensure, Result};

use crate::proxy::Acceptor;

/// What happens to the server's answer on connection `conn` (1 = the first since the fault was
/// set; 0 = every connection) once `after` bytes of it have been relayed. With 0, a fault placed
/// past the size of small answers hits only a large one, such as a pack.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fault {
    /// Relay everything.
    None,
    /// Close the connection cleanly (FIN): the answer is cut short.
    Truncate { conn: usize, after: u64 },
    /// Abort the connection (RST).
    Reset { conn: usize, after: u64 },
    /// Flip every bit of one byte, then go on relaying.
    Corrupt { conn: usize, after: u64 },
    /// Stop relaying and keep the connection open until the client gives up.
    Stall { conn: usize, after: u64 },
}

impl Fault {
    fn target(&self) -> Option<(usize, u64)> {
        match *self {
            Fault::None => None,
            Fault::Truncate { conn, after }
            | Fault::Reset { conn, after }
            | Fault::Corrupt { conn, after }
            | Fault::Stall { conn, after } => Some((conn, after)),
        }
    }
}

#[derive(Default)]
struct Shared {
    fault: Option<Fault>,
    /// Connections accepted since the fault was set.
    conns: usize,
    /// Bytes the server sent on each connection since the fault was set.
    traffic: Vec<u64>,
    /// Bytes the client sent, on all connections, since the fault was set.
    requested: u64,
}

pub struct FaultyRelay {
    acceptor: Acceptor,
    shared: Arc<Mutex<Shared>>,
}

/// How long a stalled connection is held at most (a client must give up well before).
const HOLD: Duration = Duration::from_secs(120);

impl FaultyRelay {
    /// Relays to `upstream`, which must be a loopback address.
    pub fn start(upstream: SocketAddr) -> Result<FaultyRelay> {
        ensure!(upstream.ip().is_loopback(), "relay only to loopback");
        let shared = Arc::new(Mutex::new(Shared::default()));
        let state = shared.clone();
        let acceptor = Acceptor::start(move |client, stop| {
            let (index, fault) = {
                let mut s = state.lock().unwrap_or_else(|p| p.into_inner());
                s.conns += 1;
                s.traffic.push(0);
                (s.conns, s.fault.unwrap_or(Fault::None))
            };
            let _ = relay(client, upstream, index, fault, &state, stop);
        })?;
        Ok(FaultyRelay { acceptor, shared })
    }

    pub fn port(&self) -> u16 {
        self.acceptor.addr.port()
    }

    /// Applies `fault` to the connections from now on, counted from 1, and clears the traffic.
    pub fn set(&self, fault: Fault) {
        let mut s = self.shared.lock().unwrap_or_else(|p| p.into_inner());
        *s = Shared {
            fault: Some(fault),
            ..Shared::default()
        };
    }

    /// Bytes on the wire since the last [`FaultyRelay::set`]: (client to server, server to
    /// client), summed over connections. TLS records and HTTP headers included: what a metered
    /// link would bill.
    pub fn bytes(&self) -> (u64, u64) {
        let s = self.shared.lock().unwrap_or_else(|p| p.into_inner());
        (s.requested, s.traffic.iter().sum())
    }

    /// Bytes the server sent on each connection since the last [`FaultyRelay::set`].
    pub fn traffic(&self) -> Vec<u64> {
        self.shared
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .traffic
            .clone()
    }
}

fn relay(
    client: TcpStream,
    upstream: SocketAddr,
    index: usize,
    fault: Fault,
    state: &Arc<Mutex<Shared>>,
    stop: &AtomicBool,
) -> Result<()> {
    let server = TcpStream::connect_timeout(&upstream, Duration::from_secs(5))?;
    // Relay each chunk as it comes: Nagle's algorithm here would hold small TLS records back
    // for the peer's delayed ACK (40 ms), a latency no router adds.
    server.set_nodelay(true)?;
    client.set_nodelay(true)?;
    let mut to_server = server.try_clone()?;
    let mut from_client = client.try_clone()?;
    let counts = Arc::clone(state);
    let forward = std::thread::spawn(move || {
        if let Ok(n) = std::io::copy(&mut from_client, &mut to_server) {
            counts.lock().unwrap_or_else(|p| p.into_inner()).requested += n;
        }
        let _ = to_server.shutdown(Shutdown::Write);
    });
    let armed = fault
        .target()
        .filter(|&(conn, _)| conn == 0 || conn == index);
    let mut from_server = server;
    let mut to_client = client;
    from_server.set_read_timeout(Some(Duration::from_millis(200)))?;
    let mut sent: u64 = 0;
    let mut buf = [0u8; 8192];
    loop {
        if stop.load(Ordering::SeqCst) {
            break;
        }
        let n = match from_server.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                continue
            }
            Err(_) => break,
        };
        let mut chunk = buf[..n].to_vec();
        if let Some((_, after)) = armed {
            let end = sent + n as u64;
            if end > after {
                let cut = (after - sent.min(after)) as usize;
                match fault {
                    Fault::Truncate { .. } | Fault::Reset { .. } | Fault::Stall { .. } => {
                        to_client.write_all(&chunk[..cut])?;
                        count(state, index, cut as u64);
                        match fault {
                            Fault::Truncate { .. } => {
                                let _ = to_client.shutdown(Shutdown::Both);
                            }
                            Fault::Reset { .. } => {
                                reset(&to_client);
                                let _ = forward.join();
                                // Dropping the last descriptor now sends the RST.
                                return Ok(());
                            }
                            _ => hold(&to_client, stop),
                        }
                        break;
                    }
                    Fault::Corrupt { .. } if sent <= after => chunk[cut] ^= 0xff,
                    _ => {}
                }
            }
        }
        to_client.write_all(&chunk)?;
        sent += n as u64;
        count(state, index, n as u64);
    }
    let _ = to_client.shutdown(Shutdown::Write);
    let _ = forward.join();
    Ok(())
}

fn count(state: &Mutex<Shared>, index: usize, n: u64) {
    let mut s = state.lock().unwrap_or_else(|p| p.into_inner());
    if let Some(t) = s.traffic.get_mut(index - 1) {
        *t += n;
    }
}

/// Arms SO_LINGER 0, so that the close sends RST instead of FIN, and ends the reads of the
/// client-to-server thread (SHUT_RD sends nothing), so that its descriptor closes too.
fn reset(conn: &TcpStream) {
    let linger = libc::linger {
        l_onoff: 1,
        l_linger: 0,
    };
    // SAFETY: setsockopt on a descriptor this stream owns, with a correctly sized option.
    unsafe {
        libc::setsockopt(
            conn.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_LINGER,
            &linger as *const libc::linger as *const libc::c_void,
            std::mem::size_of::<libc::linger>() as libc::socklen_t,
        );
    }
    let _ = conn.shutdown(Shutdown::Read);
}

/// Sends nothing more until the client closes, the relay stops, or [`HOLD`] passes.
fn hold(conn: &TcpStream, stop: &AtomicBool) {
    let mut c = conn;
    let _ = c.set_read_timeout(Some(Duration::from_millis(200)));
    let mut buf = [0u8; 4096];
    let started = std::time::Instant::now();
    while started.elapsed() < HOLD && !stop.load(Ordering::SeqCst) {
        match c.read(&mut buf) {
            Ok(0) => break,
            Ok(_) => {}
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            Err(_) => break,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::TcpListener;

    /// A server that answers every connection with `len` bytes 0, 1, 2 … and closes.
    fn counting_server(len: usize) -> SocketAddr {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        std::thread::spawn(move || {
            for c in l.incoming() {
                let Ok(mut c) = c else { continue };
                let data: Vec<u8> = (0..len).map(|i| i as u8).collect();
                std::thread::spawn(move || {
                    let _ = c.write_all(&data);
                });
            }
        });
        addr
    }

    fn fetch(port: u16) -> std::io::Result<Vec<u8>> {
        let mut c = TcpStream::connect(("127.0.0.1", port))?;
        c.set_read_timeout(Some(Duration::from_secs(2)))?;
        let mut out = Vec::new();
        c.read_to_end(&mut out)?;
        Ok(out)
    }

    #[test]
    fn each_fault_hits_only_its_connection_at_its_offset() {
        let relay = FaultyRelay::start(counting_server(50_000)).unwrap();
        let whole: Vec<u8> = (0..50_000).map(|i| i as u8).collect();

        relay.set(Fault::None);
        assert!(fetch(relay.port()).unwrap() == whole, "relayed whole");
        assert_eq!(relay.traffic(), [50_000]);

        relay.set(Fault::Truncate {
            conn: 2,
            after: 30_000,
        });
        assert!(
            fetch(relay.port()).unwrap() == whole,
            "connection 1 is clean"
        );
        assert!(
            fetch(relay.port()).unwrap() == whole[..30_000],
            "cut at 30000"
        );

        relay.set(Fault::Corrupt {
            conn: 1,
            after: 12_345,
        });
        let got = fetch(relay.port()).unwrap();
        assert_eq!(got.len(), whole.len());
        let diff: Vec<usize> = (0..got.len()).filter(|&i| got[i] != whole[i]).collect();
        assert_eq!(diff, [12_345]);

        relay.set(Fault::Reset {
            conn: 1,
            after: 20_000,
        });
        let err = fetch(relay.port()).map(|v| v.len()).unwrap_err();
        assert_eq!(err.kind(), std::io::ErrorKind::ConnectionReset, "{err}");

        relay.set(Fault::Stall {
            conn: 1,
            after: 1_000,
        });
        let err = fetch(relay.port()).map(|v| v.len()).unwrap_err();
        assert!(
            matches!(
                err.kind(),
                std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
            ),
            "a stalled answer ends in the client's timeout: {err}"
        );
        assert_eq!(relay.traffic(), [1_000]);
    }
}
