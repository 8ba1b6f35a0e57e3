//! Streaming AEAD throughput next to the raw AEAD it is built on, in the
//! same run, so the format's overhead can be quoted as a ratio.
//!
//! Rows per algorithm (throughput in plaintext bytes, 16 MiB per iteration):
//! - `encrypt/stream`: `Encryptor::new` + one `push` of 16 MiB + `finish`
//!   into an output buffer reserved up front (header, 256 segments of 64 KiB).
//! - `decrypt/stream`: `Header::parse` + `Decryptor::new` (commitment) + one
//!   `push` of the whole body + `finish`, output reserved up front.
//! - `encrypt/raw`, `decrypt/raw`: the same cipher type sealing / opening
//!   256 buffers of 64 KiB in place, nonce = fixed 7 bytes | counter | flag,
//!   64 bytes of associated data: the floor asked for. It touches one 16 MiB
//!   buffer (which fits this machine's 32 MiB L3); the stream reads one and
//!   writes another.
//! - `encrypt/raw_copy`, `decrypt/raw_copy`: the raw AEAD again, but each
//!   64 KiB piece is first copied from an input buffer into a reserved output
//!   buffer and sealed / opened there, tags interleaved: the floor for any
//!   API that leaves its input untouched (what the stream does per segment).
//!
//! Run: `cargo bench -p vault-stream --bench stream -- --warm-up-time 1 --measurement-time 5`

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::hint::black_box;

use aes_gcm::Aes256Gcm;
use aes_gcm::aead::inout::InOutBuf;
use aes_gcm::aead::{AeadInOut, KeyInit};
use chacha20poly1305::ChaCha20Poly1305;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use vault_stream::{Algorithm, Decryptor, EncryptParams, Encryptor, Header, TAG_LEN};

const TOTAL: usize = 16 * 1024 * 1024;
const SEGMENT: usize = 64 * 1024;
const KEY: [u8; 32] = [9; 32];
const AD: [u8; 64] = [3; 64];

fn nonce(i: usize, last: bool) -> [u8; 12] {
    let mut n = [0x11u8; 12];
    n[7..11].copy_from_slice(&(i as u32).to_be_bytes());
    n[11] = u8::from(last);
    n
}

/// Seal each 64 KiB buffer in place; the tags go to a side array.
fn raw_seal<C: AeadInOut>(c: &C, buf: &mut [u8], tags: &mut [aes_gcm::aead::Tag<C>])
where
    aes_gcm::aead::Nonce<C>: From<[u8; 12]>,
{
    let count = buf.len() / SEGMENT;
    for (i, (chunk, tag)) in buf.chunks_mut(SEGMENT).zip(tags.iter_mut()).enumerate() {
        let n = nonce(i, i + 1 == count).into();
        *tag = c.encrypt_inout_detached(&n, &AD, InOutBuf::from(chunk)).unwrap();
    }
}

fn raw_open<C: AeadInOut>(c: &C, buf: &mut [u8], tags: &[aes_gcm::aead::Tag<C>])
where
    aes_gcm::aead::Nonce<C>: From<[u8; 12]>,
{
    let count = buf.len() / SEGMENT;
    for (i, (chunk, tag)) in buf.chunks_mut(SEGMENT).zip(tags.iter()).enumerate() {
        let n = nonce(i, i + 1 == count).into();
        c.decrypt_inout_detached(&n, &AD, InOutBuf::from(chunk), tag).unwrap();
    }
}

