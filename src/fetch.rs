//! One HTTP/1 GET, over plain HTTP or over TLS with a given trust: what the
//! metadata sources (ECS's task endpoint) and the Kubernetes API lookups
//! fetch. The AWS calls go through the SDK's own client instead.

use std::sync::Arc;

use http_body_util::{BodyExt, Empty};
use hyper_util::rt::TokioIo;

/// The largest answer read (a pod with many annotations is tens of KB).
pub const MAX_ANSWER_BYTES: usize = 4 * 1024 * 1024;

/// A TLS client trusting exactly the certificates in `pem` (a CA bundle
/// file's bytes).
pub fn tls_trusting(pem: &[u8]) -> Result<Arc<rustls::ClientConfig>, String> {
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(pem) {
        let cert = cert.map_err(|e| format!("a certificate does not read: {e}"))?;
        roots
            .add(cert)
            .map_err(|e| format!("a certificate is not usable: {e}"))?;
    }
    if roots.is_empty() {
        return Err("no certificate in it".into());
    }
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(config))
}

/// GETs `url` with `headers`; `https://` needs `tls`. The status and the
/// body, or why there is none.
pub async fn get(
    url: &str,
    headers: &[(&str, String)],
    tls: Option<&Arc<rustls::ClientConfig>>,
) -> Result<(u16, Vec<u8>), String> {
    let uri: hyper::Uri = url.parse().map_err(|e| format!("{e}"))?;
    let host = uri.host().ok_or("no host")?.to_string();
    let https = match uri.scheme_str() {
        Some("http") => false,
        Some("https") => true,
        _ => return Err("only http:// and https:// are supported".into()),
    };
    let port = uri.port_u16().unwrap_or(if https { 443 } else { 80 });
    // An IPv6 literal comes bracketed in the URI.
    let bare = host
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_string();
    let tcp = tokio::net::TcpStream::connect((bare.as_str(), port))
        .await
        .map_err(|e| e.to_string())?;
    let path = uri.path_and_query().map_or("/", |p| p.as_str());
    if https {
        let config = tls.ok_or("https:// without a CA to trust")?;
        let name = rustls::pki_types::ServerName::try_from(bare.clone())
            .map_err(|e| format!("{host}: {e}"))?;
        let stream = tokio_rustls::TlsConnector::from(config.clone())
            .connect(name, tcp)
            .await
            .map_err(|e| format!("TLS: {e}"))?;
        send(TokioIo::new(stream), &host, path, headers).await
    } else {
        send(TokioIo::new(tcp), &host, path, headers).await
    }
}

async fn send<I>(
    io: I,
    host: &str,
    path: &str,
    headers: &[(&str, String)],
) -> Result<(u16, Vec<u8>), String>
where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let (mut sender, conn) = hyper::client::conn::http1::handshake(io)
        .await
        .map_err(|e| e.to_string())?;
    tokio::spawn(conn);
    let mut req = hyper::Request::get(path).header(hyper::header::HOST, host);
    for (name, value) in headers {
        req = req.header(*name, value.as_str());
    }
    let req = req
        .body(Empty::<bytes::Bytes>::new())
        .map_err(|e| e.to_string())?;
    let resp = sender.send_request(req).await.map_err(|e| e.to_string())?;
    let status = resp.status().as_u16();
    let body = http_body_util::Limited::new(resp.into_body(), MAX_ANSWER_BYTES)
        .collect()
        .await
        .map_err(|e| e.to_string())?
        .to_bytes();
    Ok((status, body.to_vec()))
}
