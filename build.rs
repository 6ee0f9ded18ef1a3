//! Build script: makes cargo rebuild the crate when a file is added to `migrations/`, so that
//! `sqlx::migrate!` (which embeds the directory at compile time) never ships a stale set.

fn main() {
    println!("cargo:rerun-if-changed=migrations");
}
