//! The HTTP client the AWS SDK uses for KMS: TLS set up only when needed.
//!
//! The SDK's default client builds its rustls connector — loading and parsing
//! the whole system CA store (~150 certificates here, ~12 ms per CLI run) — on
//! the first request, even when the endpoint is plain `http://` (a local KMS
//! such as moto or LocalStack, or a VPC proxy). This client dispatches each
//! request on its scheme: `http://` goes to a connector without TLS, anything
//! else to the SDK's usual rustls (aws-lc) connector, built on first use. Both
//! underlying clients cache their connectors, so connection pooling is kept.
//!
//! The `https://` connector is our own (unless a proxy is configured, which
//! goes to the SDK's): the same rustls (aws-lc) stack, cipher suites and trust
//! store as the SDK's, over a TCP stream that sets `TCP_QUICKACK` on Linux
//! whenever it reads (see [`QuickAckStream`]). After a TLS handshake the
//! kernel treats the connection as interactive and delays its ACKs (40 ms at
//! least); a server that writes its response in two small writes with Nagle's
//! algorithm on (werkzeug, which moto and many local KMS stand-ins run on,
//! writes the status line and headers, then the body) then holds the body
//! until that ACK comes, or until it closes the connection: ~10 ms per KMS
//! call against moto over TLS, half of a seal (BENCHMARKS.md, "Where the HTTPS
//! seal waits"). Plain HTTP does not meet it: the client has not received
//! anything before it sends the request, so its ACKs are not delayed.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex, OnceLock};
use std::task::{Context, Poll};
use std::time::Duration;

use aws_smithy_http_client::proxy::ProxyConfig;
use aws_smithy_http_client::{Builder, ConnectorBuilder, tls};
use aws_smithy_runtime_api::box_error::BoxError;
use aws_smithy_runtime_api::client::http::{
    HttpClient, HttpConnector, HttpConnectorFuture, HttpConnectorSettings, SharedHttpClient,
    SharedHttpConnector,
};
use aws_smithy_runtime_api::client::orchestrator::{HttpRequest, HttpResponse};
use aws_smithy_runtime_api::client::result::ConnectorError;
use aws_smithy_runtime_api::client::runtime_components::RuntimeComponents;
use aws_smithy_types::body::SdkBody;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::{Connected, Connection, HttpConnector as TcpConnector};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

/// A client that sets up TLS only for `https://` requests.
#[derive(Debug)]
pub struct LazyTlsClient {
    plain: SharedHttpClient,
    tls: SharedHttpClient,
}

impl LazyTlsClient {
    /// The client, as a [`SharedHttpClient`] for `aws_config`'s loader.
    pub fn shared() -> SharedHttpClient {
        SharedHttpClient::new(LazyTlsClient {
            plain: Builder::new().build_with_connector_fn(|settings, components| {
                let mut b = ConnectorBuilder::default();
                b.set_connector_settings(settings.cloned());
                if let Some(c) = components {
                    b.set_sleep_impl(c.sleep_impl());
                }
                b.set_proxy_config(Some(ProxyConfig::from_env()));
                b.build_http()
            }),
            tls: if proxy_configured(|name| std::env::var_os(name)) {
                sdk_https_client()
            } else {
                SharedHttpClient::new(QuickAckHttpsClient::default())
            },
        })
    }
}

/// Whether a proxy is set in the environment (the variables the SDK's client
/// reads, either case; `HTTP_PROXY` too, to be safe): then `https://` requests
/// go through the SDK's own client, which implements proxies.
fn proxy_configured(var: impl Fn(&str) -> Option<std::ffi::OsString>) -> bool {
    [
        "HTTPS_PROXY",
        "https_proxy",
        "ALL_PROXY",
        "all_proxy",
        "HTTP_PROXY",
        "http_proxy",
    ]
    .iter()
    .any(|name| var(name).is_some_and(|v| !v.is_empty()))
}

/// The SDK's usual HTTPS client (as aws-smithy-runtime's default_https_client: rustls with
/// aws-lc), for requests through a proxy.
fn sdk_https_client() -> SharedHttpClient {
    Builder::new().build_with_connector_fn(|settings, components| {
        let mut b = ConnectorBuilder::default().tls_provider(tls::Provider::Rustls(
            tls::rustls_provider::CryptoMode::AwsLc,
        ));
        b.set_connector_settings(settings.cloned());
        if let Some(c) = components {
            b.set_sleep_impl(c.sleep_impl());
        }
        b.set_proxy_config(Some(ProxyConfig::from_env()));
        b.build()
    })
}

