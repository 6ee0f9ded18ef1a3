//! Subcommand implementations. Each file owns one subcommand; anyhow is used only here.

pub(crate) mod bench_ann;
pub(crate) mod bench_embed;
pub(crate) mod bench_rerank;
pub(crate) mod bench_retrieval;
pub(crate) mod embed;
pub(crate) mod healthcheck;
pub(crate) mod import;
pub(crate) mod model;
pub(crate) mod serve;
