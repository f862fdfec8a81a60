//! How requests leave for a provider: hyper-util's pooled client over rustls, or reqwest where
//! the environment names a proxy.
//!
//! reqwest's own layers cost a passthrough request as much as the rest of the relay: its
//! redirect layer clones the headers and parses the URL from text on every request, even with
//! redirects off, and its response future parses the URL again (callgrind, BENCHMARKS.md "The
//! paths users take", sixth pass: 74.1k instructions per relayed request with reqwest, 38.6k
//! with hyper-util's client). The client here sends with what reqwest was set to do — the same
//! webpki roots and ring provider, ALPN offering h2 and http/1.1, the connect timeout,
//! `TCP_NODELAY`, the idle pool's bounds, no redirects, our user agent — and hands back a
//! `reqwest::Response`, so everything downstream reads answers one way.
//!
//! Proxies are the one thing it does not do. When `HTTPS_PROXY`, `HTTP_PROXY` or `ALL_PROXY`
//! (either case) is set, requests go through reqwest, which honours them and `NO_PROXY` as it
//! always has: a corporate proxy is not where a user should find a new client's corner cases.
//!
//! `UNDERSTUDY_EXTRA_CA_CERTS` names a PEM file of certificates trusted beside the webpki roots
//! (a TLS-inspecting corporate proxy's CA, a self-hosted server's; the tests' HTTPS mock's), by
//! both clients, as `NODE_EXTRA_CA_CERTS` does for Claude Code itself; `config::extra_roots`
//! reads it.

use crate::config::extra_roots;
use crate::error::chain;
use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Method};
use http_body_util::Full;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use reqwest::ResponseBuilderExt;
use std::sync::{Arc, OnceLock};
use std::time::Duration;
use url::Url;

/// The variables reqwest reads a proxy from; any of them set (non-empty) sends through it.
const PROXY_ENV: &[&str] = &[
    "HTTPS_PROXY",
    "https_proxy",
    "HTTP_PROXY",
    "http_proxy",
    "ALL_PROXY",
    "all_proxy",
];

const USER_AGENT: &str = concat!("understudy/", env!("CARGO_PKG_VERSION"));

/// What a client for one provider is set to.
#[derive(Debug, Clone, Copy)]
pub struct Settings {
    /// Longest wait for a connection: TCP and TLS together.
    pub connect_timeout: Duration,
    /// How long an idle pooled connection is kept.
    pub idle_timeout: Duration,
    /// Idle connections kept per host.
    pub max_idle_per_host: usize,
}

/// A client for one provider.
#[derive(Clone)]
pub enum Transport {
    /// hyper-util's pooled client, TLS by rustls: the default.
    Direct(Box<Client<Timed<hyper_rustls::HttpsConnector<HttpConnector>>, Full<Bytes>>>),
    /// reqwest, for its proxy support.
    Proxied(reqwest::Client),
}

impl std::fmt::Debug for Transport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Transport::Direct(_) => "Transport::Direct",
            Transport::Proxied(_) => "Transport::Proxied",
        })
    }
}

/// Why a request got no answer.
#[derive(Debug)]
pub enum SendFailure {
    /// From hyper-util's client.
    Direct(hyper_util::client::legacy::Error),
    /// From reqwest.
    Proxied(reqwest::Error),
    /// The URL or a header could not make a request (never with URLs the config check passed).
    Request(http::Error),
}

impl SendFailure {
    /// The error whose source chain says what happened.
    pub fn error(&self) -> &(dyn std::error::Error + 'static) {
        match self {
            SendFailure::Direct(e) => e,
            SendFailure::Proxied(e) => e,
            SendFailure::Request(e) => e,
        }
    }

    /// The connection (or its TLS handshake) could not be made.
    pub fn is_connect(&self) -> bool {
        match self {
            SendFailure::Direct(e) => e.is_connect(),
            SendFailure::Proxied(e) => e.is_connect(),
            SendFailure::Request(_) => false,
        }
    }

    /// A timeout ended it (the connect timeout, for the direct client).
    pub fn is_timeout(&self) -> bool {
        match self {
            SendFailure::Proxied(e) => e.is_timeout(),
            _ => chain(self.error()).any(|s| {
                s.downcast_ref::<std::io::Error>()
                    .is_some_and(|io| io.kind() == std::io::ErrorKind::TimedOut)
            }),
        }
    }
}

/// True when one of the proxy variables is set to something.
pub fn proxy_in(env: impl Fn(&str) -> Option<std::ffi::OsString>) -> bool {
    PROXY_ENV
        .iter()
        .any(|k| env(k).is_some_and(|v| !v.is_empty()))
}

