//go:build cimage_pkgconfig

package cimage

// With `-tags cimage_pkgconfig` the compiler and linker flags come from the installed cimage.pc.

// #cgo pkg-config: cimage
import "C"
