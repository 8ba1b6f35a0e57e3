//! The baseline for HTTP load figures: an axum "hello" JSON endpoint with
//! the same runtime and axum version as the server, so `docs/performance.md`
//! can quote the server's throughput as a ratio measured in the same run.
//!
//! `cargo run --release -p vault-server --example hello_baseline -- 127.0.0.1:18080`

use axum::Json;
use axum::routing::get;

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let addr = std::env::args().nth(1).unwrap_or_else(|| "127.0.0.1:18080".into());
    let app = axum::Router::new().route("/", get(|| async { Json(serde_json::json!({"hello": "world"})) }));
    let listener = tokio::net::TcpListener::bind(&addr).await?;
    axum::serve(listener, app).await
}
