package cimage

// These tests run against a live registry that tests/go_binding.rs starts and describes in the
// environment (they skip without it):
//
//	CIMAGE_TEST_REF       docker:// reference of the fixture image (3 layers)
//	CIMAGE_TEST_IMAGE_ID  its image ID
//	CIMAGE_TEST_SLOW_REF  docker:// reference of a 24 MiB image behind a throttling proxy
//	CIMAGE_TEST_DIR       where to make stores (the Rust test unmounts and removes it)
//	CIMAGE_TEST_DRIVER    overlay (needs root) or vfs

import (
	"context"
	"encoding/json"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"
)

type testEnv struct {
	ref, imageID, slowRef, dir, driver string
}

func environment(t *testing.T) testEnv {
	t.Helper()
	env := testEnv{
		ref:     os.Getenv("CIMAGE_TEST_REF"),
		imageID: os.Getenv("CIMAGE_TEST_IMAGE_ID"),
		slowRef: os.Getenv("CIMAGE_TEST_SLOW_REF"),
		dir:     os.Getenv("CIMAGE_TEST_DIR"),
		driver:  os.Getenv("CIMAGE_TEST_DRIVER"),
	}
	if env.ref == "" || env.dir == "" {
		t.Skip("no test registry: run through `cargo test --test go_binding`, which sets CIMAGE_TEST_*")
	}
	if env.driver == "" {
		env.driver = "overlay"
	}
	return env
}

func openTestStore(t *testing.T, env testEnv) *Store {
	t.Helper()
	dir, err := os.MkdirTemp(env.dir, "store-")
	if err != nil {
		t.Fatal(err)
	}
	store, err := Open(StoreOptions{
		GraphRoot: filepath.Join(dir, "root"),
		RunRoot:   filepath.Join(dir, "run"),
		Driver:    env.driver,
	})
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	t.Cleanup(func() { store.Close() })
	return store
}

func requireStatus(t *testing.T, err error, want error) *Error {
	t.Helper()
	if !errors.Is(err, want) {
		t.Fatalf("got error %v, want one matching %v", err, want)
	}
	var e *Error
	if !errors.As(err, &e) {
		t.Fatalf("error %v (%T) is not a *cimage.Error", err, err)
	}
	if e.Message == "" {
		t.Fatalf("error %v has no message", err)
	}
	return e
}

func TestVersion(t *testing.T) {
	if Version() != HeaderVersion {
		t.Errorf("library %s, header %s", Version(), HeaderVersion)
	}
	if err := checkVersion(VersionNumber(), VersionNumber()); err != nil {
		t.Error(err)
	}
	for _, c := range []struct {
		header, library uint32
		ok              bool
	}{
		{1000, 1003, true},       // 0.1.0 header, 0.1.3 library
		{1000, 2000, false},      // 0.x minors differ in ABI
		{1000000, 1002000, true}, // 1.0 header, 1.2 library
		{1000000, 2000000, false},
	} {
		if err := checkVersion(c.header, c.library); (err == nil) != c.ok {
			t.Errorf("checkVersion(%d, %d) = %v", c.header, c.library, err)
		}
	}
}

func TestStatusNames(t *testing.T) {
	if StatusNotFound.String() != "NOT_FOUND" || StatusCancelled.String() != "CANCELLED" {
		t.Errorf("names: %s, %s", StatusNotFound, StatusCancelled)
	}
	err := error(&Error{Status: StatusInUse, Message: "mounted"})
	if !errors.Is(err, ErrInUse) || errors.Is(err, ErrNotFound) || !errors.Is(err, StatusInUse) {
		t.Errorf("errors.Is does not match statuses: %v", err)
	}
	withErrno := error(&Error{Status: StatusIO, Message: "x", Errno: 2})
	if !errors.Is(withErrno, fs.ErrNotExist) {
		t.Errorf("an ENOENT error should match fs.ErrNotExist")
	}
}

