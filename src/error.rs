//! The library's one error type: a stable status code plus a readable message.
//!
//! `Status` is the C ABI's `cimage_status` (cbindgen renames it). Codes are never
//! renumbered; a retired code stays here as a comment.

use std::fmt;
use std::io;

/// Result of every fallible cimage call. 0 is success; callers must treat unknown
/// codes as a generic failure.
#[repr(i32)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Status {
    /// Success.
    Ok = 0,
    /// A required pointer argument was NULL.
    NullArgument = 1,
    /// An argument had a wrong value (malformed reference, unknown driver, bad option ...).
    InvalidArgument = 2,
    /// No image, layer, container or file of that name or ID.
    NotFound = 3,
    /// A record with that ID or name already exists.
    AlreadyExists = 4,
    /// The object is in use (mounted, or used by a container or image).
    InUse = 5,
    /// The store or file system is read-only.
    ReadOnly = 6,
    /// A lock could not be taken.
    Locked = 7,
    /// The operating system refused (EACCES/EPERM), or root is needed.
    PermissionDenied = 8,
    /// The file system is full.
    NoSpace = 9,
    /// Another I/O error; see the errno.
    Io = 10,
    /// The network failed (connection refused, reset, DNS, TLS).
    Network = 11,
    /// An operation took longer than allowed.
    Timeout = 12,
    /// The registry wants credentials and none were given.
    AuthRequired = 13,
    /// The registry refused the credentials given.
    AuthFailed = 14,
    /// The registry answered with an error; see the HTTP status and message.
    Registry = 15,
    /// The registry or layout has no manifest for that reference.
    ManifestUnknown = 16,
    /// Content did not match its digest or size.
    DigestMismatch = 17,
    /// A layer tried to write outside its directory, or is otherwise malformed.
    UnsafeArchive = 18,
    /// A feature that this machine or this version does not support.
    Unsupported = 19,
    /// The signature policy refused the image.
    PolicyRejected = 20,
    /// A configuration file is malformed or contradictory.
    Config = 21,
    /// The caller cancelled the operation.
    Cancelled = 22,
    /// The header and the library do not match.
    VersionMismatch = 23,
    /// A bug or an inconsistent store.
    Internal = 24,
    /// A panic inside the library was caught at the boundary.
    Panic = 25,
}

impl Status {
    /// The stable name printed by tools, e.g. `NOT_FOUND`.
    pub fn name(self) -> &'static str {
        match self {
            Status::Ok => "OK",
            Status::NullArgument => "NULL_ARGUMENT",
            Status::InvalidArgument => "INVALID_ARGUMENT",
            Status::NotFound => "NOT_FOUND",
            Status::AlreadyExists => "ALREADY_EXISTS",
            Status::InUse => "IN_USE",
            Status::ReadOnly => "READ_ONLY",
            Status::Locked => "LOCKED",
            Status::PermissionDenied => "PERMISSION_DENIED",
            Status::NoSpace => "NO_SPACE",
            Status::Io => "IO",
            Status::Network => "NETWORK",
            Status::Timeout => "TIMEOUT",
            Status::AuthRequired => "AUTH_REQUIRED",
            Status::AuthFailed => "AUTH_FAILED",
            Status::Registry => "REGISTRY",
            Status::ManifestUnknown => "MANIFEST_UNKNOWN",
            Status::DigestMismatch => "DIGEST_MISMATCH",
            Status::UnsafeArchive => "UNSAFE_ARCHIVE",
            Status::Unsupported => "UNSUPPORTED",
            Status::PolicyRejected => "POLICY_REJECTED",
            Status::Config => "CONFIG",
            Status::Cancelled => "CANCELLED",
            Status::VersionMismatch => "VERSION_MISMATCH",
            Status::Internal => "INTERNAL",
            Status::Panic => "PANIC",
        }
    }
}

