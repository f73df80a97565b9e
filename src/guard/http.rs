//! HTTP GET of a JSON document (qdrant's REST API on its published port), over hyper's client,
//! which bollard already brings in.

use std::time::Duration;

use http_body_util::{BodyExt, Empty};
use hyper::body::Bytes;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

/// GETs `path` and parses the body as JSON. Non-2xx answers are errors carrying the status.
pub async fn get_json(
    host: &str,
    port: u16,
    path: &str,
    headers: &[(&str, &str)],
    timeout: Duration,
) -> Result<serde_json::Value, String> {
    let uri: hyper::Uri = format!("http://{host}:{port}{path}")
        .parse()
        .map_err(|e| format!("GET {path} on {host}:{port}: {e}"))?;
    let mut req = hyper::Request::get(uri).header("accept", "application/json");
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let req = req
        .body(Empty::<Bytes>::new())
        .map_err(|e| format!("GET {path}: {e}"))?;
    let client: Client<_, Empty<Bytes>> = Client::builder(TokioExecutor::new()).build_http();
    let fut = async {
        let resp = client
            .request(req)
            .await
            .map_err(|e| format!("GET {path} on {host}:{port}: {e}"))?;
        let status = resp.status();
        let body = resp
            .into_body()
            .collect()
            .await
            .map_err(|e| format!("GET {path}: reading the response: {e}"))?
            .to_bytes();
        Ok::<_, String>((status, body))
    };
    let (status, body) = tokio::time::timeout(timeout, fut).await.map_err(|_| {
        format!(
            "GET {path} on {host}:{port} timed out after {}s",
            timeout.as_secs()
        )
    })??;
    if !status.is_success() {
        return Err(format!(
            "GET {path}: HTTP {status}: {}",
            String::from_utf8_lossy(&body)
                .chars()
                .take(200)
                .collect::<String>()
        ));
    }
    serde_json::from_slice(&body).map_err(|e| format!("GET {path}: invalid JSON: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[tokio::test]
    async fn get_json_against_a_local_server() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let server = tokio::spawn(async move {
            let (mut s, _) = listener.accept().await.unwrap();
            let mut buf = vec![0u8; 1024];
            let n = s.read(&mut buf).await.unwrap();
            let req = String::from_utf8_lossy(&buf[..n]).to_string();
            let body = r#"{"result":{"points_count":42},"status":"ok"}"#;
            let resp = format!(
                "HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n{body}",
                body.len()
            );
            s.write_all(resp.as_bytes()).await.unwrap();
            req
        });
        let v = get_json(
            "127.0.0.1",
            port,
            "/collections/x",
            &[("api-key", "k")],
            Duration::from_secs(5),
        )
        .await
        .unwrap();
        assert_eq!(v["result"]["points_count"], 42);
        let req = server.await.unwrap();
        assert!(req.starts_with("GET /collections/x HTTP/1.1\r\n"), "{req}");
        assert!(req.contains("api-key: k\r\n"));
    }

    #[tokio::test]
    async fn non_success_status_is_an_error() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        tokio::spawn(async move {
            let (mut s, _) = listener.accept().await.unwrap();
            let mut buf = vec![0u8; 1024];
            let _ = s.read(&mut buf).await.unwrap();
            let body = "forbidden";
            let resp = format!(
                "HTTP/1.1 403 Forbidden\r\nContent-Length: {}\r\n\r\n{body}",
                body.len()
            );
            s.write_all(resp.as_bytes()).await.unwrap();
        });
        let err = get_json(
            "127.0.0.1",
            port,
            "/collections",
            &[],
            Duration::from_secs(5),
        )
        .await
        .unwrap_err();
        assert!(err.contains("403") && err.contains("forbidden"), "{err}");
    }
}
