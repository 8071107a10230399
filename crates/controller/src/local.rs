//! The admin API's Unix socket, for root on the controller host. gRPC clients built on
//! grpc-core (Python, C++, Ruby…) send the socket's path, percent-encoded, as the HTTP/2
//! `:authority` of a `unix:` target; h2 refuses that as a malformed authority and resets the
//! stream before any of our code sees it. So each connection is relayed through a small
//! HTTP/2 frame filter that decodes every header block (HPACK), puts `localhost` where an
//! `:authority` is not a valid authority, and encodes the block again; all other frames pass
//! as they are. The peer's credentials travel with the connection for the local actor.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, DuplexStream, ReadBuf};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;
use tonic::transport::server::{Connected, UdsConnectInfo};
use tracing::debug;

const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
const HEADERS: u8 = 0x1;
const CONTINUATION: u8 = 0x9;
const END_STREAM: u8 = 0x1;
const END_HEADERS: u8 = 0x4;
const PADDED: u8 = 0x8;
const PRIORITY: u8 = 0x20;
/// The frame size every HTTP/2 peer accepts (SETTINGS_MAX_FRAME_SIZE's initial value).
const FRAME_MAX: usize = 16_384;
/// The largest header block taken from a client.
const BLOCK_MAX: usize = 256 * 1024;

/// One accepted local connection, as tonic sees it.
#[derive(Debug)]
pub struct LocalConn {
    io: DuplexStream,
    info: UdsConnectInfo,
}

impl Connected for LocalConn {
    type ConnectInfo = UdsConnectInfo;
    fn connect_info(&self) -> UdsConnectInfo {
        self.info.clone()
    }
}

impl AsyncRead for LocalConn {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl AsyncWrite for LocalConn {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

/// Accepts connections on the admin socket and yields them relayed through the filter.
pub fn incoming(
    listener: UnixListener,
    shutdown: CancellationToken,
) -> ReceiverStream<std::io::Result<LocalConn>> {
    let (tx, rx) = mpsc::channel(64);
    tokio::spawn(async move {
        loop {
            let (client, addr) = tokio::select! {
                _ = shutdown.cancelled() => return,
                accepted = listener.accept() => match accepted {
                    Ok(a) => a,
                    Err(e) => {
                        debug!(error = %e, "accept failed on the admin socket");
                        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                        continue;
                    }
                },
            };
            let info = UdsConnectInfo {
                peer_addr: Some(Arc::new(addr)),
                peer_cred: client.peer_cred().ok(),
            };
            let (server_side, relay_side) = tokio::io::duplex(64 * 1024);
            tokio::spawn(async move {
                if let Err(e) = relay(client, relay_side).await {
                    debug!(error = %e, "admin socket connection ended");
                }
            });
            if tx
                .send(Ok(LocalConn {
                    io: server_side,
                    info,
                }))
                .await
                .is_err()
            {
                return;
            }
        }
    });
    ReceiverStream::new(rx)
}

/// Copies the server's bytes back as they are, and the client's through [`filter`].
async fn relay(client: UnixStream, server: DuplexStream) -> std::io::Result<()> {
    let (mut client_read, mut client_write) = client.into_split();
    let (mut server_read, mut server_write) = tokio::io::split(server);
    let back = async {
        tokio::io::copy(&mut server_read, &mut client_write).await?;
        client_write.shutdown().await
    };
    let forth = async {
        filter(&mut client_read, &mut server_write).await?;
        server_write.shutdown().await
    };
    tokio::try_join!(back, forth).map(|_| ())
}

fn invalid(what: &str) -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::InvalidData, what.to_owned())
}

