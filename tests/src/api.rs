//! A small blocking HTTP client for the order-example contract.
//!
//! Every call returns the raw [`Reply`] (status and body) so tests can assert the contract's
//! status codes; `try_*` variants return transport errors (connection refused while a server
//! restarts) instead of panicking.

use std::fmt;
use std::time::Duration;

use serde_json::Value;

use crate::order::Order;

/// One HTTP reply: status, body text, the body parsed as JSON (`Value::Null` when it is not
/// JSON) and the `Content-Type` header.
#[derive(Debug, Clone)]
pub struct Reply {
    /// The HTTP status code.
    pub status: u16,
    /// The body parsed as JSON, or `Value::Null`.
    pub body: Value,
    /// The body as text.
    pub text: String,
    /// The `Content-Type` header, if any.
    pub content_type: Option<String>,
    /// The `Retry-After` header, if any.
    pub retry_after: Option<String>,
}

impl Reply {
    /// `body[key]` as a string, if it is one.
    pub fn str(&self, key: &str) -> Option<&str> {
        self.body.get(key).and_then(Value::as_str)
    }

    /// The `"error"` string of an error reply, if the body has one.
    pub fn error(&self) -> Option<&str> {
        self.str("error")
    }

    /// Whether this is a 4xx/5xx reply whose body is a JSON object with an `"error"` string,
    /// as the contract requires of every error reply.
    pub fn has_json_error(&self) -> bool {
        self.error().is_some_and(|e| !e.is_empty())
    }
}

impl fmt::Display for Reply {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let text: String = self.text.chars().take(600).collect();
        write!(f, "{} {}", self.status, text)
    }
}

/// A blocking client bound to one server's base URL (`http://127.0.0.1:PORT`). Cheap to clone;
/// clones share one connection pool.
#[derive(Debug, Clone)]
pub struct Api {
    base: String,
    client: reqwest::blocking::Client,
}

impl Api {
    /// A client for `base_url` with a 90 s request timeout (a `?wait=true` may wait 60 s).
    pub fn new(base_url: &str) -> Api {
        let client = reqwest::blocking::Client::builder()
            .timeout(Duration::from_secs(90))
            .connect_timeout(Duration::from_secs(5))
            .pool_idle_timeout(Duration::from_secs(5))
            .build()
            .unwrap_or_else(|e| panic!("cannot build an HTTP client: {e}"));
        Api {
            base: base_url.trim_end_matches('/').to_string(),
            client,
        }
    }

    /// The base URL.
    pub fn base_url(&self) -> &str {
        &self.base
    }

    /// Sends `method path` with `headers` and an optional body; a transport error (refused
    /// connection, reset, timeout) is `Err` with a description.
    pub fn try_request(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: Option<Vec<u8>>,
    ) -> Result<Reply, String> {
        self.try_request_within(method, path, headers, body, Duration::from_secs(90))
    }