/// An error: status, message (the whole cause chain), and optional detail.
#[derive(Debug, Clone)]
pub struct Error {
    pub status: Status,
    pub message: String,
    /// errno of the failing system call, 0 when not applicable.
    pub os_errno: i32,
    /// HTTP status of the failing request, 0 when not applicable.
    pub http_status: u16,
    /// The reference, ID or path the error concerns.
    pub subject: Option<String>,
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    pub fn new(status: Status, message: impl Into<String>) -> Error {
        Error {
            status,
            message: message.into(),
            os_errno: 0,
            http_status: 0,
            subject: None,
        }
    }
    pub fn with_subject(mut self, subject: impl Into<String>) -> Error {
        self.subject = Some(subject.into());
        self
    }
    pub fn with_http_status(mut self, code: u16) -> Error {
        self.http_status = code;
        self
    }
    /// Prefix the message with what was being done: "creating layer: <cause>".
    pub fn context(mut self, what: impl fmt::Display) -> Error {
        self.message = format!("{what}: {}", self.message);
        self
    }
    /// An I/O error with the path it concerns.
    pub fn io(err: io::Error, what: impl fmt::Display) -> Error {
        Error::from(err).context(what)
    }
    pub fn invalid(message: impl Into<String>) -> Error {
        Error::new(Status::InvalidArgument, message)
    }
    pub fn not_found(message: impl Into<String>) -> Error {
        Error::new(Status::NotFound, message)
    }
    pub fn internal(message: impl Into<String>) -> Error {
        Error::new(Status::Internal, message)
    }
    pub fn unsafe_archive(message: impl Into<String>) -> Error {
        Error::new(Status::UnsafeArchive, message)
    }
    pub fn cancelled() -> Error {
        Error::new(Status::Cancelled, "operation cancelled")
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Error {}

/// Maps an errno to the status a caller can act on.
pub fn status_for_errno(errno: i32) -> Status {
    match errno {
        libc::ENOSPC | libc::EDQUOT => Status::NoSpace,
        libc::EACCES | libc::EPERM => Status::PermissionDenied,
        libc::EROFS => Status::ReadOnly,
        libc::ENOENT => Status::NotFound,
        libc::EBUSY => Status::InUse,
        libc::ETIMEDOUT => Status::Timeout,
        libc::ECONNREFUSED | libc::ECONNRESET | libc::EHOSTUNREACH | libc::ENETUNREACH => {
            Status::Network
        }
        _ => Status::Io,
    }
}

impl From<io::Error> for Error {
    fn from(err: io::Error) -> Error {
        // An io::Error may carry one of ours (readers in the pull pipeline wrap cimage
        // errors such as DIGEST_MISMATCH or CANCELLED into io::Error).
        if err.get_ref().map(|e| e.is::<Error>()).unwrap_or(false) {
            let inner = err.into_inner().unwrap();
            return *inner.downcast::<Error>().unwrap();
        }
        let errno = err.raw_os_error().unwrap_or(0);
        let status = if errno != 0 {
            status_for_errno(errno)
        } else {
            Status::Io
        };
        Error {
            status,
            message: err.to_string(),
            os_errno: errno,
            http_status: 0,
            subject: None,
        }
    }
}

impl From<nix::Error> for Error {
    fn from(err: nix::Error) -> Error {
        Error::from(io::Error::from_raw_os_error(err as i32))
    }
}

impl From<Error> for io::Error {
    fn from(err: Error) -> io::Error {
        io::Error::other(err)
    }
}

/// `.ctx("doing X")` on any Result whose error converts into ours.
pub trait ResultExt<T> {
    fn ctx(self, what: impl fmt::Display) -> Result<T>;
}

impl<T, E: Into<Error>> ResultExt<T> for std::result::Result<T, E> {
    fn ctx(self, what: impl fmt::Display) -> Result<T> {
        self.map_err(|e| e.into().context(what))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn io_errors_map_to_actionable_statuses() {
        let e: Error = io::Error::from_raw_os_error(libc::ENOSPC).into();
        assert_eq!(e.status, Status::NoSpace);
        assert_eq!(e.os_errno, libc::ENOSPC);
        let e: Error = io::Error::from_raw_os_error(libc::EACCES).into();
        assert_eq!(e.status, Status::PermissionDenied);
    }

    #[test]
    fn our_error_survives_a_trip_through_io_error() {
        let inner = Error::new(Status::DigestMismatch, "bad digest").with_subject("sha256:00");
        let io_err: io::Error = inner.into();
        let back: Error = io_err.into();
        assert_eq!(back.status, Status::DigestMismatch);
        assert_eq!(back.subject.as_deref(), Some("sha256:00"));
    }

    #[test]
    fn context_prefixes_the_message() {
        let e = Error::new(Status::Io, "boom").context("writing layers.json");
        assert_eq!(e.message, "writing layers.json: boom");
    }
}
