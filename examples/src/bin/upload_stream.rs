//! Example 3: an upload service encrypting files of any size, in constant
//! memory, before they reach its storage.
//!
//! Given a file, it encrypts it through the vault (`transit/stream/encrypt`:
//! the server never keeps it), with the file's id as associated data so the
//! ciphertext cannot be passed off as another file's; then decrypts it
//! *locally* (a data key unwrapped by the vault, the bytes never leave this
//! process) and checks it is the original; then shows that a flipped byte
//! or a cut-off upload is refused and leaves no output file behind.
//!
//! Usage: `upload_stream FILE` (with `VAULT_ADDR` and a token, or AppRole
//! files, see `vault_examples::connect`; the token needs `update` on
//! `transit/stream/*/uploads`, `transit/datakey/plaintext/uploads` and
//! `transit/decrypt/uploads`). Writes `FILE.vlts` and `FILE.out` beside it;
//! prints one JSON line per step and exits non-zero if any step does not
//! behave as described.

use std::path::{Path, PathBuf};

use anyhow::Context as _;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use vault_client::StreamOptions;

/// The transit key.
const KEY: &str = "uploads";

#[allow(clippy::print_stdout)] // the program's output is its report
fn report(v: Value) {
    println!("{v}");
}

fn sha256(path: &Path) -> anyhow::Result<String> {
    let bytes = std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
    Ok(hex::encode(Sha256::digest(&bytes)))
}

fn beside(path: &Path, ext: &str) -> PathBuf {
    let mut p = path.as_os_str().to_owned();
    p.push(ext);
    PathBuf::from(p)
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    let input = PathBuf::from(std::env::args_os().nth(1).context("usage: upload_stream FILE")?);
    let (client, _renewal) = vault_examples::connect().await?;
    let transit = client.transit("transit");
    transit.create_key(KEY, None).await?; // a no-op when it exists
    let uploads = transit.stream(KEY);

    // The file id binds the ciphertext to this upload (not stored in it).
    let file_id = input.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let (sealed, opened) = (beside(&input, ".vlts"), beside(&input, ".out"));
    let server = StreamOptions::new().associated_data(file_id.clone());
    let stats = uploads.encrypt_file(&input, &sealed, &server).await?;
    report(json!({"step": "encrypted", "bytes_in": stats.bytes_in, "bytes_out": stats.bytes_out, "via": "server"}));

    let local = StreamOptions::new().local().associated_data(file_id.clone());
    uploads.decrypt_file(&sealed, &opened, &local).await?;
    let same = sha256(&input)? == sha256(&opened)?;
    report(json!({"step": "decrypted", "via": "local", "identical": same}));
    anyhow::ensure!(same, "the decrypted file differs from the original");
    std::fs::remove_file(&opened)?;

    // Another file's id, a flipped byte, a cut-off upload: refused, and no
    // output file is left to be mistaken for the real one.
    let mut bytes = std::fs::read(&sealed)?;
    let damaged = beside(&input, ".damaged");
    let other = StreamOptions::new().associated_data(format!("{file_id}-other"));
    let wrong_id = uploads.decrypt_file(&sealed, &opened, &other).await.is_err();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x01;
    std::fs::write(&damaged, &bytes)?;
    let flipped = uploads.decrypt_file(&damaged, &opened, &server).await.is_err();
    bytes[middle] ^= 0x01;
    std::fs::write(&damaged, &bytes[..bytes.len() - 100])?;
    let cut = uploads.decrypt_file(&damaged, &opened, &server).await.is_err();
    std::fs::remove_file(&damaged)?;
    let left_behind = opened.exists();
    report(
        json!({"step": "refused", "wrong_id": wrong_id, "flipped_byte": flipped, "cut_off": cut, "output_left": left_behind}),
    );
    anyhow::ensure!(wrong_id && flipped && cut && !left_behind, "a damaged upload was not refused cleanly");
    Ok(())
}
