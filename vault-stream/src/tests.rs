//! Round trips, every tampering the format claims to detect, header parsing
//! and a vector rebuilt from the specification with the primitives alone.

use crate::header::{NONCE_PREFIX_LEN, SALT_LEN};
use crate::*;

/// Small segments keep the tests fast while still giving many segments.
const SEG: u32 = MIN_SEGMENT_SIZE;
const FULL: usize = SEG as usize + TAG_LEN;
const KEY: [u8; 32] = [0xC7; 32];
const WRAPPED: &[u8] = b"vault:v3:c2VjcmV0LXdyYXBwZWQta2V5";
const ALGORITHMS: [Algorithm; 2] = [Algorithm::Aes256Gcm, Algorithm::ChaCha20Poly1305];

fn params(algorithm: Algorithm) -> EncryptParams<'static> {
    EncryptParams::new("uploads", 3, WRAPPED)
        .with_algorithm(algorithm)
        .with_segment_size(SEG)
        .with_associated_data(b"file-1234")
}

fn plaintext(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i * 31 + i / 251) as u8).collect()
}

/// A small deterministic generator for chunk sizes (xorshift).
struct Chunks(u64);

impl Chunks {
    fn next(&mut self, max: usize) -> usize {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        1 + (self.0 % max as u64) as usize
    }
}

/// Chunk size policy: `0` = random sizes, otherwise a fixed size.
fn chunked(data: &[u8], chunk: usize, seed: u64) -> Vec<&[u8]> {
    let mut rng = Chunks(seed | 1);
    let mut out = Vec::new();
    let mut rest = data;
    while !rest.is_empty() {
        let n = if chunk == 0 { rng.next(3 * FULL) } else { chunk }.min(rest.len());
        let (a, b) = rest.split_at(n);
        out.push(a);
        rest = b;
    }
    out
}

fn encrypt_with(key: &[u8; 32], p: &EncryptParams<'_>, plain: &[u8], chunk: usize) -> Vec<u8> {
    let (mut enc, mut out) = Encryptor::new(key, p).unwrap();
    for c in chunked(plain, chunk, 7) {
        enc.push(c, &mut out).unwrap();
    }
    enc.finish(&mut out).unwrap();
    out
}

fn encrypt(algorithm: Algorithm, plain: &[u8]) -> Vec<u8> {
    encrypt_with(&KEY, &params(algorithm), plain, 0)
}

/// The whole reader path: incremental header parse, then segments, fed in chunks.
fn decrypt_with(key: &[u8; 32], ad: &[u8], stream: &[u8], chunk: usize) -> Result<Vec<u8>, StreamError> {
    let mut seen = Vec::new();
    let mut chunks = chunked(stream, chunk, 11).into_iter();
    let (header, used) = loop {
        let Some(c) = chunks.next() else {
            // Ended inside the header.
            Header::parse(&seen)?;
            return Err(StreamError::Truncated);
        };
        seen.extend_from_slice(c);
        if let Some(h) = Header::parse(&seen)? {
            break h;
        }
    };
    let mut dec = Decryptor::new(key, &header, ad)?;
    let mut out = Vec::new();
    dec.push(&seen[used..], &mut out)?;
    for c in chunks {
        dec.push(c, &mut out)?;
    }
    dec.finish(&mut out)?;
    Ok(out)
}

fn decrypt(stream: &[u8]) -> Result<Vec<u8>, StreamError> {
    decrypt_with(&KEY, b"file-1234", stream, 0)
}

fn header_len(stream: &[u8]) -> usize {
    Header::parse(stream).unwrap().unwrap().1
}

/// Sizes around the segment boundaries.
fn sizes() -> [usize; 8] {
    let s = SEG as usize;
    [0, 1, s - 1, s, s + 1, 2 * s, 3 * s, 3 * s + 17]
}