fn bench_raw<C: AeadInOut + KeyInit>(c: &mut Criterion, name: &str)
where
    aes_gcm::aead::Nonce<C>: From<[u8; 12]>,
{
    let cipher = C::new_from_slice(&KEY).unwrap();
    let mut buf = vec![0x5au8; TOTAL];
    let mut tags = vec![aes_gcm::aead::Tag::<C>::default(); TOTAL / SEGMENT];
    let mut g = c.benchmark_group(name);
    g.throughput(Throughput::Bytes(TOTAL as u64));
    g.bench_function("encrypt/raw", |b| b.iter(|| raw_seal(&cipher, black_box(&mut buf), &mut tags)));
    // Opening in place turns the buffer back into plaintext: each iteration
    // gets a fresh copy of the ciphertext, made outside the timed part.
    raw_seal(&cipher, &mut buf, &mut tags);
    let sealed = buf.clone();
    g.bench_function("decrypt/raw", |b| {
        b.iter_batched_ref(
            || sealed.clone(),
            |work| raw_open(&cipher, black_box(work), &tags),
            criterion::BatchSize::LargeInput,
        )
    });

    let plain = vec![0x5au8; TOTAL];
    let count = TOTAL / SEGMENT;
    let mut out = Vec::with_capacity(TOTAL + count * TAG_LEN);
    g.bench_function("encrypt/raw_copy", |b| {
        b.iter(|| {
            out.clear();
            for (i, chunk) in black_box(&plain).chunks(SEGMENT).enumerate() {
                let start = out.len();
                out.extend_from_slice(chunk);
                let n = nonce(i, i + 1 == count).into();
                let tag = cipher.encrypt_inout_detached(&n, &AD, InOutBuf::from(&mut out[start..])).unwrap();
                out.extend_from_slice(&tag);
            }
        })
    });
    let sealed = out.clone();
    let mut plain_out = Vec::with_capacity(TOTAL);
    g.bench_function("decrypt/raw_copy", |b| {
        b.iter(|| {
            plain_out.clear();
            for (i, segment) in black_box(&sealed).chunks(SEGMENT + TAG_LEN).enumerate() {
                let (body, tag) = segment.split_at(SEGMENT);
                let start = plain_out.len();
                plain_out.extend_from_slice(body);
                let n = nonce(i, i + 1 == count).into();
                let tag = aes_gcm::aead::Tag::<C>::try_from(tag).unwrap();
                cipher.decrypt_inout_detached(&n, &AD, InOutBuf::from(&mut plain_out[start..]), &tag).unwrap();
            }
        })
    });
    assert_eq!(plain_out, plain);
    g.finish();
}

fn bench_stream(c: &mut Criterion, name: &str, algorithm: Algorithm) {
    let plain = vec![0x5au8; TOTAL];
    let params = EncryptParams::new("files", 1, b"vault:v1:wrapped-data-key-placeholder")
        .with_algorithm(algorithm)
        .with_segment_size(SEGMENT as u32)
        .with_associated_data(b"file-id");
    let cap = TOTAL + (TOTAL / SEGMENT) * TAG_LEN + 256;
    let mut out = Vec::with_capacity(cap);
    let mut g = c.benchmark_group(name);
    g.throughput(Throughput::Bytes(TOTAL as u64));
    g.bench_function("encrypt/stream", |b| {
        b.iter(|| {
            out.clear();
            let (mut enc, header) = Encryptor::new(&KEY, &params).unwrap();
            out.extend_from_slice(&header);
            enc.push(black_box(&plain), &mut out).unwrap();
            enc.finish(&mut out).unwrap();
        })
    });
    let (mut enc, mut stream) = Encryptor::new(&KEY, &params).unwrap();
    enc.push(&plain, &mut stream).unwrap();
    enc.finish(&mut stream).unwrap();
    let mut plain_out = Vec::with_capacity(TOTAL);
    g.bench_function("decrypt/stream", |b| {
        b.iter(|| {
            plain_out.clear();
            let (header, used) = Header::parse(black_box(&stream)).unwrap().unwrap();
            let mut dec = Decryptor::new(&KEY, &header, b"file-id").unwrap();
            dec.push(&stream[used..], &mut plain_out).unwrap();
            dec.finish(&mut plain_out).unwrap();
        })
    });
    assert_eq!(plain_out, plain);
    g.finish();
}

fn benches(c: &mut Criterion) {
    bench_raw::<Aes256Gcm>(c, "aes256gcm");
    bench_stream(c, "aes256gcm", Algorithm::Aes256Gcm);
    bench_raw::<ChaCha20Poly1305>(c, "chacha20poly1305");
    bench_stream(c, "chacha20poly1305", Algorithm::ChaCha20Poly1305);
}

criterion_group!(stream, benches);
criterion_main!(stream);
