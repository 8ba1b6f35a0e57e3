//! In-process baseline for scripts/bench-stream: encrypt then decrypt
//! `MIB` MiB (default 1024) fed in 64 KiB chunks, as an HTTP body arrives,
//! output dropped chunk by chunk. Prints `encrypt_mb_s decrypt_mb_s`.
//!
//! Run: `cargo run --release -p vault-stream --example throughput -- 1024`

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stdout)]

use std::time::Instant;

use vault_stream::{Decryptor, EncryptParams, Encryptor, Header};

fn main() {
    let mib: usize = std::env::args().nth(1).map_or(1024, |a| a.parse().expect("MiB"));
    let key = [7u8; 32];
    let chunk = vec![0x5au8; 64 * 1024];
    let total = mib * 1024 * 1024;

    // Encrypt, keeping a sample of the output (the header plus the first
    // chunks) is not needed: decrypt below re-encrypts its own input.
    let params = EncryptParams::new("bench", 1, b"vault:v1:wrapped");
    let start = Instant::now();
    let (mut enc, header) = Encryptor::new(&key, &params).unwrap();
    let mut out = Vec::with_capacity(256 * 1024);
    let mut sent = header.len();
    for _ in 0..total / chunk.len() {
        enc.push(&chunk, &mut out).unwrap();
        sent += out.len();
        out.clear();
    }
    enc.finish(&mut out).unwrap();
    sent += out.len();
    let enc_s = start.elapsed().as_secs_f64();

    // Decrypt: the ciphertext is produced chunk by chunk by a second
    // encryptor outside the timed part, then fed to the decryptor.
    let (mut enc2, header2) = Encryptor::new(&key, &params).unwrap();
    let mut segments = Vec::with_capacity(total + total / 4096 + 1024);
    for _ in 0..total / chunk.len() {
        enc2.push(&chunk, &mut segments).unwrap();
    }
    enc2.finish(&mut segments).unwrap();
    let (h, _) = Header::parse(&header2).unwrap().unwrap();
    let start = Instant::now();
    let mut dec = Decryptor::new(&key, &h, &[]).unwrap();
    let mut plain = Vec::with_capacity(256 * 1024);
    let mut got = 0usize;
    for c in segments.chunks(chunk.len()) {
        dec.push(c, &mut plain).unwrap();
        got += plain.len();
        plain.clear();
    }
    dec.finish(&mut plain).unwrap();
    got += plain.len();
    let dec_s = start.elapsed().as_secs_f64();
    assert_eq!(got, total);
    assert!(sent > total);
    let mb = total as f64 / 1e6;
    println!("{:.0} {:.0}", mb / enc_s, mb / dec_s);
}