#[test]
fn round_trips_all_sizes_algorithms_and_chunkings() {
    for algorithm in ALGORITHMS {
        for len in sizes() {
            let plain = plaintext(len);
            for enc_chunk in [0, 1, 1000, len.max(1)] {
                let stream = encrypt_with(&KEY, &params(algorithm), &plain, enc_chunk);
                let body = stream.len() - header_len(&stream);
                assert_eq!(Some(body as u64), ciphertext_len(len as u64, SEG), "{algorithm:?} {len}");
                assert_eq!(plaintext_len(body as u64, SEG), Some(len as u64));
                for dec_chunk in [0, 1, 4097, stream.len()] {
                    let got = decrypt_with(&KEY, b"file-1234", &stream, dec_chunk);
                    assert_eq!(
                        got.as_deref(),
                        Ok(&plain[..]),
                        "{algorithm:?} len {len} chunks {enc_chunk}/{dec_chunk}"
                    );
                }
            }
        }
    }
}

#[test]
fn segment_shapes() {
    // Empty input: header and one empty final segment (just a tag).
    let s = encrypt(Algorithm::Aes256Gcm, b"");
    assert_eq!(s.len() - header_len(&s), TAG_LEN);
    // An exact multiple ends with a full final segment, no empty one after it.
    let s = encrypt(Algorithm::Aes256Gcm, &plaintext(2 * SEG as usize));
    assert_eq!(s.len() - header_len(&s), 2 * FULL);
    // Two streams of the same input under the same key differ (fresh salt and prefix).
    assert_ne!(encrypt(Algorithm::Aes256Gcm, b"x"), encrypt(Algorithm::Aes256Gcm, b"x"));
}

#[test]
fn encryptor_releases_segments_as_soon_as_they_are_known_not_last() {
    let (mut enc, mut out) = Encryptor::new(&KEY, &params(Algorithm::Aes256Gcm)).unwrap();
    let h = out.len();
    enc.push(&plaintext(SEG as usize), &mut out).unwrap();
    assert_eq!(out.len(), h, "a full segment is held back: it may be the last");
    enc.push(b"y", &mut out).unwrap();
    assert_eq!(out.len(), h + FULL);
    enc.finish(&mut out).unwrap();
    assert_eq!(out.len(), h + FULL + 1 + TAG_LEN);
}

#[test]
fn decryptor_releases_only_authenticated_segments() {
    let plain = plaintext(2 * SEG as usize + 5);
    let stream = encrypt(Algorithm::Aes256Gcm, &plain);
    let (header, used) = Header::parse(&stream).unwrap().unwrap();
    let mut dec = Decryptor::new(&KEY, &header, b"file-1234").unwrap();
    let mut out = Vec::new();
    dec.push(&stream[used..used + FULL], &mut out).unwrap();
    assert!(out.is_empty(), "a full segment is held back until bytes follow it");
    dec.push(&stream[used + FULL..used + FULL + 1], &mut out).unwrap();
    assert_eq!(out, plain[..SEG as usize]);
    dec.push(&stream[used + FULL + 1..], &mut out).unwrap();
    dec.finish(&mut out).unwrap();
    assert_eq!(out, plain);
}

#[test]
fn truncation_at_every_boundary_and_inside_segments() {
    for algorithm in ALGORITHMS {
        let plain = plaintext(3 * SEG as usize + 17);
        let stream = encrypt(algorithm, &plain);
        let h = header_len(&stream);
        // Inside the header.
        for cut in [0, 1, 4, 10, h - 1] {
            assert_eq!(decrypt(&stream[..cut]), Err(StreamError::Truncated), "header cut {cut}");
        }
        // At every segment boundary: no final segment seen.
        for k in 0..4 {
            assert_eq!(decrypt(&stream[..h + k * FULL]), Err(StreamError::Truncated), "{algorithm:?} boundary {k}");
        }
        // Inside segments (tag split, one byte short, halfway, one byte in).
        for k in 0..4 {
            let end = (h + (k + 1) * FULL).min(stream.len());
            let start = h + k * FULL;
            for cut in [start + 1, start + 15, start + 16, start + FULL / 2, end - 1].into_iter().filter(|&c| c < end) {
                let got = decrypt(&stream[..cut]);
                assert!(matches!(got, Err(StreamError::Truncated | StreamError::Authentication)), "cut {cut}: {got:?}");
            }
        }
    }
}

