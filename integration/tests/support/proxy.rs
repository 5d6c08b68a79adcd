//! A TCP proxy in front of a server port, for tests that cut, refuse, stall or reset
//! connections. Each fault applies to the connections open at that moment; connections made
//! afterwards are forwarded normally (the network healed, the server came back).

use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// What a proxied connection does.
const FORWARD: u8 = 0;
/// Nothing is forwarded either way, and nothing is closed: a stalled network path.
const STALL: u8 = 1;
/// The server side is gone; the client side stays open and silent, with neither FIN nor RST:
/// a half-open connection, as when the server's host vanished.
const VANISH: u8 = 2;
/// Both sides closed (RST, or FIN for a cut).
const CLOSED: u8 = 3;

/// How long a forwarding thread blocks in a read before it looks at the mode again.
const POLL: Duration = Duration::from_millis(50);

/// One proxied connection: the client's socket, the server's, and what to do with them.
struct Link {
    client: TcpStream,
    server: TcpStream,
    mode: AtomicU8,
}

/// A TCP proxy on 127.0.0.1 in front of a server port.
pub struct Proxy {
    pub port: u16,
    links: Arc<Mutex<Vec<Arc<Link>>>>,
    refusing: Arc<AtomicBool>,
    accepted: Arc<Mutex<usize>>,
}

impl Proxy {
    pub fn start(target_port: u16) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").expect("binding the proxy");
        let port = listener.local_addr().unwrap().port();
        let links: Arc<Mutex<Vec<Arc<Link>>>> = Arc::default();
        let refusing: Arc<AtomicBool> = Arc::default();
        let accepted: Arc<Mutex<usize>> = Arc::default();
        let (held, refuse, n) = (
            Arc::clone(&links),
            Arc::clone(&refusing),
            Arc::clone(&accepted),
        );
        // The accept thread lives as long as the test process; it only forwards.
        std::thread::spawn(move || {
            for client in listener.incoming() {
                let Ok(client) = client else { return };
                if refuse.load(Ordering::SeqCst) {
                    let _ = client.shutdown(Shutdown::Both);
                    continue;
                }
                let Ok(server) = TcpStream::connect(("127.0.0.1", target_port)) else {
                    continue;
                };
                *n.lock().unwrap() += 1;
                let link = Arc::new(Link {
                    client,
                    server,
                    mode: AtomicU8::new(FORWARD),
                });
                held.lock().unwrap().push(Arc::clone(&link));
                pipe(Arc::clone(&link), true);
                pipe(link, false);
            }
        });
        Proxy {
            port,
            links,
            refusing,
            accepted,
        }
    }

    /// Connections forwarded to the server so far (faulted ones included).
    pub fn connections(&self) -> usize {
        *self.accepted.lock().unwrap()
    }

    pub fn refuse(&self, on: bool) {
        self.refusing.store(on, Ordering::SeqCst);
    }

    /// Shuts both directions of every open connection down, on both sides (FIN).
    pub fn cut(&self) {
        for link in self.links.lock().unwrap().drain(..) {
            link.mode.store(CLOSED, Ordering::SeqCst);
            let _ = link.client.shutdown(Shutdown::Both);
            let _ = link.server.shutdown(Shutdown::Both);
        }
    }

    /// Stops forwarding on every open connection, closing nothing: both ends wait forever.
    pub fn stall(&self) {
        for link in self.links.lock().unwrap().iter() {
            link.mode.store(STALL, Ordering::SeqCst);
        }
    }

    /// Every open connection becomes half-open: the server side is closed (the server sees
    /// its client go), the client side gets nothing more, not even a FIN or an RST.
    pub fn vanish(&self) {
        for link in self.links.lock().unwrap().iter() {
            link.mode.store(VANISH, Ordering::SeqCst);
            let _ = link.server.shutdown(Shutdown::Both);
        }
    }

    /// Resets every open connection on both sides (RST: SO_LINGER 0, then close).
    pub fn reset(&self) {
        let links: Vec<Arc<Link>> = self.links.lock().unwrap().drain(..).collect();
        for link in &links {
            for s in [&link.client, &link.server] {
                let _ = socket2::SockRef::from(s).set_linger(Some(Duration::ZERO));
            }
            link.mode.store(CLOSED, Ordering::SeqCst);
        }
        // The forwarding threads let go within a poll; the last reference closes the
        // sockets, which with a zero linger sends RST.
        for link in links {
            let deadline = std::time::Instant::now() + Duration::from_secs(5);
            while Arc::strong_count(&link) > 1 && std::time::Instant::now() < deadline {
                std::thread::sleep(POLL);
            }
        }
    }
}

/// Forwards one direction of `link` (client to server when `upstream`) while it is in
/// FORWARD mode, idles while stalled or half-open, and ends when it is closed.
fn pipe(link: Arc<Link>, upstream: bool) {
    std::thread::spawn(move || {
        let (mut from, mut to) = if upstream {
            (&link.client, &link.server)
        } else {
            (&link.server, &link.client)
        };
        let _ = from.set_read_timeout(Some(POLL));
        let mut buf = [0u8; 16 * 1024];
        loop {
            match link.mode.load(Ordering::SeqCst) {
                FORWARD => {}
                STALL | VANISH => {
                    std::thread::sleep(POLL);
                    continue;
                }
                _ => return,
            }
            match from.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => {
                    // Bytes read as a fault begins are never delivered, as on a broken path.
                    if link.mode.load(Ordering::SeqCst) == FORWARD
                        && to.write_all(&buf[..n]).is_err()
                    {
                        break;
                    }
                }
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
                Err(_) => break,
            }
        }
        // The peer closed: pass it on, unless a fault decides what the other side sees.
        if link.mode.load(Ordering::SeqCst) == FORWARD {
            let _ = to.shutdown(Shutdown::Both);
            let _ = from.shutdown(Shutdown::Both);
        }
    });
}
