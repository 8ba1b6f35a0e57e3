//! The boot path an application takes, and nothing else: start, log in with
//! AppRole, load a typed configuration from three secrets, exit. Timed whole
//! (process start to configuration loaded) by `scripts/bench-boot`; the goal
//! is 10 ms over loopback (docs/performance.md).
//!
//! `boot_config` prints `loaded` and the number of fields; `boot_config
//! --noop` exits at once (the baseline: the cost of starting a process).

use serde::Deserialize;

/// What a typical service needs: a database, an upstream API, a signing key.
#[derive(Deserialize)]
#[allow(dead_code)] // loaded, not used: this program only measures the load
struct AppConfig {
    db_host: String,
    db_user: String,
    db_password: String,
    api_url: String,
    api_key: String,
    signing_key: String,
    #[serde(default)]
    log_level: Option<String>,
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    if std::env::args().nth(1).as_deref() == Some("--noop") {
        return Ok(());
    }
    let (client, _renewal) = vault_examples::connect().await?;
    let _config: AppConfig = client.load(&["secret/boot/db", "secret/boot/api", "secret/boot/signing"]).await?;
    #[allow(clippy::print_stdout)] // the program's one line of output
    {
        println!("loaded");
    }
    Ok(())
}
