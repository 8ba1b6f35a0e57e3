//! The client library's transit module (`vault_client::transit`) against the
//! real server: encrypt/decrypt with associated data, context and key
//! versions, rewrap, batches with a failing item, document fields with a
//! blind index used for an equality lookup, subject keys (crypto-shredding
//! one subject leaves the others readable), data keys, and `Encrypted<T>`
//! fields in a struct stored as JSON.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use serde::{Deserialize, Serialize};
use serde_json::json;
use vault_client::transit::{Encrypted, IndexOptions, Normalize, Params};
use vault_e2e::{Backend, ServerProc, Store};

/// A fresh server on SQLite, unsealed, `transit/` mounted; the harness client
/// (root) and a library client (root).
async fn vault() -> (Store, ServerProc, vault_e2e::Client, vault_client::Client) {
    let store = Store::new(Backend::Sqlite);
    let srv = ServerProc::start(&store, &[]);
    let (_keys, root, rc) = srv.kv2_ready().await;
    let (s, b) = rc.post("sys/mounts/transit", json!({"type": "transit"})).await;
    assert_eq!(s, 204, "mount transit: {b}");
    let client = vault_client::Client::new(srv.url()).unwrap().with_token(&root);
    (store, srv, rc, client)
}

#[tokio::test(flavor = "multi_thread")]
async fn round_trips_versions_rewrap_and_batches() {
    let (_store, _srv, rc, client) = vault().await;
    let t = client.transit("transit");
    t.create_key("orders", None).await.unwrap();

    let ct = t.encrypt("orders", b"card 4111 CANARY", &Params::new()).await.unwrap();
    assert!(ct.starts_with("vault:v1:"), "{ct}");
    let pt = t.decrypt("orders", &ct, &Params::new()).await.unwrap();
    assert_eq!(&pt[..], b"card 4111 CANARY");
    assert_eq!(pt.as_str().unwrap(), "card 4111 CANARY");
    assert!(!format!("{pt:?}").contains("CANARY"), "Plaintext's Debug hides it");

    // Associated data is bound: decrypting without it fails.
    let aad = Params::new().associated_data("row 7");
    let ct = t.encrypt("orders", b"bound", &aad).await.unwrap();
    assert_eq!(&t.decrypt("orders", &ct, &aad).await.unwrap()[..], b"bound");
    let e = t.decrypt("orders", &ct, &Params::new()).await.unwrap_err();
    assert_eq!(e.status(), Some(400), "{e}");

    // Derived key: context required and bound.
    let (s, b) = rc.post("transit/keys/tenants", json!({"derived": true})).await;
    assert_eq!(s, 200, "{b}");
    let ctx = Params::new().context("tenant-1");
    let ct = t.encrypt("tenants", b"per-tenant", &ctx).await.unwrap();
    assert_eq!(&t.decrypt("tenants", &ct, &ctx).await.unwrap()[..], b"per-tenant");
    assert!(t.decrypt("tenants", &ct, &Params::new().context("tenant-2")).await.is_err());

    // Key versions and rewrap.
    t.rotate_key("orders").await.unwrap();
    let old = t.encrypt("orders", b"old", &Params::new().key_version(1)).await.unwrap();
    assert!(old.starts_with("vault:v1:"), "{old}");
    let new = t.rewrap("orders", &old, &Params::new()).await.unwrap();
    assert!(new.starts_with("vault:v2:"), "{new}");
    assert_eq!(&t.decrypt("orders", &new, &Params::new()).await.unwrap()[..], b"old");

    // Batches: results in order; a bad item fails alone.
    let plain = ["one", "two", "three"];
    let cts: Vec<String> =
        t.encrypt_batch("orders", &plain, &Params::new()).await.unwrap().into_iter().map(Result::unwrap).collect();
    assert_eq!(cts.len(), 3);
    let back = t.decrypt_batch("orders", &cts, &Params::new()).await.unwrap();
    let back: Vec<String> = back.into_iter().map(|p| p.unwrap().as_str().unwrap().to_string()).collect();
    assert_eq!(back, plain);
    let mixed = [cts[0].as_str(), "vault:v1:bm90IGEgY2lwaGVydGV4dA==", cts[2].as_str()];
    let r = t.decrypt_batch("orders", &mixed, &Params::new()).await.unwrap();
    assert_eq!(r[0].as_ref().unwrap().as_str().unwrap(), "one");
    assert_eq!(r[1].as_ref().unwrap_err().status(), Some(400), "{:?}", r[1]);
    assert_eq!(r[2].as_ref().unwrap().as_str().unwrap(), "three");
    let rewrapped = t.rewrap_batch("orders", &[old.as_str()], &Params::new()).await.unwrap();
    assert!(rewrapped[0].as_ref().unwrap().starts_with("vault:v2:"));
    let per_item = t
        .encrypt_batch_with("tenants", &[(b"a".as_slice(), &ctx), (b"b".as_slice(), &Params::new().context("t2"))])
        .await
        .unwrap();
    let ct_b = per_item[1].as_ref().unwrap();
    assert_eq!(&t.decrypt("tenants", ct_b, &Params::new().context("t2")).await.unwrap()[..], b"b");

    // A missing key is the server's error.
    assert_eq!(t.decrypt("nope", &ct, &Params::new()).await.unwrap_err().status(), Some(400));

    // Data keys: the plaintext key only when asked for, and redacted in Debug.
    let dk = t.data_key("orders", true, None, &Params::new()).await.unwrap();
    let key = dk.plaintext.as_ref().unwrap();
    assert_eq!(key.len(), 32);
    assert!(!format!("{dk:?}").contains(&format!("{:?}", &key[..4])));
    let unwrapped = t.decrypt("orders", &dk.ciphertext, &Params::new()).await.unwrap();
    assert_eq!(&unwrapped[..], &key[..]);
    assert!(t.data_key("orders", false, Some(512), &Params::new()).await.unwrap().plaintext.is_none());
}

