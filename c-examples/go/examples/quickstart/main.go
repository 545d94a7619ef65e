// quickstart pulls an image, creates a container from it, mounts it, looks inside and cleans up.
//
//	go run ./examples/quickstart [REFERENCE [GRAPH_ROOT RUN_ROOT]]
//
// The default reference is the fixture image of the offline demo registry (see the README).
package main

import (
	"context"
	"errors"
	"fmt"
	"log"
	"os"
	"os/signal"

	"example.com/cimage"
)

func main() {
	reference := "docker://127.0.0.1:5000/cimage-test/fixture:t"
	graphRoot, runRoot := "/tmp/cimage-quickstart/root", "/tmp/cimage-quickstart/run"
	if len(os.Args) > 1 {
		reference = os.Args[1]
	}
	if len(os.Args) > 3 {
		graphRoot, runRoot = os.Args[2], os.Args[3]
	}

	store, err := cimage.Open(cimage.StoreOptions{GraphRoot: graphRoot, RunRoot: runRoot, Driver: "overlay"})
	if err != nil {
		log.Fatal(err)
	}
	defer store.Close()

	// Ctrl-C cancels the pull; the store is then left as it was.
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	image, err := store.Pull(ctx, reference, &cimage.PullOptions{
		SkipTLSVerify: true, // the demo registry speaks plain HTTP
		Progress: func(p cimage.Progress) {
			if p.Kind == cimage.ProgressDone {
				fmt.Println("layer", p.Digest, "done")
			}
		},
	})
	if err != nil {
		log.Fatal(err)
	}
	defer image.Close()
	fmt.Println("pulled", image.ID())

	container, err := store.CreateContainer(image.ID(), &cimage.ContainerOptions{Name: "quickstart"})
	if errors.Is(err, cimage.ErrAlreadyExists) {
		log.Fatal("a container named quickstart exists already: delete it first")
	} else if err != nil {
		log.Fatal(err)
	}
	defer container.Close()

	rootfs, err := store.Mount(container.ID())
	if err != nil {
		log.Fatal(err)
	}
	entries, err := os.ReadDir(rootfs)
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println("mounted at", rootfs, "with", len(entries), "entries")

	if err := store.Unmount(container.ID(), false); err != nil {
		log.Fatal(err)
	}
	if err := store.DeleteContainer(container.ID()); err != nil {
		log.Fatal(err)
	}
	_, err = store.Container(container.ID())
	fmt.Println("container deleted:", errors.Is(err, cimage.ErrNotFound))
}
