//! The least a relay on Understudy's own stack does, as a yardstick for `scripts/bench paths`:
//! an HTTP/1 hyper server that sends each request to one upstream and the answer back, body
//! streamed through, with none of the gateway's work (no routing, no inspection, no journal).
//!
//!     understudy-bare-relay --listen 127.0.0.1:PORT --upstream http://127.0.0.1:PORT --client reqwest|hyper
//!
//! `reqwest` is the client Understudy uses; `hyper` is hyper-util's pooled client with nothing
//! above it. The two rows side by side say what the client's own layers cost.

use bytes::Bytes;
use clap::{Parser, ValueEnum};
use futures_util::TryStreamExt;
use http_body_util::{combinators::BoxBody, BodyExt, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::{Request, Response};
use hyper_util::client::legacy::{connect::HttpConnector, Client};
use hyper_util::rt::{TokioExecutor, TokioIo};
use std::sync::Arc;

#[global_allocator]
static ALLOC: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

#[derive(Clone, Copy, ValueEnum)]
enum Kind {
    Reqwest,
    Hyper,
}

#[derive(Parser)]
struct Args {
    #[arg(long)]
    listen: String,
    /// The upstream's base URL, `http://host:port`.
    #[arg(long)]
    upstream: String,
    #[arg(long, value_enum)]
    client: Kind,
}

type Body = BoxBody<Bytes, Box<dyn std::error::Error + Send + Sync>>;

struct Relay {
    upstream: String,
    kind: Kind,
    reqwest: reqwest::Client,
    hyper: Client<HttpConnector, Incoming>,
}

impl Relay {
    async fn serve(&self, req: Request<Incoming>) -> Result<Response<Body>, String> {
        let (mut parts, body) = req.into_parts();
        parts.headers.remove(http::header::HOST);
        let path = parts.uri.path_and_query().map_or("/", |p| p.as_str());
        let url = format!("{}{path}", self.upstream);
        match self.kind {
            Kind::Hyper => {
                parts.uri = url.parse().map_err(|e| format!("{e}"))?;
                let resp = self
                    .hyper
                    .request(Request::from_parts(parts, body))
                    .await
                    .map_err(|e| e.to_string())?;
                Ok(resp.map(|b| b.map_err(Into::into).boxed()))
            }
            Kind::Reqwest => {
                let body = reqwest::Body::wrap_stream(body.into_data_stream());
                let resp = self
                    .reqwest
                    .request(parts.method, url)
                    .headers(parts.headers)
                    .body(body)
                    .send()
                    .await
                    .map_err(|e| e.to_string())?;
                let mut out = Response::builder().status(resp.status());
                *out.headers_mut().expect("a fresh builder") = resp.headers().clone();
                let stream = resp
                    .bytes_stream()
                    .map_ok(Frame::data)
                    .map_err(|e| Box::new(e) as Box<dyn std::error::Error + Send + Sync>);
                out.body(BodyExt::boxed(StreamBody::new(stream)))
                    .map_err(|e| e.to_string())
            }
        }
    }
}

#[tokio::main]
async fn main() {
    let args = Args::parse();
    let relay = Arc::new(Relay {
        upstream: args.upstream.trim_end_matches('/').to_owned(),
        kind: args.client,
        reqwest: reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .expect("a reqwest client"),
        hyper: Client::builder(TokioExecutor::new()).build(HttpConnector::new()),
    });
    let listener = tokio::net::TcpListener::bind(&args.listen)
        .await
        .unwrap_or_else(|e| panic!("cannot listen on {}: {e}", args.listen));
    loop {
        let Ok((tcp, _)) = listener.accept().await else {
            continue;
        };
        let _ = tcp.set_nodelay(true);
        let relay = relay.clone();
        tokio::spawn(async move {
            let svc = hyper::service::service_fn(move |req| {
                let relay = relay.clone();
                async move {
                    Ok::<_, std::convert::Infallible>(relay.serve(req).await.unwrap_or_else(|e| {
                        let mut r = Response::new(
                            http_body_util::Full::new(Bytes::from(e))
                                .map_err(|never| match never {})
                                .boxed(),
                        );
                        *r.status_mut() = http::StatusCode::BAD_GATEWAY;
                        r
                    }))
                }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(tcp), svc)
                .await;
        });
    }
}
