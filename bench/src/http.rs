//! A minimal HTTP/1.1 client for loopback benchmarks: one request per connection
//! (`Connection: close`), the same for every server measured, so the client's cost is
//! equal on both sides of a comparison.

use std::io::{Read as _, Write as _};
use std::net::TcpStream;
use std::time::Duration;

/// Why a request failed.
#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    #[error("url '{0}' is not of the form http://HOST:PORT/PATH")]
    Url(String),
    #[error("request to '{url}' failed: {source}; is the server running?")]
    Io { url: String, source: std::io::Error },
    #[error("'{url}' answered something that is not HTTP: '{head}'")]
    Answer { url: String, head: String },
}

/// A response: status and body.
#[derive(Debug, Clone)]
pub struct Response {
    pub status: u16,
    pub body: String,
}

/// Sends `method url` with `headers` and `body`; returns the status and body.
pub fn request(
    method: &str,
    url: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> Result<Response, HttpError> {
    let rest = url
        .strip_prefix("http://")
        .ok_or_else(|| HttpError::Url(url.to_string()))?;
    let (hostport, path) = rest
        .split_once('/')
        .map_or((rest, "/".to_string()), |(h, p)| (h, format!("/{p}")));
    let io = |source| HttpError::Io {
        url: url.to_string(),
        source,
    };
    let mut s = TcpStream::connect(hostport).map_err(io)?;
    s.set_read_timeout(Some(Duration::from_secs(120)))
        .map_err(io)?;
    let mut head = format!(
        "{method} {path} HTTP/1.1\r\nHost: {hostport}\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str("\r\n");
    s.write_all(head.as_bytes()).map_err(io)?;
    s.write_all(body).map_err(io)?;
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).map_err(io)?;
    let text = String::from_utf8_lossy(&buf).to_string();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| HttpError::Answer {
            url: url.to_string(),
            head: head.chars().take(80).collect(),
        })?;
    Ok(Response {
        status,
        body: body.to_string(),
    })
}

/// `GET url`.
pub fn get(url: &str) -> Result<Response, HttpError> {
    request("GET", url, &[], &[])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_post_reaches_a_server_and_its_status_comes_back() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let server = std::thread::spawn(move || {
            let (mut c, _) = listener.accept().expect("accept");
            let mut text = String::new();
            let mut got = [0u8; 4096];
            while !text.ends_with("m f=1 1") {
                let n = c.read(&mut got).expect("read");
                if n == 0 {
                    break;
                }
                text.push_str(&String::from_utf8_lossy(&got[..n]));
            }
            c.write_all(b"HTTP/1.1 204 No Content\r\n\r\n")
                .expect("write");
            text
        });
        let r = request(
            "POST",
            &format!("http://127.0.0.1:{port}/api/v2/write?bucket=b"),
            &[("Authorization", "Token t")],
            b"m f=1 1",
        )
        .expect("request");
        assert_eq!(r.status, 204);
        let seen = server.join().expect("server thread");
        assert!(
            seen.starts_with("POST /api/v2/write?bucket=b HTTP/1.1\r\n"),
            "{seen}"
        );
        assert!(seen.contains("Authorization: Token t\r\n"), "{seen}");
        assert!(seen.ends_with("\r\n\r\nm f=1 1"), "{seen}");
        assert!(matches!(get("ftp://x"), Err(HttpError::Url(_))));
    }
}
