//! The HTTP client the AWS SDK uses for KMS: TLS set up only when needed.
//!
//! The SDK's default client builds its rustls connector — loading and parsing
//! the whole system CA store (~150 certificates here, ~12 ms per CLI run) — on
//! the first request, even when the endpoint is plain `http://` (a local KMS
//! such as moto or LocalStack, or a VPC proxy). This client dispatches each
//! request on its scheme: `http://` goes to a connector without TLS, anything
//! else to the SDK's usual rustls (aws-lc) connector, built on first use. Both
//! underlying clients cache their connectors, so connection pooling is kept.

use std::sync::OnceLock;

use aws_smithy_http_client::proxy::ProxyConfig;
use aws_smithy_http_client::{Builder, ConnectorBuilder, tls};
use aws_smithy_runtime_api::client::http::{
    HttpClient, HttpConnector, HttpConnectorFuture, HttpConnectorSettings, SharedHttpClient,
    SharedHttpConnector,
};
use aws_smithy_runtime_api::client::orchestrator::HttpRequest;
use aws_smithy_runtime_api::client::runtime_components::RuntimeComponents;

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
            // As aws-smithy-runtime's default_https_client: rustls with aws-lc.
            tls: Builder::new().build_with_connector_fn(|settings, components| {
                let mut b = ConnectorBuilder::default().tls_provider(tls::Provider::Rustls(
                    tls::rustls_provider::CryptoMode::AwsLc,
                ));
                b.set_connector_settings(settings.cloned());
                if let Some(c) = components {
                    b.set_sleep_impl(c.sleep_impl());
                }
                b.set_proxy_config(Some(ProxyConfig::from_env()));
                b.build()
            }),
        })
    }
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
