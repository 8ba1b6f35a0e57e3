//! stub
pub mod crypto;
pub mod storage;
