//! Authentication and authorization: who is calling, and may they do this.
//!
//! [`Authorized`] is the capability every backend call requires. Only
//! [`acl::authorize`] (after a policy check) and [`Authorized::unauthenticated`]
//! (for paths a backend declares public, such as login) construct it.

pub mod acl;
pub mod token;

use std::sync::Arc;

use crate::barrier::Unsealed;
pub use token::{TokenEntry, TokenStore};

/// Proof that the request passed the seal check and the policy check.
#[derive(Debug, Clone)]
pub struct Authorized {
    unsealed: Unsealed,
    token: Option<Arc<TokenEntry>>,
    _private: (),
}

impl Authorized {
    /// The unsealed barrier capability, for storage access.
    pub fn unsealed(&self) -> &Unsealed {
        &self.unsealed
    }

    /// The caller's token (None on unauthenticated paths such as login).
    pub fn token(&self) -> Option<&TokenEntry> {
        self.token.as_deref()
    }

    /// For paths the backend itself declares unauthenticated (login).
    pub(crate) fn unauthenticated(unsealed: Unsealed) -> Self {
        Self { unsealed, token: None, _private: () }
    }
}
