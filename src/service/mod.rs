//! Use cases of the service.

pub mod chunk;
pub mod filter;