#[test]
fn extension_is_detected() {
    for len in [0, 5, SEG as usize, 2 * SEG as usize + 3] {
        let stream = encrypt(Algorithm::Aes256Gcm, &plaintext(len));
        let h = header_len(&stream);
        for extra in [&[0u8][..], &[0u8; TAG_LEN][..], &stream[h..(h + FULL).min(stream.len())]] {
            let mut bad = stream.clone();
            bad.extend_from_slice(extra);
            assert_eq!(decrypt(&bad), Err(StreamError::Authentication), "len {len} + {} bytes", extra.len());
        }
        // The final segment repeated.
        let last_start = h + (stream.len() - h - 1) / FULL * FULL;
        let mut bad = stream.clone();
        bad.extend_from_slice(&stream[last_start..]);
        assert_eq!(decrypt(&bad), Err(StreamError::Authentication), "len {len}, last repeated");
    }
}

#[test]
fn every_flipped_byte_is_detected() {
    for algorithm in ALGORITHMS {
        let plain = plaintext(SEG as usize + 100);
        let stream = encrypt(algorithm, &plain);
        let h = header_len(&stream);
        for i in 0..stream.len() {
            // All eight bits in the header, one (rotating) bit per body byte.
            let bits: Vec<u8> = if i < h { (0..8).collect() } else { vec![(i % 8) as u8] };
            for bit in bits {
                let mut bad = stream.clone();
                bad[i] ^= 1 << bit;
                let got = decrypt(&bad);
                assert!(got.is_err(), "{algorithm:?} byte {i} bit {bit} opened: {:?}", got.map(|p| p.len()));
            }
        }
    }
}

#[test]
fn reordered_and_duplicated_segments_fail() {
    let plain = plaintext(3 * SEG as usize + 17);
    let stream = encrypt(Algorithm::Aes256Gcm, &plain);
    let h = header_len(&stream);
    let seg = |k: usize| &stream[h + k * FULL..(h + (k + 1) * FULL).min(stream.len())];
    let build = |order: &[usize]| {
        let mut s = stream[..h].to_vec();
        for &k in order {
            s.extend_from_slice(seg(k));
        }
        s
    };
    assert_eq!(decrypt(&build(&[0, 1, 2, 3])).unwrap(), plain);
    for order in [
        &[1, 0, 2, 3][..],
        &[0, 2, 1, 3],
        &[0, 1, 3, 2],
        &[0, 0, 1, 2, 3],
        &[0, 1, 1, 2, 3],
        &[0, 1, 2, 2, 3],
        &[0, 1, 3],
    ] {
        assert_eq!(decrypt(&build(order)), Err(StreamError::Authentication), "{order:?}");
    }
}

#[test]
fn header_and_segments_do_not_mix_between_streams() {
    let plain = plaintext(2 * SEG as usize + 9);
    let a = encrypt(Algorithm::Aes256Gcm, &plain);
    let b = encrypt(Algorithm::Aes256Gcm, &plain);
    let (ha, hb) = (header_len(&a), header_len(&b));
    assert_eq!(ha, hb);
    // Header of A (its commitment is good for this key) with the body of B.
    let mut swapped = a[..ha].to_vec();
    swapped.extend_from_slice(&b[hb..]);
    let (header, _) = Header::parse(&swapped).unwrap().unwrap();
    assert!(Decryptor::new(&KEY, &header, b"file-1234").is_ok());
    assert_eq!(decrypt(&swapped), Err(StreamError::Authentication));
    // One segment of B inside A.
    let mut mixed = a.clone();
    mixed[ha + FULL..ha + 2 * FULL].copy_from_slice(&b[hb + FULL..hb + 2 * FULL]);
    assert_eq!(decrypt(&mixed), Err(StreamError::Authentication));
}

#[test]
fn wrong_key_fails_the_commitment_before_any_segment() {
    let stream = encrypt(Algorithm::Aes256Gcm, b"secret");
    let (header, _) = Header::parse(&stream).unwrap().unwrap();
    let mut other = KEY;
    other[31] ^= 1;
    assert_eq!(Decryptor::new(&other, &header, b"file-1234").err(), Some(StreamError::Authentication));
    assert_eq!(decrypt_with(&other, b"file-1234", &stream, 0), Err(StreamError::Authentication));
}

#[test]
fn wrong_associated_data_fails() {
    for ad in [&b""[..], b"file-1235", b"file-1234\0"] {
        let stream = encrypt(Algorithm::ChaCha20Poly1305, b"secret");
        assert_eq!(decrypt_with(&KEY, ad, &stream, 0), Err(StreamError::Authentication));
    }
}