// TestFlow: pull, list, look up, create, mount, write, unmount, delete, with concurrent readers.
func TestFlow(t *testing.T) {
	env := environment(t)
	store := openTestStore(t, env)
	ctx := context.Background()

	var events []Progress
	image, err := store.Pull(ctx, env.ref, &PullOptions{
		SkipTLSVerify: true,
		Progress:      func(p Progress) { events = append(events, p) },
	})
	if err != nil {
		t.Fatalf("Pull: %v", err)
	}
	if image.ID() != env.imageID {
		t.Errorf("pulled image ID %s, want %s", image.ID(), env.imageID)
	}
	if !strings.HasPrefix(image.Digest(), "sha256:") || image.Size() <= 0 || image.TopLayer() == "" {
		t.Errorf("image digest %q size %d top layer %q", image.Digest(), image.Size(), image.TopLayer())
	}
	if image.CreatedTime().IsZero() {
		t.Errorf("no creation time: %q", image.Created())
	}
	name := strings.TrimPrefix(env.ref, "docker://")
	if names := image.Names(); len(names) != 1 || names[0] != name {
		t.Errorf("names %v, want [%s]", names, name)
	}
	kinds := map[ProgressKind]int{}
	for _, ev := range events {
		kinds[ev.Kind]++
	}
	if kinds[ProgressDone] != 3 || kinds[ProgressConfig] != 1 || kinds[ProgressCommitting] == 0 {
		t.Errorf("progress events %v: want 3 done, 1 config, committing", kinds)
	}
	image.Close()
	image.Close() // twice is fine
	if image.ID() != "" {
		t.Errorf("a closed image still answers")
	}

	// Readers (lists left to the finalizers) while the same image is pulled again.
	var wg sync.WaitGroup
	errs := make(chan error, 100)
	for g := 0; g < 3; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for k := 0; k < 10; k++ {
				images, err := store.Images()
				if err != nil {
					errs <- err
					return
				}
				if len(images) != 1 || images[0].ID() != env.imageID {
					errs <- errors.New("wrong image list during the second pull")
				}
				if _, err := store.Layers(); err != nil {
					errs <- err
				}
			}
		}()
	}
	skipped := 0
	again, err := store.Pull(ctx, env.ref, &PullOptions{SkipTLSVerify: true, Progress: func(p Progress) {
		if p.Kind == ProgressSkipped {
			skipped++
		}
	}})
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if err != nil {
		t.Fatalf("second Pull: %v", err)
	}
	again.Close()
	if skipped != 3 {
		t.Errorf("second pull skipped %d layers, want 3", skipped)
	}
	runtime.GC()

	found, err := store.Image(name)
	if err != nil {
		t.Fatalf("Image(%s): %v", name, err)
	}
	if found.ID() != env.imageID {
		t.Errorf("lookup by name found %s", found.ID())
	}
	found.Close()
	manifest, err := store.ImageManifest(env.imageID)
	if err != nil || !json.Valid(manifest) {
		t.Errorf("ImageManifest: %v %q", err, manifest)
	}
	config, err := store.ImageConfig(env.imageID[:12])
	if err != nil || !json.Valid(config) {
		t.Errorf("ImageConfig: %v %q", err, config)
	}
	layers, err := store.Layers()
	if err != nil || len(layers) != 3 {
		t.Fatalf("Layers: %v, %d layers", err, len(layers))
	}
	for _, l := range layers {
		if !strings.HasPrefix(l.DiffDigest(), "sha256:") || l.DiffSize() < 0 || l.ID() == "" {
			t.Errorf("layer %s: diff %q size %d", l.ID(), l.DiffDigest(), l.DiffSize())
		}
		l.Close()
	}

	container, err := store.CreateContainer(env.imageID, &ContainerOptions{Name: "go-flow", Metadata: "{}"})
	if err != nil {
		t.Fatalf("CreateContainer: %v", err)
	}
	defer container.Close()
	if container.ImageID() != env.imageID || container.LayerID() == "" {
		t.Errorf("container image %s layer %s", container.ImageID(), container.LayerID())
	}
	_, err = store.CreateContainer(env.imageID, &ContainerOptions{Name: "go-flow"})
	requireStatus(t, err, ErrAlreadyExists)
	containers, err := store.Containers()
	if err != nil || len(containers) != 1 || containers[0].Names()[0] != "go-flow" {
		t.Fatalf("Containers: %v %v", err, containers)
	}

	path, err := store.Mount("go-flow")
	if err != nil {
		t.Fatalf("Mount: %v", err)
	}
	if _, err := os.Stat(filepath.Join(path, "etc/hostname")); err != nil {
		t.Errorf("the mounted root file system lacks etc/hostname: %v", err)
	}
	if err := os.WriteFile(filepath.Join(path, "from-go.txt"), []byte("hello\n"), 0o644); err != nil {
		t.Errorf("write into the container: %v", err)
	}
	mounted, err := store.Container(container.ID()[:12])
	if err != nil {
		t.Fatalf("Container: %v", err)
	}
	if mounted.MountPoint() != path {
		t.Errorf("mount point %q, want %q", mounted.MountPoint(), path)
	}
	mounted.Close()
	requireStatus(t, store.DeleteContainer("go-flow"), ErrInUse)
	requireStatus(t, store.DeleteImage(env.imageID), ErrInUse)
	if err := store.Unmount("go-flow", false); err != nil {
		t.Fatalf("Unmount: %v", err)
	}
	if _, err := os.Stat(filepath.Join(path, "etc/hostname")); err == nil {
		t.Errorf("%s is still mounted", path)
	}
	if err := store.DeleteContainer(container.ID()); err != nil {
		t.Fatalf("DeleteContainer: %v", err)
	}
	if err := store.DeleteImage(name); err != nil {
		t.Fatalf("DeleteImage: %v", err)
	}
	images, err := store.Images()
	if err != nil || len(images) != 0 {
		t.Errorf("images left: %v %d", err, len(images))
	}
	if err := store.Wipe(); err != nil {
		t.Errorf("Wipe: %v", err)
	}
}

