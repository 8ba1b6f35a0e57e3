//! Property tests: any sequence of operations keeps the invariants and
//! survives a round trip; the decoder never panics and accepts only what the
//! encoder writes; the usage trigger fires exactly at its bound; counts from
//! any number of servers, flushed in any order, add up.

use proptest::prelude::*;

use super::*;

/// One operation on a key. Version numbers are drawn relative to the key's
/// state when the operation runs (`pick`), so settings and trims succeed
/// often and the refusals probed are the ones at the edges.
#[derive(Debug, Clone)]
enum Op {
    Rotate(u8),
    SetMins(Option<prop::sample::Index>, Option<prop::sample::Index>),
    Trim(prop::sample::Index),
    Count(prop::sample::Index, u64),
    /// Vault's way to retire old versions: both minimums to one version,
    /// then a trim (the trim alone rarely finds both minimums set).
    Retire(prop::sample::Index, prop::sample::Index),
}

fn op() -> impl Strategy<Value = Op> {
    let index = any::<prop::sample::Index>;
    prop_oneof![
        3 => any::<u8>().prop_map(Op::Rotate),
        2 => (proptest::option::of(index()), proptest::option::of(index())).prop_map(|(d, e)| Op::SetMins(d, e)),
        2 => index().prop_map(Op::Trim),
        1 => (index(), 0u64..1_000_000).prop_map(|(v, n)| Op::Count(v, n)),
        1 => (index(), index()).prop_map(|(v, m)| Op::Retire(v, m)),
    ]
}

/// A version number in `0..=latest + 1`: both out-of-range neighbours included.
fn pick(k: &VersionedKey<SecretBytes>, i: &prop::sample::Index) -> u32 {
    i.index(k.latest_version() as usize + 2) as u32
}

fn material(b: u8, len: usize) -> SecretBytes {
    SecretBytes::from_bytes(&vec![b; len.max(1)]).unwrap()
}

/// Apply `op`, checking what a success or a refusal did.
fn apply(k: &mut VersionedKey<SecretBytes>, op: &Op) {
    let before = k.bounds();
    match op {
        Op::Rotate(b) => {
            let v = k.rotate(material(*b, usize::from(b % 40)), 1_700_000_000 + i64::from(*b)).unwrap();
            assert_eq!(v, before.latest + 1);
            assert_eq!(k.bounds(), Bounds { latest: v, ..before }, "rotation moved a minimum");
            assert_eq!(k.latest().created_unix(), 1_700_000_000 + i64::from(*b));
            assert_eq!(k.latest().encryptions(), 0);
        }
        Op::SetMins(d, e) => {
            let (d, e) = (d.as_ref().map(|i| pick(k, i)), e.as_ref().map(|i| pick(k, i)));
            match k.set_min_versions(d, e) {
                Ok(()) => {
                    let after = k.bounds();
                    assert_eq!(after.min_decryption, d.map_or(before.min_decryption, |d| d.max(1)));
                    assert_eq!(after.min_encryption, e.unwrap_or(before.min_encryption));
                    assert_eq!((after.latest, after.min_available), (before.latest, before.min_available));
                }
                Err(_) => assert_eq!(k.bounds(), before, "a refused setting changed something"),
            }
        }
        Op::Trim(i) => {
            // 0..=cap + 1: every allowed bound and the first refused one.
            let cap = before.min_decryption.min(if before.min_encryption == 0 {
                before.latest
            } else {
                before.min_encryption
            });
            let m = i.index(cap as usize + 2) as u32;
            let held = k.versions().count();
            match k.trim(m) {
                Ok(dropped) => {
                    assert_eq!(k.min_available_version(), m);
                    assert_eq!(dropped, held - k.versions().count());
                    assert!(m >= before.min_available && m <= before.min_decryption && m <= before.min_encryption);
                }
                Err(_) => {
                    assert_eq!(k.bounds(), before, "a refused trim changed something");
                    assert_eq!(k.versions().count(), held);
                }
            }
        }
        Op::Count(i, n) => {
            let v = pick(k, i);
            if let Some(kv) = k.version(v) {
                let was = kv.encryptions();
                assert_eq!(kv.count_encryptions(*n), was + n);
            }
        }
        Op::Retire(v, m) => {
            apply(k, &Op::SetMins(Some(*v), Some(*v)));
            apply(k, &Op::Trim(*m));
        }
    }
}