#[test]
fn header_fields_are_authenticated() {
    let stream = encrypt(Algorithm::Aes256Gcm, &plaintext(100));
    // key_version sits after magic, version, algorithm and segment size.
    let mut bad = stream.clone();
    bad[13] ^= 0x02; // version 3 -> 1
    let (header, _) = Header::parse(&bad).unwrap().unwrap();
    assert_eq!(header.key_version(), 1);
    let mut dec = Decryptor::new(&KEY, &header, b"file-1234").unwrap();
    let mut out = Vec::new();
    let h = header_len(&bad);
    dec.push(&bad[h..], &mut out).unwrap();
    assert_eq!(dec.finish(&mut out), Err(StreamError::Authentication));
    assert!(out.is_empty());
    // The key name, likewise ("uploads" -> "uploadt").
    let mut bad = stream.clone();
    bad[15 + 6] ^= 0x07;
    assert_eq!(Header::parse(&bad).unwrap().unwrap().0.key_name(), "uploadt");
    assert_eq!(decrypt(&bad), Err(StreamError::Authentication));
}

#[test]
fn errors_poison() {
    let stream = encrypt(Algorithm::Aes256Gcm, &plaintext(3 * SEG as usize));
    let (header, used) = Header::parse(&stream).unwrap().unwrap();
    let mut dec = Decryptor::new(&KEY, &header, b"file-1234").unwrap();
    let mut out = Vec::new();
    let mut body = stream[used..].to_vec();
    body[5] ^= 1;
    assert_eq!(dec.push(&body, &mut out), Err(StreamError::Authentication));
    assert_eq!(dec.push(&stream[used..], &mut out), Err(StreamError::Poisoned));
    assert_eq!(dec.finish(&mut out), Err(StreamError::Poisoned));
    assert!(out.is_empty());
}

#[test]
fn segment_counter_never_wraps() {
    let (mut enc, mut out) = Encryptor::new(&KEY, &params(Algorithm::Aes256Gcm)).unwrap();
    enc.segments.skip_to(u64::from(u32::MAX));
    // The segment at index 2^32 - 1 is fine; the next one would reuse index 0.
    enc.push(&plaintext(SEG as usize + 1), &mut out).unwrap();
    assert_eq!(enc.finish(&mut out), Err(StreamError::TooManySegments));

    let (mut enc, mut out) = Encryptor::new(&KEY, &params(Algorithm::Aes256Gcm)).unwrap();
    enc.segments.skip_to(MAX_SEGMENTS);
    assert_eq!(enc.push(&plaintext(2 * SEG as usize), &mut out), Err(StreamError::TooManySegments));
    assert_eq!(enc.push(b"", &mut out), Err(StreamError::Poisoned));
}

#[test]
fn header_parses_incrementally_and_reencodes_exactly() {
    let stream = encrypt(Algorithm::ChaCha20Poly1305, b"abc");
    let h = header_len(&stream);
    for n in 0..h {
        assert_eq!(Header::parse(&stream[..n]), Ok(None), "prefix {n}");
    }
    let (header, used) = Header::parse(&stream).unwrap().unwrap();
    assert_eq!(used, h);
    assert_eq!(header.encode(), stream[..h]);
    assert_eq!(header.encoded_len(), h);
    assert_eq!(header.algorithm(), Algorithm::ChaCha20Poly1305);
    assert_eq!(header.segment_size(), SEG);
    assert_eq!((header.key_name(), header.key_version(), header.wrapped_key()), ("uploads", 3, WRAPPED));
}

