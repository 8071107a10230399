//! A tunnel's journal, read on the controller's request and sent back over the stream in
//! batches: the last lines, and with `follow` every new line until the request is cancelled or
//! the stream ends. Lines are escaped (one visible line each) before they leave the host.

use std::sync::Arc;
use std::time::Duration;

use gatehouse_proto::names::TunnelName;
use gatehouse_proto::v1::{LogLines, LogsRequest};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio_util::sync::CancellationToken;

use crate::reconcile::tunnels::Tunnels;

/// Lines asked for when the request says 0, and the most a request may ask for.
const DEFAULT_LINES: u32 = 100;
const MAX_LINES: u32 = 10_000;
/// Lines per message, and how long a following reader waits before sending a partial batch.
const BATCH: usize = 200;
const FLUSH: Duration = Duration::from_millis(100);

/// Serves one request; `send` queues a message and says false once the stream is gone.
pub(crate) async fn serve(
    tunnels: Arc<Tunnels>,
    request: LogsRequest,
    cancel: CancellationToken,
    send: impl Fn(LogLines) -> bool,
) {
    let id = request.id;
    let done = |lines: Vec<String>, error: String| LogLines {
        id,
        lines,
        done: true,
        error,
    };
    let name: TunnelName = match request.tunnel.parse() {
        Ok(n) => n,
        Err(e) => {
            send(done(Vec::new(), e.to_string()));
            return;
        }
    };
    let lines = match request.lines {
        0 => DEFAULT_LINES,
        n => n.min(MAX_LINES),
    };
    let clean = |l: String| gatehouse_proto::text::escape(&l).into_owned();
    if !request.follow {
        let message = match tunnels.logs(&name, lines).await {
            Ok(all) => done(all.into_iter().map(clean).collect(), String::new()),
            Err(e) => done(Vec::new(), e),
        };
        send(message);
        return;
    }
    let mut child = match tunnels.follow(&name, lines) {
        Ok(c) => c,
        Err(e) => {
            send(done(Vec::new(), e));
            return;
        }
    };
    let Some(stdout) = child.stdout.take() else {
        send(done(Vec::new(), "journalctl gave no output".into()));
        return;
    };
    let mut reader = BufReader::new(stdout).lines();
    let mut batch = Vec::new();
    let error = loop {
        tokio::select! {
            _ = cancel.cancelled() => break String::new(),
            line = reader.next_line() => match line {
                Ok(Some(l)) => {
                    batch.push(clean(l));
                    if batch.len() >= BATCH && !send(LogLines { id, lines: std::mem::take(&mut batch), done: false, error: String::new() }) {
                        return;
                    }
                }
                Ok(None) => break "journalctl stopped".into(),
                Err(e) => break format!("cannot read journalctl's output: {e}"),
            },
            _ = tokio::time::sleep(FLUSH), if !batch.is_empty() => {
                if !send(LogLines { id, lines: std::mem::take(&mut batch), done: false, error: String::new() }) {
                    return;
                }
            }
        }
    };
    let _ = child.kill().await;
    send(done(batch, error));
}
