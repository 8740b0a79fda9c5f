//! The HTTP endpoint: `GET /metrics` in the Prometheus text format, served by hyper on the
//! session's tokio runtime. Encoding (which reads the node's memcg counts from cgroupfs) runs
//! on a blocking thread, so a scrape never stalls the event pipeline.

use std::{convert::Infallible, net::SocketAddr, sync::Arc, time::Duration};

use bytes::Bytes;
use http_body_util::Full;
use hyper::{
    Method, Request, Response, StatusCode,
    body::Incoming,
    header::{self, HeaderValue},
    server::conn::http1,
    service::service_fn,
};
use hyper_util::rt::{TokioIo, TokioTimer};
use prometheus_client::encoding::prometheus_text::CONTENT_TYPE;
use tokio::net::TcpListener;

use super::Exporter;

/// A client that has not sent its request headers by then is dropped.
const HEADER_TIMEOUT: Duration = Duration::from_secs(10);

/// Binds `addr` now, so that a port in use is an error before anything is attached.
///
/// # Errors
///
/// When the address cannot be bound.
pub fn bind(addr: SocketAddr) -> std::io::Result<std::net::TcpListener> {
    let listener = std::net::TcpListener::bind(addr)?;
    listener.set_nonblocking(true)?;
    Ok(listener)
}

/// Serves `exporter` on `listener` until the task is dropped. Must run inside a tokio
/// runtime.
///
/// # Errors
///
/// When the listener cannot be registered with the runtime.
pub async fn serve(
    listener: std::net::TcpListener,
    exporter: Arc<Exporter>,
) -> std::io::Result<()> {
    let listener = TcpListener::from_std(listener)?;
    loop {
        let stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            Err(e) => {
                // Out of file descriptors, typically: wait, do not spin.
                log::warn!("metrics: accepting a connection: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let exporter = Arc::clone(&exporter);
        tokio::spawn(async move {
            let service = service_fn(move |request| respond(Arc::clone(&exporter), request));
            if let Err(e) = http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(HEADER_TIMEOUT)
                .serve_connection(TokioIo::new(stream), service)
                .await
            {
                log::debug!("metrics: connection: {e}");
            }
        });
    }
}

async fn respond(
    exporter: Arc<Exporter>,
    request: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let get = matches!(*request.method(), Method::GET | Method::HEAD);
    Ok(match (get, request.uri().path()) {
        (true, "/metrics") => match tokio::task::spawn_blocking(move || exporter.encode()).await {
            Ok(Ok(text)) => response(StatusCode::OK, CONTENT_TYPE, text),
            Ok(Err(e)) => plain(
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("encoding: {e}\n"),
            ),
            Err(e) => plain(
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("encoding: {e}\n"),
            ),
        },
        (true, "/") => plain(
            StatusCode::OK,
            "memtrace: Prometheus metrics are at /metrics\n".to_owned(),
        ),
        (false, "/" | "/metrics") => plain(
            StatusCode::METHOD_NOT_ALLOWED,
            "only GET and HEAD\n".to_owned(),
        ),
        _ => plain(
            StatusCode::NOT_FOUND,
            "not found: try /metrics\n".to_owned(),
        ),
    })
}

fn plain(status: StatusCode, text: String) -> Response<Full<Bytes>> {
    response(status, "text/plain; charset=utf-8", text)
}

fn response(status: StatusCode, content_type: &'static str, body: String) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    response
}