impl HttpClient for LazyTlsClient {
    fn http_connector(
        &self,
        settings: &HttpConnectorSettings,
        components: &RuntimeComponents,
    ) -> SharedHttpConnector {
        SharedHttpConnector::new(SchemeDispatch {
            plain: self.plain.http_connector(settings, components),
            tls_client: self.tls.clone(),
            settings: settings.clone(),
            components: components.clone(),
            tls: OnceLock::new(),
        })
    }
}

#[derive(Debug)]
struct SchemeDispatch {
    plain: SharedHttpConnector,
    tls_client: SharedHttpClient,
    settings: HttpConnectorSettings,
    components: RuntimeComponents,
    tls: OnceLock<SharedHttpConnector>,
}

impl HttpConnector for SchemeDispatch {
    fn call(&self, request: HttpRequest) -> HttpConnectorFuture {
        if request.uri().starts_with("http://") {
            self.plain.call(request)
        } else {
            self.tls
                .get_or_init(|| {
                    self.tls_client
                        .http_connector(&self.settings, &self.components)
                })
                .call(request)
        }
    }
}

/// The `https://` client without a proxy: hyper over rustls (aws-lc) over a
/// [`QuickAckStream`]. One connector (and its pool) per pair of timeouts, like
/// the SDK's client; the TLS configuration, with the trust store, is built
/// once, on the first request.
#[derive(Debug, Default)]
struct QuickAckHttpsClient {
    tls: OnceLock<Arc<rustls::ClientConfig>>,
    connectors: Mutex<Vec<(TimeoutKey, SharedHttpConnector)>>,
}

type TimeoutKey = (Option<Duration>, Option<Duration>);

impl HttpClient for QuickAckHttpsClient {
    fn http_connector(
        &self,
        settings: &HttpConnectorSettings,
        _components: &RuntimeComponents,
    ) -> SharedHttpConnector {
        let key = (settings.connect_timeout(), settings.read_timeout());
        let mut connectors = self
            .connectors
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Some((_, c)) = connectors.iter().find(|(k, _)| *k == key) {
            return c.clone();
        }
        let tls = self
            .tls
            .get_or_init(|| Arc::new(tls_config(native_roots())))
            .clone();
        let c = SharedHttpConnector::new(QuickAckHttps::new(tls, key.0, key.1));
        connectors.push((key, c.clone()));
        c
    }
}

/// The trust store the SDK's client uses: the platform's, or `SSL_CERT_FILE` /
/// `SSL_CERT_DIR` when set.
fn native_roots() -> rustls::RootCertStore {
    let loaded = rustls_native_certs::load_native_certs();
    if !loaded.errors.is_empty() {
        tracing::warn!(errors = ?loaded.errors, "loading the trusted CA certificates");
    }
    let mut roots = rustls::RootCertStore::empty();
    let (_valid, invalid) = roots.add_parsable_certificates(loaded.certs);
    if invalid > 0 {
        tracing::warn!(
            invalid,
            "trusted CA certificates that do not parse, skipped"
        );
    }
    roots
}

/// rustls with aws-lc, the SDK client's policy: its safe protocol versions, and
/// only the AEAD suites the SDK's client allows (AES-GCM, and ChaCha20-Poly1305
/// with RSA for TLS 1.2); HTTP/1.1.
fn tls_config(roots: rustls::RootCertStore) -> rustls::ClientConfig {
    use rustls::CipherSuite as S;
    const ALLOWED: [S; 7] = [
        S::TLS13_AES_256_GCM_SHA384,
        S::TLS13_AES_128_GCM_SHA256,
        S::TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384,
        S::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
        S::TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384,
        S::TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256,
        S::TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256,
    ];
    let mut provider = rustls::crypto::aws_lc_rs::default_provider();
    provider
        .cipher_suites
        .retain(|suite| ALLOWED.contains(&suite.suite()));
    let mut config = rustls::ClientConfig::builder_with_provider(Arc::new(provider))
        .with_safe_default_protocol_versions()
        .expect("aws-lc supports TLS 1.2 and 1.3")
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    config
}

