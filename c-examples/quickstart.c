/*
 * quickstart: a short tour of the cimage C API.
 *
 *     quickstart GRAPH_ROOT RUN_ROOT REFERENCE     (absolute paths)
 *
 * Opens a store, pulls REFERENCE (TLS verification off, for a local test registry),
 * creates a container from the image, mounts it, prints the mount point, then unmounts
 * and deletes the container. Returns 0 on success, 1 on the first failure.
 */
#include "cimage.h"

#include <stdio.h>

/* Prints what failed and why, frees the error, and returns 1 (for `return fail(...)`). */
static int fail(const char *what, cimage_status status, cimage_error *err)
{
    fprintf(stderr, "quickstart: %s: %s: %s\n", what, cimage_status_name(status),
            err != NULL ? cimage_error_message(err) : "(no details)");
    cimage_error_free(err);
    return 1;
}

/* Pull, create, mount, unmount, delete: the life of a container in one store. */
static int tour(cimage_store *store, const char *reference)
{
    cimage_pull_options *pull_options = cimage_pull_options_new();
    cimage_image *image = NULL;
    cimage_container *container = NULL;
    cimage_error *err = NULL;
    const char *id = NULL; /* borrowed from the container handle */
    char *path = NULL;
    int rc = 1;

    /* Options are builders: each setter checks its value at once. */
    cimage_status status = cimage_pull_options_set_tls_verify(pull_options, false, &err);
    if (status != CIMAGE_STATUS_OK) {
        rc = fail("set tls-verify", status, err);
        goto out;
    }
    status = cimage_store_pull(store, reference, pull_options, &image, &err);
    if (status != CIMAGE_STATUS_OK) {
        rc = fail("pull", status, err);
        goto out;
    }
    printf("pulled %s as image %s\n", reference, cimage_image_id(image));

    /* NULL container options: no name, no metadata. */
    status = cimage_store_container_create(store, cimage_image_id(image), NULL, &container, &err);
    if (status != CIMAGE_STATUS_OK) {
        rc = fail("create container", status, err);
        goto out;
    }
    id = cimage_container_id(container);
    printf("created container %s\n", id);

    status = cimage_store_container_mount(store, id, &path, &err);
    if (status != CIMAGE_STATUS_OK) {
        rc = fail("mount", status, err);
        goto out;
    }
    printf("mounted at %s\n", path);

    status = cimage_store_container_unmount(store, id, false, &err);
    if (status != CIMAGE_STATUS_OK) {
        rc = fail("unmount", status, err);
        goto out;
    }
    status = cimage_store_container_delete(store, id, &err);
    if (status != CIMAGE_STATUS_OK) {
        rc = fail("delete container", status, err);
        goto out;
    }
    printf("deleted container %s\n", id);
    rc = 0;

out:
    /* Every _free accepts NULL, so one cleanup path serves success and failure. */
    cimage_string_free(path);
    cimage_container_free(container);
    cimage_image_free(image);
    cimage_pull_options_free(pull_options);
    return rc;
}

int main(int argc, char **argv)
{
    cimage_store_options *store_options;
    cimage_store *store = NULL;
    cimage_error *err = NULL;
    cimage_status status;
    int rc;

    if (argc != 4) {
        fprintf(stderr, "usage: quickstart GRAPH_ROOT RUN_ROOT REFERENCE\n");
        return 1;
    }
    printf("cimage %s\n", cimage_version());

    store_options = cimage_store_options_new();
    status = cimage_store_options_set_graph_root(store_options, argv[1], &err);
    if (status == CIMAGE_STATUS_OK)
        status = cimage_store_options_set_run_root(store_options, argv[2], &err);
    if (status == CIMAGE_STATUS_OK)
        status = cimage_store_open(store_options, &store, &err);
    cimage_store_options_free(store_options); /* the store copied what it needs */
    if (status != CIMAGE_STATUS_OK)
        return fail("open store", status, err);
    printf("store at %s, driver %s\n", cimage_store_graph_root(store), cimage_store_driver_name(store));

    rc = tour(store, argv[3]);
    cimage_store_free(store);
    return rc;
}
