//! A webhook receiver: an HTTP server on loopback that records every JSON body posted to it,
//! and answers 200, or 503 while told to fail (a receiver that is down).

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::Value;

#[derive(Debug, Default)]
struct State {
    bodies: Mutex<Vec<Value>>,
    failing: AtomicBool,
    refused: Mutex<u32>,
}

/// The receiver; it stops accepting when dropped.
#[derive(Debug)]
pub struct Webhook {
    pub port: u16,
    state: Arc<State>,
    stop: Arc<AtomicBool>,
}

impl Webhook {
    /// Listens on `port` (or a free one for 0).
    pub fn start(port: u16) -> Self {
        let port = if port == 0 { crate::free_port() } else { port };
        let listener = TcpListener::bind(("127.0.0.1", port)).expect("bind the webhook port");
        listener
            .set_nonblocking(true)
            .expect("non-blocking listener");
        let state = Arc::new(State::default());
        let stop = Arc::new(AtomicBool::new(false));
        let (s, halt) = (state.clone(), stop.clone());
        std::thread::spawn(move || {
            while !halt.load(Ordering::SeqCst) {
                match listener.accept() {
                    Ok((tcp, _)) => {
                        let _ = serve(tcp, &s);
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(20)),
                }
            }
        });
        Self { port, state, stop }
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}/hook", self.port)
    }

    /// While true, every post is answered 503 and not recorded.
    pub fn fail(&self, failing: bool) {
        self.state.failing.store(failing, Ordering::SeqCst);
    }

    /// The bodies received so far.
    pub fn bodies(&self) -> Vec<Value> {
        self.state.bodies.lock().unwrap().clone()
    }

    /// How many posts were answered 503.
    pub fn refused(&self) -> u32 {
        *self.state.refused.lock().unwrap()
    }
}

impl Drop for Webhook {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
    }
}

fn serve(tcp: std::net::TcpStream, state: &State) -> std::io::Result<()> {
    tcp.set_nonblocking(false)?;
    tcp.set_read_timeout(Some(Duration::from_secs(5)))?;
    let mut reader = BufReader::new(tcp.try_clone()?);
    let mut length = 0usize;
    let mut line = String::new();
    loop {
        line.clear();
        if reader.read_line(&mut line)? == 0 {
            return Ok(());
        }
        let l = line.trim_end();
        if l.is_empty() {
            break;
        }
        if let Some((k, v)) = l.split_once(':')
            && k.eq_ignore_ascii_case("content-length")
        {
            length = v.trim().parse().unwrap_or(0);
        }
    }
    let mut body = vec![0; length];
    reader.read_exact(&mut body)?;
    let mut tcp = tcp;
    if state.failing.load(Ordering::SeqCst) {
        *state.refused.lock().unwrap() += 1;
        return tcp.write_all(
            b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 4\r\nConnection: close\r\n\r\ndown",
        );
    }
    if let Ok(v) = serde_json::from_slice::<Value>(&body) {
        state.bodies.lock().unwrap().push(v);
    }
    tcp.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
}
