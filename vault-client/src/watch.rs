//! `watch::<T>(path)`: a `tokio::sync::watch::Receiver<T>` fed by the
//! server's blocking reads, across server restarts and re-logins.
