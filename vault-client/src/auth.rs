//! Logging in (token, AppRole, Kubernetes, JWT, userpass + TOTP) and keeping
//! the token alive (background renewal, re-login when renewal is impossible).
