//! A stand-in for cloudflared, documented as such (`../shared/TESTING.md`): no trustworthy
//! cloudflared binary can be fetched or built here. It takes the command line the agent writes
//! into a tunnel's unit, `tunnel --no-autoupdate [--metrics ADDR] run --token-file F` (or
//! `TUNNEL_TOKEN_FILE`), decodes and checks the token as cloudflared does (base64 JSON
//! `{a, t, s}`), registers its connections with the emulator's edge, tells systemd READY=1 only
//! once connected, serves `/ready` and `/metrics`, and logs to stdout. SIGUSR1 turns it unready
//! (as a connector that hangs while its unit looks active), SIGUSR2 ready again; SIGTERM drops
//! its connections and exits.
//!
//! The edge is `$CLOUDFLARED_STANDIN_EDGE`, else the first line of
//! `/etc/cloudflared-standin/edge` (what a test writes into a booted box).

use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use base64::Engine;
use serde_json::{Value, json};
use tokio::signal::unix::{SignalKind, signal};

const VERSION: &str = "2026.1.0-standin";

/// What the command line says.
#[derive(Debug, Default)]
struct Args {
    metrics: Option<SocketAddr>,
    token_file: Option<String>,
    token: Option<String>,
}

fn parse(args: &[String]) -> Result<Args, String> {
    let mut out = Args::default();
    let mut it = args.iter();
    let mut words = Vec::new();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--no-autoupdate" => {}
            "--metrics" => {
                let addr = it.next().ok_or("--metrics needs an address")?;
                out.metrics = Some(addr.parse().map_err(|_| format!("--metrics {addr:?}"))?);
            }
            "--token-file" => {
                out.token_file = Some(it.next().ok_or("--token-file needs a path")?.clone())
            }
            "--token" => out.token = Some(it.next().ok_or("--token needs a value")?.clone()),
            flag if flag.starts_with("--") => return Err(format!("unknown flag {flag}")),
            word => words.push(word.to_owned()),
        }
    }
    if words != ["tunnel", "run"] {
        return Err(format!("expected `tunnel … run`, got {words:?}"));
    }
    Ok(out)
}

/// The token decoded as cloudflared decodes it: base64 (standard) of JSON `{a, t, s}`.
fn decode(token: &str) -> Result<Value, String> {
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(token.trim())
        .map_err(|_| "Provided Tunnel token is not valid.".to_owned())?;
    let v: Value = serde_json::from_slice(&bytes)
        .map_err(|_| "Provided Tunnel token is not valid.".to_owned())?;
    for field in ["a", "t", "s"] {
        if v[field].as_str().is_none_or(str::is_empty) {
            return Err("Provided Tunnel token is not valid.".to_owned());
        }
    }
    Ok(v)
}

fn edge_url() -> Result<String, String> {
    if let Ok(url) = std::env::var("CLOUDFLARED_STANDIN_EDGE") {
        return Ok(url);
    }
    std::fs::read_to_string("/etc/cloudflared-standin/edge")
        .map(|t| t.lines().next().unwrap_or_default().trim().to_owned())
        .map_err(|e| {
            format!(
                "no edge: set CLOUDFLARED_STANDIN_EDGE or write /etc/cloudflared-standin/edge ({e})"
            )
        })
}

fn log(level: &str, message: &str) {
    let now = humantime::format_rfc3339_seconds(std::time::SystemTime::now());
    println!("{now} {level} {message}");
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match tokio::runtime::Runtime::new()
        .expect("runtime")
        .block_on(run(&args))
    {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            log("ERR", &e);
            ExitCode::FAILURE
        }
    }
}

