//! A stub HTTP/1 server for stand-ins (AWS endpoints, instance metadata,
//! STS, a faulty network in front of a real server): the stand-in is one
//! function from a request to an answer.

use std::future::Future;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;

/// An answer: `None` closes the connection without answering.
pub type Answer = Option<Response<Full<Bytes>>>;

/// What to do with a new connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admit {
    Serve,
    /// Keep it open and never answer (a server that hangs).
    Hold,
    /// Close it at once (a server that is down).
    Close,
}

/// A response with `status`, `content_type` and `body`.
pub fn response(status: u16, content_type: &str, body: impl Into<Bytes>) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(body.into()));
    *r.status_mut() = hyper::StatusCode::from_u16(status).unwrap_or(hyper::StatusCode::OK);
    if let Ok(v) = hyper::header::HeaderValue::from_str(content_type) {
        r.headers_mut().insert(hyper::header::CONTENT_TYPE, v);
    }
    r
}

/// Serves every connection of `listener` with `handler`, forever (spawn
/// it).
pub async fn serve<F, Fut>(listener: tokio::net::TcpListener, handler: F)
where
    F: Fn(Request<Incoming>) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = Answer> + Send + 'static,
{
    serve_gated(listener, || Admit::Serve, handler).await
}

/// [`serve`], with `gate` deciding first what becomes of each connection.
pub async fn serve_gated<G, F, Fut>(listener: tokio::net::TcpListener, gate: G, handler: F)
where
    G: Fn() -> Admit + Send + 'static,
    F: Fn(Request<Incoming>) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = Answer> + Send + 'static,
{
    let mut held = Vec::new();
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        match gate() {
            Admit::Serve => {}
            Admit::Hold => {
                held.push(stream);
                continue;
            }
            Admit::Close => {
                drop(stream);
                continue;
            }
        }
        tokio::spawn(serve_connection(TokioIo::new(stream), handler.clone()));
    }
}

/// Serves one connection (plain, or a TLS stream a test accepted) with
/// `handler`, to its end.
pub async fn serve_connection<I, F, Fut>(io: I, handler: F)
where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
    F: Fn(Request<Incoming>) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = Answer> + Send + 'static,
{
    let svc = hyper::service::service_fn(move |req| {
        let answer = handler(req);
        async move {
            match answer.await {
                Some(r) => Ok::<_, Closed>(r),
                // An error makes hyper drop the connection without
                // answering.
                None => Err(Closed),
            }
        }
    });
    let _ = hyper::server::conn::http1::Builder::new()
        .serve_connection(io, svc)
        .await;
}

/// The error that makes hyper close a connection unanswered.
#[derive(Debug)]
pub struct Closed;

impl std::fmt::Display for Closed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("closed without an answer")
    }
}

impl std::error::Error for Closed {}
