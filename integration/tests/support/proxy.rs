//! A TCP proxy in front of a server port, for tests that cut or refuse connections.

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

/// A TCP proxy on 127.0.0.1 in front of a server port: `cut` drops every connection through
/// it, `refuse` makes it close new connections at once (the server "unreachable").
pub struct Proxy {
    pub port: u16,
    sockets: Arc<Mutex<Vec<TcpStream>>>,
    refusing: Arc<AtomicBool>,
    accepted: Arc<Mutex<usize>>,
}

impl Proxy {
    pub fn start(target_port: u16) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").expect("binding the proxy");
        let port = listener.local_addr().unwrap().port();
        let sockets: Arc<Mutex<Vec<TcpStream>>> = Arc::default();
        let refusing: Arc<AtomicBool> = Arc::default();
        let accepted: Arc<Mutex<usize>> = Arc::default();
        let (held, refuse, n) = (
            Arc::clone(&sockets),
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
                let mut list = held.lock().unwrap();
                list.push(client.try_clone().unwrap());
                list.push(server.try_clone().unwrap());
                pipe(client.try_clone().unwrap(), server.try_clone().unwrap());
                pipe(server, client);
            }
        });
        Proxy {
            port,
            sockets,
            refusing,
            accepted,
        }
    }

    /// Connections forwarded to the server so far (cut ones included).
    pub fn connections(&self) -> usize {
        *self.accepted.lock().unwrap()
    }

    pub fn refuse(&self, on: bool) {
        self.refusing.store(on, Ordering::SeqCst);
    }

    /// Shuts both directions of every proxied connection down, on both sides.
    pub fn cut(&self) {
        for s in self.sockets.lock().unwrap().drain(..) {
            let _ = s.shutdown(Shutdown::Both);
        }
    }
}

fn pipe(mut from: TcpStream, mut to: TcpStream) {
    std::thread::spawn(move || {
        let mut buf = [0u8; 16 * 1024];
        loop {
            match from.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    if to.write_all(&buf[..n]).is_err() {
                        break;
                    }
                }
            }
        }
        let _ = to.shutdown(Shutdown::Both);
        let _ = from.shutdown(Shutdown::Both);
    });
}