#[tokio::test(flavor = "multi_thread")]
async fn document_fields_and_blind_index_lookup() {
    let (_store, _srv, _rc, client) = vault().await;
    let t = client.transit("transit");
    t.create_key("customers", None).await.unwrap();
    let opts = IndexOptions::new().normalize(Normalize::Lowercase).normalize(Normalize::Trim);

    // A "table" of encrypted rows with a blind index of the email.
    let people = [(1, "ada@example.com"), (2, "grace@example.com"), (3, "edsger@example.com")];
    let mut rows = Vec::new();
    for (id, email) in people {
        let doc = json!({"id": id, "email": email, "card": {"number": "4111 1111", "cvv": 123}});
        let enc = t
            .encrypt_fields("customers", &doc, &["/email", "/card"], &Params::new(), &["/email"], &opts)
            .await
            .unwrap();
        assert_eq!(enc.document["id"], id);
        assert!(enc.document["email"].as_str().unwrap().starts_with("vault:v1:"), "{}", enc.document);
        assert!(enc.document["card"].as_str().unwrap().starts_with("vault:v1:"), "{}", enc.document);
        assert!(!enc.document.to_string().contains("example.com"));
        assert_eq!(enc.key_version, 1);
        let bix = enc.indexes["/email"].clone();
        assert_eq!(bix.len(), 64, "{bix}");
        rows.push((id, enc.document, bix));
    }

    // Equality lookup: the index of the searched value (normalized alike).
    let wanted = t.blind_index("customers", b"  Grace@Example.COM ", "/email", &opts).await.unwrap();
    let found: Vec<_> = rows.iter().filter(|(_, _, bix)| *bix == wanted).collect();
    assert_eq!(found.len(), 1);
    let (id, doc, _) = found[0];
    assert_eq!(*id, 2);
    let plain = t.decrypt_fields("customers", doc, &["/email", "/card"], &Params::new()).await.unwrap();
    assert_eq!(plain, json!({"id": 2, "email": "grace@example.com", "card": {"number": "4111 1111", "cvv": 123}}));

    // Another field name gives an unrelated index; truncation shortens it.
    let other = t.blind_index("customers", b"grace@example.com", "/backup_email", &opts).await.unwrap();
    assert_ne!(other, wanted);
    let short = t.blind_index("customers", b"grace@example.com", "/email", &opts.clone().bits(16)).await.unwrap();
    assert_eq!(short, wanted[..4]);

    // A ciphertext moved to another field does not decrypt.
    let mut swapped = doc.clone();
    swapped["card"] = doc["email"].clone();
    let e = t.decrypt_fields("customers", &swapped, &["/card"], &Params::new()).await.unwrap_err();
    assert_eq!(e.status(), Some(400), "{e}");
}

