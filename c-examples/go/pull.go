package cimage

/*
#include <stdint.h>
#include <stdlib.h>
#include <cimage.h>

// Defined in Go (callback.go, //export cimageGoProgress).
extern int32_t cimageGoProgress(uintptr_t handle, cimage_progress *event);

// The library calls this with the user_data given to cimage_pull_options_set_progress, which is a
// runtime/cgo.Handle: an integer, so no Go pointer is ever kept by C.
static int32_t cimage_go_progress_trampoline(void *user_data, const cimage_progress *event) {
	return cimageGoProgress((uintptr_t)user_data, (cimage_progress *)event);
}

static cimage_status cimage_go_set_progress(cimage_pull_options *opts, uintptr_t handle, cimage_error **err) {
	return cimage_pull_options_set_progress(opts, cimage_go_progress_trampoline, (void *)handle, err);
}
*/
import "C"

import (
	"context"
	"runtime/cgo"
	"sync"
	"unsafe"
)

// PullPolicy says when Pull goes to the registry.
type PullPolicy int32

// The pull policies.
const (
	// PullAlways asks the registry and fetches what the store lacks (the default).
	PullAlways PullPolicy = C.CIMAGE_PULL_POLICY_ALWAYS
	// PullMissing uses no network when the store has an image of that name.
	PullMissing PullPolicy = C.CIMAGE_PULL_POLICY_MISSING
	// PullNever never uses the network: ErrNotFound when the image is not in the store.
	PullNever PullPolicy = C.CIMAGE_PULL_POLICY_NEVER
)

// ProgressKind is what a Progress event reports.
type ProgressKind int32

// The kinds of progress events (CIMAGE_PROGRESS_*). Treat other values as informational.
const (
	ProgressResolving   ProgressKind = C.CIMAGE_PROGRESS_RESOLVING   // Message = reference
	ProgressDownloading ProgressKind = C.CIMAGE_PROGRESS_DOWNLOADING // Digest, BytesDone, BytesTotal
	ProgressVerifying   ProgressKind = C.CIMAGE_PROGRESS_VERIFYING   // Digest
	ProgressExtracting  ProgressKind = C.CIMAGE_PROGRESS_EXTRACTING  // Digest
	ProgressDone        ProgressKind = C.CIMAGE_PROGRESS_DONE        // a layer is in the store
	ProgressSkipped     ProgressKind = C.CIMAGE_PROGRESS_SKIPPED     // a layer was already there
	ProgressRetrying    ProgressKind = C.CIMAGE_PROGRESS_RETRYING    // Message says why
	ProgressFailed      ProgressKind = C.CIMAGE_PROGRESS_FAILED      // Message says why
	ProgressConfig      ProgressKind = C.CIMAGE_PROGRESS_CONFIG      // the config blob, Digest
	ProgressCommitting  ProgressKind = C.CIMAGE_PROGRESS_COMMITTING  // Message = reference
)

var progressKindNames = map[ProgressKind]string{
	ProgressResolving: "resolving", ProgressDownloading: "downloading", ProgressVerifying: "verifying",
	ProgressExtracting: "extracting", ProgressDone: "done", ProgressSkipped: "skipped",
	ProgressRetrying: "retrying", ProgressFailed: "failed", ProgressConfig: "config",
	ProgressCommitting: "committing",
}

func (k ProgressKind) String() string {
	if name, ok := progressKindNames[k]; ok {
		return name
	}
	return "unknown"
}

// Progress is one event of a pull.
type Progress struct {
	Kind ProgressKind
	// Digest is the blob's digest ("sha256:..."), or "".
	Digest string
	// Message is a human-readable detail, or "".
	Message string
	// BytesDone and BytesTotal count a download (BytesTotal 0 when unknown).
	BytesDone, BytesTotal uint64
}