    /// [`Api::try_request`] with its own request `timeout`.
    pub fn try_request_within(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: Option<Vec<u8>>,
        timeout: Duration,
    ) -> Result<Reply, String> {
        let method = reqwest::Method::from_bytes(method.as_bytes())
            .map_err(|e| format!("bad method {method}: {e}"))?;
        let url = format!("{}{path}", self.base);
        let mut request = self.client.request(method.clone(), &url).timeout(timeout);
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        if let Some(body) = body {
            request = request.body(body);
        }
        let response = request
            .send()
            .map_err(|e| format!("{method} {url}: {}", error_chain(&e)))?;
        let status = response.status().as_u16();
        let header = |name| {
            response
                .headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_string)
        };
        let content_type = header(reqwest::header::CONTENT_TYPE);
        let retry_after = header(reqwest::header::RETRY_AFTER);
        let text = response
            .text()
            .map_err(|e| format!("{method} {url}: reading the body: {}", error_chain(&e)))?;
        let body = serde_json::from_str(&text).unwrap_or(Value::Null);
        Ok(Reply {
            status,
            body,
            text,
            content_type,
            retry_after,
        })
    }

    /// [`Api::try_request`], panicking on a transport error.
    pub fn request(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: Option<Vec<u8>>,
    ) -> Reply {
        self.try_request(method, path, headers, body)
            .unwrap_or_else(|e| panic!("request failed: {e}"))
    }

    /// `GET path`.
    pub fn get(&self, path: &str) -> Reply {
        self.request("GET", path, &[], None)
    }

    /// `POST path` with a JSON body.
    pub fn post_json(&self, path: &str, body: &Value) -> Reply {
        self.post_raw(path, body.to_string())
    }

    /// `POST path` with raw bytes as an `application/json` body.
    pub fn post_raw(&self, path: &str, body: impl Into<Vec<u8>>) -> Reply {
        self.request(
            "POST",
            path,
            &[("content-type", "application/json")],
            Some(body.into()),
        )
    }

    /// `GET /healthz`: its status, or the transport error.
    pub fn healthz(&self) -> Result<u16, String> {
        self.try_request("GET", "/healthz", &[], None)
            .map(|reply| reply.status)
    }

    /// `POST /api/busi/submitOrder` with `order` (no wait); a transport error (including no
    /// reply within 15 s) is `Err`.
    pub fn try_submit(&self, order: &Order) -> Result<Reply, String> {
        self.try_request_within(
            "POST",
            "/api/busi/submitOrder",
            &[("content-type", "application/json")],
            Some(order.body().to_string().into_bytes()),
            Duration::from_secs(15),
        )
    }

    /// `POST /api/busi/submitOrder` with `order` (no wait).
    pub fn submit(&self, order: &Order) -> Reply {
        self.try_submit(order)
            .unwrap_or_else(|e| panic!("submit failed: {e}"))
    }

    /// `POST /api/busi/submitOrder?wait=true[&timeout_ms=T]` with `order`.
    pub fn submit_wait(&self, order: &Order, timeout_ms: Option<u64>) -> Reply {
        let query = match timeout_ms {
            Some(ms) => format!("?wait=true&timeout_ms={ms}"),
            None => "?wait=true".to_string(),
        };
        self.post_json(&format!("/api/busi/submitOrder{query}"), &order.body())
    }

    /// `POST /api/busi/payOrder[?wait=true]` with `{"order_id"}`.
    pub fn pay(&self, order_id: &str, wait: bool) -> Reply {
        let path = if wait {
            "/api/busi/payOrder?wait=true"
        } else {
            "/api/busi/payOrder"
        };
        self.post_json(path, &serde_json::json!({ "order_id": order_id }))
    }

    /// `GET /api/sagas/{gid}`: the saga view, or `None` on 404. Panics on other replies.
    pub fn saga(&self, gid: &str) -> Option<Value> {
        self.try_saga(gid).unwrap_or_else(|e| panic!("{e}"))
    }

    /// [`Api::saga`] returning transport errors and unexpected replies as `Err`.
    pub fn try_saga(&self, gid: &str) -> Result<Option<Value>, String> {
        let reply = self.try_request("GET", &format!("/api/sagas/{gid}"), &[], None)?;
        match reply.status {
            200 => Ok(Some(reply.body)),
            404 => Ok(None),
            _ => Err(format!("GET /api/sagas/{gid}: {reply}")),
        }
    }

    /// `GET /api/sagas?QUERY` (pass `""` for no query).
    pub fn sagas(&self, query: &str) -> Reply {
        if query.is_empty() {
            self.get("/api/sagas")
        } else {
            self.get(&format!("/api/sagas?{query}"))
        }
    }

    /// `GET /api/stock/{product}`: the stock, or `None` on 404. Panics on other replies.
    pub fn stock(&self, product: i64) -> Option<i64> {
        let reply = self.get(&format!("/api/stock/{product}"));
        match reply.status {
            200 => {
                Some(reply.body["stock"].as_i64().unwrap_or_else(|| {
                    panic!("GET /api/stock/{product}: no integer stock: {reply}")
                }))
            }
            404 => None,
            _ => panic!("GET /api/stock/{product}: {reply}"),
        }
    }

    /// `GET /api/coupons/{coupon}`: `(user_id, used)`, or `None` on 404.
    pub fn coupon(&self, coupon: i64) -> Option<(i64, bool)> {
        let reply = self.get(&format!("/api/coupons/{coupon}"));
        match reply.status {
            200 => {
                let user = reply.body["user_id"].as_i64();
                let used = reply.body["used"].as_bool();
                match (user, used) {
                    (Some(user), Some(used)) => Some((user, used)),
                    _ => panic!("GET /api/coupons/{coupon}: bad body: {reply}"),
                }
            }
            404 => None,
            _ => panic!("GET /api/coupons/{coupon}: {reply}"),
        }
    }

    /// `GET /api/payments/{order_id}`: `(status, amount_cents)`, or `None` on 404.
    pub fn payment(&self, order_id: &str) -> Option<(String, i64)> {
        let reply = self.get(&format!("/api/payments/{order_id}"));
        match reply.status {
            200 => {
                let status = reply.body["status"].as_str().map(str::to_string);
                let amount = reply.body["amount_cents"].as_i64();
                match (status, amount) {
                    (Some(status), Some(amount)) => Some((status, amount)),
                    _ => panic!("GET /api/payments/{order_id}: bad body: {reply}"),
                }
            }
            404 => None,
            _ => panic!("GET /api/payments/{order_id}: {reply}"),
        }
    }

    /// `GET /api/orders/{order_id}`: its status, or `None` on 404.
    pub fn order_status(&self, order_id: &str) -> Option<String> {
        let reply = self.get(&format!("/api/orders/{order_id}"));
        match reply.status {
            200 => Some(
                reply
                    .str("status")
                    .unwrap_or_else(|| panic!("GET /api/orders/{order_id}: no status: {reply}"))
                    .to_string(),
            ),
            404 => None,
            _ => panic!("GET /api/orders/{order_id}: {reply}"),
        }
    }

    /// `POST /api/sagas/{gid}/{action}` (`retry` or `compensate`), with
    /// `Authorization: Bearer TOKEN` when `token` is given.
    pub fn operator(&self, gid: &str, action: &str, token: Option<&str>) -> Reply {
        let auth = token.map(|t| format!("Bearer {t}"));
        let mut headers = Vec::new();
        if let Some(auth) = &auth {
            headers.push(("authorization", auth.as_str()));
        }
        self.request(
            "POST",
            &format!("/api/sagas/{gid}/{action}"),
            &headers,
            None,
        )
    }

    /// A participant call: `POST /api/busi/{endpoint}` with `body` and the barrier headers
    /// `Saga-Gid`, `Saga-Branch`, `Saga-Op` (each sent only when given).
    pub fn participant(
        &self,
        endpoint: &str,
        body: &Value,
        gid: Option<&str>,
        branch: Option<&str>,
        op: Option<&str>,
    ) -> Reply {
        let mut headers = vec![("content-type", "application/json")];
        if let Some(gid) = gid {
            headers.push(("saga-gid", gid));
        }
        if let Some(branch) = branch {
            headers.push(("saga-branch", branch));
        }
        if let Some(op) = op {
            headers.push(("saga-op", op));
        }
        self.request(
            "POST",
            &format!("/api/busi/{endpoint}"),
            &headers,
            Some(body.to_string().into_bytes()),
        )
    }
}

