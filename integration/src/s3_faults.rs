//! A fault-injecting HTTP proxy in front of an [`S3Server`], for tests that prove the S3
//! backend's retries: answer `503 SlowDown` or `500 InternalError` instead of the server, close
//! the connection in the middle of a request body, stall past the client's timeout, or carry a
//! request out and lose its answer, for the next N requests that match.
//!
//! ```no_run
//! let s3 = integration::S3Server::start();
//! let proxy = integration::FaultProxy::start(&s3);
//! proxy.inject("PUT", "", integration::Fault::SlowDown, 2);
//! let _env = proxy.env(&s3); // AWS_ENDPOINT_URL points at the proxy
//! ```
//!
//! One request per connection: each is forwarded on a new upstream connection with
//! `Connection: close`, so the answer closes the client's connection too and every request is
//! seen whole. Bodies are read by `Content-Length` (what the S3 client sends).

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Ipv4Addr, Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::S3Server;

/// What the proxy does instead of forwarding a request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fault {
    /// `503 Slow Down` with the `SlowDown` error code (S3's throttling answer).
    SlowDown,
    /// `500 Internal Server Error` with the `InternalError` code.
    InternalError,
    /// Reads half of the request body, then closes the connection.
    ResetMidBody,
    /// Reads the request, then answers nothing for this long, then closes.
    Stall(Duration),
    /// Forwards the request (the server carries it out), then closes the connection without
    /// the answer: the client cannot tell whether it was done.
    LoseResponse,
}

struct Rule {
    method: String,
    target_contains: String,
    fault: Fault,
    times: usize,
}

#[derive(Default)]
struct Shared {
    rules: Mutex<Vec<Rule>>,
    /// One line per request: `METHOD target -> forwarded | Fault`.
    log: Mutex<Vec<String>>,
    stop: AtomicBool,
}

/// The proxy; stops accepting when dropped.
pub struct FaultProxy {
    port: u16,
    shared: Arc<Shared>,
}

impl FaultProxy {
    /// A proxy on a free loopback port forwarding to `s3`.
    pub fn start(s3: &S3Server) -> FaultProxy {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
            .unwrap_or_else(|e| panic!("binding the fault proxy: {e}"));
        let port = listener.local_addr().expect("proxy address").port();
        let shared = Arc::new(Shared::default());
        let upstream = s3.port();
        let accept_shared = Arc::clone(&shared);
        std::thread::spawn(move || {
            for client in listener.incoming() {
                if accept_shared.stop.load(Ordering::SeqCst) {
                    return;
                }
                let Ok(client) = client else { continue };
                let shared = Arc::clone(&accept_shared);
                std::thread::spawn(move || {
                    let _ = serve(client, upstream, &shared);
                });
            }
        });
        FaultProxy { port, shared }
    }

    /// `http://127.0.0.1:PORT` of the proxy.
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// `s3`'s environment with the endpoint pointing at the proxy.
    pub fn env(&self, s3: &S3Server) -> Vec<(String, String)> {
        let mut env = s3.env();
        for (k, v) in &mut env {
            if k == "AWS_ENDPOINT_URL" {
                *v = self.endpoint();
            }
        }
        env
    }

    /// Applies `fault` to the next `times` requests whose method is `method` (any when empty)
    /// and whose target (path and query) contains `target_contains`. `usize::MAX`: always.
    pub fn inject(&self, method: &str, target_contains: &str, fault: Fault, times: usize) {
        self.shared.rules.lock().expect("rules").push(Rule {
            method: method.to_string(),
            target_contains: target_contains.to_string(),
            fault,
            times,
        });
    }

    /// Removes every rule: everything is forwarded again.
    pub fn clear(&self) {
        self.shared.rules.lock().expect("rules").clear();
    }

    /// What it did so far, one line per request.
    pub fn log(&self) -> Vec<String> {
        self.shared.log.lock().expect("log").clone()
    }

    /// How many requests got a fault instead of an answer.
    pub fn faults_applied(&self) -> usize {
        self.log()
            .iter()
            .filter(|l| !l.ends_with("forwarded"))
            .count()
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        // Wake the accept loop so it sees the flag.
        let _ = TcpStream::connect((Ipv4Addr::LOCALHOST, self.port));
    }
}

fn take_fault(shared: &Shared, method: &str, target: &str) -> Option<Fault> {
    let mut rules = shared.rules.lock().expect("rules");
    let rule = rules.iter_mut().find(|r| {
        r.times > 0
            && (r.method.is_empty() || r.method == method)
            && target.contains(&r.target_contains)
    })?;
    if rule.times != usize::MAX {
        rule.times -= 1;
    }
    Some(rule.fault)
}

fn error_response(status: &str, code: &str) -> Vec<u8> {
    let body = format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?><Error><Code>{code}</Code>\
         <Message>injected by the test proxy</Message></Error>"
    );
    format!(
        "HTTP/1.1 {status}\r\nContent-Type: application/xml\r\nContent-Length: {}\r\n\
         Connection: close\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

/// Serves one request of `client`.
fn serve(client: TcpStream, upstream: u16, shared: &Shared) -> std::io::Result<()> {
    let mut reader = BufReader::new(client.try_clone()?);
    let mut head = Vec::new();
    let mut content_length = 0usize;
    let mut request_line = String::new();
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line)? == 0 {
            return Ok(()); // closed before a request
        }
        if request_line.is_empty() {
            request_line = line.trim_end().to_string();
            continue;
        }
        if line == "\r\n" {
            head.extend_from_slice(b"Connection: close\r\n\r\n");
            break;
        }
        let lower = line.to_ascii_lowercase();
        if let Some(v) = lower.strip_prefix("content-length:") {
            content_length = v.trim().parse().unwrap_or(0);
        }
        if lower.starts_with("connection:") {
            continue;
        }
        head.extend_from_slice(line.as_bytes());
    }
    let mut parts = request_line.split(' ');
    let method = parts.next().unwrap_or_default().to_string();
    let target = parts.next().unwrap_or_default().to_string();
    let fault = take_fault(shared, &method, &target);
    shared.log.lock().expect("log").push(format!(
        "{method} {target} -> {}",
        fault.map_or("forwarded".to_string(), |f| format!("{f:?}"))
    ));
    let mut client = client;
    let mut body = vec![0u8; content_length];
    match fault {
        Some(Fault::ResetMidBody) => {
            let half = content_length / 2;
            reader.read_exact(&mut body[..half])?;
            client.shutdown(Shutdown::Both)?;
            return Ok(());
        }
        _ => reader.read_exact(&mut body)?,
    }
    match fault {
        Some(Fault::SlowDown) => {
            client.write_all(&error_response("503 Slow Down", "SlowDown"))?;
        }
        Some(Fault::InternalError) => {
            client.write_all(&error_response(
                "500 Internal Server Error",
                "InternalError",
            ))?;
        }
        Some(Fault::Stall(d)) => std::thread::sleep(d),
        Some(Fault::ResetMidBody) => unreachable!("handled above"),
        None | Some(Fault::LoseResponse) => {
            let mut up = TcpStream::connect((Ipv4Addr::LOCALHOST, upstream))?;
            up.write_all(request_line.as_bytes())?;
            up.write_all(b"\r\n")?;
            up.write_all(&head)?;
            up.write_all(&body)?;
            if fault.is_some() {
                std::io::copy(&mut up, &mut std::io::sink())?;
            } else {
                std::io::copy(&mut up, &mut client)?;
            }
        }
    }
    client.shutdown(Shutdown::Both)
}