#[test]
fn header_errors_show_as_soon_as_possible() {
    let stream = encrypt(Algorithm::Aes256Gcm, b"abc");
    assert_eq!(Header::parse(b"X"), Err(StreamError::BadMagic));
    assert_eq!(Header::parse(b"VLTX"), Err(StreamError::BadMagic));
    let with = |at: usize, bytes: &[u8]| {
        let mut s = stream[..at].to_vec();
        s.extend_from_slice(bytes);
        Header::parse(&s)
    };
    assert_eq!(with(4, &[2]), Err(StreamError::UnsupportedVersion(2)));
    assert_eq!(with(5, &[0]), Err(StreamError::UnsupportedAlgorithm(0)));
    assert_eq!(with(5, &[3]), Err(StreamError::UnsupportedAlgorithm(3)));
    assert_eq!(with(6, &4095u32.to_be_bytes()), Err(StreamError::BadSegmentSize(4095)));
    assert_eq!(with(6, &(MAX_SEGMENT_SIZE + 1).to_be_bytes()), Err(StreamError::BadSegmentSize(MAX_SEGMENT_SIZE + 1)));
    assert_eq!(with(6, &u32::MAX.to_be_bytes()), Err(StreamError::BadSegmentSize(u32::MAX)));
    assert!(matches!(with(10, &[0, 0, 0, 0]), Err(StreamError::InvalidHeader(_))));
    assert!(matches!(with(14, &[0]), Err(StreamError::InvalidHeader(_))));
    assert!(matches!(with(14, &[2, 0xff, 0xfe]), Err(StreamError::InvalidHeader(_))));
    assert!(matches!(with(15 + 7, &[0, 0]), Err(StreamError::InvalidHeader(_))));
    // The largest lengths the format allows only ask for more bytes.
    assert_eq!(with(15 + 7, &[0xff, 0xff]), Ok(None));
}

#[test]
fn parameters_are_checked() {
    let bad = |p: EncryptParams<'_>| matches!(Encryptor::new(&KEY, &p), Err(StreamError::InvalidParameter(_)));
    let name = "n".repeat(256);
    let wrapped = vec![1u8; 65536];
    assert!(bad(EncryptParams::new("", 1, WRAPPED)));
    assert!(bad(EncryptParams::new(&name, 1, WRAPPED)));
    assert!(bad(EncryptParams::new("k", 0, WRAPPED)));
    assert!(bad(EncryptParams::new("k", 1, b"")));
    assert!(bad(EncryptParams::new("k", 1, &wrapped)));
    assert!(bad(EncryptParams::new("k", 1, WRAPPED).with_segment_size(MIN_SEGMENT_SIZE - 1)));
    assert!(bad(EncryptParams::new("k", 1, WRAPPED).with_segment_size(MAX_SEGMENT_SIZE + 1)));
    // The limits themselves are fine, and round-trip.
    let p = EncryptParams::new(&name[..255], u32::MAX, &wrapped[..65535]).with_segment_size(MAX_SEGMENT_SIZE);
    let stream = encrypt_with(&KEY, &p, b"edge", 0);
    assert_eq!(decrypt_with(&KEY, b"", &stream, 0).unwrap(), b"edge");
    assert_eq!(header_len(&stream), 4 + 1 + 1 + 4 + 4 + 1 + 255 + 2 + 65535 + 32 + 7 + 32);
}

#[test]
fn length_helpers() {
    let s = u64::from(SEG);
    let t = TAG_LEN as u64;
    assert_eq!(ciphertext_len(0, SEG), Some(t));
    assert_eq!(ciphertext_len(1, SEG), Some(1 + t));
    assert_eq!(ciphertext_len(s, SEG), Some(s + t));
    assert_eq!(ciphertext_len(s + 1, SEG), Some(s + 1 + 2 * t));
    assert_eq!(ciphertext_len(5, MIN_SEGMENT_SIZE - 1), None);
    assert_eq!(ciphertext_len(u64::MAX, MAX_SEGMENT_SIZE), None);
    let most = MAX_SEGMENTS * u64::from(MAX_SEGMENT_SIZE);
    assert_eq!(ciphertext_len(most, MAX_SEGMENT_SIZE), Some(most + MAX_SEGMENTS * t));
    assert_eq!(ciphertext_len(most + 1, MAX_SEGMENT_SIZE), None);
    for c in [0, 1, t - 1] {
        assert_eq!(plaintext_len(c, SEG), None, "{c}");
    }
    // A second segment of just a tag is never written.
    assert_eq!(plaintext_len(s + 2 * t, SEG), None);
    assert_eq!(plaintext_len(s + t + 3, SEG), None);
    for p in [0, 1, s - 1, s, s + 1, 10 * s, 10 * s + 7] {
        assert_eq!(plaintext_len(ciphertext_len(p, SEG).unwrap(), SEG), Some(p));
    }
}

