//! Transit helpers: encrypt/decrypt (single and batch), document fields,
//! an `Encrypted<T>` serde wrapper, blind indexes and subject keys.
