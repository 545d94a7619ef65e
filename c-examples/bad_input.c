/*
 * bad_input: feeds wrong input to the cimage C API and checks that every call answers
 * with the right status and a message, and never crashes.
 *
 *     bad_input SCRATCH_DIR
 *
 * Covers NULL pointers for each kind of argument, getters on NULL handles, unknown IDs,
 * bad option values, malformed references, a graph root that is a regular file, broken
 * image layouts (digest mismatch, a layer escaping its directory), cancellation, name
 * clashes, freeing NULL handles, freeing handles in any order (images and containers
 * after their store), and err=NULL calls.
 *
 * It needs no registry: it writes small OCI image layouts into SCRATCH_DIR and pulls
 * them with the oci: transport into a vfs store there. Prints one line per check and
 * exits 1 at the first wrong result, 0 when all pass.
 */
#define _XOPEN_SOURCE 700 /* POSIX 2008 with X/Open: mkdir, realpath */

#include "cimage.h"

#include <errno.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

/* ------------------------------------------------------------------------------------ */
/* Reporting                                                                            */

/* Prints "<tag>  <what>: <details>" as one line, whatever the details contain. */
static void print_check_line(const char *tag, const char *what, const char *format, va_list args)
{
    char details[1024] = "";

    if (format != NULL)
        vsnprintf(details, sizeof details, format, args);
    for (char *c = details; *c != '\0'; c++)
        if ((unsigned char)*c < 0x20)
            *c = ' ';
    printf("%-5s %s%s%s\n", tag, what, details[0] != '\0' ? ": " : "", details);
    fflush(stdout);
}

static void passed(const char *what, const char *format, ...)
{
    va_list args;
    va_start(args, format);
    print_check_line("ok", what, format, args);
    va_end(args);
}

/* A wrong result: report it and stop (exit status 1). */
static void failed(const char *what, const char *format, ...)
{
    va_list args;
    va_start(args, format);
    print_check_line("FAIL", what, format, args);
    va_end(args);
    exit(EXIT_FAILURE);
}

/*
 * Checks that a call returned WANT. On failure the error object must exist, carry the same
 * code and a non-empty message; on success no error object may be set. Frees ERR.
 */
static void expect_status(const char *what, cimage_status got, cimage_error *err, cimage_status want)
{
    const char *message = NULL;

    if (got != want)
        failed(what, "status %s, want %s (%s)", cimage_status_name(got), cimage_status_name(want),
               err != NULL && cimage_error_message(err) != NULL ? cimage_error_message(err) : "no message");
    if (want == CIMAGE_STATUS_OK) {
        if (err != NULL)
            failed(what, "an error object was set on success");
        passed(what, "OK");
        return;
    }
    if (err == NULL)
        failed(what, "status %s but no error object", cimage_status_name(got));
    if (cimage_error_code(err) != got)
        failed(what, "error object has code %s, the call returned %s", cimage_status_name(cimage_error_code(err)),
               cimage_status_name(got));
    message = cimage_error_message(err);
    if (message == NULL || message[0] == '\0')
        failed(what, "error object has no message");
    passed(what, "%s: %s", cimage_status_name(got), message);
    cimage_error_free(err);
}

/* As expect_status, and a pointer out-param must be NULL after a failure, set after success. */
static void expect_status_out(const char *what, cimage_status got, cimage_error *err, cimage_status want,
                              const void *out)
{
    if (got != CIMAGE_STATUS_OK && out != NULL)
        failed(what, "status %s but the out-param was not set to NULL", cimage_status_name(got));
    if (got == CIMAGE_STATUS_OK && out == NULL)
        failed(what, "status OK but the out-param is NULL");
    expect_status(what, got, err, want);
}

/* Any failure will do (the exact status depends on the system), as long as it is reported. */
static void expect_failure(const char *what, cimage_status got, cimage_error *err)
{
    if (got == CIMAGE_STATUS_OK)
        failed(what, "succeeded, want an error");
    expect_status(what, got, err, got);
}

/* For calls made with err = NULL: only the status is there to check. */
static void expect_status_no_err(const char *what, cimage_status got, cimage_status want)
{
    if (got != want)
        failed(what, "status %s, want %s", cimage_status_name(got), cimage_status_name(want));
    passed(what, "%s (err = NULL)", cimage_status_name(got));
}

static void expect_null(const char *what, const void *value)
{
    if (value != NULL)
        failed(what, "returned a pointer, want NULL");
    passed(what, "NULL");
}

static void expect_int(const char *what, long long got, long long want)
{
    if (got != want)
        failed(what, "returned %lld, want %lld", got, want);
    passed(what, "%lld", got);
}

static void expect_string(const char *what, const char *got, const char *want)
{
    if (got == NULL || strcmp(got, want) != 0)
        failed(what, "returned \"%s\", want \"%s\"", got != NULL ? got : "(null)", want);
    passed(what, "\"%s\"", got);
}

/*
 * A non-NULL value that no library call would return: out-params start with it, so a
 * failed call that leaves them untouched is caught.
 */
static max_align_t sentinel_object;
#define SENTINEL(type) ((type *)(void *)&sentinel_object)

/* ------------------------------------------------------------------------------------ */
/* A tiny OCI image layout writer (so no registry is needed)                            */