type HttpsClient = Client<hyper_rustls::HttpsConnector<QuickAckTcp>, SdkBody>;

/// The connector: one hyper client (its connection pool), the read timeout
/// (until the response's head, as the SDK's client) applied around it.
#[derive(Clone, Debug)]
struct QuickAckHttps {
    client: HttpsClient,
    read_timeout: Option<Duration>,
}

impl QuickAckHttps {
    fn new(
        tls: Arc<rustls::ClientConfig>,
        connect_timeout: Option<Duration>,
        read_timeout: Option<Duration>,
    ) -> Self {
        let mut tcp = TcpConnector::new();
        tcp.enforce_http(false);
        tcp.set_nodelay(true);
        tcp.set_connect_timeout(connect_timeout);
        let https = hyper_rustls::HttpsConnector::from((QuickAckTcp(tcp), tls));
        QuickAckHttps {
            client: Client::builder(TokioExecutor::new())
                .pool_timer(TokioTimer::new())
                .build(https),
            read_timeout,
        }
    }
}

impl HttpConnector for QuickAckHttps {
    fn call(&self, request: HttpRequest) -> HttpConnectorFuture {
        let client = self.client.clone();
        let read_timeout = self.read_timeout;
        HttpConnectorFuture::new(async move {
            let request = request
                .try_into_http1x()
                .map_err(|e| ConnectorError::user(e.into()))?;
            let sent = client.request(request);
            let response = match read_timeout {
                Some(limit) => tokio::time::timeout(limit, sent).await.map_err(|_| {
                    ConnectorError::timeout(
                        format!("no HTTP response within the read timeout ({limit:?})").into(),
                    )
                })?,
                None => sent.await,
            }
            .map_err(connector_error)?;
            HttpResponse::try_from(response.map(SdkBody::from_body_1_x))
                .map_err(|e| ConnectorError::other(e.into(), None))
        })
    }
}

/// hyper's errors as the SDK's retry logic reads them: timeouts, and failures
/// to connect or of the connection (retried as transient); the rest as other.
fn connector_error(e: hyper_util::client::legacy::Error) -> ConnectorError {
    let timed_out = {
        let mut source: Option<&(dyn std::error::Error + 'static)> = Some(&e);
        let mut found = false;
        while let Some(s) = source {
            if let Some(io) = s.downcast_ref::<io::Error>() {
                found |= io.kind() == io::ErrorKind::TimedOut;
            }
            if let Some(h) = s.downcast_ref::<hyper::Error>() {
                found |= h.is_timeout();
            }
            source = s.source();
        }
        found
    };
    let hyper = std::error::Error::source(&e).and_then(|s| s.downcast_ref::<hyper::Error>());
    if timed_out {
        ConnectorError::timeout(e.into())
    } else if hyper.is_some_and(|h| h.is_user()) {
        ConnectorError::user(e.into())
    } else if e.is_connect()
        || hyper.is_some_and(|h| h.is_closed() || h.is_incomplete_message() || h.is_canceled())
        || std::error::Error::source(&e).is_some_and(|s| s.is::<io::Error>())
    {
        ConnectorError::io(e.into())
    } else {
        ConnectorError::other(e.into(), None)
    }
}

/// hyper's TCP connector, its streams wrapped in [`QuickAckStream`].
#[derive(Clone, Debug)]
struct QuickAckTcp(TcpConnector);

impl tower_service::Service<http::Uri> for QuickAckTcp {
    type Response = TokioIo<QuickAckStream>;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, BoxError>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.0.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, dst: http::Uri) -> Self::Future {
        let connecting = self.0.call(dst);
        Box::pin(async move {
            let tcp = connecting.await?.into_inner();
            Ok(TokioIo::new(QuickAckStream(tcp)))
        })
    }
}

/// A TCP stream that asks the kernel, each time it reads, to acknowledge what
/// arrives at once (`TCP_QUICKACK`, Linux; the mode does not stick, so it is
/// set again at each read). Without it, after the TLS handshake the kernel
/// delays the client's ACKs, and a server that sends its response in two small
/// writes with Nagle's algorithm on holds the second until the ACK of the
/// first: 40 ms, or until it closes (moto: 10 ms). Costs one `setsockopt` per
/// read.
#[derive(Debug)]
pub(crate) struct QuickAckStream(TcpStream);