async fn run(args: &[String]) -> Result<(), String> {
    let args = parse(args)?;
    let file = args
        .token_file
        .clone()
        .or_else(|| std::env::var("TUNNEL_TOKEN_FILE").ok());
    let token = match (file, &args.token) {
        (Some(f), _) => std::fs::read_to_string(&f)
            .map_err(|e| format!("cannot read the token file {f}: {e}"))?,
        (None, Some(t)) => t.clone(),
        (None, None) => return Err("no token: give --token-file".into()),
    };
    let decoded = decode(&token)?;
    let tunnel = decoded["t"].as_str().unwrap_or_default().to_owned();
    let edge = edge_url()?;
    let connector = gatehouse_testkit::free_port().to_string() + &std::process::id().to_string();
    let client = reqwest::Client::new();
    let answer = client
        .post(format!("{edge}/connect"))
        .json(&json!({"token": token.trim(), "client_id": connector, "client_version": VERSION, "origin_ip": "127.0.0.1"}))
        .send()
        .await
        .map_err(|e| format!("cannot reach the edge {edge}: {e}"))?;
    if !answer.status().is_success() {
        let body = answer.text().await.unwrap_or_default();
        return Err(format!("the edge refused the tunnel token: {body}"));
    }
    for index in 0..4 {
        log(
            "INF",
            &format!(
                "Registered tunnel connection connIndex={index} tunnelID={tunnel} connectorID={connector}"
            ),
        );
    }
    let ready = Arc::new(AtomicBool::new(true));
    if let Some(addr) = args.metrics {
        serve_metrics(addr, ready.clone(), connector.clone()).await?;
        log("INF", &format!("Starting metrics server on {addr}/metrics"));
    }
    gatehouse_agent::service::notify_ready();

    let mut term = signal(SignalKind::terminate()).map_err(|e| e.to_string())?;
    let mut int = signal(SignalKind::interrupt()).map_err(|e| e.to_string())?;
    let mut usr1 = signal(SignalKind::user_defined1()).map_err(|e| e.to_string())?;
    let mut usr2 = signal(SignalKind::user_defined2()).map_err(|e| e.to_string())?;
    loop {
        tokio::select! {
            _ = term.recv() => break,
            _ = int.recv() => break,
            _ = usr1.recv() => {
                ready.store(false, Ordering::SeqCst);
                log("ERR", "Connection terminated error=\"lost connection to the edge\" (stand-in told to turn unready)");
            }
            _ = usr2.recv() => {
                ready.store(true, Ordering::SeqCst);
                log("INF", "Connection re-established (stand-in told to turn ready)");
            }
        }
    }
    log(
        "INF",
        "Initiating graceful shutdown due to signal terminated ...",
    );
    let _ = client
        .post(format!("{edge}/disconnect"))
        .json(&json!({"client_id": connector}))
        .send()
        .await;
    Ok(())
}

async fn serve_metrics(
    addr: SocketAddr,
    ready: Arc<AtomicBool>,
    connector: String,
) -> Result<(), String> {
    use axum::http::StatusCode;
    use axum::routing::get;
    let ready_for_metrics = ready.clone();
    let app = axum::Router::new()
        .route(
            "/ready",
            get(move || {
                let ready = ready.load(Ordering::SeqCst);
                let connector = connector.clone();
                async move {
                    let (status, conns) = if ready { (200, 4) } else { (503, 0) };
                    (
                        StatusCode::from_u16(status).expect("status"),
                        axum::Json(json!({"status": status, "readyConnections": conns, "connectorId": connector})),
                    )
                }
            }),
        )
        .route(
            "/metrics",
            get(move || {
                let conns = if ready_for_metrics.load(Ordering::SeqCst) { 4 } else { 0 };
                async move { format!("# TYPE cloudflared_tunnel_ha_connections gauge\ncloudflared_tunnel_ha_connections {conns}\n") }
            }),
        );
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|e| format!("cannot serve metrics on {addr}: {e}"))?;
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_units_command_line_and_tokens_are_read_as_cloudflared_reads_them() {
        let words = |s: &str| s.split(' ').map(str::to_owned).collect::<Vec<_>>();
        let a = parse(&words(
            "tunnel --no-autoupdate --metrics 127.0.0.1:20241 run --token-file /x",
        ))
        .unwrap();
        assert_eq!(a.metrics, Some("127.0.0.1:20241".parse().unwrap()));
        assert_eq!(a.token_file.as_deref(), Some("/x"));
        assert!(parse(&words("tunnel run --frobnicate")).is_err());
        assert!(parse(&words("run")).is_err());
        let good = base64::engine::general_purpose::STANDARD
            .encode(r#"{"a":"acc","t":"tun","s":"c2VjcmV0"}"#);
        assert_eq!(decode(&good).unwrap()["t"], "tun");
        assert!(decode("not base64!").is_err());
        let partial = base64::engine::general_purpose::STANDARD.encode(r#"{"a":"acc"}"#);
        assert!(decode(&partial).is_err());
    }
}