impl Api {
    /// `POST path` with a large raw body over a plain TCP connection, reading the reply while
    /// the body is still being written. A server may answer 413 and close before it has read
    /// the whole body; an HTTP client that writes first and reads later sees only the broken
    /// pipe, so this one reads concurrently. Returns the reply, or the transport error when
    /// no reply arrived.
    pub fn post_oversized(
        &self,
        path: &str,
        headers: &[(&str, &str)],
        body: Vec<u8>,
    ) -> Result<Reply, String> {
        use std::io::{Read, Write};
        use std::net::TcpStream;

        let authority = self.base.trim_start_matches("http://");
        let mut stream =
            TcpStream::connect(authority).map_err(|e| format!("connect {authority}: {e}"))?;
        stream
            .set_read_timeout(Some(Duration::from_secs(30)))
            .map_err(|e| e.to_string())?;
        let mut head = format!(
            "POST {path} HTTP/1.1\r\nhost: {authority}\r\ncontent-length: {}\r\nconnection: close\r\n",
            body.len()
        );
        for (name, value) in headers {
            head.push_str(&format!("{name}: {value}\r\n"));
        }
        head.push_str("\r\n");
        let mut writer = stream.try_clone().map_err(|e| e.to_string())?;
        let sender = std::thread::spawn(move || {
            // A write error is expected once the server refused the body and closed.
            let _ = writer
                .write_all(head.as_bytes())
                .and_then(|()| writer.write_all(&body));
        });
        let mut raw = Vec::new();
        let mut chunk = [0u8; 8192];
        let result = loop {
            match stream.read(&mut chunk) {
                Ok(0) => break Ok(()),
                Ok(n) => {
                    raw.extend_from_slice(&chunk[..n]);
                    if let Some(reply) = parse_complete_reply(&raw) {
                        let _ = stream.shutdown(std::net::Shutdown::Both);
                        let _ = sender.join();
                        return Ok(reply);
                    }
                }
                Err(e) => break Err(e),
            }
        };
        let _ = stream.shutdown(std::net::Shutdown::Both);
        let _ = sender.join();
        match (parse_complete_reply(&raw), result) {
            (Some(reply), _) => Ok(reply),
            (None, Err(e)) => Err(format!(
                "POST {path}: no reply: {e} (read {} bytes)",
                raw.len()
            )),
            (None, Ok(())) => Err(format!(
                "POST {path}: connection closed without a complete reply: {:?}",
                String::from_utf8_lossy(&raw)
            )),
        }
    }
}

/// Parses a complete HTTP/1.1 reply with a `content-length` (skipping `100 Continue`
/// interim replies), or `None` when more bytes are needed.
/// The first complete HTTP/1.1 reply in `raw` (skipping `100 Continue`), if it holds one: its
/// head and a `Content-Length` body.
pub fn parse_complete_reply(raw: &[u8]) -> Option<Reply> {
    let text = String::from_utf8_lossy(raw);
    let mut rest: &str = &text;
    loop {
        let head_end = rest.find("\r\n\r\n")?;
        let head = &rest[..head_end];
        let body = &rest[head_end + 4..];
        let status: u16 = head.split_whitespace().nth(1)?.parse().ok()?;
        if status == 100 {
            rest = body;
            continue;
        }
        let mut length = None;
        let mut content_type = None;
        let mut retry_after = None;
        for line in head.lines().skip(1) {
            if let Some((name, value)) = line.split_once(':') {
                match name.trim().to_ascii_lowercase().as_str() {
                    "content-length" => length = value.trim().parse::<usize>().ok(),
                    "content-type" => content_type = Some(value.trim().to_string()),
                    "retry-after" => retry_after = Some(value.trim().to_string()),
                    _ => {}
                }
            }
        }
        let length = length?;
        if body.len() < length {
            return None;
        }
        let text = body[..length].to_string();
        return Some(Reply {
            status,
            body: serde_json::from_str(&text).unwrap_or(Value::Null),
            text,
            content_type,
            retry_after,
        });
    }
}

fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}
