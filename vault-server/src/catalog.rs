//! The built-in catalog: every mount type this server ships, secrets
//! engines and auth methods. The one place that names concrete engines;
//! the core sees them only through [`Catalog`] and [`Backend`](crate::logical::Backend).

use crate::auth::methods;
use crate::engines;
use crate::logical::kit::Catalog;

/// Everything built in.
pub fn builtin() -> Catalog {
    Catalog::default()
        .with_secrets("kv", engines::kv_factory)
        .with_secrets("generic", engines::kv_factory)
        .with_secrets("kv-v1", engines::kv_factory)
        .with_secrets("kv-v2", engines::kv_factory)
        .with_auth("approle", methods::approle_factory)
        .with_auth("userpass", methods::userpass_factory)
        .with_auth("jwt", methods::jwt_factory)
        .with_auth("oidc", methods::jwt_factory)
        .with_auth("kubernetes", methods::kubernetes_factory)
}