// PullOptions are the optional settings of a pull. The zero value verifies TLS, picks the host's
// platform and uses PullAlways.
type PullOptions struct {
	// SkipTLSVerify skips TLS verification; a plain-HTTP registry (a local test registry) is then
	// reached over HTTP.
	SkipTLSVerify bool
	// Platform picks an image from a multi-platform index, "os/arch[/variant]" such as
	// "linux/arm64/v8" ("" for the host's).
	Platform string
	// Policy says when to use the network.
	Policy PullPolicy
	// Progress, when set, is called with progress events on the goroutine that called Pull, one at
	// a time, never after Pull returned. It may call other methods of the store (not Close). To
	// stop the pull, cancel its context. A panic in it cancels the pull and is raised again by Pull.
	Progress func(Progress)
}

// pullState is what the progress callback reaches through its cgo.Handle.
type pullState struct {
	progress func(Progress)
	panicked bool
	panicVal interface{}
}

// Pull pulls an image into the store and returns it: "docker://host/repo:tag", "oci:DIR[:TAG]" or
// a bare name ("alpine" is docker.io/library/alpine:latest). opts may be nil.
//
// Cancelling ctx (or its deadline passing) stops the pull: it returns an error matching both
// ErrCancelled and ctx.Err(), and the store is left as it was.
func (s *Store) Pull(ctx context.Context, reference string, opts *PullOptions) (*Image, error) {
	if opts == nil {
		opts = &PullOptions{}
	}
	if err := ctx.Err(); err != nil {
		return nil, &Error{Status: StatusCancelled, Message: "pull not started: " + err.Error(), Subject: reference, cause: err}
	}
	ptr, err := s.acquire()
	if err != nil {
		return nil, err
	}
	defer s.release()

	copts := C.cimage_pull_options_new()
	defer C.cimage_pull_options_free(copts)
	if err := configurePull(copts, opts); err != nil {
		return nil, err
	}
	cref, err := cString("reference", reference)
	if err != nil {
		return nil, err
	}
	defer C.free(unsafe.Pointer(cref))

	state := &pullState{progress: opts.Progress}
	if opts.Progress != nil {
		// The handle is valid for this call only: the options are freed before Pull returns.
		handle := cgo.NewHandle(state)
		defer handle.Delete()
		var cerr *C.cimage_error
		if err := newError(C.cimage_go_set_progress(copts, C.uintptr_t(handle), &cerr), cerr); err != nil {
			return nil, err
		}
	}

	// The context is watched by a goroutine that cancels the token; the token is safe to cancel
	// from any thread. It is freed only after that goroutine has finished.
	token := C.cimage_cancel_token_new()
	defer C.cimage_cancel_token_free(token)
	var cerr *C.cimage_error
	if err := newError(C.cimage_pull_options_set_cancel_token(copts, token, &cerr), cerr); err != nil {
		return nil, err
	}
	finished := make(chan struct{})
	var watcher sync.WaitGroup
	if done := ctx.Done(); done != nil {
		watcher.Add(1)
		go func() {
			defer watcher.Done()
			select {
			case <-done:
				C.cimage_cancel_token_cancel(token)
			case <-finished:
			}
		}()
	}

	var out *C.cimage_image
	status := C.cimage_store_pull(ptr, cref, copts, &out, &cerr)
	close(finished)
	watcher.Wait()

	if state.panicked {
		C.cimage_image_free(out)
		C.cimage_error_free(cerr)
		panic(state.panicVal)
	}
	if err := newError(status, cerr); err != nil {
		if e, ok := err.(*Error); ok && e.Status == StatusCancelled {
			e.cause = ctx.Err()
		}
		return nil, err
	}
	return ownedImage(out), nil
}

func configurePull(copts *C.cimage_pull_options, opts *PullOptions) error {
	var cerr *C.cimage_error
	if err := newError(C.cimage_pull_options_set_tls_verify(copts, C.bool(!opts.SkipTLSVerify), &cerr), cerr); err != nil {
		return err
	}
	if err := newError(C.cimage_pull_options_set_policy(copts, C.int32_t(opts.Policy), &cerr), cerr); err != nil {
		return err
	}
	if opts.Platform != "" {
		cplatform, err := cString("platform", opts.Platform)
		if err != nil {
			return err
		}
		defer C.free(unsafe.Pointer(cplatform))
		if err := newError(C.cimage_pull_options_set_platform(copts, cplatform, &cerr), cerr); err != nil {
			return err
		}
	}
	return nil
}
