//! Talking to redis over its published port (RESP), so the census (`INFO keyspace`) and the
//! readiness probe (`PING`) cost one loopback round trip instead of an exec in the container
//! (three engine calls and a process). When the port is not published here (remote engine) or
//! does not answer as redis, callers use `redis-cli` through exec, as before.

use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

use crate::engine::{ContainerInfo, Engine};

/// Redis' container port.
pub const REDIS_PORT: u16 = 6379;
/// Connecting and one command: a loopback redis answers at once.
const TCP_TIMEOUT: Duration = Duration::from_secs(1);

/// One reply of the subset of RESP nodus reads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    /// `+OK`, `+PONG`.
    Status(String),
    /// `-NOAUTH ...`, `-LOADING ...`, `-DENIED ...`.
    Error(String),
    /// A bulk string (None: nil).
    Bulk(Option<String>),
    /// `:n`.
    Integer(i64),
}

/// What went wrong talking to redis over TCP: the network (not reachable from here, closed,
/// timed out) or an answer that is not RESP.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TcpError(pub String);

/// The host and port to dial for the container's redis, when it is published here.
pub fn endpoint(engine: &dyn Engine, c: &ContainerInfo) -> Option<(String, u16)> {
    if engine.remote_host().is_some() {
        return None;
    }
    let p = c.published(REDIS_PORT).filter(|p| p.host_port != 0)?;
    Some((super::pg::dial_host(&p.host_ip), p.host_port))
}

/// A command as a RESP array of bulk strings.
pub fn encode(args: &[&str]) -> Vec<u8> {
    let mut out = format!("*{}\r\n", args.len()).into_bytes();
    for a in args {
        out.extend_from_slice(format!("${}\r\n", a.len()).as_bytes());
        out.extend_from_slice(a.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    out
}

async fn read_reply<R: tokio::io::AsyncBufRead + Unpin>(r: &mut R) -> Result<Reply, TcpError> {
    let mut line = String::new();
    let n = r
        .read_line(&mut line)
        .await
        .map_err(|e| TcpError(e.to_string()))?;
    if n == 0 {
        return Err(TcpError("connection closed".into()));
    }
    let line = line.trim_end_matches(['\r', '\n']);
    let (kind, rest) = line.split_at(line.len().min(1));
    match kind {
        "+" => Ok(Reply::Status(rest.to_string())),
        "-" => Ok(Reply::Error(rest.to_string())),
        ":" => rest
            .parse()
            .map(Reply::Integer)
            .map_err(|_| TcpError(format!("not a RESP integer: {line:?}"))),
        "$" => {
            let len: i64 = rest
                .parse()
                .map_err(|_| TcpError(format!("not a RESP bulk length: {line:?}")))?;
            if len < 0 {
                return Ok(Reply::Bulk(None));
            }
            let mut buf = vec![0u8; len as usize + 2];
            r.read_exact(&mut buf)
                .await
                .map_err(|e| TcpError(e.to_string()))?;
            buf.truncate(len as usize);
            Ok(Reply::Bulk(Some(
                String::from_utf8_lossy(&buf).into_owned(),
            )))
        }
        _ => Err(TcpError(format!("not a RESP reply: {line:?}"))),
    }
}

/// Runs `commands` in order on one connection (AUTH first when `password` is set); returns the
/// reply of each (the AUTH reply included, first).
pub async fn run(
    host: &str,
    port: u16,
    password: Option<&str>,
    commands: &[&[&str]],
) -> Result<Vec<Reply>, TcpError> {
    let fut = async {
        let stream = TcpStream::connect((host, port))
            .await
            .map_err(|e| TcpError(format!("connecting to {host}:{port}: {e}")))?;
        let (rd, mut wr) = stream.into_split();
        let mut rd = BufReader::new(rd);
        let mut all: Vec<Vec<&str>> = Vec::new();
        if let Some(p) = password {
            all.push(vec!["AUTH", p]);
        }
        all.extend(commands.iter().map(|c| c.to_vec()));
        let mut out = Vec::new();
        for c in &all {
            wr.write_all(&encode(c))
                .await
                .map_err(|e| TcpError(e.to_string()))?;
            out.push(read_reply(&mut rd).await?);
        }
        Ok(out)
    };
    tokio::time::timeout(TCP_TIMEOUT, fut)
        .await
        .unwrap_or_else(|_| Err(TcpError(format!("{host}:{port}: no answer within 1s"))))
}

/// `REDIS_PASSWORD` of the container (the bitnami convention nodus' census honours).
pub fn password(c: &ContainerInfo) -> Option<&str> {
    c.env_var("REDIS_PASSWORD").filter(|p| !p.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncWriteExt;
    use tokio::net::TcpListener;

    /// A one-connection server that answers each command with the next canned reply.
    async fn server(replies: Vec<String>) -> (u16, tokio::task::JoinHandle<Vec<String>>) {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = l.local_addr().unwrap().port();
        let h = tokio::spawn(async move {
            let (s, _) = l.accept().await.unwrap();
            let (rd, mut wr) = s.into_split();
            let mut rd = BufReader::new(rd);
            let mut seen = Vec::new();
            for r in replies {
                // *N, then $len + arg per argument.
                let mut line = String::new();
                rd.read_line(&mut line).await.unwrap();
                let n: usize = line.trim()[1..].parse().unwrap();
                let mut args = Vec::new();
                for _ in 0..n {
                    let mut len = String::new();
                    rd.read_line(&mut len).await.unwrap();
                    let mut arg = String::new();
                    rd.read_line(&mut arg).await.unwrap();
                    args.push(arg.trim_end().to_string());
                }
                seen.push(args.join(" "));
                wr.write_all(r.as_bytes()).await.unwrap();
            }
            seen
        });
        (port, h)
    }

    #[test]
    fn commands_are_arrays_of_bulk_strings() {
        assert_eq!(
            encode(&["INFO", "keyspace"]),
            b"*2\r\n$4\r\nINFO\r\n$8\r\nkeyspace\r\n".to_vec()
        );
    }

    #[tokio::test]
    async fn auth_then_info_on_one_connection() {
        let info = "# Keyspace\r\ndb0:keys=3,expires=0\r\n";
        let (port, h) = server(vec![
            "+OK\r\n".into(),
            format!("${}\r\n{info}\r\n", info.len()),
        ])
        .await;
        let r = run("127.0.0.1", port, Some("pw"), &[&["INFO", "keyspace"]])
            .await
            .unwrap();
        assert_eq!(r[0], Reply::Status("OK".into()));
        assert_eq!(
            r[1],
            Reply::Bulk(Some("# Keyspace\r\ndb0:keys=3,expires=0\r\n".into()))
        );
        assert_eq!(h.await.unwrap(), ["AUTH pw", "INFO keyspace"]);
    }

    #[tokio::test]
    async fn errors_and_closed_ports_are_told_apart() {
        let (port, _h) = server(vec!["-NOAUTH Authentication required.\r\n".into()]).await;
        let r = run("127.0.0.1", port, None, &[&["PING"]]).await.unwrap();
        assert_eq!(r[0], Reply::Error("NOAUTH Authentication required.".into()));
        // Nothing listens: a network error, not a reply.
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let closed = l.local_addr().unwrap().port();
        drop(l);
        assert!(run("127.0.0.1", closed, None, &[&["PING"]]).await.is_err());
    }
}
