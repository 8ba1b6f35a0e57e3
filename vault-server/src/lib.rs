//! stub
pub mod crypto;
pub mod storage;
pub mod barrier;