/// Reads HTTP/2 from `from` and writes it to `to`, every header block re-encoded with a
/// usable `:authority`.
async fn filter<R, W>(from: &mut R, to: &mut W) -> std::io::Result<()>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let mut preface = [0u8; PREFACE.len()];
    from.read_exact(&mut preface).await?;
    if preface != PREFACE {
        return Err(invalid("not an HTTP/2 connection preface"));
    }
    to.write_all(&preface).await?;
    let mut decoder = loona_hpack::Decoder::new();
    let mut encoder = loona_hpack::Encoder::new();
    // A header block being gathered: stream id, flags, priority bytes, the block.
    let mut pending: Option<(u32, u8, Vec<u8>, Vec<u8>)> = None;
    loop {
        let mut head = [0u8; 9];
        match from.read_exact(&mut head).await {
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(()),
            Err(e) => return Err(e),
        }
        let len = u32::from_be_bytes([0, head[0], head[1], head[2]]) as usize;
        let (kind, flags) = (head[3], head[4]);
        let stream = u32::from_be_bytes([head[5], head[6], head[7], head[8]]) & 0x7fff_ffff;
        let mut payload = vec![0u8; len];
        from.read_exact(&mut payload).await?;
        match kind {
            HEADERS if pending.is_none() => {
                let (priority, fragment) = headers_payload(flags, &payload)?;
                pending = Some((stream, flags, priority, fragment.to_vec()));
            }
            CONTINUATION => match &mut pending {
                Some((id, _, _, block)) if *id == stream => {
                    block.extend_from_slice(&payload);
                }
                _ => return Err(invalid("CONTINUATION without a header block")),
            },
            _ if pending.is_some() => return Err(invalid("a frame inside a header block")),
            _ => {
                to.write_all(&head).await?;
                to.write_all(&payload).await?;
                continue;
            }
        }
        if pending.as_ref().is_some_and(|p| p.3.len() > BLOCK_MAX) {
            return Err(invalid("header block too large"));
        }
        if kind == CONTINUATION && flags & END_HEADERS == 0 {
            continue;
        }
        if kind == HEADERS && flags & END_HEADERS == 0 {
            continue;
        }
        let (stream, first_flags, priority, block) = pending.take().expect("a block");
        let headers = decoder
            .decode(&block)
            .map_err(|e| invalid(&format!("bad header block: {e:?}")))?;
        let headers = usable_authority(headers);
        let encoded = encoder.encode(headers.iter().map(|(k, v)| (&k[..], &v[..])));
        write_headers(to, stream, first_flags & END_STREAM, &priority, &encoded).await?;
    }
}

/// The priority bytes and the header block fragment of a HEADERS payload.
fn headers_payload(flags: u8, payload: &[u8]) -> std::io::Result<(Vec<u8>, &[u8])> {
    let mut rest = payload;
    let mut pad = 0;
    if flags & PADDED != 0 {
        let (&n, tail) = rest
            .split_first()
            .ok_or_else(|| invalid("empty padded frame"))?;
        pad = n as usize;
        rest = tail;
    }
    let mut priority = Vec::new();
    if flags & PRIORITY != 0 {
        if rest.len() < 5 {
            return Err(invalid("short priority"));
        }
        priority = rest[..5].to_vec();
        rest = &rest[5..];
    }
    if pad > rest.len() {
        return Err(invalid("padding longer than the frame"));
    }
    Ok((priority, &rest[..rest.len() - pad]))
}

/// `localhost` for every `:authority` that is not a valid authority.
fn usable_authority(mut headers: Vec<(Vec<u8>, Vec<u8>)>) -> Vec<(Vec<u8>, Vec<u8>)> {
    for (name, value) in &mut headers {
        if name == b":authority" && http::uri::Authority::try_from(&value[..]).is_err() {
            *value = b"localhost".to_vec();
        }
    }
    headers
}

/// One HEADERS frame, and CONTINUATION frames when the block is larger than a frame.
async fn write_headers<W: AsyncWrite + Unpin>(
    to: &mut W,
    stream: u32,
    end_stream: u8,
    priority: &[u8],
    block: &[u8],
) -> std::io::Result<()> {
    let mut chunks = block.chunks(FRAME_MAX - priority.len()).peekable();
    let mut first = true;
    if chunks.peek().is_none() {
        return write_frame(
            to,
            HEADERS,
            end_stream | END_HEADERS | prio(priority),
            stream,
            priority,
        )
        .await;
    }
    while let Some(chunk) = chunks.next() {
        let last = chunks.peek().is_none();
        let end = if last { END_HEADERS } else { 0 };
        if first {
            let mut payload = priority.to_vec();
            payload.extend_from_slice(chunk);
            write_frame(
                to,
                HEADERS,
                end_stream | end | prio(priority),
                stream,
                &payload,
            )
            .await?;
            first = false;
        } else {
            write_frame(to, CONTINUATION, end, stream, chunk).await?;
        }
    }
    Ok(())
}

fn prio(priority: &[u8]) -> u8 {
    if priority.is_empty() { 0 } else { PRIORITY }
}

