#!/usr/bin/env python3
"""quickstart: pull an image, create a container from it, mount it, look inside, clean up.

    python3 quickstart.py [REFERENCE [GRAPH_ROOT RUN_ROOT]]

The default reference is the fixture image of the offline demo registry (see the README).
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))  # cimage.py lives here
import cimage  # noqa: E402

reference = sys.argv[1] if len(sys.argv) > 1 else "docker://127.0.0.1:5000/cimage-test/fixture:t"
graph_root, run_root = "/tmp/cimage-quickstart/root", "/tmp/cimage-quickstart/run"
if len(sys.argv) > 3:
    graph_root, run_root = sys.argv[2], sys.argv[3]


def progress(event):
    if event.kind == cimage.ProgressKind.DONE:
        print("layer", event.digest, "done")


with cimage.Store(graph_root=graph_root, run_root=run_root, driver="overlay") as store:
    # tls_verify=False: the demo registry speaks plain HTTP. Ctrl-C cancels the pull.
    image = store.pull(reference, tls_verify=False, progress=progress)
    print("pulled", image.id)

    container = store.create_container(image.id, name="quickstart")
    with store.mounted(container.id) as rootfs:
        print("mounted at", rootfs, "with", len(os.listdir(rootfs)), "entries")
    store.delete_container(container.id)

    try:
        store.container(container.id)
    except cimage.CimageError as e:
        print("container deleted:", e.status == cimage.Status.NOT_FOUND)
