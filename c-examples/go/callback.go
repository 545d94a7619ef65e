package cimage

// This file holds only the exported callback: a file with //export may declare, not define, C
// functions in its preamble, so the trampoline that calls it lives in pull.go.

/*
#include <stdint.h>
#include <cimage.h>
*/
import "C"

import (
	"runtime/cgo"
	"unsafe"
)

// cimageGoProgress receives the pull's progress events on the goroutine that called Pull (the
// library runs callbacks on the calling thread). A panic must not unwind through the library's C
// frames: it is recovered here, the pull is cancelled (return 1), and Pull raises it again.
//
//export cimageGoProgress
func cimageGoProgress(handle C.uintptr_t, event *C.cimage_progress) (cancel C.int32_t) {
	state, ok := cgo.Handle(handle).Value().(*pullState)
	if !ok || state.panicked {
		return 1
	}
	defer func() {
		if r := recover(); r != nil {
			state.panicked, state.panicVal = true, r
			cancel = 1
		}
	}()
	state.progress(progressFromC(event))
	return 0
}

// progressFromC copies an event, whose memory is valid only during the callback. Fields after
// `message` are read only when the library's struct has them (struct_size).
func progressFromC(event *C.cimage_progress) Progress {
	p := Progress{
		Kind:    ProgressKind(event.kind),
		Digest:  goString(event.digest),
		Message: goString(event.message),
	}
	if uintptr(event.struct_size) >= unsafe.Offsetof(event.bytes_total)+unsafe.Sizeof(event.bytes_total) {
		p.BytesDone, p.BytesTotal = uint64(event.bytes_done), uint64(event.bytes_total)
	}
	return p
}