async fn write_frame<W: AsyncWrite + Unpin>(
    to: &mut W,
    kind: u8,
    flags: u8,
    stream: u32,
    payload: &[u8],
) -> std::io::Result<()> {
    let len = (payload.len() as u32).to_be_bytes();
    let id = stream.to_be_bytes();
    to.write_all(&[
        len[1], len[2], len[3], kind, flags, id[0], id[1], id[2], id[3],
    ])
    .await?;
    to.write_all(payload).await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
        let len = (payload.len() as u32).to_be_bytes();
        let mut f = vec![len[1], len[2], len[3], kind, flags];
        f.extend_from_slice(&stream.to_be_bytes());
        f.extend_from_slice(payload);
        f
    }

    /// Parses `bytes` (after the preface) into frames.
    fn frames(bytes: &[u8]) -> Vec<(u8, u8, u32, Vec<u8>)> {
        let mut out = Vec::new();
        let mut rest = &bytes[PREFACE.len()..];
        while !rest.is_empty() {
            let len = u32::from_be_bytes([0, rest[0], rest[1], rest[2]]) as usize;
            let stream = u32::from_be_bytes([rest[5], rest[6], rest[7], rest[8]]);
            out.push((rest[3], rest[4], stream, rest[9..9 + len].to_vec()));
            rest = &rest[9 + len..];
        }
        out
    }

    async fn run(input: Vec<u8>) -> Vec<u8> {
        let mut out = Vec::new();
        filter(&mut &input[..], &mut out).await.unwrap();
        out
    }

    #[tokio::test]
    async fn a_socket_path_authority_becomes_localhost_and_the_rest_is_kept() {
        let mut client = loona_hpack::Encoder::new();
        let request = |authority: &'static [u8]| {
            vec![
                (&b":method"[..], &b"POST"[..]),
                (b":scheme", b"http"),
                (b":path", b"/gatehouse.v1.AdminService/ListAgents"),
                (b":authority", authority),
                (b"content-type", b"application/grpc"),
            ]
        };
        let first = client.encode(request(b"run%2Fgatehouse%2Fadmin.sock"));
        // The second request refers to the first's dynamic table entries.
        let second = client.encode(request(b"run%2Fgatehouse%2Fadmin.sock"));
        let (a, b) = first.split_at(first.len() / 2);
        let mut input = PREFACE.to_vec();
        input.extend(frame(0x4, 0, 0, &[])); // SETTINGS
        input.extend(frame(HEADERS, 0, 1, a));
        input.extend(frame(CONTINUATION, END_HEADERS, 1, b));
        input.extend(frame(0x0, END_STREAM, 1, b"\0\0\0\0\0")); // DATA
        let mut padded = vec![3u8];
        padded.extend_from_slice(&second);
        padded.extend_from_slice(&[0, 0, 0]);
        input.extend(frame(
            HEADERS,
            END_HEADERS | PADDED | END_STREAM,
            3,
            &padded,
        ));
        let out = frames(&run(input).await);
        assert_eq!(out.len(), 4);
        assert_eq!((out[0].0, out[0].3.len()), (0x4, 0));
        assert_eq!(out[2], (0x0, END_STREAM, 1, b"\0\0\0\0\0".to_vec()));
        let mut server = loona_hpack::Decoder::new();
        for (i, f) in [(1u32, &out[1]), (3, &out[3])] {
            assert_eq!((f.0, f.2), (HEADERS, i));
            assert!(f.1 & END_HEADERS != 0);
            let headers = server.decode(&f.3).unwrap();
            let authority = headers.iter().find(|(k, _)| k == b":authority").unwrap();
            assert_eq!(authority.1, b"localhost");
            assert!(
                headers
                    .iter()
                    .any(|(k, v)| k == b":path" && v.ends_with(b"ListAgents"))
            );
        }
        assert_eq!(out[3].1 & END_STREAM, END_STREAM);
    }

    #[tokio::test]
    async fn a_valid_authority_is_left_alone() {
        let block =
            loona_hpack::Encoder::new().encode(vec![(&b":authority"[..], &b"localhost:7444"[..])]);
        let mut input = PREFACE.to_vec();
        input.extend(frame(HEADERS, END_HEADERS, 1, &block));
        let out = frames(&run(input).await);
        let headers = loona_hpack::Decoder::new().decode(&out[0].3).unwrap();
        assert_eq!(headers[0].1, b"localhost:7444");
    }

    #[tokio::test]
    async fn anything_but_http2_is_refused() {
        let mut out = Vec::new();
        let e = filter(&mut &b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"[..], &mut out)
            .await
            .unwrap_err();
        assert_eq!(e.kind(), std::io::ErrorKind::InvalidData);
        assert!(out.is_empty());
    }
}
