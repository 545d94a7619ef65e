package cimage

/*
#include <cimage.h>
*/
import "C"

import (
	"errors"
	"syscall"
)

// Status is a cimage_status: the outcome of a library call. The values are the library's and never
// change meaning; treat values this package does not name as a generic failure.
//
// A Status is also an error, so errors.Is(err, cimage.StatusNotFound) works as well as
// errors.Is(err, cimage.ErrNotFound).
type Status int32

// The library's statuses (CIMAGE_STATUS_* in cimage.h).
const (
	StatusOK              Status = C.CIMAGE_STATUS_OK
	StatusNullArgument    Status = C.CIMAGE_STATUS_NULL_ARGUMENT
	StatusInvalidArgument Status = C.CIMAGE_STATUS_INVALID_ARGUMENT
	StatusNotFound        Status = C.CIMAGE_STATUS_NOT_FOUND
	StatusAlreadyExists   Status = C.CIMAGE_STATUS_ALREADY_EXISTS
	StatusInUse           Status = C.CIMAGE_STATUS_IN_USE
	StatusReadOnly        Status = C.CIMAGE_STATUS_READ_ONLY
	StatusLocked          Status = C.CIMAGE_STATUS_LOCKED
	StatusPermission      Status = C.CIMAGE_STATUS_PERMISSION_DENIED
	StatusNoSpace         Status = C.CIMAGE_STATUS_NO_SPACE
	StatusIO              Status = C.CIMAGE_STATUS_IO
	StatusNetwork         Status = C.CIMAGE_STATUS_NETWORK
	StatusTimeout         Status = C.CIMAGE_STATUS_TIMEOUT
	StatusAuthRequired    Status = C.CIMAGE_STATUS_AUTH_REQUIRED
	StatusAuthFailed      Status = C.CIMAGE_STATUS_AUTH_FAILED
	StatusRegistry        Status = C.CIMAGE_STATUS_REGISTRY
	StatusManifestUnknown Status = C.CIMAGE_STATUS_MANIFEST_UNKNOWN
	StatusDigestMismatch  Status = C.CIMAGE_STATUS_DIGEST_MISMATCH
	StatusUnsafeArchive   Status = C.CIMAGE_STATUS_UNSAFE_ARCHIVE
	StatusUnsupported     Status = C.CIMAGE_STATUS_UNSUPPORTED
	StatusPolicyRejected  Status = C.CIMAGE_STATUS_POLICY_REJECTED
	StatusConfig          Status = C.CIMAGE_STATUS_CONFIG
	StatusCancelled       Status = C.CIMAGE_STATUS_CANCELLED
	StatusVersionMismatch Status = C.CIMAGE_STATUS_VERSION_MISMATCH
	StatusInternal        Status = C.CIMAGE_STATUS_INTERNAL
	StatusPanic           Status = C.CIMAGE_STATUS_PANIC
)

// Sentinels for errors.Is: errors.Is(err, cimage.ErrNotFound) is true for every error whose
// status is NOT_FOUND.
var (
	ErrNullArgument    error = StatusNullArgument
	ErrInvalidArgument error = StatusInvalidArgument
	ErrNotFound        error = StatusNotFound
	ErrAlreadyExists   error = StatusAlreadyExists
	ErrInUse           error = StatusInUse
	ErrReadOnly        error = StatusReadOnly
	ErrLocked          error = StatusLocked
	ErrPermission      error = StatusPermission
	ErrNoSpace         error = StatusNoSpace
	ErrIO              error = StatusIO
	ErrNetwork         error = StatusNetwork
	ErrTimeout         error = StatusTimeout
	ErrAuthRequired    error = StatusAuthRequired
	ErrAuthFailed      error = StatusAuthFailed
	ErrRegistry        error = StatusRegistry
	ErrManifestUnknown error = StatusManifestUnknown
	ErrDigestMismatch  error = StatusDigestMismatch
	ErrUnsafeArchive   error = StatusUnsafeArchive
	ErrUnsupported     error = StatusUnsupported
	ErrPolicyRejected  error = StatusPolicyRejected
	ErrConfig          error = StatusConfig
	ErrCancelled       error = StatusCancelled
	ErrVersionMismatch error = StatusVersionMismatch
	ErrInternal        error = StatusInternal
	ErrPanic           error = StatusPanic
)

// ErrClosed is returned by methods of a Store that was closed.
var ErrClosed = errors.New("cimage: the store is closed")

// String is the status's stable name, such as "NOT_FOUND" ("UNKNOWN" for a value the loaded
// library does not know).
func (s Status) String() string {
	return C.GoString(C.cimage_status_name(C.int32_t(s)))
}

// Error makes a Status usable as a sentinel error.
func (s Status) Error() string {
	return "cimage: " + s.String()
}

// Error is a failed library call: its status plus what the library said about it.
type Error struct {
	Status Status
	// Message is the whole cause chain ("pulling X: fetching layer Y: ...").
	Message string
	// Subject is the reference, ID or path the error concerns, or "".
	Subject string
	// Errno is the errno of the failing system call, or 0.
	Errno syscall.Errno
	// HTTPStatus is the HTTP status of the failing registry request, or 0.
	HTTPStatus int

	// cause is what made a cancelled call stop (the context's error), returned by Unwrap.
	cause error
}

func (e *Error) Error() string {
	if e.Message == "" {
		return e.Status.Error()
	}
	return "cimage: " + e.Status.String() + ": " + e.Message
}

// Is matches a Status (and so the Err* sentinels) by value.
func (e *Error) Is(target error) bool {
	s, ok := target.(Status)
	return ok && s == e.Status
}

// Unwrap returns the context's error for a pull its context cancelled (so errors.Is(err,
// context.Canceled) holds), else the errno when there is one (so errors.Is(err, fs.ErrNotExist)
// works), else nil.
func (e *Error) Unwrap() error {
	if e.cause != nil {
		return e.cause
	}
	if e.Errno != 0 {
		return e.Errno
	}
	return nil
}

// newError turns a failed call's status and error object into an *Error and frees the object.
// It returns nil for OK.
func newError(status C.cimage_status, cerr *C.cimage_error) error {
	if Status(status) == StatusOK {
		C.cimage_error_free(cerr) // never set on success; harmless if it were
		return nil
	}
	e := &Error{Status: Status(status)}
	if cerr != nil {
		e.Message = goString(C.cimage_error_message(cerr))
		e.Subject = goString(C.cimage_error_subject(cerr))
		e.Errno = syscall.Errno(C.cimage_error_os_errno(cerr))
		e.HTTPStatus = int(C.cimage_error_http_status(cerr))
		C.cimage_error_free(cerr)
	}
	return e
}
