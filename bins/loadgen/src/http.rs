//! Just enough HTTP/1.1 for a load generator: one request at a time on a
//! keep-alive connection, bodies by `Content-Length` or chunked. A client
//! library would work too, but this keeps the generator's own cost per
//! request small and visible, which matters when it shares two cores with
//! the server it measures.

use std::io;
use std::net::SocketAddr;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Longest response head accepted; anything longer is a broken server.
const MAX_HEAD: usize = 64 * 1024;

#[derive(Debug)]
pub(crate) struct Response {
    pub(crate) status: u16,
    pub(crate) body: Vec<u8>,
}

impl Response {
    pub(crate) fn is_success(&self) -> bool {
        (200..300).contains(&self.status)
    }

    /// The start of the body as text, for error messages.
    pub(crate) fn body_excerpt(&self) -> String {
        let text = String::from_utf8_lossy(&self.body);
        text.chars().take(300).collect()
    }
}

/// A request, encoded once: the load loop sends the same bytes repeatedly.
pub(crate) fn encode(
    method: &str,
    host: &str,
    path: &str,
    bearer: Option<&str>,
    json_body: Option<&str>,
) -> Vec<u8> {
    let mut request = head(method, host, path, bearer);
    if json_body.is_some() {
        request.push_str("Content-Type: application/json\r\n");
    }
    let body = json_body.unwrap_or("");
    if json_body.is_some() || method != "GET" {
        request.push_str(&format!("Content-Length: {}\r\n", body.len()));
    }
    request.push_str("\r\n");
    request.push_str(body);
    request.into_bytes()
}

/// A request with any headers and any bytes as its body.
pub(crate) fn encode_raw(
    method: &str,
    host: &str,
    path: &str,
    bearer: Option<&str>,
    headers: &[(&str, &str)],
    body: &[u8],
) -> Vec<u8> {
    let mut request = head(method, host, path, bearer);
    for (name, value) in headers {
        request.push_str(&format!("{name}: {value}\r\n"));
    }
    request.push_str(&format!("Content-Length: {}\r\n\r\n", body.len()));
    let mut request = request.into_bytes();
    request.extend_from_slice(body);
    request
}

/// The request line, `Host` and the credential, if any.
fn head(method: &str, host: &str, path: &str, bearer: Option<&str>) -> String {
    let mut head = format!("{method} {path} HTTP/1.1\r\nHost: {host}\r\n");
    if let Some(token) = bearer {
        head.push_str("Authorization: Bearer ");
        head.push_str(token);
        head.push_str("\r\n");
    }
    head
}

#[derive(Debug)]
pub(crate) struct Connection {
    stream: TcpStream,
    buffer: Vec<u8>,
    /// The server said `Connection: close`; the next request needs a new one.
    closed: bool,
}

impl Connection {
    pub(crate) async fn open(address: SocketAddr) -> io::Result<Self> {
        let stream = TcpStream::connect(address).await?;
        // Requests are written in one call and waited for; Nagle would only
        // add delay.
        stream.set_nodelay(true)?;
        Ok(Connection {
            stream,
            buffer: Vec::with_capacity(16 * 1024),
            closed: false,
        })
    }

    pub(crate) fn is_closed(&self) -> bool {
        self.closed
    }

    pub(crate) async fn send(&mut self, request: &[u8]) -> io::Result<Response> {
        self.stream.write_all(request).await?;
        let head_end = loop {
            if let Some(at) = find(&self.buffer, b"\r\n\r\n") {
                break at + 4;
            }
            if self.buffer.len() > MAX_HEAD {
                return Err(invalid("response head too long"));
            }
            self.fill().await?;
        };
        let head = parse_head(&self.buffer[..head_end])?;
        self.closed = head.close;
        let mut at = head_end;
        let body = if head.chunked {
            self.read_chunked(&mut at).await?
        } else {
            let length = match head.content_length {
                Some(length) => length,
                None if head.status == 204 || head.status == 304 => 0,
                None => return Err(invalid("response without a length")),
            };
            while self.buffer.len() < at + length {
                self.fill().await?;
            }
            let body = self.buffer[at..at + length].to_vec();
            at += length;
            body
        };
        // Responses are read one at a time, so this is almost always the
        // whole buffer.
        self.buffer.drain(..at);
        Ok(Response {
            status: head.status,
            body,
        })
    }

