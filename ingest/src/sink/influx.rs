//! The InfluxDB v2 write API through the `influxdb2` crate.

use async_trait::async_trait;
use influxdb2::RequestError;
use influxdb2::api::write::TimestampPrecision;

use super::{SinkConfig, SinkError, TelemetrySink};

/// Writes line protocol to `{url}/api/v2/write?org=…&bucket=…&precision=ms`.
pub struct InfluxSink {
    client: influxdb2::Client,
    org: String,
    bucket: String,
    target: String,
}

/// The sink's configuration cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum InfluxSinkError {
    #[error("sink.url {url:?} is not a usable URL: {problem}")]
    BadUrl { url: String, problem: String },
    #[error("cannot build the HTTP client of the time-series sink: {0}")]
    Client(String),
}

impl InfluxSink {
    pub fn new(config: &SinkConfig) -> Result<Self, InfluxSinkError> {
        let bad = |problem: String| InfluxSinkError::BadUrl {
            url: redact_url(&config.url),
            problem,
        };
        // influxdb2 panics on a URL it cannot parse: check it first.
        let url = reqwest_influx::Url::parse(&config.url).map_err(|e| bad(e.to_string()))?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err(bad("the scheme must be http or https".into()));
        }
        if url.host_str().is_none() {
            return Err(bad("it names no host".into()));
        }
        let http = reqwest_influx::Client::builder()
            .timeout(config.timeout)
            .connect_timeout(config.timeout.min(std::time::Duration::from_secs(5)));
        let client = influxdb2::ClientBuilder::with_builder(
            http,
            config.url.as_str(),
            config.org.as_str(),
            config.token.clone().unwrap_or_default(),
        )
        .build()
        .map_err(|e| InfluxSinkError::Client(e.to_string()))?;
        Ok(Self {
            client,
            org: config.org.clone(),
            bucket: config.bucket.clone(),
            target: format!(
                "{} (org {:?}, bucket {:?})",
                redact_url(&config.url),
                config.org,
                config.bucket
            ),
        })
    }
}

#[async_trait]
impl TelemetrySink for InfluxSink {
    async fn write(&self, body: String) -> Result<(), SinkError> {
        self.client
            .write_line_protocol_with_precision(
                &self.org,
                &self.bucket,
                body,
                TimestampPrecision::Milliseconds,
            )
            .await
            .map_err(classify)
    }

    fn target(&self) -> &str {
        &self.target
    }
}

/// Sorts a failed write by what can help: waiting (the server is down, overloaded or
/// failing), fixing the configuration (wrong token, org or bucket), or nothing (the
/// server refuses these points).
fn classify(err: RequestError) -> SinkError {
    match err {
        RequestError::Http { status, text } => {
            let code = status.as_u16();
            let message = shorten(&text);
            match code {
                429 | 500..=599 => SinkError::Unavailable(format!("HTTP {code}: {message}")),
                401 | 403 | 404 => SinkError::Configuration {
                    status: code,
                    message,
                },
                400..=499 => SinkError::Rejected {
                    status: code,
                    message,
                },
                _ => SinkError::Unavailable(format!("unexpected HTTP {code}: {message}")),
            }
        }
        // Connection refused or reset, timeouts, a broken body: the server may be back
        // later. reqwest's text names the URL, which carries no secret (the token goes in
        // a header).
        RequestError::ReqwestProcessing { source } => SinkError::Unavailable(source.to_string()),
        other => SinkError::Unavailable(other.to_string()),
    }
}

/// Error bodies can be long (a server may echo the batch): keep what a person reads.
fn shorten(text: &str) -> String {
    const MAX: usize = 500;
    let text = text.trim();
    match text.char_indices().nth(MAX) {
        Some((cut, _)) => format!("{}…", &text[..cut]),
        None => text.to_owned(),
    }
}

/// A URL for logs: user info (a password in `https://user:pw@host`) is dropped.
fn redact_url(url: &str) -> String {
    match reqwest_influx::Url::parse(url) {
        Ok(mut u) if !u.username().is_empty() || u.password().is_some() => {
            let _ = u.set_username("");
            let _ = u.set_password(None);
            u.to_string()
        }
        Ok(u) => u.to_string(),
        Err(_) => "<unparsable url>".to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_urls_are_refused_with_the_setting_named() {
        for url in ["not a url", "ftp://x", "http://"] {
            let err = InfluxSink::new(&SinkConfig::new(url))
                .err()
                .expect("refused");
            assert!(err.to_string().contains("sink.url"), "{err}");
        }
        let err = InfluxSink::new(&SinkConfig::new("ftp://user:pw@host"))
            .err()
            .expect("refused");
        assert!(!err.to_string().contains("pw"), "{err}");
        assert!(InfluxSink::new(&SinkConfig::new("https://influx.example:8086")).is_ok());
    }

    #[test]
    fn http_statuses_are_sorted_by_what_can_help() {
        let http = |code: u16| RequestError::Http {
            status: reqwest_influx::StatusCode::from_u16(code).expect("status"),
            text: "why".into(),
        };
        assert!(matches!(classify(http(503)), SinkError::Unavailable(_)));
        assert!(matches!(classify(http(429)), SinkError::Unavailable(_)));
        assert!(matches!(
            classify(http(401)),
            SinkError::Configuration { status: 401, .. }
        ));
        assert!(matches!(
            classify(http(404)),
            SinkError::Configuration { status: 404, .. }
        ));
        assert!(matches!(
            classify(http(400)),
            SinkError::Rejected { status: 400, .. }
        ));
        assert!(matches!(
            classify(http(422)),
            SinkError::Rejected { status: 422, .. }
        ));
    }

    #[test]
    fn long_error_bodies_are_cut() {
        let long = "x".repeat(2_000);
        assert_eq!(shorten(&long).chars().count(), 501);
        assert_eq!(redact_url("https://u:pw@h:1/p"), "https://h:1/p");
    }
}
