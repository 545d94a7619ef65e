#!/usr/bin/env python3
"""The whole cimage flow from Python: open a store, pull, list, create a container, mount it,
write into it, unmount, delete, and see a failing call raise CimageError with its status.

    example.py [--driver overlay|vfs] GRAPH_ROOT RUN_ROOT REFERENCE

For a local plain-HTTP registry (such as the demo's), TLS verification is off. Needs root for
the overlay driver. Finds the library through $CIMAGE_LIBRARY or the system's search path.
"""
import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import cimage  # noqa: E402  (the module next to this script)


def show_progress(event):
    """Prints skopeo-like lines for the events that finish something."""
    short = (event.digest or "").split(":")[-1][:12]
    if event.kind == cimage.ProgressKind.DONE:
        print("Copying blob %s done" % short, file=sys.stderr)
    elif event.kind == cimage.ProgressKind.SKIPPED:
        print("Copying blob %s skipped: already exists" % short, file=sys.stderr)
    elif event.kind == cimage.ProgressKind.CONFIG:
        print("Copying config %s done" % short, file=sys.stderr)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--driver", default="overlay", choices=["overlay", "vfs"])
    parser.add_argument("graph_root")
    parser.add_argument("run_root")
    parser.add_argument("reference")
    args = parser.parse_args()

    print("library %s (%s)" % (cimage.version(), cimage.library_path))
    with cimage.Store(
        graph_root=os.path.abspath(args.graph_root),
        run_root=os.path.abspath(args.run_root),
        driver=args.driver,
    ) as store:
        print("store %s, driver %s %s" % (store.graph_root, store.driver, dict(store.driver_status)))

        image = store.pull(args.reference, tls_verify=False, progress=show_progress)
        print("pulled %s as image %s (%s bytes)" % (args.reference, image.id, image.size))
        for listed in store.images():
            print("image %s %s" % (listed.id[:12], ", ".join(listed.names)))
        for layer in store.layers():
            print("layer %s parent %s" % (layer.id[:12], (layer.parent or "-")[:12]))
        config = store.image_config(image.id)
        print("config: %s" % config.get("config", {}))

        container = store.create_container(image.id, name="python-example")
        print("created container %s" % container.id)
        with store.mounted(container.id) as rootfs:
            print("mounted at %s: %s" % (rootfs, " ".join(sorted(os.listdir(rootfs)))))
            with open(os.path.join(rootfs, "hello-from-python.txt"), "w") as f:
                f.write("hello\n")
            print("containers: %s" % [(c.names, c.mount_point) for c in store.containers()])
        print("unmounted")

        store.delete_container(container.id)
        store.delete_image(image.id)
        print("deleted the container and the image")

        try:
            store.image(image.id)
        except cimage.CimageError as e:
            print("looking up the deleted image: %s (status %d): %s"
                  % (e.status_name, e.status, e.message))
            if e.status != cimage.Status.NOT_FOUND:
                return 1
        else:
            print("the deleted image is still there", file=sys.stderr)
            return 1
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except cimage.CimageError as e:
        print("example.py: %s: %s" % (e.status_name, e.message), file=sys.stderr)
        sys.exit(1)
