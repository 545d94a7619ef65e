/*
 * micro: times cimage's small operations as in-process calls of the C API.
 *
 *     micro ROOT RUNROOT REFERENCE ITERATIONS [nosync | dirty=MIB]
 *
 * Opens the store at ROOT/RUNROOT (overlay), pulls REFERENCE once (plain HTTP) so the image is
 * present, then for ITERATIONS rounds times:
 *   open     cimage_store_open + cimage_store_free
 *   warm     cimage_store_pull of the present image (policy ALWAYS: asks the registry)
 *   missing  cimage_store_pull with policy MISSING (no network)
 *   create, mount, unmount, delete   one container's cycle, and the four together as "cycle"
 *   fdatasync, syncfs   one flush of the store's file system, without cimage: a 64-byte file
 *                       written and fdatasync'ed, then syncfs (what a durable step costs
 *                       here); not with nosync
 * and prints one line per measurement: "NAME SECONDS". Exit status 1 on the first failure.
 * With "nosync" the store is opened with durable writes off (cimage_store_options_set_sync).
 * With "dirty=MIB" only the container cycle is timed, each time with MIB MiB of unrelated
 * data written to a file beside the store and not yet on disk (as a running container's
 * writes would be): what a durable step's flush costs on a busy file system.
 */
#define _GNU_SOURCE /* syncfs */

#include "cimage.h"

#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* Prints the failure of WHAT and returns 1 (the exit status). */
static int fail(const char *what, cimage_status status, cimage_error *err)
{
    fprintf(stderr, "micro: %s: %s: %s\n", what, cimage_status_name(status),
            err != NULL && cimage_error_message(err) != NULL ? cimage_error_message(err) : "");
    cimage_error_free(err);
    return 1;
}

static bool sync_writes = true;

static cimage_status open_store(const char *root, const char *run_root, cimage_store **store,
                                cimage_error **err)
{
    cimage_store_options *opts = cimage_store_options_new();
    cimage_status s = cimage_store_options_set_graph_root(opts, root, err);
    if (s == CIMAGE_STATUS_OK)
        s = cimage_store_options_set_run_root(opts, run_root, err);
    if (s == CIMAGE_STATUS_OK)
        s = cimage_store_options_set_driver(opts, "overlay", err);
    if (s == CIMAGE_STATUS_OK)
        s = cimage_store_options_set_sync(opts, sync_writes, err);
    if (s == CIMAGE_STATUS_OK)
        s = cimage_store_open(opts, store, err);
    cimage_store_options_free(opts);
    return s;
}

static cimage_status pull(cimage_store *store, const char *ref, int32_t policy, cimage_error **err)
{
    cimage_pull_options *opts = cimage_pull_options_new();
    cimage_status s = cimage_pull_options_set_tls_verify(opts, false, err);
    if (s == CIMAGE_STATUS_OK)
        s = cimage_pull_options_set_policy(opts, policy, err);
    if (s == CIMAGE_STATUS_OK)
        s = cimage_store_pull(store, ref, opts, NULL, err);
    cimage_pull_options_free(opts);
    return s;
}

/* One container's create, mount, unmount and delete, each timed. */
static int cycle(cimage_store *store, const char *image)
{
    cimage_error *err = NULL;
    cimage_container *c = NULL;
    char *mount_point = NULL;
    struct stat st;
    double t0 = now();
    cimage_status s = cimage_store_container_create(store, image, NULL, &c, &err);
    if (s != CIMAGE_STATUS_OK)
        return fail("create", s, err);
    double t1 = now();
    s = cimage_store_container_mount(store, cimage_container_id(c), &mount_point, &err);
    if (s != CIMAGE_STATUS_OK) {
        cimage_container_free(c);
        return fail("mount", s, err);
    }
    double t2 = now();
    int empty = stat(mount_point, &st) != 0;
    cimage_string_free(mount_point);
    s = cimage_store_container_unmount(store, cimage_container_id(c), false, &err);
    if (s != CIMAGE_STATUS_OK) {
        cimage_container_free(c);
        return fail("unmount", s, err);
    }
    double t3 = now();
    s = cimage_store_container_delete(store, cimage_container_id(c), &err);
    cimage_container_free(c);
    if (s != CIMAGE_STATUS_OK)
        return fail("delete", s, err);
    double t4 = now();
    if (empty) {
        fputs("micro: the mount point did not exist\n", stderr);
        return 1;
    }
    printf("create %.6f\nmount %.6f\nunmount %.6f\ndelete %.6f\ncycle %.6f\n", t1 - t0, t2 - t1,
           t3 - t2, t4 - t3, t4 - t0);
    return 0;
}

