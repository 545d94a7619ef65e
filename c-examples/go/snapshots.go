package cimage

/*
#include <cimage.h>
*/
import "C"

import (
	"runtime"
	"sync"
	"sync/atomic"
	"time"
)

// owner frees one C allocation once every Go value borrowing from it is closed: an image handle
// has one borrower, an image list as many as it has images. Go values, not the C side, count.
type owner struct {
	refs int32
	free func()
}

func newOwner(refs int, free func()) *owner {
	o := &owner{refs: int32(refs), free: free}
	if refs == 0 {
		free()
	}
	return o
}

func (o *owner) release() {
	if atomic.AddInt32(&o.refs, -1) == 0 {
		o.free()
	}
}

// borrow is the part common to Image, Layer and Container: the C pointer, the owner of its memory
// and closing at most once.
type borrow struct {
	owner *owner
	once  sync.Once
}

func (b *borrow) close(clear func()) {
	b.once.Do(func() {
		clear()
		b.owner.release()
	})
}

// parseTime parses an RFC 3339 time; the zero time when empty or malformed.
func parseTime(s string) time.Time {
	t, err := time.Parse(time.RFC3339Nano, s)
	if err != nil {
		return time.Time{}
	}
	return t
}

// ---------------------------------------------------------------------------------------------
// Image

// Image is an image record as it was when it was read: immutable, safe for concurrent reads.
// Close frees it (a finalizer does if you do not); methods of a closed Image return zero values.
type Image struct {
	ptr *C.cimage_image
	borrow
}

func newImage(ptr *C.cimage_image, o *owner) *Image {
	i := &Image{ptr: ptr, borrow: borrow{owner: o}}
	runtime.SetFinalizer(i, (*Image).Close)
	return i
}

// ownedImage wraps a handle the caller owns (from a lookup or a pull).
func ownedImage(ptr *C.cimage_image) *Image {
	return newImage(ptr, newOwner(1, func() { C.cimage_image_free(ptr) }))
}

// Close releases the image's C memory. It is safe to call more than once.
func (i *Image) Close() {
	i.close(func() { i.ptr = nil })
	runtime.SetFinalizer(i, nil)
}

// ID is the image ID: the hex of its config digest.
func (i *Image) ID() string {
	s := goString(C.cimage_image_id(i.ptr))
	runtime.KeepAlive(i)
	return s
}

// Digest is the manifest digest ("sha256:..."), or "".
func (i *Image) Digest() string {
	s := goString(C.cimage_image_digest(i.ptr))
	runtime.KeepAlive(i)
	return s
}

// Names are the image's names, such as "docker.io/library/alpine:latest" (never nil).
func (i *Image) Names() []string {
	n := int(C.cimage_image_names_len(i.ptr))
	names := make([]string, 0, n)
	for k := 0; k < n; k++ {
		names = append(names, goString(C.cimage_image_name(i.ptr, C.size_t(k))))
	}
	runtime.KeepAlive(i)
	return names
}

// Size is the uncompressed size of the image's layers in bytes, -1 when unknown.
func (i *Image) Size() int64 {
	s := int64(C.cimage_image_size(i.ptr))
	runtime.KeepAlive(i)
	return s
}

// Created is the creation time as the record has it (RFC 3339), or "".
func (i *Image) Created() string {
	s := goString(C.cimage_image_created(i.ptr))
	runtime.KeepAlive(i)
	return s
}

// CreatedTime is Created parsed; the zero time when unknown.
func (i *Image) CreatedTime() time.Time {
	return parseTime(i.Created())
}

// TopLayer is the ID of the image's top layer, or "" for an image without layers.
func (i *Image) TopLayer() string {
	s := goString(C.cimage_image_top_layer(i.ptr))
	runtime.KeepAlive(i)
	return s
}

// ---------------------------------------------------------------------------------------------
// Layer

// Layer is a layer record as it was when it was read. Close frees it (a finalizer does if you do
// not).
type Layer struct {
	ptr *C.cimage_layer
	borrow
}

