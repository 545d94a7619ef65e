//go:build !cimage_pkgconfig

package cimage

// By default the package links -lcimage and includes <cimage.h> from the compiler's search path:
// that works for a library installed under /usr or /usr/local, and for the build tree with
//
//	CGO_CFLAGS="-I$REPO/include"
//	CGO_LDFLAGS="-L$REPO/target/debug -Wl,-rpath,$REPO/target/debug"
//
// Build with `-tags cimage_pkgconfig` to take the flags from `pkg-config cimage` instead (any
// prefix; set PKG_CONFIG_PATH for a non-standard one).

// #cgo LDFLAGS: -lcimage
import "C"