/// The stored invariants, and what encryption and decryption may use, stated
/// directly rather than through the code's own checks.
fn check_rules(k: &VersionedKey<SecretBytes>) {
    let b = k.bounds();
    assert!(b.latest >= 1, "{b:?}");
    assert!(b.min_decryption >= 1 && b.min_decryption <= b.latest, "min decryption outside 1..=latest: {b:?}");
    assert!(b.min_encryption <= b.latest, "min encryption above latest: {b:?}");
    assert!(b.min_encryption == 0 || b.min_encryption >= b.min_decryption, "{b:?}");
    assert!(b.min_available <= b.min_decryption, "a decryptable version was trimmed: {b:?}");
    assert!(b.min_available == 0 || b.min_available <= b.min_encryption, "{b:?}");
    assert!(k.version(b.latest).is_some(), "the latest version is gone");
    assert_eq!(k.versions().count() as u32, b.latest - b.min_available.max(1) + 1);
    let numbers: Vec<u32> = k.versions().map(|(v, _)| v).collect();
    assert_eq!(numbers, (b.min_available.max(1)..=b.latest).collect::<Vec<_>>());
    for v in 0..=b.latest + 1 {
        assert_eq!(k.version(v).is_some(), v >= b.min_available.max(1) && v <= b.latest, "held v{v} {b:?}");
        let may_decrypt = v >= b.min_decryption && v <= b.latest;
        assert_eq!(k.decryption_version(v).is_ok(), may_decrypt, "decrypt v{v} {b:?}");
        let may_encrypt = v == 0 || (v <= b.latest && v >= b.min_encryption && v >= b.min_decryption);
        assert_eq!(k.encryption_version(v).is_ok(), may_encrypt, "encrypt v{v} {b:?}");
        if let Ok((w, _)) = k.encryption_version(v) {
            assert!(k.decryption_version(w).is_ok(), "v{w} encrypts but cannot decrypt {b:?}");
        }
    }
    assert_eq!(k.encryption_version(0).unwrap().0, b.latest);
}

/// A key after `ops`, starting from one version.
fn key_after(ops: &[Op]) -> VersionedKey<SecretBytes> {
    let mut k = VersionedKey::new(material(0, 32), 1_700_000_000);
    for op in ops {
        apply(&mut k, op);
    }
    k
}

