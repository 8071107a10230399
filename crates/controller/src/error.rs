//! What a domain operation refused or could not do. Domain modules return [`Error`]; the admin
//! API turns it into a gRPC status in one place (`api::status`), so a feature never needs to
//! know about gRPC.

use crate::store::StoreError;

/// Why a change of a desired state was refused; shown to the caller as is.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct Refused(pub String);

/// A refusal or a failure, with the message the caller sees.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The request itself is wrong; the message names the field.
    #[error("{0}")]
    Invalid(String),
    /// What the request names does not exist.
    #[error("{0}")]
    NotFound(String),
    /// What the request would create exists already.
    #[error("{0}")]
    Exists(String),
    /// The request is fine but the state of things refuses it (an order not issued, a CA that
    /// said no).
    #[error("{0}")]
    Precondition(String),
    /// Something outside (Cloudflare, an ACME CA) cannot be reached; trying again may work.
    #[error("{0}")]
    Unavailable(String),
    /// A limit was reached.
    #[error("{0}")]
    Exhausted(String),
    /// What the controller holds is damaged.
    #[error("{0}")]
    Internal(String),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl Error {
    /// The same kind of error with its message rewritten (a step's context added).
    pub fn reworded(self, f: impl FnOnce(&str) -> String) -> Error {
        match self {
            Error::Invalid(m) => Error::Invalid(f(&m)),
            Error::NotFound(m) => Error::NotFound(f(&m)),
            Error::Exists(m) => Error::Exists(f(&m)),
            Error::Precondition(m) => Error::Precondition(f(&m)),
            Error::Unavailable(m) => Error::Unavailable(f(&m)),
            Error::Exhausted(m) => Error::Exhausted(f(&m)),
            Error::Internal(m) => Error::Internal(f(&m)),
            Error::Store(e) => Error::Unavailable(f(&e.to_string())),
        }
    }

    /// An invalid field, from a name type's refusal.
    pub fn invalid(e: impl std::fmt::Display) -> Error {
        Error::Invalid(e.to_string())
    }
}

impl From<Refused> for Error {
    fn from(e: Refused) -> Self {
        Error::Invalid(e.0)
    }
}

impl From<gatehouse_proto::names::NameError> for Error {
    fn from(e: gatehouse_proto::names::NameError) -> Self {
        Error::Invalid(e.to_string())
    }
}

/// The result of a domain operation.
pub type Result<T, E = Error> = std::result::Result<T, E>;
