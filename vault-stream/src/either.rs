//! One type for "the stream being encrypted or decrypted", for callers that
//! move bytes the same way in both directions (the server's endpoints, the
//! client's local mode).

use crate::{Decryptor, Encryptor, StreamError};

/// An [`Encryptor`] or a [`Decryptor`], driven alike.
#[derive(Debug)]
pub enum Cipher {
    /// Writing a stream.
    Encrypt(Encryptor),
    /// Reading a stream.
    Decrypt(Decryptor),
}

impl Cipher {
    /// [`Encryptor::push`] or [`Decryptor::push`].
    pub fn push(&mut self, input: &[u8], out: &mut Vec<u8>) -> Result<(), StreamError> {
        match self {
            Cipher::Encrypt(e) => e.push(input, out),
            Cipher::Decrypt(d) => d.push(input, out),
        }
    }

    /// [`Encryptor::finish`] or [`Decryptor::finish`].
    pub fn finish(self, out: &mut Vec<u8>) -> Result<(), StreamError> {
        match self {
            Cipher::Encrypt(e) => e.finish(out),
            Cipher::Decrypt(d) => d.finish(out),
        }
    }
}