/// The TLS settings every direct client shares: webpki's roots and the extra ones, ring,
/// TLS 1.2 and 1.3, ALPN (set by the connector) offering h2 and http/1.1.
fn tls() -> rustls::ClientConfig {
    static CONFIG: OnceLock<rustls::ClientConfig> = OnceLock::new();
    CONFIG
        .get_or_init(|| {
            let mut roots = rustls::RootCertStore {
                roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
            };
            // A bad file was refused at start-up; a library caller that skipped the check
            // gets the webpki roots alone.
            for cert in extra_roots().unwrap_or_default() {
                let _ = roots.add(cert.clone());
            }
            rustls::ClientConfig::builder_with_provider(Arc::new(
                rustls::crypto::ring::default_provider(),
            ))
            .with_safe_default_protocol_versions()
            .expect("ring supports the default protocol versions")
            .with_root_certificates(roots)
            .with_no_client_auth()
        })
        .clone()
}

/// A connector with one deadline over TCP and TLS together (`timeouts.connect`, as reqwest's
/// connect timeout was): a server that takes the connection and never finishes the handshake
/// fails as a timeout when the deadline passes, not when `first_byte` does.
#[derive(Clone)]
pub struct Timed<C> {
    inner: C,
    within: Duration,
}

type BoxError = Box<dyn std::error::Error + Send + Sync>;

impl<C> tower::Service<http::Uri> for Timed<C>
where
    C: tower::Service<http::Uri>,
    C::Response: Send + 'static,
    C::Future: Send + 'static,
    C::Error: Into<BoxError>,
{
    type Response = C::Response;
    type Error = BoxError;
    type Future =
        std::pin::Pin<Box<dyn std::future::Future<Output = Result<C::Response, BoxError>> + Send>>;

    fn poll_ready(
        &mut self,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), BoxError>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, uri: http::Uri) -> Self::Future {
        let within = self.within;
        let connecting = self.inner.call(uri);
        Box::pin(async move {
            match tokio::time::timeout(within, connecting).await {
                Ok(done) => done.map_err(Into::into),
                Err(_) => Err(Box::new(std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    format!("no connection (TCP and TLS) within {within:?} (timeouts.connect)"),
                )) as BoxError),
            }
        })
    }
}

impl Transport {
    /// A client with these settings: direct unless the environment names a proxy.
    pub fn new(s: Settings) -> Transport {
        if proxy_in(|k| std::env::var_os(k)) {
            Transport::proxied(s)
        } else {
            Transport::direct(s)
        }
    }

