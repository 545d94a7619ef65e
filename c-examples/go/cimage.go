// Package cimage is a Go binding of cimage, the C library that pulls container images into a
// containers/storage store (the one podman, skopeo and CRI-O use), creates containers from them
// and mounts them.
//
// A Store is opened once and is safe for concurrent use. Images, layers and containers are
// immutable snapshots of their records. Every value that holds a C handle has a Close method;
// a finalizer frees what was not closed, but closing explicitly frees it at a known time.
//
//	store, err := cimage.Open(cimage.StoreOptions{GraphRoot: "/var/lib/containers/storage"})
//	if err != nil { ... }
//	defer store.Close()
//	image, err := store.Pull(ctx, "docker://quay.io/libpod/alpine:latest", nil)
//	if errors.Is(err, cimage.ErrManifestUnknown) { ... }
//
// Errors are *Error values carrying the library's status, message, subject and errno; errors.Is
// matches them against the Err* sentinels (or the Status constants). Each call returns its own
// error, so no goroutine needs runtime.LockOSThread. Cancelling the context given to Pull cancels
// the pull.
//
// Building: see flags_default.go (CGO_CFLAGS/CGO_LDFLAGS for the build tree) and the
// cimage_pkgconfig build tag (an installed library found through pkg-config).
package cimage

/*
#include <stdlib.h>
#include <cimage.h>

// This package is written against the 0.1 API; 0.x minors may change it.
#if CIMAGE_VERSION_MAJOR != 0 || CIMAGE_VERSION_MINOR < 1
#error "this Go package needs the cimage 0.x header, 0.1 or newer"
#endif
*/
import "C"

import (
	"fmt"
	"strings"
)

// HeaderVersion is the version of the header this package was compiled against.
const HeaderVersion = C.CIMAGE_VERSION_STRING

// Version is the version of the library loaded at run time, e.g. "0.1.0".
func Version() string {
	return C.GoString(C.cimage_version())
}

// VersionNumber is the library's version as MAJOR*1000000 + MINOR*1000 + PATCH.
func VersionNumber() uint32 {
	return uint32(C.cimage_version_number())
}

// checkVersion refuses a library whose ABI differs from the header's: another major version, or
// on 0.x another minor (the SONAME libcimage.so.0.<minor> says the same; this catches a library
// swapped in under that name).
func checkVersion(header, library uint32) error {
	hMajor, hMinor := header/1000000, header/1000%1000
	lMajor, lMinor := library/1000000, library/1000%1000
	if hMajor != lMajor || (hMajor == 0 && hMinor != lMinor) {
		return fmt.Errorf("cimage: the loaded library is version %d.%d.%d, but this package was built "+
			"with the header of %d.%d.%d", lMajor, lMinor, library%1000, hMajor, hMinor, header%1000)
	}
	return nil
}

func init() {
	// A mismatched library would be called with the wrong ABI: stop before the first call.
	if err := checkVersion(uint32(C.CIMAGE_VERSION_NUMBER), VersionNumber()); err != nil {
		panic(err)
	}
}

// cString copies s into C memory, to be freed with C.free. A NUL byte inside s would silently cut
// the string in C, so it is an INVALID_ARGUMENT error instead.
func cString(what, s string) (*C.char, error) {
	if strings.IndexByte(s, 0) >= 0 {
		return nil, &Error{Status: StatusInvalidArgument, Message: what + " contains a NUL byte", Subject: s}
	}
	return C.CString(s), nil
}

// goString copies a borrowed C string; NULL becomes "".
func goString(s *C.char) string {
	if s == nil {
		return ""
	}
	return C.GoString(s)
}
