//! [`StoreError`], the one error type of the storage layer, and its [`StoreResult`] alias.

use std::path::PathBuf;

use super::rows::CollectionId;

/// Everything that can go wrong in [`Store`](super::Store).
///
/// The variants separate what a caller got wrong ([`Invalid`](Self::Invalid),
/// [`DimensionMismatch`](Self::DimensionMismatch), [`Conflict`](Self::Conflict),
/// [`CollectionNotFound`](Self::CollectionNotFound)) from what is wrong with the database
/// ([`Corrupt`](Self::Corrupt), [`Migrate`](Self::Migrate)) and from failures of the database
/// itself or the file system ([`Database`](Self::Database), [`Io`](Self::Io)).
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The caller passed something the store refuses: a database URL it cannot use, an empty
    /// or repeated document id, offsets outside the text, a non-finite vector component...
    #[error("{0}")]
    Invalid(String),

    /// A vector's length differs from the dimension of its collection (or from the other
    /// vectors of the same write).
    #[error("vector has dimension {got}, expected {expected}")]
    DimensionMismatch {
        /// The collection's dimension.
        expected: usize,
        /// The length that was passed.
        got: usize,
    },

    /// The operation needs a collection that does not exist (or was deleted meanwhile).
    #[error("collection {0} does not exist")]
    CollectionNotFound(CollectionId),

    /// The write contradicts what is stored, e.g. fixing a dimension that is already fixed
    /// to another value.
    #[error("{0}")]
    Conflict(String),

    /// Data read back from the database is malformed: a vector blob of the wrong length,
    /// metadata that is not a JSON object, a negative id... The database was modified
    /// outside the service or damaged.
    #[error("corrupt data in the database: {0}")]
    Corrupt(String),

    /// A directory for the database file could not be created.
    #[error("cannot create directory {}: {source}", path.display())]
    Io {
        /// The directory.
        path: PathBuf,
        /// What the operating system said.
        #[source]
        source: std::io::Error,
    },

    /// The embedded schema migrations could not be applied, for example because the database
    /// was written by a newer version of the service.
    #[error("database migration failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),

    /// Any other failure reported by SQLite or the connection pool.
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
}

/// Result of every fallible store operation.
pub type StoreResult<T> = Result<T, StoreError>;
