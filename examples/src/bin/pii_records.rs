//! Example 2: personal data encrypted field by field, found again by a blind
//! index, and one person erased by destroying their key (crypto-shredding).
//!
//! A user table keeps `email`, `name` and `card` encrypted by the vault's
//! transit engine under a key of their own per user (`subject`), and beside
//! them a blind index of the e-mail address: a keyed hash the database can
//! compare for equality without ever seeing an address. Erasing a user
//! destroys their subject key: every copy of their data, backups included,
//! becomes unreadable at once, while the other users' rows are untouched.
//!
//! The "database" here is a vector; a real service stores the same JSON
//! (`SELECT ... WHERE email_index = $1`). Needs `VAULT_ADDR` and a token
//! (or AppRole files, see `vault_examples::connect`) allowed to use
//! `transit/*/users` and `transit/subjects/users/*`. Prints one JSON line per
//! step; exits non-zero if any step does not behave as described.

use serde_json::{Value, json};
use vault_client::transit::{IndexOptions, Normalize, Params};

/// The transit key.
const KEY: &str = "users";
/// The encrypted fields (JSON pointers).
const FIELDS: [&str; 3] = ["/email", "/name", "/card"];

/// A stored row: the id and index in the clear, the document with its
/// personal fields encrypted.
struct Row {
    id: u64,
    email_index: String,
    document: Value,
}

fn index_options() -> IndexOptions {
    // "Ada@Example.com " and "ada@example.com" are the same address.
    IndexOptions::new().normalize(Normalize::Trim).normalize(Normalize::Lowercase)
}

fn subject(id: u64) -> Params {
    Params::new().subject(format!("user-{id}"))
}

#[allow(clippy::print_stdout)] // the program's output is its report
fn report(v: Value) {
    println!("{v}");
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    let (client, _renewal) = vault_examples::connect().await?;
    let transit = client.transit("transit");
    transit.create_key(KEY, None).await?; // AES-256-GCM; a no-op when it exists

    let users = [
        json!({"id": 1, "email": "ada@example.com", "name": "Ada Lovelace", "card": "4111 1111 1111 1111", "plan": "pro"}),
        json!({"id": 2, "email": "alan@example.com", "name": "Alan Turing", "card": "5500 0000 0000 0004", "plan": "free"}),
        json!({"id": 3, "email": "grace@example.com", "name": "Grace Hopper", "card": "3400 0000 0000 009", "plan": "pro"}),
    ];

    // Store: encrypt the personal fields under the user's own key; index the e-mail.
    let mut table = Vec::new();
    for u in &users {
        let id = u["id"].as_u64().unwrap_or_default();
        let sealed = transit.encrypt_fields(KEY, u, &FIELDS, &subject(id), &["/email"], &index_options()).await?;
        let email_index = sealed.indexes.get("/email").cloned().unwrap_or_default();
        anyhow::ensure!(!email_index.is_empty(), "no blind index returned for user {id}");
        table.push(Row { id, email_index, document: sealed.document });
    }
    let stored = serde_json::to_string(&table.iter().map(|r| &r.document).collect::<Vec<_>>())?;
    let leaked = users
        .iter()
        .any(|u| FIELDS.iter().any(|f| u.pointer(f).and_then(Value::as_str).is_some_and(|p| stored.contains(p))));
    anyhow::ensure!(!leaked, "a personal field is stored in the clear");
    report(json!({"step": "stored", "rows": table.len(), "plaintext_in_rows": leaked}));

    // Find a user by e-mail, as typed in a login form.
    let wanted = transit.blind_index(KEY, b"  Ada@Example.COM ", "/email", &index_options()).await?;
    let row = table.iter().find(|r| r.email_index == wanted).ok_or_else(|| anyhow::anyhow!("lookup found nothing"))?;
    let opened = transit.decrypt_fields(KEY, &row.document, &FIELDS, &subject(row.id)).await?;
    report(json!({"step": "lookup", "found_id": row.id, "name": opened["name"]}));

    // Erase user 2: destroy their key. Their row is now noise, everywhere.
    transit.delete_subject(KEY, "user-2").await?;
    let mut outcome = serde_json::Map::new();
    for r in &table {
        let readable = transit.decrypt_fields(KEY, &r.document, &FIELDS, &subject(r.id)).await.is_ok();
        outcome.insert(format!("user-{}", r.id), readable.into());
    }
    let expected = json!({"user-1": true, "user-2": false, "user-3": true});
    report(json!({"step": "erased", "user": 2, "readable": outcome}));
    anyhow::ensure!(Value::Object(outcome) == expected, "erasure did not behave as expected");
    Ok(())
}
