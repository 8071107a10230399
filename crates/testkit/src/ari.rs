//! A small ACME Renewal Information (RFC 9773) responder in front of Pebble, which has none:
//! it serves Pebble's directory with a `renewalInfo` URL added, and answers renewal-info
//! queries with the window the test sets. Every other ACME request goes to Pebble itself.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;

#[derive(Debug, Default)]
struct Window {
    /// Unix seconds.
    start: i64,
    end: i64,
    retry_after: u64,
    /// The certificate identifiers asked about, in order.
    asked: Vec<String>,
}

#[derive(Clone)]
struct Ari {
    pebble_directory: String,
    client: reqwest::Client,
    base: String,
    window: Arc<Mutex<Window>>,
}

/// A running responder.
#[derive(Debug)]
pub struct AriResponder {
    /// The directory to give the ACME client: Pebble's, plus `renewalInfo`.
    pub directory_url: String,
    window: Arc<Mutex<Window>>,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl AriResponder {
    /// Starts in front of `pebble_directory`, trusting `pebble_ca_pem` to reach it.
    pub fn start(pebble_directory: &str, pebble_ca_pem: &str) -> Self {
        let client = reqwest::Client::builder()
            .tls_certs_only([
                reqwest::Certificate::from_pem(pebble_ca_pem.as_bytes()).expect("Pebble's CA")
            ])
            .build()
            .expect("client");
        let window = Arc::new(Mutex::new(Window {
            retry_after: 3600,
            ..Window::default()
        }));
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let (shutdown_tx, shutdown_rx) = tokio::sync::oneshot::channel::<()>();
        let state_window = window.clone();
        let pebble_directory = pebble_directory.to_owned();
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("ARI runtime");
            rt.block_on(async move {
                let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
                    .await
                    .expect("bind");
                let addr: SocketAddr = listener.local_addr().unwrap();
                let state = Ari {
                    pebble_directory,
                    client,
                    base: format!("http://{addr}"),
                    window: state_window,
                };
                let app = Router::new()
                    .route("/dir", get(directory))
                    .route("/renewal-info/{id}", get(renewal_info))
                    .with_state(state);
                ready_tx.send(addr).unwrap();
                axum::serve(listener, app)
                    .with_graceful_shutdown(async {
                        let _ = shutdown_rx.await;
                    })
                    .await
                    .expect("serve");
            });
        });
        let addr = ready_rx.recv().expect("the ARI responder started");
        Self {
            directory_url: format!("http://{addr}/dir"),
            window,
            shutdown: Some(shutdown_tx),
            thread: Some(thread),
        }
    }

    /// The window every certificate gets from now on, and the Retry-After sent with it.
    pub fn set_window(&self, start: i64, end: i64, retry_after: u64) {
        let mut w = self.window.lock().unwrap();
        w.start = start;
        w.end = end;
        w.retry_after = retry_after;
    }

    /// The certificate identifiers asked about so far.
    pub fn asked(&self) -> Vec<String> {
        self.window.lock().unwrap().asked.clone()
    }
}

impl Drop for AriResponder {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

async fn directory(State(ari): State<Ari>) -> impl IntoResponse {
    let fetched = async {
        ari.client
            .get(&ari.pebble_directory)
            .send()
            .await?
            .json::<serde_json::Value>()
            .await
    };
    match fetched.await {
        Ok(mut dir) => {
            dir["renewalInfo"] = format!("{}/renewal-info", ari.base).into();
            (StatusCode::OK, axum::Json(dir)).into_response()
        }
        Err(e) => (StatusCode::BAD_GATEWAY, e.to_string()).into_response(),
    }
}

fn rfc3339(unix: i64) -> String {
    humantime::format_rfc3339_seconds(
        std::time::UNIX_EPOCH + std::time::Duration::from_secs(unix.max(0) as u64),
    )
    .to_string()
}

async fn renewal_info(State(ari): State<Ari>, Path(id): Path<String>) -> impl IntoResponse {
    let mut w = ari.window.lock().unwrap();
    w.asked.push(id);
    let mut headers = HeaderMap::new();
    headers.insert(
        header::RETRY_AFTER,
        w.retry_after.to_string().parse().unwrap(),
    );
    let body = serde_json::json!({
        "suggestedWindow": {"start": rfc3339(w.start), "end": rfc3339(w.end)},
    });
    (StatusCode::OK, headers, axum::Json(body))
}
