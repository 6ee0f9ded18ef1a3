//! Use cases of the service.

pub mod filter;
