//! `sealcred-controller`: runs the controller (default) or prints the CRD.

use std::process::ExitCode;
use std::sync::Arc;

use clap::Parser;
use sealcred_controller::metrics::Metrics;
use sealcred_controller::options::{Cli, Command};
use sealcred_controller::run::{State, run as run_controller};
use sealcred_controller::{Error, harden, http};
use tokio::sync::watch;
use tracing_subscriber::EnvFilter;

fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Some(Command::Crd) = cli.command {
        return match sealcred_controller::crds_yaml() {
            Ok(yaml) => {
                print!("{yaml}");
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("error: serializing the CRD: {e}");
                ExitCode::FAILURE
            }
        };
    }
    tracing_subscriber::fmt()
        .json()
        .with_env_filter(log_filter())
        .with_current_span(true)
        .init();
    if let Err(e) = harden::harden_process() {
        tracing::warn!(error = %e, "process hardening incomplete");
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            tracing::error!(error = %e, "starting the runtime failed");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = %e, reason = e.reason(), "sealcred-controller failed");
            ExitCode::FAILURE
        }
    }
}

/// `RUST_LOG` (default `info`), with the audit trail kept on unless named.
fn log_filter() -> EnvFilter {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let rust_log = std::env::var("RUST_LOG").ok();
    match sealcred_controller::audit::filter_directive(rust_log.as_deref()) {
        Some(d) => match d.parse() {
            Ok(d) => filter.add_directive(d),
            Err(_) => filter,
        },
        None => filter,
    }
}

async fn run(cli: Cli) -> Result<(), Error> {
    let opts = cli.options;
    opts.validate()?;
    let client = kube::Client::try_default().await.map_err(Error::Kube)?;
    let state = State::new(Arc::new(Metrics::new()));
    let (stop_tx, stop_rx) = watch::channel(false);
    tokio::spawn(async move {
        wait_for_signal().await;
        tracing::info!("shutdown signal received");
        let _ = stop_tx.send(true);
    });
    let server = match opts.metrics_addr()? {
        Some(addr) => {
            let listener = http::bind(addr).await?;
            tracing::info!(%addr, "serving /metrics, /healthz, /readyz");
            Some(tokio::spawn(http::serve(
                listener,
                Arc::clone(&state),
                stop_rx.clone(),
            )))
        }
        None => None,
    };
    let result = run_controller(opts, client, None, state, stop_rx).await;
    if let Some(server) = server {
        server.abort();
    }
    result
}

async fn wait_for_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = term.recv() => {}
                    _ = tokio::signal::ctrl_c() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}
