//! Helpers for the dispatch API: API tokens made with the real `fleetpulse token create`
//! command, HTTP clients that send them, and requests with `If-Match`.

use std::path::Path;

use anyhow::Context;
use reqwest::header::{AUTHORIZATION, HeaderMap, HeaderValue};
use serde_json::Value;

use crate::{App, fleetpulse_bin};

/// Creates an API token with `fleetpulse token create --role ROLE --name NAME --data DIR`
/// (the command an operator runs) and returns the secret it printed.
pub async fn create_token(data_dir: &Path, role: &str, name: &str) -> anyhow::Result<String> {
    let out = tokio::process::Command::new(fleetpulse_bin())
        .args(["token", "create", "--role", role, "--name", name, "--data"])
        .arg(data_dir)
        .output()
        .await
        .context("running fleetpulse token create")?;
    anyhow::ensure!(
        out.status.success(),
        "fleetpulse token create failed ({}): {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    let token = String::from_utf8(out.stdout)?.trim().to_owned();
    anyhow::ensure!(
        token.starts_with("fpt_"),
        "unexpected token output {token:?}"
    );
    Ok(token)
}

/// A client that sends `Authorization: Bearer TOKEN` with every request.
pub fn client_with_token(token: &str) -> anyhow::Result<reqwest::Client> {
    let mut headers = HeaderMap::new();
    headers.insert(
        AUTHORIZATION,
        HeaderValue::from_str(&format!("Bearer {token}"))?,
    );
    Ok(crate::http_client().default_headers(headers).build()?)
}

/// An answer: status, headers, JSON body (`Null` when not JSON).
pub struct Answer {
    pub status: u16,
    pub etag: Option<String>,
    pub body: Value,
}

impl Answer {
    async fn from(resp: reqwest::Response) -> anyhow::Result<Answer> {
        let status = resp.status().as_u16();
        let etag = resp
            .headers()
            .get(reqwest::header::ETAG)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let body = resp.json::<Value>().await.unwrap_or(Value::Null);
        Ok(Answer { status, etag, body })
    }
}

/// Someone calling the API with one token (or none).
pub struct Client {
    pub api: String,
    http: reqwest::Client,
}

impl Client {
    /// A client of `app` with `token`, or with no credentials at all.
    pub fn new(app: &App, token: Option<&str>) -> anyhow::Result<Client> {
        let http = match token {
            Some(t) => client_with_token(t)?,
            None => crate::http_client().build()?,
        };
        Ok(Client {
            api: app.api.clone(),
            http,
        })
    }

    pub async fn get(&self, path: &str) -> anyhow::Result<Answer> {
        Answer::from(self.http.get(format!("{}{path}", self.api)).send().await?).await
    }

    pub async fn post(&self, path: &str, body: &Value) -> anyhow::Result<Answer> {
        Answer::from(
            self.http
                .post(format!("{}{path}", self.api))
                .json(body)
                .send()
                .await?,
        )
        .await
    }

    /// POST with `If-Match: "VERSION"` (`None`: without the header).
    pub async fn post_if_match(
        &self,
        path: &str,
        version: Option<u64>,
        body: &Value,
    ) -> anyhow::Result<Answer> {
        let mut req = self.http.post(format!("{}{path}", self.api)).json(body);
        if let Some(v) = version {
            req = req.header(reqwest::header::IF_MATCH, format!("\"{v}\""));
        }
        Answer::from(req.send().await?).await
    }

    pub async fn delete(&self, path: &str) -> anyhow::Result<Answer> {
        Answer::from(
            self.http
                .delete(format!("{}{path}", self.api))
                .send()
                .await?,
        )
        .await
    }
}

/// One Server-Sent Event.
#[derive(Debug, Clone)]
pub struct SseEvent {
    pub id: Option<String>,
    pub event: Option<String>,
    pub data: Value,
}

/// Reads a `text/event-stream` answer event by event.
pub struct SseReader {
    resp: reqwest::Response,
    buf: String,
}

impl SseReader {
    /// GETs `path` with an optional `Last-Event-ID`.
    pub async fn open(
        client: &Client,
        path: &str,
        last_event_id: Option<&str>,
    ) -> anyhow::Result<SseReader> {
        let mut req = client.http.get(format!("{}{path}", client.api));
        if let Some(id) = last_event_id {
            req = req.header("Last-Event-ID", id);
        }
        let resp = req.send().await?;
        anyhow::ensure!(
            resp.status().as_u16() == 200,
            "stream answered {}",
            resp.status()
        );
        Ok(SseReader {
            resp,
            buf: String::new(),
        })
    }

    /// Reads until the server ends the stream and returns the events it sent before; an
    /// error if the stream is still open after `timeout`.
    pub async fn until_end(
        &mut self,
        timeout: std::time::Duration,
    ) -> anyhow::Result<Vec<SseEvent>> {
        let deadline = tokio::time::Instant::now() + timeout;
        let mut events = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            match self.next(left).await {
                Ok(e) => events.push(e),
                Err(e) if e.to_string().contains("the stream ended") => return Ok(events),
                Err(e) => return Err(e.context("the stream did not end")),
            }
        }
    }

    /// The next event (comments are skipped), or an error after `timeout`.
    pub async fn next(&mut self, timeout: std::time::Duration) -> anyhow::Result<SseEvent> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            while let Some(end) = self.buf.find("\n\n") {
                let block: String = self.buf.drain(..end + 2).collect();
                let (mut id, mut event, mut data) = (None, None, String::new());
                for line in block.lines() {
                    if let Some(v) = line.strip_prefix("id:") {
                        id = Some(v.trim().to_owned());
                    } else if let Some(v) = line.strip_prefix("event:") {
                        event = Some(v.trim().to_owned());
                    } else if let Some(v) = line.strip_prefix("data:") {
                        data.push_str(v.trim_start());
                    }
                }
                if id.is_some() || event.is_some() || !data.is_empty() {
                    let data = serde_json::from_str(&data).unwrap_or(Value::String(data));
                    return Ok(SseEvent { id, event, data });
                }
            }
            let chunk = tokio::time::timeout_at(deadline, self.resp.chunk())
                .await
                .context("no event within the timeout")??
                .context("the stream ended")?;
            self.buf.push_str(&String::from_utf8_lossy(&chunk));
        }
    }
}