/* The cost of one flush on the file system of DIR, the floor under every durable step. */
static int flushes(const char *dir)
{
    char path[4096];
    snprintf(path, sizeof path, "%s/micro-flush-probe", dir);
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (fd < 0) {
        perror("micro: flush probe");
        return 1;
    }
    static const char data[64] = "cimage micro flush probe";
    double t0 = now();
    int bad = write(fd, data, sizeof data) != (ssize_t)sizeof data || fdatasync(fd) != 0;
    double t1 = now();
    bad = bad || write(fd, data, sizeof data) != (ssize_t)sizeof data || syncfs(fd) != 0;
    double t2 = now();
    close(fd);
    unlink(path);
    if (bad) {
        perror("micro: flush probe");
        return 1;
    }
    printf("fdatasync %.6f\nsyncfs %.6f\n", t1 - t0, t2 - t1);
    return 0;
}

/* Writes MIB MiB to PATH without flushing them (dirty pages for the next flush to write). */
static int write_dirty(const char *path, long mib)
{
    static char block[1 << 20];
    for (size_t i = 0; i < sizeof block; i++)
        block[i] = (char)(i * 2654435761u >> 13); /* not zeros: nothing may skip them */
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (fd < 0) {
        perror("micro: dirty data");
        return 1;
    }
    for (long i = 0; i < mib; i++) {
        if (write(fd, block, sizeof block) != (ssize_t)sizeof block) {
            perror("micro: dirty data");
            close(fd);
            return 1;
        }
    }
    close(fd);
    return 0;
}

int main(int argc, char **argv)
{
    long dirty_mib = 0;
    if (argc == 6 && strncmp(argv[5], "dirty=", 6) == 0)
        dirty_mib = atol(argv[5] + 6);
    if (argc != 5 && !(argc == 6 && (strcmp(argv[5], "nosync") == 0 || dirty_mib > 0))) {
        fputs("usage: micro ROOT RUNROOT REFERENCE ITERATIONS [nosync | dirty=MIB]\n", stderr);
        return 2;
    }
    sync_writes = argc == 5 || dirty_mib > 0;
    const char *root = argv[1], *run_root = argv[2], *ref = argv[3];
    int iterations = atoi(argv[4]);
    cimage_error *err = NULL;
    cimage_store *store = NULL;
    cimage_status s = open_store(root, run_root, &store, &err);
    if (s != CIMAGE_STATUS_OK)
        return fail("open", s, err);
    s = pull(store, ref, CIMAGE_PULL_POLICY_ALWAYS, &err);
    if (s != CIMAGE_STATUS_OK) {
        cimage_store_free(store);
        return fail("first pull", s, err);
    }
    int rc = 0;
    if (dirty_mib > 0) {
        char path[4096];
        snprintf(path, sizeof path, "%s/micro-dirty-data", root);
        for (int i = 0; i < iterations && rc == 0; i++) {
            rc = write_dirty(path, dirty_mib);
            if (rc == 0)
                rc = cycle(store, ref);
            unlink(path);
        }
        cimage_store_free(store);
        return rc;
    }
    for (int i = 0; i < iterations && rc == 0; i++) {
        cimage_store *other = NULL;
        double t0 = now();
        s = open_store(root, run_root, &other, &err);
        cimage_store_free(other);
        double t1 = now();
        if (s != CIMAGE_STATUS_OK) {
            rc = fail("open", s, err);
            break;
        }
        s = pull(store, ref, CIMAGE_PULL_POLICY_ALWAYS, &err);
        double t2 = now();
        if (s != CIMAGE_STATUS_OK) {
            rc = fail("warm pull", s, err);
            break;
        }
        s = pull(store, ref, CIMAGE_PULL_POLICY_MISSING, &err);
        double t3 = now();
        if (s != CIMAGE_STATUS_OK) {
            rc = fail("pull (policy missing)", s, err);
            break;
        }
        printf("open %.6f\nwarm %.6f\nmissing %.6f\n", t1 - t0, t2 - t1, t3 - t2);
        rc = cycle(store, ref);
        if (rc == 0 && sync_writes) /* nosync: a flush here would empty the next unmount's */
            rc = flushes(root);
    }
    cimage_store_free(store);
    return rc;
}