impl QuickAckStream {
    fn ack_promptly(&self) {
        #[cfg(target_os = "linux")]
        {
            // Best effort: a failure only leaves the kernel's default.
            let _ = socket2::SockRef::from(&self.0).set_tcp_quickack(true);
        }
    }
}

impl AsyncRead for QuickAckStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let read = Pin::new(&mut this.0).poll_read(cx, buf);
        this.ack_promptly();
        read
    }
}

impl AsyncWrite for QuickAckStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().0).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().0).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.0.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().0).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().0).poll_shutdown(cx)
    }
}

impl Connection for QuickAckStream {
    fn connected(&self) -> Connected {
        self.0.connected()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    use std::io::{Read, Write};
    use std::path::Path;
    use std::process::Command;
    use std::time::Instant;

    /// A test CA and a serving certificate for 127.0.0.1 (EC P-256, as the
    /// test environment's PKI), made with the openssl tool.
    fn pki(dir: &Path) {
        let openssl = |args: &[&str]| {
            let out = Command::new("openssl")
                .args(args)
                .current_dir(dir)
                .output()
                .expect("run openssl");
            assert!(
                out.status.success(),
                "openssl {args:?}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        };
        let ec = [
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
        ];
        openssl(
            &[
                &["req", "-x509"][..],
                &ec,
                &[
                    "-keyout",
                    "ca.key",
                    "-out",
                    "ca.crt",
                    "-days",
                    "2",
                    "-subj",
                    "/CN=test-ca",
                ],
                &["-addext", "basicConstraints=critical,CA:TRUE"],
                &["-addext", "keyUsage=critical,keyCertSign"],
            ]
            .concat(),
        );
        openssl(
            &[
                &["req"][..],
                &ec,
                &[
                    "-keyout",
                    "leaf.key",
                    "-out",
                    "leaf.csr",
                    "-subj",
                    "/CN=127.0.0.1",
                ],
            ]
            .concat(),
        );
        std::fs::write(
            dir.join("leaf.ext"),
            "subjectAltName=IP:127.0.0.1\nbasicConstraints=critical,CA:FALSE\n\
             extendedKeyUsage=serverAuth\n",
        )
        .unwrap();
        openssl(&[
            "x509",
            "-req",
            "-in",
            "leaf.csr",
            "-CA",
            "ca.crt",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-days",
            "2",
            "-extfile",
            "leaf.ext",
            "-out",
            "leaf.crt",
        ]);
    }

    /// Serves each connection as werkzeug (moto) does: the response's head in
    /// one write and its body in a second, Nagle's algorithm on (the default),
    /// then keeps the connection open (werkzeug: 10 ms; here 1 s, so that a
    /// held body shows as the client's delayed ACK, ≥ 40 ms, not as the close).
    fn split_write_server(dir: &Path) -> u16 {
        let certs: Vec<CertificateDer<'static>> =
            CertificateDer::pem_file_iter(dir.join("leaf.crt"))
                .unwrap()
                .collect::<Result<_, _>>()
                .unwrap();
        let key = PrivateKeyDer::from_pem_file(dir.join("leaf.key")).unwrap();
        let config = Arc::new(
            rustls::ServerConfig::builder_with_provider(Arc::new(
                rustls::crypto::aws_lc_rs::default_provider(),
            ))
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(certs, key)
            .unwrap(),
        );
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        std::thread::spawn(move || {
            for tcp in listener.incoming() {
                let Ok(tcp) = tcp else { continue };
                let config = config.clone();
                std::thread::spawn(move || {
                    let conn = rustls::ServerConnection::new(config).unwrap();
                    let mut tls = rustls::StreamOwned::new(conn, tcp);
                    let mut request = Vec::new();
                    let mut buf = [0u8; 4096];
                    // Headers, then a body as long as its Content-Length.
                    loop {
                        let Ok(n) = tls.read(&mut buf) else { return };
                        if n == 0 {
                            return;
                        }
                        request.extend_from_slice(&buf[..n]);
                        let text = String::from_utf8_lossy(&request).to_ascii_lowercase();
                        if let Some(end) = text.find("\r\n\r\n") {
                            let len = text[..end]
                                .lines()
                                .find_map(|l| l.strip_prefix("content-length:"))
                                .map_or(0, |v| v.trim().parse::<usize>().unwrap());
                            if request.len() >= end + 4 + len {
                                break;
                            }
                        }
                    }
                    let body = br#"{"KeyId": "k"}"#;
                    let head = format!(
                        "HTTP/1.1 200 OK\r\nContent-Type: application/x-amz-json-1.1\r\n\
                         Content-Length: {}\r\nConnection: close\r\n\r\n",
                        body.len()
                    );
                    for part in [head.as_bytes(), &body[..]] {
                        if tls.write_all(part).and_then(|()| tls.flush()).is_err() {
                            return;
                        }
                    }
                    std::thread::sleep(Duration::from_secs(1));
                });
            }
        });
        port
    }

    /// The connector's TLS keeps what docs/SECURITY.md ("Entropy") counts on: hybrid
    /// post-quantum key exchange offered first, aws-lc, and only AEAD suites.
    #[test]
    fn tls_offers_post_quantum_key_exchange_first_and_aead_suites_only() {
        let config = tls_config(rustls::RootCertStore::empty());
        let provider = config.crypto_provider();
        assert_eq!(
            provider.kx_groups.first().map(|g| g.name()),
            Some(rustls::NamedGroup::X25519MLKEM768),
            "{:?}",
            provider
                .kx_groups
                .iter()
                .map(|g| g.name())
                .collect::<Vec<_>>()
        );
        assert!(!provider.cipher_suites.is_empty());
        for suite in &provider.cipher_suites {
            let name = format!("{:?}", suite.suite());
            assert!(
                name.contains("GCM") || name.contains("CHACHA20_POLY1305"),
                "{name}"
            );
        }
        assert_eq!(config.alpn_protocols, [b"http/1.1".to_vec()]);
    }

    #[test]
    fn https_goes_through_the_sdk_client_only_with_a_proxy() {
        assert!(!proxy_configured(|_| None));
        assert!(!proxy_configured(
            |n| (n == "HTTPS_PROXY").then(|| "".into())
        ));
        for name in ["HTTPS_PROXY", "https_proxy", "ALL_PROXY", "http_proxy"] {
            assert!(
                proxy_configured(|n| (n == name).then(|| "http://proxy:3128".into())),
                "{name}"
            );
        }
    }

    /// Regression guard for the ~10 ms per KMS call against moto over TLS
    /// (BENCHMARKS.md, "Where the HTTPS seal waits"): against a server that
    /// writes head and body apart, the whole response arrives at once, not
    /// after the client's delayed ACK. Fails (every request ≥ 40 ms) when the
    /// connector's stream does not set TCP_QUICKACK. The fastest of five
    /// requests is compared, so load on the machine cannot fail it; it cannot
    /// make a 40 ms kernel timer shorter either.
    #[cfg(target_os = "linux")]
    #[tokio::test]
    async fn https_response_written_in_two_parts_is_not_held_by_delayed_ack() {
        let dir = tempfile::tempdir().unwrap();
        pki(dir.path());
        let port = split_write_server(dir.path());
        let mut roots = rustls::RootCertStore::empty();
        for ca in CertificateDer::pem_file_iter(dir.path().join("ca.crt")).unwrap() {
            roots.add(ca.unwrap()).unwrap();
        }
        let connector = QuickAckHttps::new(Arc::new(tls_config(roots)), None, None);
        let mut times = Vec::new();
        for _ in 0..5 {
            let request = HttpRequest::try_from(
                http::Request::builder()
                    .method("POST")
                    .uri(format!("https://127.0.0.1:{port}/"))
                    .header("content-type", "application/x-amz-json-1.1")
                    .body(SdkBody::from(r#"{"KeySpec": "AES_256"}"#))
                    .unwrap(),
            )
            .unwrap();
            let started = Instant::now();
            let response = connector.call(request).await.expect("HTTPS request");
            assert_eq!(response.status().as_u16(), 200);
            let body = response.into_body().collect().await.unwrap().to_bytes();
            times.push(started.elapsed());
            assert_eq!(&body[..], br#"{"KeyId": "k"}"#);
        }
        let fastest = *times.iter().min().unwrap();
        assert!(
            fastest < Duration::from_millis(25),
            "fastest of 5 HTTPS requests took {fastest:?} ({times:?}): the response's body \
             waited for the client's delayed ACK (TCP_QUICKACK not set?)"
        );
    }
}
