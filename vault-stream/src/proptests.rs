//! Property tests: arbitrary sizes, segment sizes and chunkings round-trip;
//! arbitrary bytes never panic the header parser; a truncated or extended
//! stream never opens.

use proptest::prelude::*;

use crate::*;

const KEY: [u8; 32] = [0x42; 32];

/// Split `data` at the given (sorted, deduplicated) cut points.
fn split_at_cuts<'a>(data: &'a [u8], cuts: &[usize]) -> Vec<&'a [u8]> {
    let mut points: Vec<usize> = cuts.iter().map(|c| c % (data.len() + 1)).collect();
    points.push(0);
    points.push(data.len());
    points.sort_unstable();
    points.dedup();
    points.windows(2).map(|w| &data[w[0]..w[1]]).collect()
}

fn encrypt(p: &EncryptParams<'_>, plain: &[u8], cuts: &[usize]) -> Vec<u8> {
    let (mut enc, mut out) = Encryptor::new(&KEY, p).unwrap();
    for c in split_at_cuts(plain, cuts) {
        enc.push(c, &mut out).unwrap();
    }
    enc.finish(&mut out).unwrap();
    out
}

fn decrypt(stream: &[u8], ad: &[u8], cuts: &[usize]) -> Result<Vec<u8>, StreamError> {
    let (header, used) = Header::parse(stream)?.ok_or(StreamError::Truncated)?;
    let mut dec = Decryptor::new(&KEY, &header, ad)?;
    let mut out = Vec::new();
    for c in split_at_cuts(&stream[used..], cuts) {
        dec.push(c, &mut out)?;
    }
    dec.finish(&mut out)?;
    Ok(out)
}

fn algorithm() -> impl Strategy<Value = Algorithm> {
    prop_oneof![Just(Algorithm::Aes256Gcm), Just(Algorithm::ChaCha20Poly1305)]
}

proptest! {
    // Each case encrypts up to 200 KB unoptimized: keep the count modest.
    #![proptest_config(ProptestConfig { cases: 32, ..ProptestConfig::default() })]

    #[test]
    fn round_trip(
        len in 0usize..200_000,
        segment_size in MIN_SEGMENT_SIZE..70_000u32,
        alg in algorithm(),
        enc_cuts in proptest::collection::vec(any::<usize>(), 0..40),
        dec_cuts in proptest::collection::vec(any::<usize>(), 0..40),
        ad in proptest::collection::vec(any::<u8>(), 0..64),
        seed in any::<u8>(),
    ) {
        let plain: Vec<u8> = (0..len).map(|i| (i as u8) ^ seed).collect();
        let p = EncryptParams::new("k", 1, b"w").with_algorithm(alg).with_segment_size(segment_size).with_associated_data(&ad);
        let stream = encrypt(&p, &plain, &enc_cuts);
        let (header, used) = Header::parse(&stream).unwrap().unwrap();
        prop_assert_eq!(header.segment_size(), segment_size);
        prop_assert_eq!(Some((stream.len() - used) as u64), ciphertext_len(len as u64, segment_size));
        prop_assert_eq!(decrypt(&stream, &ad, &dec_cuts), Ok(plain));
    }

    #[test]
    fn cut_or_extended_streams_never_open(
        len in 0usize..20_000,
        cut in any::<usize>(),
        extra in proptest::collection::vec(any::<u8>(), 1..40),
        dec_cuts in proptest::collection::vec(any::<usize>(), 0..8),
    ) {
        let plain = vec![7u8; len];
        let p = EncryptParams::new("k", 1, b"w").with_segment_size(MIN_SEGMENT_SIZE);
        let stream = encrypt(&p, &plain, &[]);
        let cut = cut % stream.len();
        prop_assert!(decrypt(&stream[..cut], b"", &dec_cuts).is_err());
        let mut longer = stream.clone();
        longer.extend_from_slice(&extra);
        prop_assert!(decrypt(&longer, b"", &dec_cuts).is_err());
    }
}

proptest! {
    #[test]
    fn header_parse_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..400), valid_prefix in 0usize..20) {
        // Start from a valid prefix some of the time so the parser gets past the magic.
        let mut input = b"VLTS\x01\x01\x00\x00\x10\x00\x00\x00\x00\x01\x03abc\x00\x02".to_vec();
        input.truncate(valid_prefix);
        input.extend_from_slice(&bytes);
        if let Ok(Some((header, used))) = Header::parse(&input) {
            prop_assert_eq!(header.encode(), &input[..used]);
        }
    }
}