    /// hyper-util's client.
    pub fn direct(s: Settings) -> Transport {
        let mut http = HttpConnector::new();
        http.enforce_http(false);
        http.set_nodelay(true);
        let https = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls())
            .https_or_http()
            .enable_http1()
            .enable_http2()
            .wrap_connector(http);
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(s.idle_timeout)
            .pool_max_idle_per_host(s.max_idle_per_host)
            .pool_timer(TokioTimer::new())
            .build(Timed {
                inner: https,
                within: s.connect_timeout,
            });
        Transport::Direct(Box::new(client))
    }

    /// reqwest, with its proxies from the environment.
    pub fn proxied(s: Settings) -> Transport {
        let mut b = reqwest::Client::builder()
            .connect_timeout(s.connect_timeout)
            .pool_idle_timeout(s.idle_timeout)
            .pool_max_idle_per_host(s.max_idle_per_host)
            .tcp_nodelay(true)
            // Redirects would silently re-send the key elsewhere.
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(USER_AGENT);
        for cert in extra_roots().unwrap_or_default() {
            if let Ok(c) = reqwest::Certificate::from_der(cert) {
                b = b.add_root_certificate(c);
            }
        }
        Transport::Proxied(
            b.build()
                .expect("a client with these settings always builds"),
        )
    }

    /// Whether requests go through reqwest (a proxy is configured).
    pub fn is_proxied(&self) -> bool {
        matches!(self, Transport::Proxied(_))
    }

    /// Sends a request and waits for the answer's head.
    pub async fn send(
        &self,
        method: Method,
        url: &Url,
        mut headers: HeaderMap,
        body: Bytes,
    ) -> Result<reqwest::Response, SendFailure> {
        match self {
            Transport::Proxied(c) => {
                let mut req = c.request(method, url.as_str()).headers(headers);
                if !body.is_empty() {
                    req = req.body(body);
                }
                req.send().await.map_err(SendFailure::Proxied)
            }
            Transport::Direct(c) => {
                // What reqwest adds when a request has none.
                headers
                    .entry(http::header::USER_AGENT)
                    .or_insert(HeaderValue::from_static(USER_AGENT));
                headers
                    .entry(http::header::ACCEPT)
                    .or_insert(HeaderValue::from_static("*/*"));
                let mut req = http::Request::builder()
                    .method(method)
                    .uri(url.as_str())
                    .body(Full::new(body))
                    .map_err(SendFailure::Request)?;
                *req.headers_mut() = headers;
                let resp = c.request(req).await.map_err(SendFailure::Direct)?;
                let (parts, body) = resp.into_parts();
                // With its URL given, reqwest does not parse a placeholder one for every
                // answer (3.4k instructions a request, 3 % of a passthrough's).
                let mut answer = http::Response::builder()
                    .status(parts.status)
                    .version(parts.version)
                    .url(url.clone());
                if let Some(h) = answer.headers_mut() {
                    *h = parts.headers;
                }
                if let Some(x) = answer.extensions_mut() {
                    x.extend(parts.extensions);
                }
                let answer = answer
                    .body(reqwest::Body::wrap(body))
                    .map_err(SendFailure::Request)?;
                Ok(answer.into())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn any_proxy_variable_of_either_case_sends_through_reqwest() {
        assert!(!proxy_in(|_| None));
        assert!(!proxy_in(|_| Some("".into())), "an empty variable is unset");
        for k in PROXY_ENV {
            assert!(
                proxy_in(|v| (v == *k).then(|| "http://proxy:3128".into())),
                "{k}"
            );
        }
        // NO_PROXY alone names no proxy.
        assert!(!proxy_in(|v| (v == "NO_PROXY").then(|| "*".into())));
    }

    #[tokio::test]
    async fn an_answer_comes_back_whole_with_its_url_from_either_client() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let server = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = Url::parse(&format!(
            "http://{}/v1/messages?beta=true",
            server.local_addr().unwrap()
        ))
        .unwrap();
        tokio::spawn(async move {
            while let Ok((mut sock, _)) = server.accept().await {
                tokio::spawn(async move {
                    let mut buf = vec![0u8; 4096];
                    while let Ok(n) = sock.read(&mut buf).await {
                        if n == 0 {
                            return;
                        }
                        let reply =
                            "HTTP/1.1 201 Created\r\nx-up: 1\r\ncontent-length: 5\r\n\r\nhello";
                        if sock.write_all(reply.as_bytes()).await.is_err() {
                            return;
                        }
                    }
                });
            }
        });
        let s = Settings {
            connect_timeout: Duration::from_secs(5),
            idle_timeout: Duration::from_secs(1),
            max_idle_per_host: 1,
        };
        for t in [Transport::direct(s), Transport::proxied(s)] {
            let r = t
                .send(
                    Method::POST,
                    &url,
                    HeaderMap::new(),
                    Bytes::from_static(b"{}"),
                )
                .await
                .unwrap();
            assert_eq!(r.status(), 201, "{t:?}");
            assert_eq!(r.url(), &url, "{t:?}");
            assert_eq!(r.headers()["x-up"], "1", "{t:?}");
            assert_eq!(r.bytes().await.unwrap(), "hello", "{t:?}");
        }
    }

    #[tokio::test]
    async fn a_handshake_that_never_finishes_times_out_at_the_connect_deadline() {
        // Takes connections and says nothing: TCP connects, TLS never does.
        let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = Url::parse(&format!("https://{}/", silent.local_addr().unwrap())).unwrap();
        tokio::spawn(async move {
            let mut held = Vec::new();
            while let Ok((sock, _)) = silent.accept().await {
                held.push(sock);
            }
        });
        let s = Settings {
            connect_timeout: Duration::from_millis(300),
            idle_timeout: Duration::from_secs(1),
            max_idle_per_host: 1,
        };
        for t in [Transport::direct(s), Transport::proxied(s)] {
            let start = std::time::Instant::now();
            let e = t
                .send(Method::GET, &url, HeaderMap::new(), Bytes::new())
                .await
                .unwrap_err();
            let took = start.elapsed();
            assert!(e.is_timeout() && e.is_connect(), "{t:?}: {e:?}");
            assert!(
                took >= Duration::from_millis(300) && took < Duration::from_secs(3),
                "{t:?}: {took:?}"
            );
        }
    }
}