func newLayer(ptr *C.cimage_layer, o *owner) *Layer {
	l := &Layer{ptr: ptr, borrow: borrow{owner: o}}
	runtime.SetFinalizer(l, (*Layer).Close)
	return l
}

// Close releases the layer's C memory. It is safe to call more than once.
func (l *Layer) Close() {
	l.close(func() { l.ptr = nil })
	runtime.SetFinalizer(l, nil)
}

// ID is the layer ID.
func (l *Layer) ID() string {
	s := goString(C.cimage_layer_id(l.ptr))
	runtime.KeepAlive(l)
	return s
}

// Parent is the parent layer's ID, or "" for a base layer.
func (l *Layer) Parent() string {
	s := goString(C.cimage_layer_parent(l.ptr))
	runtime.KeepAlive(l)
	return s
}

// DiffDigest is the digest of the uncompressed layer tar (the DiffID), or "" (containers' layers).
func (l *Layer) DiffDigest() string {
	s := goString(C.cimage_layer_diff_digest(l.ptr))
	runtime.KeepAlive(l)
	return s
}

// CompressedDigest is the digest of the blob as pulled, or "".
func (l *Layer) CompressedDigest() string {
	s := goString(C.cimage_layer_compressed_digest(l.ptr))
	runtime.KeepAlive(l)
	return s
}

// DiffSize is the size of the uncompressed layer tar, -1 when unknown.
func (l *Layer) DiffSize() int64 {
	s := int64(C.cimage_layer_diff_size(l.ptr))
	runtime.KeepAlive(l)
	return s
}

// CompressedSize is the size of the blob as pulled, 0 when unknown.
func (l *Layer) CompressedSize() int64 {
	s := int64(C.cimage_layer_compressed_size(l.ptr))
	runtime.KeepAlive(l)
	return s
}

// Created is the record's creation time (RFC 3339), or "".
func (l *Layer) Created() string {
	s := goString(C.cimage_layer_created(l.ptr))
	runtime.KeepAlive(l)
	return s
}

// ---------------------------------------------------------------------------------------------
// Container

// Container is a container record as it was when it was read. Close frees it (a finalizer does if
// you do not).
type Container struct {
	ptr *C.cimage_container
	borrow
}

func newContainer(ptr *C.cimage_container, o *owner) *Container {
	c := &Container{ptr: ptr, borrow: borrow{owner: o}}
	runtime.SetFinalizer(c, (*Container).Close)
	return c
}

func ownedContainer(ptr *C.cimage_container) *Container {
	return newContainer(ptr, newOwner(1, func() { C.cimage_container_free(ptr) }))
}

// Close releases the container's C memory. It is safe to call more than once.
func (c *Container) Close() {
	c.close(func() { c.ptr = nil })
	runtime.SetFinalizer(c, nil)
}

// ID is the container ID.
func (c *Container) ID() string {
	s := goString(C.cimage_container_id(c.ptr))
	runtime.KeepAlive(c)
	return s
}

// Names are the container's names (never nil).
func (c *Container) Names() []string {
	n := int(C.cimage_container_names_len(c.ptr))
	names := make([]string, 0, n)
	for k := 0; k < n; k++ {
		names = append(names, goString(C.cimage_container_name(c.ptr, C.size_t(k))))
	}
	runtime.KeepAlive(c)
	return names
}

// ImageID is the ID of the image the container was made from.
func (c *Container) ImageID() string {
	s := goString(C.cimage_container_image_id(c.ptr))
	runtime.KeepAlive(c)
	return s
}

// LayerID is the ID of the container's writable layer.
func (c *Container) LayerID() string {
	s := goString(C.cimage_container_layer_id(c.ptr))
	runtime.KeepAlive(c)
	return s
}

// MountPoint is where the container was mounted when the record was read, or "".
func (c *Container) MountPoint() string {
	s := goString(C.cimage_container_mount_point(c.ptr))
	runtime.KeepAlive(c)
	return s
}

// Created is the creation time (RFC 3339), or "".
func (c *Container) Created() string {
	s := goString(C.cimage_container_created(c.ptr))
	runtime.KeepAlive(c)
	return s
}