#[tokio::test(flavor = "multi_thread")]
async fn shredding_a_subject_makes_only_its_ciphertexts_undecryptable() {
    let (_store, _srv, _rc, client) = vault().await;
    let t = client.transit("transit");
    t.create_key("pii", None).await.unwrap();
    let ada = Params::new().subject("customer-4711");
    let bob = Params::new().subject("customer-42");

    let ct_ada = t.encrypt("pii", b"ada's card", &ada).await.unwrap();
    let ct_bob = t.encrypt("pii", b"bob's card", &bob).await.unwrap();
    let ct_none = t.encrypt("pii", b"no subject", &Params::new()).await.unwrap();
    assert!(ct_ada.contains(":s1."), "a subject ciphertext: {ct_ada}");
    let doc = t
        .encrypt_fields("pii", &json!({"name": "Ada"}), &["/name"], &ada, &[], &IndexOptions::new())
        .await
        .unwrap()
        .document;
    let sealed: Encrypted<String> = t.seal_with("pii", &"Ada Lovelace".to_string(), &ada).await.unwrap();
    assert_eq!(&t.decrypt("pii", &ct_ada, &Params::new()).await.unwrap()[..], b"ada's card");
    assert_eq!(t.open("pii", &sealed).await.unwrap(), "Ada Lovelace");
    let info = t.subject("pii", "customer-4711").await.unwrap().unwrap();
    assert_eq!(info["destroyed"], false, "{info:?}");
    assert_eq!(t.list_subjects("pii").await.unwrap().len(), 2);

    t.delete_subject("pii", "customer-4711").await.unwrap();
    t.delete_subject("pii", "customer-4711").await.unwrap(); // idempotent

    for e in [
        t.decrypt("pii", &ct_ada, &Params::new()).await.unwrap_err(),
        t.open("pii", &sealed).await.unwrap_err(),
        t.decrypt_fields("pii", &doc, &["/name"], &Params::new()).await.unwrap_err(),
    ] {
        assert_eq!(e.status(), Some(400), "{e}");
    }
    // Everyone else's data still decrypts.
    assert_eq!(&t.decrypt("pii", &ct_bob, &Params::new()).await.unwrap()[..], b"bob's card");
    assert_eq!(&t.decrypt("pii", &ct_none, &Params::new()).await.unwrap()[..], b"no subject");
    let info = t.subject("pii", "customer-4711").await.unwrap().unwrap();
    assert_eq!(info["destroyed"], true, "{info:?}");
    // A new key for the same subject opens nothing old.
    let again = t.encrypt("pii", b"new card", &ada).await.unwrap();
    assert_eq!(&t.decrypt("pii", &again, &Params::new()).await.unwrap()[..], b"new card");
    assert!(t.decrypt("pii", &ct_ada, &Params::new()).await.is_err());
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Card {
    number: String,
    cvv: u16,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct User {
    id: u64,
    name: String,
    email: Encrypted<String>,
    card: Encrypted<Card>,
    tags: Vec<Encrypted<Vec<String>>>,
}

#[tokio::test(flavor = "multi_thread")]
async fn encrypted_fields_in_a_struct_round_trip() {
    let (_store, _srv, _rc, client) = vault().await;
    let t = client.transit("transit");
    t.create_key("users", None).await.unwrap();
    let card = Card { number: "4111 1111 1111 1111".into(), cvv: 123 };
    let user = User {
        id: 7,
        name: "public name".into(),
        email: t.seal("users", &"ada@example.com".to_string()).await.unwrap(),
        card: t.seal("users", &card).await.unwrap(),
        tags: vec![t.seal("users", &vec!["vip".to_string()]).await.unwrap()],
    };

    // Stored as plain JSON with ciphertext strings.
    let stored = serde_json::to_string(&user).unwrap();
    let v: serde_json::Value = serde_json::from_str(&stored).unwrap();
    assert!(v["email"].as_str().unwrap().starts_with("vault:v1:"), "{stored}");
    assert!(v["card"].as_str().unwrap().starts_with("vault:v1:"), "{stored}");
    assert!(!stored.contains("ada@example.com") && !stored.contains("4111"), "{stored}");
    assert!(!format!("{user:?}").contains("4111"));

    let loaded: User = serde_json::from_str(&stored).unwrap();
    assert_eq!(loaded, user);
    assert_eq!(t.open("users", &loaded.email).await.unwrap(), "ada@example.com");
    assert_eq!(t.open("users", &loaded.card).await.unwrap(), card);
    assert_eq!(t.open("users", &loaded.tags[0]).await.unwrap(), vec!["vip".to_string()]);

    // A plaintext in place of a ciphertext is refused when loading.
    let tampered = stored.replace(v["email"].as_str().unwrap(), "ada@example.com");
    let e = serde_json::from_str::<User>(&tampered).unwrap_err();
    assert!(!e.to_string().contains("ada@example.com"), "{e}");

    // Opening as the wrong type is a decode error without the value.
    let wrong: Encrypted<u64> = Encrypted::from_ciphertext(loaded.email.ciphertext()).unwrap();
    let e = t.open("users", &wrong).await.unwrap_err();
    assert!(matches!(e, vault_client::Error::Decode { .. }), "{e:?}");
    assert!(!e.to_string().contains("ada@"), "{e}");
}