    async fn read_chunked(&mut self, at: &mut usize) -> io::Result<Vec<u8>> {
        let mut body = Vec::new();
        loop {
            let line_end = loop {
                if let Some(end) = find(&self.buffer[*at..], b"\r\n") {
                    break *at + end;
                }
                self.fill().await?;
            };
            let line = std::str::from_utf8(&self.buffer[*at..line_end])
                .map_err(|_| invalid("chunk size is not text"))?;
            let size_text = line.split(';').next().unwrap_or("").trim();
            let size = usize::from_str_radix(size_text, 16)
                .map_err(|_| invalid("chunk size is not hexadecimal"))?;
            *at = line_end + 2;
            if size == 0 {
                // Trailers, if any, end with an empty line.
                loop {
                    let end = loop {
                        if let Some(end) = find(&self.buffer[*at..], b"\r\n") {
                            break *at + end;
                        }
                        self.fill().await?;
                    };
                    let empty = end == *at;
                    *at = end + 2;
                    if empty {
                        return Ok(body);
                    }
                }
            }
            while self.buffer.len() < *at + size + 2 {
                self.fill().await?;
            }
            body.extend_from_slice(&self.buffer[*at..*at + size]);
            *at += size + 2;
        }
    }

    async fn fill(&mut self) -> io::Result<()> {
        if self.stream.read_buf(&mut self.buffer).await? == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "the server closed the connection",
            ));
        }
        Ok(())
    }
}

#[derive(Debug, PartialEq)]
struct Head {
    status: u16,
    content_length: Option<usize>,
    chunked: bool,
    close: bool,
}

fn parse_head(head: &[u8]) -> io::Result<Head> {
    let text = std::str::from_utf8(head).map_err(|_| invalid("response head is not text"))?;
    let mut lines = text.split("\r\n");
    let status_line = lines.next().unwrap_or("");
    let status = status_line
        .strip_prefix("HTTP/1.1 ")
        .or_else(|| status_line.strip_prefix("HTTP/1.0 "))
        .and_then(|rest| rest.get(..3))
        .and_then(|code| code.parse().ok())
        .ok_or_else(|| invalid("no HTTP/1.x status line"))?;
    let mut parsed = Head {
        status,
        content_length: None,
        chunked: false,
        close: status_line.starts_with("HTTP/1.0"),
    };
    for line in lines {
        let Some((name, value)) = line.split_once(':') else {
            continue;
        };
        let value = value.trim();
        if name.eq_ignore_ascii_case("content-length") {
            parsed.content_length = Some(
                value
                    .parse()
                    .map_err(|_| invalid("content-length is not a number"))?,
            );
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            parsed.chunked = value.to_ascii_lowercase().contains("chunked");
        } else if name.eq_ignore_ascii_case("connection") {
            parsed.close = value.eq_ignore_ascii_case("close");
        }
    }
    Ok(parsed)
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack
        .windows(needle.len())
        .position(|window| window == needle)
}

fn invalid(message: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, message.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn heads_are_parsed_case_insensitively() {
        let head =
            parse_head(b"HTTP/1.1 201 Created\r\ncontent-length: 17\r\nConnection: Close\r\n\r\n")
                .unwrap();
        assert_eq!(
            head,
            Head {
                status: 201,
                content_length: Some(17),
                chunked: false,
                close: true
            }
        );
        let chunked = parse_head(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n").unwrap();
        assert!(chunked.chunked && !chunked.close);
        assert!(parse_head(b"SSH-2.0\r\n\r\n").is_err());
    }

    #[test]
    fn requests_carry_length_and_credentials() {
        let request = encode(
            "POST",
            "127.0.0.1:1",
            "/v1/agent/spend",
            Some("t0k"),
            Some("{}"),
        );
        let text = String::from_utf8(request).unwrap();
        assert!(text.starts_with("POST /v1/agent/spend HTTP/1.1\r\nHost: 127.0.0.1:1\r\n"));
        assert!(text.contains("Authorization: Bearer t0k\r\n"));
        assert!(text.ends_with("Content-Length: 2\r\n\r\n{}"));
        let get = String::from_utf8(encode("GET", "h", "/", None, None)).unwrap();
        assert_eq!(get, "GET / HTTP/1.1\r\nHost: h\r\n\r\n");
    }
}