proptest! {
    #[test]
    fn any_operation_sequence_keeps_the_rules_and_round_trips(ops in proptest::collection::vec(op(), 0..32)) {
        let mut k = VersionedKey::new(material(0, 32), 1_700_000_000);
        check_rules(&k);
        for op in &ops {
            apply(&mut k, op);
            check_rules(&k);
        }
        let bytes = k.encode();
        let back = VersionedKey::<SecretBytes>::decode(&bytes).unwrap();
        check_rules(&back);
        prop_assert_eq!(back.bounds(), k.bounds());
        prop_assert_eq!(&back.encode()[..], &bytes[..]);
        prop_assert_eq!(back.versions().count(), k.versions().count());
        for ((v, a), (w, b)) in k.versions().zip(back.versions()) {
            prop_assert_eq!(v, w);
            prop_assert!(a.material().ct_eq(b.material()));
            prop_assert_eq!(a.encryptions(), b.encryptions());
            prop_assert_eq!(a.created_unix(), b.created_unix());
        }
        // Bytes of one kind never load as another.
        prop_assert_eq!(VersionedKey::<Aes256GcmKey>::decode(&bytes).unwrap_err(), FormatError::WrongKind);
    }

    #[test]
    fn decoding_arbitrary_bytes_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        // Whatever decodes is canonical: it encodes back to the same bytes.
        if let Ok(k) = VersionedKey::<SecretBytes>::decode(&bytes) {
            check_rules(&k);
            prop_assert_eq!(&k.encode()[..], &bytes[..]);
        }
        if let Ok(k) = VersionedKey::<Aes256GcmKey>::decode(&bytes) {
            prop_assert_eq!(&k.encode()[..], &bytes[..]);
        }
    }

    /// A valid format and kind byte, a header of small numbers (so the
    /// count check passes now and then) and arbitrary bytes after it: the
    /// decoder gets past its first checks into the version loop.
    #[test]
    fn decoding_a_plausible_header_and_garbage_never_panics(
        header in proptest::collection::vec(0u32..4, 5),
        tail in proptest::collection::vec(any::<u8>(), 0..256),
    ) {
        let mut bytes = vec![0x01, SecretBytes::KIND];
        for n in &header {
            bytes.extend_from_slice(&n.to_be_bytes());
        }
        bytes.extend_from_slice(&tail);
        if let Ok(k) = VersionedKey::<SecretBytes>::decode(&bytes) {
            check_rules(&k);
            prop_assert_eq!(&k.encode()[..], &bytes[..]);
        }
    }

    #[test]
    fn corrupting_a_valid_record_never_panics(
        ops in proptest::collection::vec(op(), 0..12),
        at in any::<prop::sample::Index>(),
        xor in 1u8..=255,
        cut in any::<prop::sample::Index>(),
    ) {
        let k = key_after(&ops);
        let good = k.encode();
        let mut bytes = good.to_vec();
        let i = at.index(bytes.len());
        bytes[i] ^= xor;
        // Whatever still decodes satisfies the rules and is canonical.
        if let Ok(back) = VersionedKey::<SecretBytes>::decode(&bytes) {
            check_rules(&back);
            prop_assert_eq!(&back.encode()[..], &bytes[..]);
        }
        // Every proper prefix and every extension is refused.
        let n = cut.index(good.len());
        prop_assert!(VersionedKey::<SecretBytes>::decode(&good[..n]).is_err());
        let mut longer = good.to_vec();
        longer.push(xor);
        prop_assert_eq!(VersionedKey::<SecretBytes>::decode(&longer).unwrap_err(), FormatError::TrailingBytes);
    }

    /// The rotation trigger fires exactly when the latest version's total
    /// (stored count plus this process's) reaches the bound, whatever the
    /// split between the two, and counts on older versions never fire it.
    #[test]
    fn usage_trigger_fires_exactly_at_the_bound(
        stored in 0u64..=ROTATE_AT + 10,
        local in proptest::collection::vec(0u64..1000, 0..8),
        older in 0u64..=u64::MAX / 2,
        offset in -3i64..=3,
    ) {
        let mut k = VersionedKey::new(material(1, 32), 0);
        k.rotate(material(2, 32), 0).unwrap();
        // Load a record whose latest version already has `stored` encryptions.
        k.latest().count_encryptions(stored);
        let k = VersionedKey::<SecretBytes>::decode(&k.encode()).unwrap();
        prop_assert_eq!(k.latest().usage().unflushed(), 0);
        k.version(1).unwrap().count_encryptions(older);
        let total = stored + local.iter().sum::<u64>();
        for n in &local {
            k.latest().count_encryptions(*n);
        }
        prop_assert_eq!(k.latest().encryptions(), total);
        for limit in [ROTATE_AT, total.saturating_add_signed(offset).max(1)] {
            prop_assert_eq!(k.needs_rotation(limit), total >= limit, "total {} limit {}", total, limit);
        }
        prop_assert!(!k.needs_rotation(total + 1));
        prop_assert!(k.needs_rotation(total.max(1)) == (total >= 1));
        prop_assert!(ROTATE_AT < RANDOM_NONCE_LIMIT);
    }

    /// Saturation: counts near u64::MAX never wrap back below the bound.
    #[test]
    fn usage_counts_saturate_instead_of_wrapping(stored in (u64::MAX - 1000)..=u64::MAX, more in any::<u64>()) {
        let u = Usage::new(stored);
        prop_assert_eq!(u.record(more), stored.saturating_add(more));
        prop_assert!(u.needs_rotation(ROTATE_AT) && u.needs_rotation(RANDOM_NONCE_LIMIT));
    }

    #[test]
    fn counts_from_many_servers_add_up(
        counts in proptest::collection::vec((0u64..1_000_000, 0u64..1_000_000), 1..6),
        order in proptest::collection::vec(any::<prop::sample::Index>(), 0..16),
    ) {
        let mut seed = VersionedKey::new(material(1, 32), 0);
        seed.rotate(material(2, 32), 0).unwrap();
        let mut stored = seed.encode();
        let servers: Vec<_> =
            counts.iter().map(|_| VersionedKey::<SecretBytes>::decode(&stored).unwrap()).collect();
        for (s, (c1, c2)) in servers.iter().zip(&counts) {
            s.version(1).unwrap().count_encryptions(*c1);
            s.latest().count_encryptions(*c2);
        }
        // Flushes in any order, some servers several times, then one final round.
        let rounds = order.iter().map(|i| i.index(servers.len())).chain(0..servers.len());
        for s in rounds {
            let mut rec = VersionedKey::<SecretBytes>::decode(&stored).unwrap();
            let added = rec.absorb_usage(&servers[s]);
            stored = rec.encode();
            servers[s].mark_flushed(&added);
        }
        for s in &servers {
            for (_, v) in s.versions() {
                prop_assert_eq!(v.usage().unflushed(), 0);
            }
        }
        let rec = VersionedKey::<SecretBytes>::decode(&stored).unwrap();
        let latest_total = counts.iter().map(|c| c.1).sum::<u64>();
        prop_assert_eq!(rec.version(1).unwrap().encryptions(), counts.iter().map(|c| c.0).sum::<u64>());
        prop_assert_eq!(rec.latest().encryptions(), latest_total);
        // The stored record triggers rotation exactly when the servers' sum reaches the bound.
        prop_assert!(rec.needs_rotation(latest_total.max(1)) == (latest_total >= 1));
        prop_assert!(!rec.needs_rotation(latest_total + 1));
    }
}