#[test]
fn debug_shows_no_key_plaintext_or_derived_material() {
    let secret = b"PLAINTEXT-CANARY-0123456789";
    let (mut enc, mut stream) = Encryptor::new(&KEY, &params(Algorithm::Aes256Gcm)).unwrap();
    enc.push(secret, &mut stream).unwrap();
    let enc_debug = format!("{enc:?} {:?}", params(Algorithm::Aes256Gcm));
    let (header, _) = Header::parse(&stream).unwrap().unwrap();
    let derived = crate::cipher::derive(&KEY, &header.salt, header.algorithm);
    let dec = Decryptor::new(&KEY, &header, b"file-1234").unwrap();
    let all = format!("{enc_debug} {header:?} {dec:?}");
    // No byte list or hex run of the data key, the stream key, the
    // plaintext, the associated data, the salt or the wrapped key.
    let secrets: [&[u8]; 6] = [&KEY, &derived.stream_key[..], secret, b"file-1234", &header.salt, WRAPPED];
    for s in secrets {
        let list = format!("{:?}", &s[..4]).trim_end_matches(']').to_owned();
        let hex: String = s[..4].iter().map(|b| format!("{b:02x}")).collect();
        let text = String::from_utf8_lossy(&s[..6]).into_owned();
        for needle in [list, hex, text] {
            assert!(!all.contains(&needle), "{needle:?} in {all}");
        }
    }
    assert!(all.contains("uploads") && all.contains("segment_size"), "{all}");
    drop(enc);
}

/// Rebuilds a stream from `docs/formats.md` with the primitives alone
/// (HKDF, SHA-256, AES-GCM / ChaCha20-Poly1305 in their one-shot form) and
/// compares it byte for byte with the encryptor's output.
#[test]
fn matches_the_specification() {
    use aes_gcm::aead::{Aead, KeyInit, Payload};
    use sha2::{Digest, Sha256};

    for algorithm in ALGORITHMS {
        let salt = [0x5a; SALT_LEN];
        let prefix = [0xa5; NONCE_PREFIX_LEN];
        let plain = plaintext(2 * SEG as usize + 3);
        let p = params(algorithm);
        let (mut enc, mut got) = encrypt::Encryptor::with_randomness(&KEY, &p, salt, prefix).unwrap();
        enc.push(&plain, &mut got).unwrap();
        enc.finish(&mut got).unwrap();

        let hk = hkdf::Hkdf::<Sha256>::new(Some(&salt), &KEY);
        let alg = algorithm.to_byte();
        let mut key = [0u8; 32];
        hk.expand(&[&b"vault-stream v1 key"[..], &[alg]].concat(), &mut key).unwrap();
        let mut commitment = [0u8; 32];
        hk.expand(b"vault-stream v1 commitment", &mut commitment).unwrap();

        let mut want = b"VLTS\x01".to_vec();
        want.push(alg);
        want.extend_from_slice(&SEG.to_be_bytes());
        want.extend_from_slice(&3u32.to_be_bytes());
        want.push(7);
        want.extend_from_slice(b"uploads");
        want.extend_from_slice(&(WRAPPED.len() as u16).to_be_bytes());
        want.extend_from_slice(WRAPPED);
        want.extend_from_slice(&salt);
        want.extend_from_slice(&prefix);
        want.extend_from_slice(&commitment);

        let mut ad = Sha256::digest(&want).to_vec();
        ad.extend_from_slice(&Sha256::digest([&9u64.to_be_bytes()[..], b"file-1234"].concat()));
        let chunks: Vec<&[u8]> = plain.chunks(SEG as usize).collect();
        for (i, chunk) in chunks.iter().enumerate() {
            let last = i + 1 == chunks.len();
            let nonce: Vec<u8> = [&prefix[..], &(i as u32).to_be_bytes(), &[u8::from(last)]].concat();
            let payload = Payload { msg: chunk, aad: &ad };
            let sealed = match algorithm {
                Algorithm::Aes256Gcm => {
                    aes_gcm::Aes256Gcm::new(&key.into()).encrypt(nonce[..].try_into().unwrap(), payload)
                }
                Algorithm::ChaCha20Poly1305 => {
                    chacha20poly1305::ChaCha20Poly1305::new(&key.into()).encrypt(nonce[..].try_into().unwrap(), payload)
                }
            };
            want.extend_from_slice(&sealed.unwrap());
        }
        assert_eq!(got, want, "{algorithm:?}");
    }
}