func TestNotFound(t *testing.T) {
	env := environment(t)
	store := openTestStore(t, env)

	_, err := store.Image("no-such-image")
	e := requireStatus(t, err, ErrNotFound)
	if e.Status != StatusNotFound || errors.Is(err, ErrInUse) {
		t.Errorf("status %v", e.Status)
	}
	requireStatus(t, store.DeleteContainer("no-such-container"), ErrNotFound)
	_, err = store.Mount("no-such-container")
	requireStatus(t, err, ErrNotFound)
	_, err = store.Layer("0123456789ab")
	requireStatus(t, err, ErrNotFound)
	_, err = store.Image("nul\x00inside")
	requireStatus(t, err, ErrInvalidArgument)

	missing := strings.Replace(env.ref, "/fixture:", "/no-such-repository:", 1)
	_, err = store.Pull(context.Background(), missing, &PullOptions{SkipTLSVerify: true})
	if !errors.Is(err, ErrManifestUnknown) && !errors.Is(err, ErrNotFound) {
		t.Errorf("pulling %s: %v, want MANIFEST_UNKNOWN or NOT_FOUND", missing, err)
	}
	_, err = store.Pull(context.Background(), env.ref, &PullOptions{SkipTLSVerify: true, Policy: PullNever})
	requireStatus(t, err, ErrNotFound)
	_, err = store.Pull(context.Background(), env.ref, &PullOptions{Platform: "not a platform"})
	requireStatus(t, err, ErrInvalidArgument)

	_, err = Open(StoreOptions{GraphRoot: "relative/root"})
	requireStatus(t, err, ErrInvalidArgument)

	store.Close()
	if _, err := store.Images(); !errors.Is(err, ErrClosed) {
		t.Errorf("Images after Close: %v", err)
	}
	if err := store.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
}

// TestPullCancelledByContext pulls a 24 MiB image through a throttled proxy and cancels it through
// the context: by cancel() from the progress callback, and by a deadline.
func TestPullCancelledByContext(t *testing.T) {
	env := environment(t)
	if env.slowRef == "" {
		t.Skip("CIMAGE_TEST_SLOW_REF not set")
	}
	store := openTestStore(t, env)

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	// Should no download event come, cancel anyway.
	timer := time.AfterFunc(3*time.Second, cancel)
	defer timer.Stop()
	start := time.Now()
	var downloaded uint64
	_, err := store.Pull(ctx, env.slowRef, &PullOptions{SkipTLSVerify: true, Progress: func(p Progress) {
		if p.Kind == ProgressDownloading && p.BytesDone > 0 {
			downloaded = p.BytesDone
			cancel()
		}
	}})
	elapsed := time.Since(start)
	requireStatus(t, err, ErrCancelled)
	if !errors.Is(err, context.Canceled) {
		t.Errorf("%v does not match context.Canceled", err)
	}
	if elapsed > 15*time.Second {
		t.Errorf("the cancelled pull took %v (the whole pull takes longer than 40 s)", elapsed)
	}
	t.Logf("cancelled after %v, %d bytes downloaded", elapsed, downloaded)

	deadline, stop := context.WithTimeout(context.Background(), 500*time.Millisecond)
	defer stop()
	_, err = store.Pull(deadline, env.slowRef, &PullOptions{SkipTLSVerify: true})
	requireStatus(t, err, ErrCancelled)
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("%v does not match context.DeadlineExceeded", err)
	}

	// Already cancelled: nothing starts.
	_, err = store.Pull(ctx, env.ref, &PullOptions{SkipTLSVerify: true})
	if !errors.Is(err, ErrCancelled) || !errors.Is(err, context.Canceled) {
		t.Errorf("pull with a cancelled context: %v", err)
	}

	// The store is as it was.
	images, err := store.Images()
	if err != nil || len(images) != 0 {
		t.Errorf("after cancelled pulls: %v, %d images", err, len(images))
	}
	layers, err := store.Layers()
	if err != nil || len(layers) != 0 {
		t.Errorf("after cancelled pulls: %v, %d layers", err, len(layers))
	}
}

// TestProgressPanic: a panic in the callback cancels the pull and reaches Pull's caller.
func TestProgressPanic(t *testing.T) {
	env := environment(t)
	store := openTestStore(t, env)
	func() {
		defer func() {
			if r := recover(); r != "boom" {
				t.Errorf("recovered %v, want boom", r)
			}
		}()
		store.Pull(context.Background(), env.ref, &PullOptions{SkipTLSVerify: true, Progress: func(Progress) {
			panic("boom")
		}})
		t.Errorf("Pull returned instead of panicking")
	}()
	images, err := store.Images()
	if err != nil || len(images) != 0 {
		t.Errorf("after the panic: %v, %d images", err, len(images))
	}
	// The store still works.
	image, err := store.Pull(context.Background(), env.ref, &PullOptions{SkipTLSVerify: true})
	if err != nil {
		t.Fatalf("Pull after the panic: %v", err)
	}
	image.Close()
}
