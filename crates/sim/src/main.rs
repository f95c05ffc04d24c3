//! Standalone channel simulator: `paymux-sim --listen 127.0.0.1:9000`.
//! WeChat Pay is served at `/sim/wechat/...` (as inside paymux) and its `/v3`
//! API also at the root, for SDKs that only take a host; Alipay at
//! `/sim/alipay/...` (gateway: `/sim/alipay/gateway.do`); UnionPay at
//! `/sim/unionpay/...` (gateway: `/sim/unionpay/gateway/api/...`).

use std::net::SocketAddr;

use axum::Router;
use clap::Parser;
use paymux_sim::alipay::AlipaySim;
use paymux_sim::wechat::{router, WechatSim};

#[derive(Parser, Debug)]
#[command(
    name = "paymux-sim",
    about = "Wire-compatible payment channel simulators"
)]
struct Args {
    /// Address to listen on.
    #[arg(long, env = "PAYMUX_SIM_LISTEN", default_value = "127.0.0.1:9000")]
    listen: SocketAddr,
    /// Faults to inject from the start, as the JSON `POST /sim/{channel}/faults`
    /// takes (applied to every simulator; change them later over HTTP).
    #[arg(long, env = "PAYMUX_SIM_FAULTS")]
    faults: Option<String>,
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();
    let args = Args::parse();
    let sim = WechatSim::new();
    let alipay = AlipaySim::new();
    let unionpay = paymux_sim::unionpay::UnionpaySim::new();
    if let Some(text) = &args.faults {
        let faults: paymux_sim::faults::FaultConfig =
            serde_json::from_str(text).map_err(|e| format!("--faults: {e}"))?;
        sim.faults
            .set(faults.clone())
            .map_err(|e| format!("--faults: {e}"))?;
        alipay
            .faults
            .set(faults.clone())
            .map_err(|e| format!("--faults: {e}"))?;
        unionpay
            .faults
            .set(faults)
            .map_err(|e| format!("--faults: {e}"))?;
        tracing::warn!("fault injection on from the start: {text}");
    }
    let platform = sim.platform();
    let app = Router::new()
        .nest("/sim/wechat", router(sim.clone()))
        .nest("/sim/alipay", paymux_sim::alipay::router(alipay))
        .nest("/sim/unionpay", paymux_sim::unionpay::router(unionpay))
        .merge(router(sim));
    let listener = tokio::net::TcpListener::bind(args.listen).await?;
    let addr = listener.local_addr()?;
    tracing::info!(%addr, platform_serial = %platform.serial_no, "WeChat Pay simulator at http://{addr}/sim/wechat (and /v3 at the root)");
    tracing::info!(%addr, "Alipay simulator gateway at http://{addr}/sim/alipay/gateway.do");
    tracing::info!(%addr, "UnionPay simulator gateway at http://{addr}/sim/unionpay (paths /gateway/api/...)");
    axum::serve(listener, app)
        .with_graceful_shutdown(async {
            let _ = tokio::signal::ctrl_c().await;
        })
        .await?;
    Ok(())
}