/* SHA-256 (FIPS 180-4), enough to name the blobs of a layout. */
static void sha256_hex(const unsigned char *data, size_t len, char hex_out[65])
{
    static const uint32_t k[64] = {
        0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4, 0xab1c5ed5,
        0xd807aa98, 0x12835b01, 0x243185be, 0x550c7dc3, 0x72be5d74, 0x80deb1fe, 0x9bdc06a7, 0xc19bf174,
        0xe49b69c1, 0xefbe4786, 0x0fc19dc6, 0x240ca1cc, 0x2de92c6f, 0x4a7484aa, 0x5cb0a9dc, 0x76f988da,
        0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7, 0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967,
        0x27b70a85, 0x2e1b2138, 0x4d2c6dfc, 0x53380d13, 0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85,
        0xa2bfe8a1, 0xa81a664b, 0xc24b8b70, 0xc76c51a3, 0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070,
        0x19a4c116, 0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a, 0x5b9cca4f, 0x682e6ff3,
        0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208, 0x90befffa, 0xa4506ceb, 0xbef9a3f7, 0xc67178f2,
    };
    uint32_t h[8] = {0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a, 0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19};
    /* The message, a 0x80 byte, zeros, and the bit length: a whole number of 64-byte blocks. */
    size_t padded_len = (len + 1 + 8 + 63) / 64 * 64;
    unsigned char *padded = calloc(padded_len, 1);
    uint64_t bits = (uint64_t)len * 8;

    if (padded == NULL)
        failed("sha256", "out of memory");
    memcpy(padded, data, len);
    padded[len] = 0x80;
    for (int i = 0; i < 8; i++)
        padded[padded_len - 1 - (size_t)i] = (unsigned char)(bits >> (8 * i));

#define ROTR(x, n) (((x) >> (n)) | ((x) << (32 - (n))))
    for (size_t block = 0; block < padded_len; block += 64) {
        uint32_t w[64], a = h[0], b = h[1], c = h[2], d = h[3], e = h[4], f = h[5], g = h[6], hh = h[7];
        for (int t = 0; t < 16; t++) {
            const unsigned char *p = padded + block + 4 * t;
            w[t] = (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
        }
        for (int t = 16; t < 64; t++) {
            uint32_t s0 = ROTR(w[t - 15], 7) ^ ROTR(w[t - 15], 18) ^ (w[t - 15] >> 3);
            uint32_t s1 = ROTR(w[t - 2], 17) ^ ROTR(w[t - 2], 19) ^ (w[t - 2] >> 10);
            w[t] = w[t - 16] + s0 + w[t - 7] + s1;
        }
        for (int t = 0; t < 64; t++) {
            uint32_t t1 = hh + (ROTR(e, 6) ^ ROTR(e, 11) ^ ROTR(e, 25)) + ((e & f) ^ (~e & g)) + k[t] + w[t];
            uint32_t t2 = (ROTR(a, 2) ^ ROTR(a, 13) ^ ROTR(a, 22)) + ((a & b) ^ (a & c) ^ (b & c));
            hh = g;
            g = f;
            f = e;
            e = d + t1;
            d = c;
            c = b;
            b = a;
            a = t1 + t2;
        }
        h[0] += a, h[1] += b, h[2] += c, h[3] += d, h[4] += e, h[5] += f, h[6] += g, h[7] += hh;
    }
#undef ROTR
    free(padded);
    for (int i = 0; i < 8; i++)
        snprintf(hex_out + 8 * i, 9, "%08x", (unsigned)h[i]);
}

/* A tar archive holding one regular file: the smallest layer there is. Returns its length. */
enum { TAR_BLOCK = 512, TAR_MAX = 4 * TAR_BLOCK };
static size_t make_tar(unsigned char out[TAR_MAX], const char *name, const char *content)
{
    size_t content_len = strlen(content); /* short: one data block */
    char *header = (char *)out;
    unsigned checksum = 0;

    memset(out, 0, TAR_MAX);
    snprintf(header, 100, "%s", name);
    memcpy(header + 100, "0000644", 8);  /* mode */
    memcpy(header + 108, "0000000", 8);  /* uid */
    memcpy(header + 116, "0000000", 8);  /* gid */
    snprintf(header + 124, 12, "%011o", (unsigned)content_len);
    memcpy(header + 136, "00000000000", 12); /* mtime */
    memset(header + 148, ' ', 8);        /* the checksum counts itself as spaces */
    header[156] = '0';                   /* regular file */
    memcpy(header + 257, "ustar", 6);
    memcpy(header + 263, "00", 2);
    for (int i = 0; i < TAR_BLOCK; i++)
        checksum += out[i];
    snprintf(header + 148, 7, "%06o", checksum);
    memcpy(out + TAR_BLOCK, content, content_len);
    return TAR_MAX; /* header, data, and the two zero blocks that end an archive */
}

/* snprintf for paths and references: a result too long for its buffer is a setup failure. */
static void format_path(char *out, size_t out_len, const char *format, ...)
{
    va_list args;
    int written;

    va_start(args, format);
    written = vsnprintf(out, out_len, format, args);
    va_end(args);
    if (written < 0 || (size_t)written >= out_len)
        failed("setup", "path too long (scratch directory: use a shorter one)");
}

static void make_dir(const char *path)
{
    if (mkdir(path, 0755) != 0 && errno != EEXIST)
        failed("setup", "mkdir %s: %s", path, strerror(errno));
}

static void write_file(const char *path, const void *data, size_t len)
{
    FILE *f = fopen(path, "wb");
    if (f == NULL || fwrite(data, 1, len, f) != len || fclose(f) != 0)
        failed("setup", "cannot write %s", path);
}

struct blob {
    char digest[72]; /* "sha256:<64 hex>" */
    size_t size;
};

/* Writes DATA as a blob of the layout in DIR and returns its descriptor. */
static struct blob write_blob(const char *dir, const void *data, size_t len)
{
    struct blob blob;
    char hex[65], path[4096];

    sha256_hex(data, len, hex);
    snprintf(blob.digest, sizeof blob.digest, "sha256:%s", hex);
    blob.size = len;
    format_path(path, sizeof path, "%s/blobs/sha256/%s", dir, hex);
    write_file(path, data, len);
    return blob;
}

#if defined(__aarch64__)
#define LAYOUT_ARCH "arm64"
#else
#define LAYOUT_ARCH "amd64"
#endif

/*
 * Writes an OCI image layout to DIR, tagged "latest", whose one layer holds FILE_NAME with
 * CONTENT. Returns the layer's blob so a caller can corrupt it.
 */
static struct blob write_layout(const char *dir, const char *file_name, const char *content)
{
    unsigned char tar[TAR_MAX];
    char path[4096], config[1024], manifest[2048], index[1024];
    struct blob layer, config_blob, manifest_blob;

    make_dir(dir);
    format_path(path, sizeof path, "%s/blobs", dir);
    make_dir(path);
    format_path(path, sizeof path, "%s/blobs/sha256", dir);
    make_dir(path);

    layer = write_blob(dir, tar, make_tar(tar, file_name, content));
    snprintf(config, sizeof config,
             "{\"architecture\":\"" LAYOUT_ARCH "\",\"os\":\"linux\",\"config\":{},"
             "\"rootfs\":{\"type\":\"layers\",\"diff_ids\":[\"%s\"]}}",
             layer.digest);
    config_blob = write_blob(dir, config, strlen(config));
    snprintf(manifest, sizeof manifest,
             "{\"schemaVersion\":2,\"mediaType\":\"application/vnd.oci.image.manifest.v1+json\","
             "\"config\":{\"mediaType\":\"application/vnd.oci.image.config.v1+json\",\"digest\":\"%s\",\"size\":%zu},"
             "\"layers\":[{\"mediaType\":\"application/vnd.oci.image.layer.v1.tar\",\"digest\":\"%s\",\"size\":%zu}]}",
             config_blob.digest, config_blob.size, layer.digest, layer.size);
    manifest_blob = write_blob(dir, manifest, strlen(manifest));
    snprintf(index, sizeof index,
             "{\"schemaVersion\":2,\"manifests\":[{\"mediaType\":\"application/vnd.oci.image.manifest.v1+json\","
             "\"digest\":\"%s\",\"size\":%zu,\"annotations\":{\"org.opencontainers.image.ref.name\":\"latest\"}}]}",
             manifest_blob.digest, manifest_blob.size);
    format_path(path, sizeof path, "%s/index.json", dir);
    write_file(path, index, strlen(index));
    format_path(path, sizeof path, "%s/oci-layout", dir);
    write_file(path, "{\"imageLayoutVersion\":\"1.0.0\"}", 30);
    return layer;
}

/* ------------------------------------------------------------------------------------ */
/* Checks without a store                                                               */

static void check_library_basics(void)
{
    const char *version = cimage_version();

    if (version == NULL || version[0] == '\0')
        failed("cimage_version", "empty version");
    passed("cimage_version", "\"%s\"", version);
    expect_int("cimage_version_number matches the header", cimage_version_number(), CIMAGE_VERSION_NUMBER);
    expect_string("cimage_status_name(NOT_FOUND)", cimage_status_name(CIMAGE_STATUS_NOT_FOUND), "NOT_FOUND");
    expect_string("cimage_status_name(an unknown code)", cimage_status_name((cimage_status)9999), "UNKNOWN");
    expect_status_no_err("cimage_log_set_level(99)", cimage_log_set_level(99, NULL), CIMAGE_STATUS_INVALID_ARGUMENT);
    {
        cimage_error *err = NULL;
        cimage_status status = cimage_log_set_level(-1, &err);
        expect_status("cimage_log_set_level(-1)", status, err, CIMAGE_STATUS_INVALID_ARGUMENT);
    }
}

static void check_free_null(void)
{
    cimage_error_free(NULL);
    cimage_string_free(NULL);
    cimage_store_options_free(NULL);
    cimage_store_free(NULL);
    cimage_pull_options_free(NULL);
    cimage_cancel_token_free(NULL);
    cimage_cancel_token_cancel(NULL);
    cimage_image_list_free(NULL);
    cimage_image_free(NULL);
    cimage_layer_list_free(NULL);
    cimage_layer_free(NULL);
    cimage_container_options_free(NULL);
    cimage_container_list_free(NULL);
    cimage_container_free(NULL);
    passed("every _free(NULL) and cancel(NULL)", "no crash");
}

static void check_getters_on_null(void)
{
    expect_null("cimage_error_message(NULL)", cimage_error_message(NULL));
    expect_null("cimage_error_subject(NULL)", cimage_error_subject(NULL));
    expect_int("cimage_error_os_errno(NULL)", cimage_error_os_errno(NULL), 0);
    expect_int("cimage_error_http_status(NULL)", cimage_error_http_status(NULL), 0);
    expect_null("cimage_store_graph_root(NULL)", cimage_store_graph_root(NULL));
    expect_null("cimage_store_run_root(NULL)", cimage_store_run_root(NULL));
    expect_null("cimage_store_driver_name(NULL)", cimage_store_driver_name(NULL));
    expect_int("cimage_store_driver_status_len(NULL)", (long long)cimage_store_driver_status_len(NULL), 0);
    expect_null("cimage_store_driver_status_key(NULL, 0)", cimage_store_driver_status_key(NULL, 0));
    expect_null("cimage_store_driver_status_value(NULL, 0)", cimage_store_driver_status_value(NULL, 0));
    expect_int("cimage_image_list_len(NULL)", (long long)cimage_image_list_len(NULL), 0);
    expect_null("cimage_image_list_get(NULL, 0)", cimage_image_list_get(NULL, 0));
    expect_null("cimage_image_id(NULL)", cimage_image_id(NULL));
    expect_null("cimage_image_digest(NULL)", cimage_image_digest(NULL));
    expect_int("cimage_image_names_len(NULL)", (long long)cimage_image_names_len(NULL), 0);
    expect_null("cimage_image_name(NULL, 0)", cimage_image_name(NULL, 0));
    expect_null("cimage_image_created(NULL)", cimage_image_created(NULL));
    expect_null("cimage_image_top_layer(NULL)", cimage_image_top_layer(NULL));
    expect_int("cimage_layer_list_len(NULL)", (long long)cimage_layer_list_len(NULL), 0);
    expect_null("cimage_layer_list_get(NULL, 0)", cimage_layer_list_get(NULL, 0));
    expect_null("cimage_layer_id(NULL)", cimage_layer_id(NULL));
    expect_null("cimage_layer_parent(NULL)", cimage_layer_parent(NULL));
    expect_null("cimage_layer_diff_digest(NULL)", cimage_layer_diff_digest(NULL));
    expect_int("cimage_container_list_len(NULL)", (long long)cimage_container_list_len(NULL), 0);
    expect_null("cimage_container_list_get(NULL, 0)", cimage_container_list_get(NULL, 0));
    expect_null("cimage_container_id(NULL)", cimage_container_id(NULL));
    expect_int("cimage_container_names_len(NULL)", (long long)cimage_container_names_len(NULL), 0);
    expect_null("cimage_container_name(NULL, 0)", cimage_container_name(NULL, 0));
    expect_null("cimage_container_image_id(NULL)", cimage_container_image_id(NULL));
    expect_null("cimage_container_mount_point(NULL)", cimage_container_mount_point(NULL));

    /* Sizes have two plausible fallbacks: 0 (nothing) or -1 (unknown). */
    {
        int64_t image_size = cimage_image_size(NULL), layer_size = cimage_layer_diff_size(NULL);
        if ((image_size != 0 && image_size != -1) || (layer_size != 0 && layer_size != -1))
            failed("sizes of NULL handles", "image %lld, layer %lld; want 0 or -1", (long long)image_size,
                   (long long)layer_size);
        passed("cimage_image_size(NULL), cimage_layer_diff_size(NULL)", "%lld, %lld", (long long)image_size,
               (long long)layer_size);
    }
}

static void check_option_setters(void)
{
    cimage_store_options *store_options = cimage_store_options_new();
    cimage_pull_options *pull_options = cimage_pull_options_new();
    cimage_container_options *container_options = cimage_container_options_new();
    cimage_error *err = NULL;
    cimage_status status;

    if (store_options == NULL || pull_options == NULL || container_options == NULL)
        failed("options _new", "returned NULL");

    status = cimage_store_options_set_graph_root(NULL, "/tmp", &err);
    expect_status("store_options_set_graph_root(NULL options)", status, err, CIMAGE_STATUS_NULL_ARGUMENT);
    status = cimage_store_options_set_graph_root(store_options, NULL, &err);
    expect_status("store_options_set_graph_root(NULL path)", status, err, CIMAGE_STATUS_NULL_ARGUMENT);
    status = cimage_store_options_set_run_root(store_options, NULL, &err);
    expect_status("store_options_set_run_root(NULL path)", status, err, CIMAGE_STATUS_NULL_ARGUMENT);
    status = cimage_store_options_set_sync(NULL, false, &err);
    expect_status("store_options_set_sync(NULL options)", status, err, CIMAGE_STATUS_NULL_ARGUMENT);
    status = cimage_store_options_set_driver(store_options, NULL, &err);
    expect_status("store_options_set_driver(NULL)", status, err, CIMAGE_STATUS_NULL_ARGUMENT);
    status = cimage_store_options_set_driver(store_options, "no-such-driver", &err);
    expect_status("store_options_set_driver(\"no-such-driver\")", status, err, CIMAGE_STATUS_INVALID_ARGUMENT);
    expect_status_no_err("store_options_set_driver(\"\")", cimage_store_options_set_driver(store_options, "", NULL),
                         CIMAGE_STATUS_INVALID_ARGUMENT);
    err = SENTINEL(cimage_error);
    status = cimage_store_options_set_driver(store_options, "vfs", &err);
    if (err == SENTINEL(cimage_error))
        failed("store_options_set_driver(\"vfs\")", "*err was not set to NULL on success");
    expect_status("store_options_set_driver(\"vfs\")", status, err, CIMAGE_STATUS_OK);

    status = cimage_pull_options_set_tls_verify(NULL, false, &err);
    expect_status("pull_options_set_tls_verify(NULL options)", status, err, CIMAGE_STATUS_NULL_ARGUMENT);
    status = cimage_pull_options_set_policy(pull_options, 99, &err);
    expect_status("pull_options_set_policy(99)", status, err, CIMAGE_STATUS_INVALID_ARGUMENT);
    expect_status_no_err("pull_options_set_policy(-1)", cimage_pull_options_set_policy(pull_options, -1, NULL),
                         CIMAGE_STATUS_INVALID_ARGUMENT);
    status = cimage_pull_options_set_platform(pull_options, NULL, &err);
    expect_status("pull_options_set_platform(NULL)", status, err, CIMAGE_STATUS_NULL_ARGUMENT);
    status = cimage_pull_options_set_platform(pull_options, "", &err);
    expect_status("pull_options_set_platform(\"\")", status, err, CIMAGE_STATUS_INVALID_ARGUMENT);
    status = cimage_pull_options_set_platform(pull_options, "linux", &err);
    expect_status("pull_options_set_platform(\"linux\")", status, err, CIMAGE_STATUS_INVALID_ARGUMENT);
    status = cimage_pull_options_set_platform(pull_options, "linux/arm/v7/extra", &err);
    expect_status("pull_options_set_platform(\"linux/arm/v7/extra\")", status, err, CIMAGE_STATUS_INVALID_ARGUMENT);
    status = cimage_pull_options_set_platform(pull_options, "linux/arm64", &err);
    expect_status("pull_options_set_platform(\"linux/arm64\")", status, err, CIMAGE_STATUS_OK);
    status = cimage_pull_options_set_progress(NULL, NULL, NULL, &err);
    expect_status("pull_options_set_progress(NULL options)", status, err, CIMAGE_STATUS_NULL_ARGUMENT);
    status = cimage_pull_options_set_cancel_token(NULL, NULL, &err);
    expect_status("pull_options_set_cancel_token(NULL options)", status, err, CIMAGE_STATUS_NULL_ARGUMENT);

    status = cimage_container_options_set_name(NULL, "x", &err);
    expect_status("container_options_set_name(NULL options)", status, err, CIMAGE_STATUS_NULL_ARGUMENT);
    status = cimage_container_options_set_name(container_options, NULL, &err);
    expect_status("container_options_set_name(NULL name)", status, err, CIMAGE_STATUS_NULL_ARGUMENT);
    status = cimage_container_options_set_metadata(container_options, NULL, &err);
    expect_status("container_options_set_metadata(NULL)", status, err, CIMAGE_STATUS_NULL_ARGUMENT);

    cimage_container_options_free(container_options);
    cimage_pull_options_free(pull_options);
    cimage_store_options_free(store_options);
}

/* Builds store options for ROOT and RUN_ROOT with the vfs driver (works on any file system). */
static cimage_store_options *scratch_store_options(const char *root, const char *run_root)
{
    cimage_store_options *opts = cimage_store_options_new();
    cimage_error *err = NULL;
    cimage_status status = cimage_store_options_set_graph_root(opts, root, &err);

    if (status == CIMAGE_STATUS_OK)
        status = cimage_store_options_set_run_root(opts, run_root, &err);
    if (status == CIMAGE_STATUS_OK)
        status = cimage_store_options_set_driver(opts, "vfs", &err);
    if (status != CIMAGE_STATUS_OK)
        failed("store options for the scratch store", "%s: %s", cimage_status_name(status),
               err != NULL ? cimage_error_message(err) : "no message");
    return opts;
}

static void check_store_open_errors(const char *scratch)
{
    char root[4096], run_root[4096], file_root[4096];
    cimage_store_options *opts;
    cimage_store *store = SENTINEL(cimage_store);
    cimage_error *err = NULL;
    cimage_status status;

    format_path(root, sizeof root, "%s/store", scratch);
    format_path(run_root, sizeof run_root, "%s/run", scratch);
    opts = scratch_store_options(root, run_root);
    status = cimage_store_open(opts, NULL, &err);
    expect_status("store_open(store_out = NULL)", status, err, CIMAGE_STATUS_NULL_ARGUMENT);
    expect_status_no_err("store_open(store_out = NULL, err = NULL)", cimage_store_open(opts, NULL, NULL),
                         CIMAGE_STATUS_NULL_ARGUMENT);
    cimage_store_options_free(opts);

    /* A graph root that is a regular file: refused when set or when opened, never a crash. */
    format_path(file_root, sizeof file_root, "%s/not-a-directory", scratch);
    write_file(file_root, "x", 1);
    format_path(run_root, sizeof run_root, "%s/run-file-root", scratch);
    opts = cimage_store_options_new();
    status = cimage_store_options_set_graph_root(opts, file_root, &err);
    if (status != CIMAGE_STATUS_OK) {
        expect_failure("graph root is a regular file (refused when set)", status, err);
    } else {
        status = cimage_store_options_set_run_root(opts, run_root, &err);
        expect_status("set run root", status, err, CIMAGE_STATUS_OK);
        status = cimage_store_options_set_driver(opts, "vfs", &err);
        expect_status("set driver vfs", status, err, CIMAGE_STATUS_OK);
        status = cimage_store_open(opts, &store, &err);
        if (status == CIMAGE_STATUS_OK) {
            cimage_store_free(store);
            failed("graph root is a regular file (store_open)", "succeeded");
        }
        expect_status_out("graph root is a regular file (store_open)", status, err, status, store);
    }
    cimage_store_options_free(opts);
}

/* ------------------------------------------------------------------------------------ */
/* Checks on a store                                                                    */

static cimage_store *open_scratch_store(const char *scratch)
{
    char root[4096], run_root[4096];
    cimage_store_options *opts;
    cimage_store *store = NULL;
    cimage_error *err = NULL;
    cimage_status status;

    format_path(root, sizeof root, "%s/store", scratch);
    format_path(run_root, sizeof run_root, "%s/run", scratch);
    opts = scratch_store_options(root, run_root);
    status = cimage_store_open(opts, &store, &err);
    cimage_store_options_free(opts);
    expect_status_out("store_open(scratch store, vfs)", status, err, CIMAGE_STATUS_OK, store);
    return store;
}

static void check_null_arguments(cimage_store *store)
{
    cimage_image *image = SENTINEL(cimage_image);
    cimage_image_list *images = SENTINEL(cimage_image_list);
    cimage_container *container = SENTINEL(cimage_container);
    char *text = (char *)SENTINEL(char);
    cimage_error *err = NULL;
    cimage_status status;

    status = cimage_store_pull(NULL, "docker://localhost:1/x", NULL, &image, &err);
    expect_status_out("store_pull(NULL store)", status, err, CIMAGE_STATUS_NULL_ARGUMENT, image);
    image = SENTINEL(cimage_image);
    status = cimage_store_pull(store, NULL, NULL, &image, &err);
    expect_status_out("store_pull(NULL reference)", status, err, CIMAGE_STATUS_NULL_ARGUMENT, image);
    expect_status_no_err("store_pull(NULL reference, image_out = NULL, err = NULL)",
                         cimage_store_pull(store, NULL, NULL, NULL, NULL), CIMAGE_STATUS_NULL_ARGUMENT);

    status = cimage_store_images(NULL, &images, &err);
    expect_status_out("store_images(NULL store)", status, err, CIMAGE_STATUS_NULL_ARGUMENT, images);
    status = cimage_store_images(store, NULL, &err);
    expect_status("store_images(list_out = NULL)", status, err, CIMAGE_STATUS_NULL_ARGUMENT);
    image = SENTINEL(cimage_image);
    status = cimage_store_image_lookup(store, NULL, &image, &err);
    expect_status_out("store_image_lookup(NULL name)", status, err, CIMAGE_STATUS_NULL_ARGUMENT, image);
    status = cimage_store_image_lookup(store, "anything", NULL, &err);
    expect_status("store_image_lookup(image_out = NULL)", status, err, CIMAGE_STATUS_NULL_ARGUMENT);
    status = cimage_store_container_create(store, NULL, NULL, &container, &err);
    expect_status_out("store_container_create(NULL image)", status, err, CIMAGE_STATUS_NULL_ARGUMENT, container);
    status = cimage_store_container_mount(store, NULL, &text, &err);
    expect_status_out("store_container_mount(NULL container)", status, err, CIMAGE_STATUS_NULL_ARGUMENT, text);
    status = cimage_store_container_unmount(NULL, "x", false, &err);
    expect_status("store_container_unmount(NULL store)", status, err, CIMAGE_STATUS_NULL_ARGUMENT);
    status = cimage_store_layer_delete(store, NULL, &err);
    expect_status("store_layer_delete(NULL layer)", status, err, CIMAGE_STATUS_NULL_ARGUMENT);
    status = cimage_store_wipe(NULL, &err);
    expect_status("store_wipe(NULL store)", status, err, CIMAGE_STATUS_NULL_ARGUMENT);
}

static void check_unknown_ids(cimage_store *store)
{
    static const char unknown[] = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";
    cimage_image *image = SENTINEL(cimage_image);
    cimage_layer *layer = SENTINEL(cimage_layer);
    cimage_container *container = SENTINEL(cimage_container);
    char *text = (char *)SENTINEL(char);
    cimage_error *err = NULL;
    cimage_status status;

    status = cimage_store_image_lookup(store, unknown, &image, &err);
    expect_status_out("store_image_lookup(unknown ID)", status, err, CIMAGE_STATUS_NOT_FOUND, image);
    status = cimage_store_image_lookup(store, "no-such-image:latest", &image, &err);
    expect_status_out("store_image_lookup(unknown name)", status, err, CIMAGE_STATUS_NOT_FOUND, image);
    expect_status_no_err("store_image_lookup(unknown ID, err = NULL)", cimage_store_image_lookup(store, unknown, &image, NULL),
                         CIMAGE_STATUS_NOT_FOUND);
    status = cimage_store_layer_lookup(store, unknown, &layer, &err);
    expect_status_out("store_layer_lookup(unknown ID)", status, err, CIMAGE_STATUS_NOT_FOUND, layer);
    status = cimage_store_container_lookup(store, "no-such-container", &container, &err);
    expect_status_out("store_container_lookup(unknown name)", status, err, CIMAGE_STATUS_NOT_FOUND, container);
    container = SENTINEL(cimage_container);
    status = cimage_store_container_create(store, unknown, NULL, &container, &err);
    expect_status_out("store_container_create(unknown image)", status, err, CIMAGE_STATUS_NOT_FOUND, container);
    status = cimage_store_container_mount(store, unknown, &text, &err);
    expect_status_out("store_container_mount(unknown container)", status, err, CIMAGE_STATUS_NOT_FOUND, text);
    status = cimage_store_container_unmount(store, unknown, false, &err);
    expect_status("store_container_unmount(unknown container)", status, err, CIMAGE_STATUS_NOT_FOUND);
    status = cimage_store_container_delete(store, unknown, &err);
    expect_status("store_container_delete(unknown container)", status, err, CIMAGE_STATUS_NOT_FOUND);
    status = cimage_store_image_delete(store, unknown, &err);
    expect_status("store_image_delete(unknown image)", status, err, CIMAGE_STATUS_NOT_FOUND);
    status = cimage_store_layer_delete(store, unknown, &err);
    expect_status("store_layer_delete(unknown layer)", status, err, CIMAGE_STATUS_NOT_FOUND);
    text = (char *)SENTINEL(char);
    status = cimage_store_image_manifest(store, unknown, &text, &err);
    expect_status_out("store_image_manifest(unknown image)", status, err, CIMAGE_STATUS_NOT_FOUND, text);
    text = (char *)SENTINEL(char);
    status = cimage_store_image_config(store, unknown, &text, &err);
    expect_status_out("store_image_config(unknown image)", status, err, CIMAGE_STATUS_NOT_FOUND, text);
}

static void check_malformed_references(cimage_store *store)
{
    static const char *const references[] = {
        "UPPER/case", "", "docker://", "oci:", "docker://localhost:1/repo:bad tag", "docker://localhost:1/repo@sha256:short",
    };
    char what[256];

    for (size_t i = 0; i < sizeof references / sizeof references[0]; i++) {
        cimage_image *image = SENTINEL(cimage_image);
        cimage_error *err = NULL;
        cimage_status status = cimage_store_pull(store, references[i], NULL, &image, &err);
        snprintf(what, sizeof what, "store_pull(\"%s\")", references[i]);
        expect_status_out(what, status, err, CIMAGE_STATUS_INVALID_ARGUMENT, image);
    }
    expect_status_no_err("store_pull(\"UPPER/case\", err = NULL)", cimage_store_pull(store, "UPPER/case", NULL, NULL, NULL),
                         CIMAGE_STATUS_INVALID_ARGUMENT);
}

/* Counts the images and layers in the store (a failed pull must leave none behind). */
static void expect_store_empty(const char *what, cimage_store *store)
{
    cimage_image_list *images = NULL;
    cimage_layer_list *layers = NULL;
    cimage_error *err = NULL;
    cimage_status status = cimage_store_images(store, &images, &err);
    size_t image_count, layer_count;

    expect_status_out("store_images", status, err, CIMAGE_STATUS_OK, images);
    status = cimage_store_layers(store, &layers, &err);
    expect_status_out("store_layers", status, err, CIMAGE_STATUS_OK, layers);
    image_count = cimage_image_list_len(images);
    layer_count = cimage_layer_list_len(layers);
    cimage_image_list_free(images);
    cimage_layer_list_free(layers);
    if (image_count != 0 || layer_count != 0)
        failed(what, "%zu images and %zu layers left in the store", image_count, layer_count);
    passed(what, "store still empty");
}

static int32_t cancel_at_first_event(void *user_data, const cimage_progress *ev)
{
    (void)ev;
    *(int *)user_data += 1;
    return 1;
}

/* Pulls from layouts that are wrong in some way, then cancels pulls of a good one. */
static void check_bad_layouts(cimage_store *store, const char *scratch)
{
    char dir[4096], blob_path[4096], reference[4200];
    cimage_image *image = SENTINEL(cimage_image);
    cimage_error *err = NULL;
    cimage_status status;
    struct blob layer;

    /* A layer whose bytes do not match its digest. */
    format_path(dir, sizeof dir, "%s/layout-tampered", scratch);
    layer = write_layout(dir, "hello.txt", "tampered\n");
    format_path(blob_path, sizeof blob_path, "%s/blobs/sha256/%s", dir, layer.digest + strlen("sha256:"));
    {
        unsigned char tar[TAR_MAX];
        write_file(blob_path, tar, make_tar(tar, "hello.txt", "TAMPERED\n"));
    }
    format_path(reference, sizeof reference, "oci:%s:latest", dir);
    status = cimage_store_pull(store, reference, NULL, &image, &err);
    expect_status_out("pull a layout with a tampered layer", status, err, CIMAGE_STATUS_DIGEST_MISMATCH, image);
    expect_store_empty("after the digest mismatch", store);

    /* A layer with an entry that climbs out of its directory. */
    format_path(dir, sizeof dir, "%s/layout-unsafe", scratch);
    write_layout(dir, "../escaped.txt", "outside\n");
    format_path(reference, sizeof reference, "oci:%s:latest", dir);
    image = SENTINEL(cimage_image);
    status = cimage_store_pull(store, reference, NULL, &image, &err);
    expect_status_out("pull a layout with a ../ entry", status, err, CIMAGE_STATUS_UNSAFE_ARCHIVE, image);
    expect_store_empty("after the unsafe archive", store);

    /* A good layout, but a tag it does not have. */
    format_path(dir, sizeof dir, "%s/layout-good", scratch);
    write_layout(dir, "hello.txt", "hello from cimage\n");
    format_path(reference, sizeof reference, "oci:%s:no-such-tag", dir);
    image = SENTINEL(cimage_image);
    status = cimage_store_pull(store, reference, NULL, &image, &err);
    expect_status_out("pull an unknown tag from a layout", status, err, CIMAGE_STATUS_MANIFEST_UNKNOWN, image);
    format_path(reference, sizeof reference, "oci:%s/no-such-layout:latest", scratch);
    image = SENTINEL(cimage_image);
    status = cimage_store_pull(store, reference, NULL, &image, &err);
    if (status == CIMAGE_STATUS_OK)
        failed("pull from a missing layout directory", "succeeded");
    expect_status_out("pull from a missing layout directory", status, err, status, image);

    /* Cancelled by the progress callback, and by a token cancelled beforehand. */
    {
        cimage_pull_options *opts = cimage_pull_options_new();
        cimage_cancel_token *token = cimage_cancel_token_new();
        int events = 0;

        format_path(reference, sizeof reference, "oci:%s:latest", dir);
        status = cimage_pull_options_set_progress(opts, cancel_at_first_event, &events, &err);
        expect_status("pull_options_set_progress", status, err, CIMAGE_STATUS_OK);
        image = SENTINEL(cimage_image);
        status = cimage_store_pull(store, reference, opts, &image, &err);
        expect_status_out("pull cancelled by the progress callback", status, err, CIMAGE_STATUS_CANCELLED, image);
        if (events < 1)
            failed("pull cancelled by the progress callback", "the callback was never called");
        expect_store_empty("after the cancelled pull", store);

        cimage_pull_options_free(opts);
        opts = cimage_pull_options_new();
        status = cimage_pull_options_set_cancel_token(opts, token, &err);
        expect_status("pull_options_set_cancel_token", status, err, CIMAGE_STATUS_OK);
        cimage_cancel_token_cancel(token);
        image = SENTINEL(cimage_image);
        status = cimage_store_pull(store, reference, opts, &image, &err);
        expect_status_out("pull with a cancelled token", status, err, CIMAGE_STATUS_CANCELLED, image);
        expect_store_empty("after the token-cancelled pull", store);

        /* The options hold the token: freeing the token first must be safe too. */
        cimage_cancel_token_free(token);
        cimage_pull_options_free(opts);
        passed("free the cancel token before the options holding it", "no crash");
    }
}

/*
 * Pulls the good layout, checks name clashes and in-use errors, then frees the store
 * *before* the image, container and list handles taken from it (STORE is consumed).
 */
static void check_handles_outlive_store(cimage_store *store, const char *scratch)
{
    char reference[4200];
    cimage_image *image = NULL;
    cimage_container *container = NULL, *clash = SENTINEL(cimage_container);
    cimage_container_options *opts = cimage_container_options_new();
    cimage_container_list *containers = NULL;
    cimage_image_list *images = NULL;
    cimage_error *err = NULL;
    char *manifest = NULL;
    cimage_status status;

    format_path(reference, sizeof reference, "oci:%s/layout-good:latest", scratch);
    status = cimage_store_pull(store, reference, NULL, &image, &err);
    expect_status_out("pull the good layout", status, err, CIMAGE_STATUS_OK, image);
    status = cimage_store_image_manifest(store, cimage_image_id(image), &manifest, &err);
    expect_status_out("store_image_manifest", status, err, CIMAGE_STATUS_OK, manifest);
    cimage_string_free(manifest);

    status = cimage_container_options_set_name(opts, "bad-input", &err);
    expect_status("container_options_set_name(\"bad-input\")", status, err, CIMAGE_STATUS_OK);
    status = cimage_store_container_create(store, cimage_image_id(image), opts, &container, &err);
    expect_status_out("store_container_create(\"bad-input\")", status, err, CIMAGE_STATUS_OK, container);
    status = cimage_store_container_create(store, cimage_image_id(image), opts, &clash, &err);
    expect_status_out("store_container_create(\"bad-input\") again", status, err, CIMAGE_STATUS_ALREADY_EXISTS, clash);
    status = cimage_store_image_delete(store, cimage_image_id(image), &err);
    expect_status("store_image_delete(image used by a container)", status, err, CIMAGE_STATUS_IN_USE);
    status = cimage_store_layer_delete(store, cimage_image_top_layer(image), &err);
    expect_status("store_layer_delete(layer of an image)", status, err, CIMAGE_STATUS_IN_USE);

    status = cimage_store_images(store, &images, &err);
    expect_status_out("store_images", status, err, CIMAGE_STATUS_OK, images);
    expect_null("image_list_get(out of range)", cimage_image_list_get(images, cimage_image_list_len(images)));
    status = cimage_store_containers(store, &containers, &err);
    expect_status_out("store_containers", status, err, CIMAGE_STATUS_OK, containers);

    /* The store goes first; the handles keep what they need alive. */
    cimage_store_free(store);
    cimage_container_options_free(opts);
    expect_int("image list length after the store is freed", (long long)cimage_image_list_len(images), 1);
    expect_string("container list entry after the store is freed",
                  cimage_container_id(cimage_container_list_get(containers, 0)), cimage_container_id(container));
    cimage_image_list_free(images);
    expect_string("container name after the store is freed", cimage_container_name(container, 0), "bad-input");
    expect_string("container's image after the store is freed", cimage_container_image_id(container),
                  cimage_image_id(image));
    cimage_image_free(image);
    cimage_container_list_free(containers);
    cimage_container_free(container);
    passed("free store, options, image list, image, container list, container (in that order)", "no crash");
}

int main(int argc, char **argv)
{
    char *scratch;
    cimage_store *store;

    if (argc != 2) {
        fprintf(stderr, "usage: bad_input SCRATCH_DIR\n");
        return EXIT_FAILURE;
    }
    /* Store roots must be absolute paths. */
    scratch = realpath(argv[1], NULL);
    if (scratch == NULL)
        failed("setup", "scratch directory %s: %s", argv[1], strerror(errno));

    check_library_basics();
    check_free_null();
    check_getters_on_null();
    check_option_setters();
    check_store_open_errors(scratch);

    store = open_scratch_store(scratch);
    check_null_arguments(store);
    check_unknown_ids(store);
    check_malformed_references(store);
    check_bad_layouts(store, scratch);
    check_handles_outlive_store(store, scratch);
    free(scratch);
    printf("all checks passed\n");
    return EXIT_SUCCESS;
}
