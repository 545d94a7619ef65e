/*
 * cimagectl: a small podman/skopeo-like command-line tool built only on the public
 * cimage C API (include/cimage.h). It is the showcase of the API: every handle is freed
 * on every path, every failure is reported as one line
 *
 *     cimagectl: STATUS_NAME: message
 *
 * and exit status 1; bad usage exits with status 2 and the usage text.
 *
 *     cimagectl [-d|--driver overlay|vfs] [-r|--root DIR] [-R|--run-root DIR] [--sync=true|false] [--json] COMMAND [ARGS]
 *
 * Logging (CIMAGE_LOG=debug) is handled by the library itself.
 */
#define _POSIX_C_SOURCE 200809L /* isatty, fileno */

#include "cimage.h"

#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define EXIT_USAGE 2
#define EXIT_NOT_CLEAN 3 /* check: the store has problems */
#define SHORT_ID_LEN 12

static const char usage_text[] =
    "Usage: cimagectl [-d|--driver overlay|vfs] [-r|--root DIR] [-R|--run-root DIR] [--sync=true|false] [--json] COMMAND [ARGS]\n"
    "\n"
    "Commands:\n"
    "  store                                  store info and driver status\n"
    "  pull [REGISTRY OPTIONS] [--policy always|missing|never] [--max-unpacked-size BYTES[K|M|G]] REF\n"
    "                                         REF: docker://..., oci:DIR[:TAG], or a bare name\n"
    "  inspect [REGISTRY OPTIONS] REF         manifest digest, config and layers, as JSON (no pull)\n"
    "  tags [REGISTRY OPTIONS] docker://REPO  the repository's tags, one a line\n"
    "  images | layers | containers           lists\n"
    "  container [--name NAME] IMAGE          create a container from an image (id, prefix or name)\n"
    "  mount ID|NAME                          mount a container; prints the mount point\n"
    "  unmount ID|NAME\n"
    "  delete ID|NAME                         a container, image or layer (looked up in that order)\n"
    "  wipe                                   remove everything in the store\n"
    "  check [--repair] [--no-content] [--unreferenced-any-age] [--remove-containers]\n"
    "                                         check (and mend) the store; exits 3 when problems remain\n"
    "\n"
    "Registry options: --tls-verify=true|false, --platform OS/ARCH[/VARIANT],\n"
    "  --creds USER:PASSWORD, --authfile FILE, --cert-dir DIR, --certs-d DIR,\n"
    "  --registries-conf FILE, --registries-conf-dir DIR, --signature-policy FILE,\n"
    "  --stall-timeout DURATION (default 30s; 0: none), --deadline DURATION (default none),\n"
    "  --retries N (default 4). DURATION: 1500ms, 2s, 1m, or milliseconds.\n"
    "\n"
    "With --json each command prints one JSON document on stdout.\n"
    "--sync=false: no flushes to disk (faster; a power loss may damage the store). Default: true.\n";

/* The global options, parsed once in main(); the only global state of the program. */
static struct {
    const char *driver;
    const char *root;
    int sync; /* --sync: 0 unset (storage.conf, then the default), 1 true, -1 false */
    const char *run_root;
    bool json;
} options;

/* ------------------------------------------------------------------------------------ */
/* Errors and usage                                                                     */

/* Prints MESSAGE on one line: a newline inside it would break the one-line error rule. */
static void print_on_one_line(FILE *out, const char *message)
{
    for (const char *c = message; *c != '\0'; c++)
        fputc(*c == '\n' || *c == '\r' ? ' ' : *c, out);
}

/* Reports a failed call: one line on stderr, then frees ERR. Returns the exit status. */
static int report_error(cimage_status status, cimage_error *err)
{
    const char *message = err != NULL ? cimage_error_message(err) : NULL;
    fprintf(stderr, "cimagectl: %s: ", cimage_status_name(status));
    print_on_one_line(stderr, message != NULL ? message : "(no error details)");
    fputc('\n', stderr);
    cimage_error_free(err);
    return EXIT_FAILURE;
}

/* Reports a failure found by cimagectl itself (a bad option value, nothing to delete). */
static int report_failure(cimage_status status, const char *format, ...)
{
    char message[1024];
    va_list args;

    va_start(args, format);
    vsnprintf(message, sizeof message, format, args);
    va_end(args);
    fprintf(stderr, "cimagectl: %s: ", cimage_status_name(status));
    print_on_one_line(stderr, message); /* it may quote what the user typed */
    fputc('\n', stderr);
    return EXIT_FAILURE;
}

static int usage_error(const char *format, ...)
{
    va_list args;
    fputs("cimagectl: ", stderr);
    va_start(args, format);
    vfprintf(stderr, format, args);
    va_end(args);
    fputs("\n\n", stderr);
    fputs(usage_text, stderr);
    return EXIT_USAGE;
}

static void *xmalloc(size_t size)
{
    void *p = malloc(size != 0 ? size : 1);
    if (p == NULL) {
        fputs("cimagectl: INTERNAL: out of memory\n", stderr);
        exit(EXIT_FAILURE);
    }
    return p;
}

static char *xstrdup(const char *s)
{
    size_t len = strlen(s) + 1;
    return memcpy(xmalloc(len), s, len);
}

/* A copy of a table cell with control characters shown as '?', so no name can break the table. */
static char *printable_copy(const char *s)
{
    char *copy = xstrdup(s);
    for (char *c = copy; *c != '\0'; c++)
        if ((unsigned char)*c < 0x20 || *c == 0x7f)
            *c = '?';
    return copy;
}

/* ------------------------------------------------------------------------------------ */
/* Argument parsing                                                                     */

enum option_match { OPTION_NO_MATCH, OPTION_MATCH, OPTION_MISSING_VALUE };

/*
 * Matches argv[*i] against an option that takes a value, written "-d VALUE" (SHORT_NAME,
 * may be NULL), "--driver VALUE" or "--driver=VALUE" (LONG_NAME). On a match *i is
 * moved past the value.
 */
static enum option_match match_value_option(int argc, char **argv, int *i, const char *short_name,
                                            const char *long_name, const char **value)
{
    const char *arg = argv[*i];
    size_t long_len = strlen(long_name);

    if (strncmp(arg, long_name, long_len) == 0 && arg[long_len] == '=') {
        *value = arg + long_len + 1;
        return OPTION_MATCH;
    }
    if (strcmp(arg, long_name) != 0 && (short_name == NULL || strcmp(arg, short_name) != 0))
        return OPTION_NO_MATCH;
    if (*i + 1 >= argc)
        return OPTION_MISSING_VALUE;
    *i += 1;
    *value = argv[*i];
    return OPTION_MATCH;
}

/*
 * Splits a command's arguments into options (handled by PARSE_OPTION, which returns an
 * option_match) and positional arguments, which must number exactly WANT_POSITIONAL.
 * Returns 0, or EXIT_USAGE after printing the usage.
 */
typedef enum option_match (*option_parser)(int argc, char **argv, int *i, void *state);

static int parse_command_args(int argc, char **argv, option_parser parse_option, void *state,
                              const char **positional, int want_positional)
{
    int found = 0;
    bool options_done = false;

    for (int i = 1; i < argc; i++) {
        const char *arg = argv[i];
        if (!options_done && strcmp(arg, "--") == 0) {
            options_done = true;
            continue;
        }
        if (!options_done && arg[0] == '-' && arg[1] != '\0') {
            enum option_match m = parse_option != NULL ? parse_option(argc, argv, &i, state) : OPTION_NO_MATCH;
            if (m == OPTION_NO_MATCH)
                return usage_error("%s: unknown option %s", argv[0], arg);
            if (m == OPTION_MISSING_VALUE)
                return usage_error("%s: option %s needs a value", argv[0], arg);
            continue;
        }
        if (found == want_positional)
            return usage_error("%s: unexpected argument \"%s\"", argv[0], arg);
        positional[found++] = arg;
    }
    if (found < want_positional)
        return usage_error("%s: missing argument", argv[0]);
    return 0;
}

/* ------------------------------------------------------------------------------------ */
/* JSON output                                                                          */

/* Writes S as a JSON string (quotes, backslashes and control characters escaped), or null. */
static void json_string(FILE *out, const char *s)
{
    if (s == NULL) {
        fputs("null", out);
        return;
    }
    fputc('"', out);
    for (const unsigned char *c = (const unsigned char *)s; *c != '\0'; c++) {
        switch (*c) {
        case '"': fputs("\\\"", out); break;
        case '\\': fputs("\\\\", out); break;
        case '\b': fputs("\\b", out); break;
        case '\f': fputs("\\f", out); break;
        case '\n': fputs("\\n", out); break;
        case '\r': fputs("\\r", out); break;
        case '\t': fputs("\\t", out); break;
        default:
            if (*c < 0x20)
                fprintf(out, "\\u%04x", (unsigned)*c);
            else
                fputc(*c, out); /* the library hands out UTF-8, which JSON takes as is */
        }
    }
    fputc('"', out);
}

/* Writes ,"key": (the comma unless FIRST). */
static void json_key(FILE *out, const char *key, bool first)
{
    if (!first)
        fputc(',', out);
    json_string(out, key);
    fputc(':', out);
}

/* A size, where a negative value means unknown (null). */
static void json_size(FILE *out, int64_t size)
{
    if (size < 0)
        fputs("null", out);
    else
        fprintf(out, "%lld", (long long)size);
}

static void json_image_names(FILE *out, const cimage_image *image)
{
    size_t count = cimage_image_names_len(image);
    fputc('[', out);
    for (size_t n = 0; n < count; n++) {
        if (n > 0)
            fputc(',', out);
        json_string(out, cimage_image_name(image, n));
    }
    fputc(']', out);
}

static void json_container_names(FILE *out, const cimage_container *container)
{
    size_t count = cimage_container_names_len(container);
    fputc('[', out);
    for (size_t n = 0; n < count; n++) {
        if (n > 0)
            fputc(',', out);
        json_string(out, cimage_container_name(container, n));
    }
    fputc(']', out);
}

/* ------------------------------------------------------------------------------------ */
/* Human-readable output                                                                */

/* The first 12 characters of an ID, or of a digest's hex part ("sha256:4f4f..." -> "4f4f..."). */
static void short_id(const char *id, char out[SHORT_ID_LEN + 1])
{
    const char *colon;
    out[0] = '\0';
    if (id == NULL)
        return;
    colon = strchr(id, ':');
    if (colon != NULL)
        id = colon + 1;
    snprintf(out, SHORT_ID_LEN + 1, "%s", id);
}

/* A size as podman shows it: three significant digits, decimal units ("7.8 MB"). */
static void human_size(int64_t size, char *out, size_t out_len)
{
    static const char *const units[] = {"B", "kB", "MB", "GB", "TB", "PB", "EB"};
    double value = (double)size;
    size_t unit = 0;

    if (size < 0) {
        snprintf(out, out_len, "unknown");
        return;
    }
    while (value >= 1000.0 && unit + 1 < sizeof units / sizeof units[0]) {
        value /= 1000.0;
        unit++;
    }
    snprintf(out, out_len, "%.3g %s", value, units[unit]);
}

/* Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's days_from_civil). */
static long long days_from_civil(long long y, unsigned m, unsigned d)
{
    y -= m <= 2;
    long long era = (y >= 0 ? y : y - 399) / 400;
    unsigned yoe = (unsigned)(y - era * 400);
    unsigned doy = (153 * (m + (m > 2 ? -3 : 9)) + 2) / 5 + d - 1;
    unsigned doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    return era * 146097 + (long long)doe - 719468;
}

/* Parses an RFC 3339 time ("2024-05-01T12:00:00.5+02:00") into seconds since the epoch. */
static bool parse_rfc3339(const char *text, long long *seconds)
{
    int year, month, day, hour, minute, second, used = 0;
    const char *rest;
    long long offset = 0;

    if (text == NULL ||
        sscanf(text, "%4d-%2d-%2d%*1[Tt ]%2d:%2d:%2d%n", &year, &month, &day, &hour, &minute, &second, &used) != 6 ||
        used == 0 || month < 1 || month > 12 || day < 1 || day > 31)
        return false;
    rest = text + used;
    if (*rest == '.')
        for (rest++; *rest >= '0' && *rest <= '9'; rest++)
            ;
    if (*rest == '+' || *rest == '-') {
        int zone_hour, zone_minute;
        if (sscanf(rest + 1, "%2d:%2d", &zone_hour, &zone_minute) != 2)
            return false;
        offset = (zone_hour * 60LL + zone_minute) * 60;
        if (*rest == '-')
            offset = -offset;
    } else if (*rest != 'Z' && *rest != 'z') {
        return false;
    }
    *seconds = days_from_civil(year, (unsigned)month, (unsigned)day) * 86400 + hour * 3600LL + minute * 60LL +
               second - offset;
    return true;
}

/* "3 weeks ago", in the words podman uses (Docker's units.HumanDuration). */
static void human_age(const char *created, char *out, size_t out_len)
{
    long long then, age, hours;

    if (!parse_rfc3339(created, &then)) {
        snprintf(out, out_len, "%s", created != NULL ? created : "unknown");
        return;
    }
    age = (long long)time(NULL) - then;
    if (age < 0)
        age = 0;
    hours = (age + 1800) / 3600;
    if (age < 1)
        snprintf(out, out_len, "Less than a second ago");
    else if (age == 1)
        snprintf(out, out_len, "1 second ago");
    else if (age < 60)
        snprintf(out, out_len, "%lld seconds ago", age);
    else if (age / 60 == 1)
        snprintf(out, out_len, "About a minute ago");
    else if (age / 60 < 60)
        snprintf(out, out_len, "%lld minutes ago", age / 60);
    else if (hours == 1)
        snprintf(out, out_len, "About an hour ago");
    else if (hours < 48)
        snprintf(out, out_len, "%lld hours ago", hours);
    else if (hours < 24 * 7 * 2)
        snprintf(out, out_len, "%lld days ago", hours / 24);
    else if (hours < 24 * 30 * 2)
        snprintf(out, out_len, "%lld weeks ago", hours / 24 / 7);
    else if (hours < 24 * 365 * 2)
        snprintf(out, out_len, "%lld months ago", hours / 24 / 30);
    else
        snprintf(out, out_len, "%lld years ago", hours / 24 / 365);
}

/* A table printed with columns as wide as their widest cell, like podman's. */
struct table {
    size_t columns;
    size_t rows;
    size_t capacity; /* rows */
    char **cells;    /* rows * columns strings, row by row; row 0 is the header */
};

static void table_add_row(struct table *t, const char *const *cells)
{
    if (t->rows == t->capacity) {
        size_t capacity = t->capacity != 0 ? t->capacity * 2 : 16;
        char **grown = xmalloc(capacity * t->columns * sizeof *grown);
        if (t->cells != NULL)
            memcpy(grown, t->cells, t->rows * t->columns * sizeof *grown);
        free(t->cells);
        t->cells = grown;
        t->capacity = capacity;
    }
    for (size_t c = 0; c < t->columns; c++)
        t->cells[t->rows * t->columns + c] = printable_copy(cells[c]);
    t->rows++;
}

/* Prints the table on stdout and frees it. */
static void table_print_and_free(struct table *t)
{
    size_t *widths = xmalloc(t->columns * sizeof *widths);

    for (size_t c = 0; c < t->columns; c++) {
        widths[c] = 0;
        for (size_t r = 0; r < t->rows; r++) {
            size_t len = strlen(t->cells[r * t->columns + c]);
            if (len > widths[c])
                widths[c] = len;
        }
    }
    for (size_t r = 0; r < t->rows; r++) {
        for (size_t c = 0; c < t->columns; c++) {
            const char *cell = t->cells[r * t->columns + c];
            if (c + 1 < t->columns)
                printf("%-*s  ", (int)widths[c], cell);
            else
                printf("%s\n", cell);
            free(t->cells[r * t->columns + c]);
        }
    }
    free(widths);
    free(t->cells);
    t->cells = NULL;
    t->rows = t->capacity = 0;
}

/* Splits an image name "registry/repo:tag" (or "repo@sha256:...") into repository and tag. */
static void split_image_name(const char *name, char *repository, size_t repository_len, char *tag, size_t tag_len)
{
    const char *at = strchr(name, '@');
    const char *slash = strrchr(name, '/');
    const char *colon = strrchr(name, ':');

    if (at != NULL) {
        snprintf(repository, repository_len, "%.*s", (int)(at - name), name);
        snprintf(tag, tag_len, "<none>");
    } else if (colon != NULL && (slash == NULL || colon > slash)) {
        snprintf(repository, repository_len, "%.*s", (int)(colon - name), name);
        snprintf(tag, tag_len, "%s", colon + 1);
    } else {
        snprintf(repository, repository_len, "%s", name);
        snprintf(tag, tag_len, "<none>");
    }
}

/* ------------------------------------------------------------------------------------ */
/* The store                                                                            */

/* PATH made absolute against the working directory (the library wants absolute roots). */
static char *absolute_path(const char *path)
{
    char cwd[4096];
    char *joined;

    if (path[0] == '/' || getcwd(cwd, sizeof cwd) == NULL)
        return xstrdup(path); /* if the directory is unknown, let the library judge the path */
    joined = xmalloc(strlen(cwd) + 1 + strlen(path) + 1);
    sprintf(joined, "%s/%s", cwd, path);
    return joined;
}

/* Sets a root directory option, given as a possibly relative PATH. */
static cimage_status set_root_option(cimage_status (*set)(cimage_store_options *, const char *, cimage_error **),
                                     cimage_store_options *store_options, const char *path, cimage_error **err)
{
    char *absolute = absolute_path(path);
    cimage_status status = set(store_options, absolute, err);
    free(absolute);
    return status;
}

/* Opens the store the global options describe. Returns 0, or 1 after reporting the error. */
static int open_store(cimage_store **store)
{
    cimage_store_options *store_options = NULL;
    cimage_error *err = NULL;
    cimage_status status = CIMAGE_STATUS_OK;

    *store = NULL;
    if (options.driver != NULL || options.root != NULL || options.run_root != NULL || options.sync != 0) {
        store_options = cimage_store_options_new();
        if (store_options == NULL)
            return report_failure(CIMAGE_STATUS_INTERNAL, "cannot allocate store options");
        if (options.root != NULL)
            status = set_root_option(cimage_store_options_set_graph_root, store_options, options.root, &err);
        if (status == CIMAGE_STATUS_OK && options.run_root != NULL)
            status = set_root_option(cimage_store_options_set_run_root, store_options, options.run_root, &err);
        if (status == CIMAGE_STATUS_OK && options.driver != NULL)
            status = cimage_store_options_set_driver(store_options, options.driver, &err);
        if (status == CIMAGE_STATUS_OK && options.sync != 0)
            status = cimage_store_options_set_sync(store_options, options.sync > 0, &err);
    }
    /* NULL options: the defaults from storage.conf. */
    if (status == CIMAGE_STATUS_OK)
        status = cimage_store_open(store_options, store, &err);
    cimage_store_options_free(store_options);
    if (status != CIMAGE_STATUS_OK)
        return report_error(status, err);
    return 0;
}

/* ------------------------------------------------------------------------------------ */
/* Commands                                                                             */

static int cmd_store(int argc, char **argv)
{
    cimage_store *store = NULL;
    size_t status_len;
    int rc = parse_command_args(argc, argv, NULL, NULL, NULL, 0);

    if (rc != 0)
        return rc;
    if (open_store(&store) != 0)
        return EXIT_FAILURE;
    status_len = cimage_store_driver_status_len(store);
    if (options.json) {
        fputc('{', stdout);
        json_key(stdout, "root", true);
        json_string(stdout, cimage_store_graph_root(store));
        json_key(stdout, "run_root", false);
        json_string(stdout, cimage_store_run_root(store));
        json_key(stdout, "driver", false);
        json_string(stdout, cimage_store_driver_name(store));
        json_key(stdout, "status", false);
        fputc('{', stdout);
        for (size_t i = 0; i < status_len; i++) {
            const char *key = cimage_store_driver_status_key(store, i);
            json_key(stdout, key != NULL ? key : "", i == 0);
            json_string(stdout, cimage_store_driver_status_value(store, i));
        }
        fputs("}}\n", stdout);
    } else {
        const char *root = cimage_store_graph_root(store);
        const char *run_root = cimage_store_run_root(store);
        const char *driver = cimage_store_driver_name(store);
        printf("graphRoot: %s\n", root != NULL ? root : "");
        printf("runRoot: %s\n", run_root != NULL ? run_root : "");
        printf("graphDriverName: %s\n", driver != NULL ? driver : "");
        printf("graphStatus:\n");
        for (size_t i = 0; i < status_len; i++) {
            const char *key = cimage_store_driver_status_key(store, i);
            const char *value = cimage_store_driver_status_value(store, i);
            printf("  %s: %s\n", key != NULL ? key : "", value != NULL ? value : "");
        }
    }
    cimage_store_free(store);
    return EXIT_SUCCESS;
}

/* -- pull -- */

/* Options shared by pull, inspect and tags (they all talk to a registry). */
struct pull_args {
    const char *tls_verify; /* "true" or "false", NULL: the library default */
    const char *platform;
    const char *policy; /* pull only */
    /* Registry access, as skopeo's options of the same names; NULL: the library default. */
    const char *creds; /* USER:PASSWORD */
    const char *authfile;
    const char *cert_dir;
    const char *certs_d; /* a certs.d root with a HOST[:PORT] directory per registry */
    const char *registries_conf;
    const char *registries_conf_dir;
    const char *signature_policy;
    const char *stall_timeout; /* durations: "1500ms", "2s", "1m" or plain milliseconds */
    const char *deadline;
    const char *retries;
    const char *max_unpacked_size; /* pull only */
};

static enum option_match parse_registry_option(int argc, char **argv, int *i, void *state)
{
    struct pull_args *args = state;
    enum option_match m;

    if (strcmp(argv[*i], "--tls-verify") == 0) {
        args->tls_verify = "true";
        return OPTION_MATCH;
    }
    if (strncmp(argv[*i], "--tls-verify=", 13) == 0) {
        args->tls_verify = argv[*i] + 13;
        return OPTION_MATCH;
    }
    static const struct {
        const char *name;
        size_t offset;
    } value_options[] = {
        {"--platform", offsetof(struct pull_args, platform)},
        {"--creds", offsetof(struct pull_args, creds)},
        {"--authfile", offsetof(struct pull_args, authfile)},
        {"--cert-dir", offsetof(struct pull_args, cert_dir)},
        {"--certs-d", offsetof(struct pull_args, certs_d)},
        {"--registries-conf", offsetof(struct pull_args, registries_conf)},
        {"--registries-conf-dir", offsetof(struct pull_args, registries_conf_dir)},
        {"--signature-policy", offsetof(struct pull_args, signature_policy)},
        {"--stall-timeout", offsetof(struct pull_args, stall_timeout)},
        {"--deadline", offsetof(struct pull_args, deadline)},
        {"--retries", offsetof(struct pull_args, retries)},
    };
    for (size_t k = 0; k < sizeof value_options / sizeof value_options[0]; k++) {
        const char **value = (const char **)((char *)args + value_options[k].offset);
        m = match_value_option(argc, argv, i, NULL, value_options[k].name, value);
        if (m != OPTION_NO_MATCH)
            return m;
    }
    return OPTION_NO_MATCH;
}

static enum option_match parse_pull_option(int argc, char **argv, int *i, void *state)
{
    struct pull_args *args = state;
    enum option_match m = parse_registry_option(argc, argv, i, state);
    if (m != OPTION_NO_MATCH)
        return m;
    m = match_value_option(argc, argv, i, NULL, "--max-unpacked-size", &args->max_unpacked_size);
    if (m != OPTION_NO_MATCH)
        return m;
    return match_value_option(argc, argv, i, NULL, "--policy", &args->policy);
}

/* --creds USER:PASSWORD, split at the first ':' as skopeo does. Returns 0, or 1 after reporting. */
static int set_credentials(cimage_pull_options *opts, const char *creds)
{
    const char *colon = strchr(creds, ':');
    cimage_error *err = NULL;
    cimage_status status;
    char *user;

    if (colon == NULL || colon == creds)
        return report_failure(CIMAGE_STATUS_INVALID_ARGUMENT, "invalid --creds value: want USER:PASSWORD");
    user = malloc((size_t)(colon - creds) + 1);
    if (user == NULL)
        return report_failure(CIMAGE_STATUS_INTERNAL, "out of memory");
    memcpy(user, creds, (size_t)(colon - creds));
    user[colon - creds] = '\0';
    status = cimage_pull_options_set_credentials(opts, user, colon + 1, &err);
    free(user);
    return status == CIMAGE_STATUS_OK ? 0 : report_error(status, err);
}

/* Parses "1500ms", "2s", "1.5s", "1m" or "1500" (milliseconds). Returns false if malformed. */
static bool parse_duration_ms(const char *text, uint64_t *ms)
{
    char *end = NULL;
    double value = strtod(text, &end);
    double scale;

    if (end == text || value < 0)
        return false;
    if (*end == '\0' || strcmp(end, "ms") == 0)
        scale = 1;
    else if (strcmp(end, "s") == 0)
        scale = 1000;
    else if (strcmp(end, "m") == 0)
        scale = 60000;
    else
        return false;
    if (value * scale > 1e15)
        return false;
    *ms = (uint64_t)(value * scale + 0.5);
    return true;
}

/*
 * What the progress callback needs. Not on a terminal it prints skopeo-like lines
 * ("Copying blob 4f4fb700ef54 done"). On a terminal it keeps one live bar per blob at the
 * bottom of the screen, redrawn in place, with the other lines printed above them.
 */
enum { MAX_BARS = 32 };

struct blob_bar {
    char hex[SHORT_ID_LEN + 1];
    uint64_t done, total;
    const char *state; /* NULL while downloading, else "done", "skipped: already exists", ... */
};

struct pull_progress {
    bool live;          /* stderr is a terminal */
    int drawn;          /* lines of bars currently on screen, below the cursor's start */
    struct blob_bar bars[MAX_BARS];
    int bar_count;
    char config_digest[160];
    bool manifest_written;
};

/* A byte count in binary units, as skopeo's progress bars show it ("1.5 MiB"). */
static void binary_size(uint64_t bytes, char *out, size_t out_len)
{
    static const char *const units[] = {"B", "KiB", "MiB", "GiB", "TiB"};
    double value = (double)bytes;
    size_t unit = 0;
    while (value >= 1024.0 && unit + 1 < sizeof units / sizeof units[0]) {
        value /= 1024.0;
        unit++;
    }
    snprintf(out, out_len, unit == 0 ? "%.0f %s" : "%.1f %s", value, units[unit]);
}

/* Moves the cursor back to the first bar line and clears everything below it. */
static void progress_erase_bars(struct pull_progress *p)
{
    if (p->drawn > 0) {
        fprintf(stderr, "\033[%dA\r\033[J", p->drawn);
        p->drawn = 0;
    }
}

static void progress_draw_bars(struct pull_progress *p)
{
    enum { BAR_WIDTH = 30 };

    progress_erase_bars(p);
    for (int i = 0; i < p->bar_count; i++) {
        const struct blob_bar *b = &p->bars[i];
        char bar[BAR_WIDTH + 1], done_text[32], total_text[32];
        uint64_t done = b->total > 0 && b->done > b->total ? b->total : b->done;
        size_t filled = b->total > 0 ? (size_t)(done * BAR_WIDTH / b->total) : 0;

        if (b->state != NULL && strcmp(b->state, "done") == 0)
            filled = BAR_WIDTH;
        for (size_t k = 0; k < BAR_WIDTH; k++)
            bar[k] = k < filled ? '=' : (k == filled ? '>' : '-');
        bar[BAR_WIDTH] = '\0';
        binary_size(done, done_text, sizeof done_text);
        binary_size(b->total, total_text, sizeof total_text);
        if (b->state != NULL && strcmp(b->state, "done") != 0)
            fprintf(stderr, "Copying blob %s %s\n", b->hex, b->state);
        else if (b->total > 0)
            fprintf(stderr, "Copying blob %s [%s] %s / %s%s%s\n", b->hex, bar, done_text, total_text,
                    b->state != NULL ? " " : "", b->state != NULL ? b->state : "");
        else
            fprintf(stderr, "Copying blob %s %s\n", b->hex, done_text);
        p->drawn++;
    }
    fflush(stderr);
}

/* The bar of a blob, added at the bottom on first sight; NULL when there are too many. */
static struct blob_bar *progress_bar(struct pull_progress *p, const char *hex)
{
    for (int i = 0; i < p->bar_count; i++)
        if (strcmp(p->bars[i].hex, hex) == 0)
            return &p->bars[i];
    if (p->bar_count == MAX_BARS)
        return NULL;
    struct blob_bar *b = &p->bars[p->bar_count++];
    memset(b, 0, sizeof *b);
    snprintf(b->hex, sizeof b->hex, "%s", hex);
    return b;
}

/* A line that is not a bar: printed above the bars. */
static void progress_line(struct pull_progress *p, const char *format, ...)
{
    va_list args;
    progress_erase_bars(p);
    va_start(args, format);
    vfprintf(stderr, format, args);
    va_end(args);
    fputc('\n', stderr);
    if (p->live)
        progress_draw_bars(p);
    fflush(stderr);
}

/* A blob reached a final state: a line of its own, or its bar's last look on a terminal. */
static void progress_blob_state(struct pull_progress *p, const char *hex, const char *state)
{
    struct blob_bar *b = p->live ? progress_bar(p, hex) : NULL;
    if (b == NULL) {
        progress_line(p, "Copying blob %s %s", hex, state);
        return;
    }
    b->state = state;
    progress_draw_bars(p);
}

/* Leaves the bars as they are on screen and forgets them. */
static void progress_finish(struct pull_progress *p)
{
    p->drawn = 0;
}

static bool is_config_digest(const struct pull_progress *p, const char *digest)
{
    return digest != NULL && p->config_digest[0] != '\0' && strcmp(p->config_digest, digest) == 0;
}

/* The pull progress callback: runs on this thread, during cimage_store_pull only. */
static int32_t on_pull_progress(void *user_data, const cimage_progress *ev)
{
    struct pull_progress *p = user_data;
    char hex[SHORT_ID_LEN + 1];
    /* Fields are only ever added at the end; check the ones read here are present. */
    bool has_bytes = ev->struct_size >= offsetof(cimage_progress, bytes_total) + sizeof ev->bytes_total;

    short_id(ev->digest, hex);
    switch (ev->kind) {
    case CIMAGE_PROGRESS_DOWNLOADING:
        if (p->live && has_bytes && ev->digest != NULL) {
            struct blob_bar *b = progress_bar(p, hex);
            if (b != NULL) {
                b->done = ev->bytes_done;
                b->total = ev->bytes_total;
                progress_draw_bars(p);
            }
        }
        break;
    case CIMAGE_PROGRESS_DONE:
        if (ev->digest != NULL && !is_config_digest(p, ev->digest))
            progress_blob_state(p, hex, "done");
        break;
    case CIMAGE_PROGRESS_SKIPPED:
        if (ev->digest != NULL && !is_config_digest(p, ev->digest))
            progress_blob_state(p, hex, "skipped: already exists");
        break;
    case CIMAGE_PROGRESS_FAILED:
        if (ev->digest != NULL && p->live)
            progress_blob_state(p, hex, "failed");
        break;
    case CIMAGE_PROGRESS_CONFIG:
        if (ev->digest != NULL && !is_config_digest(p, ev->digest)) {
            snprintf(p->config_digest, sizeof p->config_digest, "%s", ev->digest);
            progress_line(p, "Copying config %s done", hex);
        }
        break;
    case CIMAGE_PROGRESS_COMMITTING:
        if (!p->manifest_written) {
            p->manifest_written = true;
            progress_line(p, "Writing manifest to image destination");
        }
        break;
    case CIMAGE_PROGRESS_RETRYING:
        if (ev->message != NULL)
            progress_line(p, "Retrying%s%s: %s", ev->digest != NULL ? " blob " : "", hex, ev->message);
        break;
    default:
        break; /* resolving, verifying, extracting, and kinds newer than this program */
    }
    return 0; /* never cancel */
}

/* Parses "123", "64K", "10M", "2G" (binary units). Returns false when malformed or too large. */
static bool parse_byte_size(const char *text, uint64_t *out)
{
    uint64_t value = 0, unit = 1;
    const char *p = text;

    if (*p < '0' || *p > '9')
        return false;
    for (; *p >= '0' && *p <= '9'; p++) {
        if (value > (UINT64_MAX - 9) / 10)
            return false;
        value = value * 10 + (uint64_t)(*p - '0');
    }
    if (*p == 'K' || *p == 'k')
        unit = (uint64_t)1 << 10;
    else if (*p == 'M' || *p == 'm')
        unit = (uint64_t)1 << 20;
    else if (*p == 'G' || *p == 'g')
        unit = (uint64_t)1 << 30;
    else if (*p != '\0')
        return false;
    if (*p != '\0' && p[1] != '\0')
        return false;
    if (value > UINT64_MAX / unit)
        return false;
    *out = value * unit;
    return true;
}

/* Applies the registry arguments to OPTS (PROGRESS may be NULL). Returns 0, or 1 after reporting. */
static int configure_pull(cimage_pull_options *opts, const struct pull_args *args, struct pull_progress *progress)
{
    cimage_error *err = NULL;
    cimage_status status = CIMAGE_STATUS_OK;
    uint64_t ms;

    if (progress != NULL)
        status = cimage_pull_options_set_progress(opts, on_pull_progress, progress, &err);
    if (status == CIMAGE_STATUS_OK && args->tls_verify != NULL) {
        bool verify;
        if (strcmp(args->tls_verify, "true") == 0)
            verify = true;
        else if (strcmp(args->tls_verify, "false") == 0)
            verify = false;
        else
            return report_failure(CIMAGE_STATUS_INVALID_ARGUMENT, "invalid --tls-verify value \"%s\": want true or false",
                                  args->tls_verify);
        status = cimage_pull_options_set_tls_verify(opts, verify, &err);
    }
    if (status == CIMAGE_STATUS_OK && args->platform != NULL)
        status = cimage_pull_options_set_platform(opts, args->platform, &err);
    if (status == CIMAGE_STATUS_OK && args->policy != NULL) {
        int32_t policy;
        if (strcmp(args->policy, "always") == 0)
            policy = CIMAGE_PULL_POLICY_ALWAYS;
        else if (strcmp(args->policy, "missing") == 0)
            policy = CIMAGE_PULL_POLICY_MISSING;
        else if (strcmp(args->policy, "never") == 0)
            policy = CIMAGE_PULL_POLICY_NEVER;
        else
            return report_failure(CIMAGE_STATUS_INVALID_ARGUMENT,
                                  "invalid --policy value \"%s\": want always, missing or never", args->policy);
        status = cimage_pull_options_set_policy(opts, policy, &err);
    }
    if (status == CIMAGE_STATUS_OK && args->creds != NULL && set_credentials(opts, args->creds) != 0)
        return 1;
    if (status == CIMAGE_STATUS_OK && args->authfile != NULL)
        status = cimage_pull_options_set_auth_file(opts, args->authfile, &err);
    if (status == CIMAGE_STATUS_OK && args->cert_dir != NULL)
        status = cimage_pull_options_set_cert_dir(opts, args->cert_dir, &err);
    if (status == CIMAGE_STATUS_OK && args->certs_d != NULL)
        status = cimage_pull_options_set_certs_d(opts, args->certs_d, &err);
    if (status == CIMAGE_STATUS_OK && args->registries_conf != NULL)
        status = cimage_pull_options_set_registries_conf(opts, args->registries_conf, &err);
    if (status == CIMAGE_STATUS_OK && args->registries_conf_dir != NULL)
        status = cimage_pull_options_set_registries_conf_dir(opts, args->registries_conf_dir, &err);
    if (status == CIMAGE_STATUS_OK && args->signature_policy != NULL)
        status = cimage_pull_options_set_policy_file(opts, args->signature_policy, &err);
    if (status == CIMAGE_STATUS_OK && args->stall_timeout != NULL) {
        if (!parse_duration_ms(args->stall_timeout, &ms))
            return report_failure(CIMAGE_STATUS_INVALID_ARGUMENT, "invalid --stall-timeout \"%s\": want e.g. 30s or 1500ms",
                                  args->stall_timeout);
        status = cimage_pull_options_set_stall_timeout_ms(opts, ms, &err);
    }
    if (status == CIMAGE_STATUS_OK && args->deadline != NULL) {
        if (!parse_duration_ms(args->deadline, &ms))
            return report_failure(CIMAGE_STATUS_INVALID_ARGUMENT, "invalid --deadline \"%s\": want e.g. 10m or 90s",
                                  args->deadline);
        status = cimage_pull_options_set_deadline_ms(opts, ms, &err);
    }
    if (status == CIMAGE_STATUS_OK && args->retries != NULL) {
        char *end = NULL;
        unsigned long retries = strtoul(args->retries, &end, 10);
        if (end == args->retries || *end != '\0' || retries > 100)
            return report_failure(CIMAGE_STATUS_INVALID_ARGUMENT, "invalid --retries \"%s\": want 0 to 100",
                                  args->retries);
        status = cimage_pull_options_set_max_retries(opts, (uint32_t)retries, &err);
    }
    if (status == CIMAGE_STATUS_OK && args->max_unpacked_size != NULL) {
        uint64_t bytes;
        if (!parse_byte_size(args->max_unpacked_size, &bytes))
            return report_failure(CIMAGE_STATUS_INVALID_ARGUMENT,
                                  "invalid --max-unpacked-size value \"%s\": want a number of bytes, optionally with K, M or G",
                                  args->max_unpacked_size);
        status = cimage_pull_options_set_max_unpacked_size(opts, bytes, &err);
    }
    if (status != CIMAGE_STATUS_OK)
        return report_error(status, err);
    return 0;
}

/*
 * Ctrl-C and SIGTERM during a pull cancel it cleanly (no partial layer, no lock left): the
 * signals are blocked in every thread and taken by this one with sigwait(), which may then call
 * any function -- here the cancel token's, which is safe from any thread.
 */
static void *cancel_on_signal(void *token)
{
    sigset_t signals;
    int received;

    sigemptyset(&signals);
    sigaddset(&signals, SIGINT);
    sigaddset(&signals, SIGTERM);
    if (sigwait(&signals, &received) == 0)
        cimage_cancel_token_cancel(token);
    return NULL;
}

/* Starts the signal thread for TOKEN (which must outlive the process's last use of it). */
static void cancel_pull_on_signals(cimage_cancel_token *token)
{
    sigset_t signals;
    pthread_t thread;

    sigemptyset(&signals);
    sigaddset(&signals, SIGINT);
    sigaddset(&signals, SIGTERM);
    /* Block before any library thread starts, so that they all inherit the mask. */
    if (pthread_sigmask(SIG_BLOCK, &signals, NULL) != 0)
        return;
    if (pthread_create(&thread, NULL, cancel_on_signal, token) == 0)
        pthread_detach(thread);
}

static int cmd_pull(int argc, char **argv)
{
    struct pull_args args;
    struct pull_progress progress;
    const char *reference = NULL;
    cimage_pull_options *pull_options = NULL;
    /* Never freed: the signal thread may use it until the process exits. */
    static cimage_cancel_token *cancel_token;
    cimage_store *store = NULL;
    cimage_image *image = NULL;
    cimage_error *err = NULL;
    cimage_status status;
    int rc;

    memset(&args, 0, sizeof args);
    rc = parse_command_args(argc, argv, parse_pull_option, &args, &reference, 1);
    if (rc != 0)
        return rc;
    memset(&progress, 0, sizeof progress);
    progress.live = isatty(fileno(stderr)) != 0;

    pull_options = cimage_pull_options_new();
    if (pull_options == NULL)
        return report_failure(CIMAGE_STATUS_INTERNAL, "cannot allocate pull options");
    rc = configure_pull(pull_options, &args, &progress);
    if (rc == 0) {
        cancel_token = cimage_cancel_token_new();
        status = cimage_pull_options_set_cancel_token(pull_options, cancel_token, &err);
        if (status != CIMAGE_STATUS_OK)
            rc = report_error(status, err);
        else
            cancel_pull_on_signals(cancel_token);
    }
    if (rc == 0)
        rc = open_store(&store);
    if (rc == 0) {
        status = cimage_store_pull(store, reference, pull_options, &image, &err);
        progress_finish(&progress);
        if (status != CIMAGE_STATUS_OK) {
            rc = report_error(status, err);
        } else if (options.json) {
            fputc('{', stdout);
            json_key(stdout, "id", true);
            json_string(stdout, cimage_image_id(image));
            json_key(stdout, "digest", false);
            json_string(stdout, cimage_image_digest(image));
            json_key(stdout, "names", false);
            json_image_names(stdout, image);
            fputs("}\n", stdout);
        } else {
            const char *id = cimage_image_id(image);
            printf("%s\n", id != NULL ? id : "");
        }
    }
    cimage_image_free(image);
    cimage_store_free(store);
    cimage_pull_options_free(pull_options);
    return rc;
}

/* -- inspect and tags: registry reads without a store -- */

typedef cimage_status (*registry_read_fn)(const char *reference, const cimage_pull_options *opts, char **json_out,
                                          cimage_error **err);

/* Runs an inspect-like call with the registry options of ARGV; *JSON_OUT gets its document. */
static int registry_read(int argc, char **argv, registry_read_fn read, char **json_out)
{
    struct pull_args args;
    const char *reference = NULL;
    cimage_pull_options *opts;
    cimage_error *err = NULL;
    cimage_status status;
    int rc;

    memset(&args, 0, sizeof args);
    rc = parse_command_args(argc, argv, parse_registry_option, &args, &reference, 1);
    if (rc != 0)
        return rc;
    opts = cimage_pull_options_new();
    if (opts == NULL)
        return report_failure(CIMAGE_STATUS_INTERNAL, "cannot allocate options");
    rc = configure_pull(opts, &args, NULL);
    if (rc == 0) {
        status = read(reference, opts, json_out, &err);
        if (status != CIMAGE_STATUS_OK)
            rc = report_error(status, err);
    }
    cimage_pull_options_free(opts);
    return rc;
}

/* skopeo inspect prints JSON in any case; so does this. */
static int cmd_inspect(int argc, char **argv)
{
    char *json = NULL;
    int rc = registry_read(argc, argv, cimage_inspect, &json);
    if (rc == 0)
        printf("%s\n", json);
    cimage_string_free(json);
    return rc;
}

/*
 * Prints the "tags" array of the library's document one per line. Tags are [A-Za-z0-9_.-]
 * (the distribution spec), so the strings carry no escapes; anything else is printed as is.
 */
static void print_tags_lines(const char *json)
{
    const char *p = strstr(json, "\"tags\":[");
    if (p == NULL)
        return;
    p += strlen("\"tags\":[");
    while (*p != '\0' && *p != ']') {
        const char *open = strchr(p, '"');
        const char *close = open != NULL ? strchr(open + 1, '"') : NULL;
        if (open == NULL || close == NULL)
            return;
        printf("%.*s\n", (int)(close - open - 1), open + 1);
        p = close + 1;
        while (*p == ',')
            p++;
    }
}

static int cmd_tags(int argc, char **argv)
{
    char *json = NULL;
    int rc = registry_read(argc, argv, cimage_list_tags, &json);
    if (rc == 0) {
        if (options.json)
            printf("%s\n", json);
        else
            print_tags_lines(json);
    }
    cimage_string_free(json);
    return rc;
}

/* -- lists -- */

static void print_images_table(const cimage_image_list *list)
{
    struct table t = {5, 0, 0, NULL};
    const char *header[] = {"REPOSITORY", "TAG", "IMAGE ID", "CREATED", "SIZE"};
    size_t count = cimage_image_list_len(list);

    table_add_row(&t, header);
    for (size_t i = 0; i < count; i++) {
        const cimage_image *image = cimage_image_list_get(list, i);
        char id[SHORT_ID_LEN + 1], created[64], size[32], repository[512], tag[256];
        size_t names = cimage_image_names_len(image);
        const char *row[] = {repository, tag, id, created, size};

        short_id(cimage_image_id(image), id);
        human_age(cimage_image_created(image), created, sizeof created);
        human_size(cimage_image_size(image), size, sizeof size);
        /* One row per name, as podman does; "<none>" for an image without names. */
        for (size_t n = 0; n < (names > 0 ? names : 1); n++) {
            const char *name = names > 0 ? cimage_image_name(image, n) : NULL;
            if (name != NULL) {
                split_image_name(name, repository, sizeof repository, tag, sizeof tag);
            } else {
                snprintf(repository, sizeof repository, "<none>");
                snprintf(tag, sizeof tag, "<none>");
            }
            table_add_row(&t, row);
        }
    }
    table_print_and_free(&t);
}

static void print_images_json(const cimage_image_list *list)
{
    size_t count = cimage_image_list_len(list);
    fputc('[', stdout);
    for (size_t i = 0; i < count; i++) {
        const cimage_image *image = cimage_image_list_get(list, i);
        if (i > 0)
            fputc(',', stdout);
        fputc('{', stdout);
        json_key(stdout, "id", true);
        json_string(stdout, cimage_image_id(image));
        json_key(stdout, "names", false);
        json_image_names(stdout, image);
        json_key(stdout, "digest", false);
        json_string(stdout, cimage_image_digest(image));
        json_key(stdout, "size", false);
        json_size(stdout, cimage_image_size(image));
        json_key(stdout, "created", false);
        json_string(stdout, cimage_image_created(image));
        fputc('}', stdout);
    }
    fputs("]\n", stdout);
}

static int cmd_images(int argc, char **argv)
{
    cimage_store *store = NULL;
    cimage_image_list *list = NULL;
    cimage_error *err = NULL;
    cimage_status status;
    int rc = parse_command_args(argc, argv, NULL, NULL, NULL, 0);

    if (rc != 0)
        return rc;
    if (open_store(&store) != 0)
        return EXIT_FAILURE;
    status = cimage_store_images(store, &list, &err);
    if (status != CIMAGE_STATUS_OK)
        rc = report_error(status, err);
    else if (options.json)
        print_images_json(list);
    else
        print_images_table(list);
    cimage_image_list_free(list);
    cimage_store_free(store);
    return rc;
}

static void print_layers_table(const cimage_layer_list *list)
{
    struct table t = {5, 0, 0, NULL};
    const char *header[] = {"ID", "PARENT", "DIFF DIGEST", "CREATED", "SIZE"};
    size_t count = cimage_layer_list_len(list);

    table_add_row(&t, header);
    for (size_t i = 0; i < count; i++) {
        const cimage_layer *layer = cimage_layer_list_get(list, i);
        char id[SHORT_ID_LEN + 1], parent[SHORT_ID_LEN + 1], diff[SHORT_ID_LEN + 1], created[64], size[32];
        const char *row[] = {id, parent, diff, created, size};

        short_id(cimage_layer_id(layer), id);
        short_id(cimage_layer_parent(layer), parent);
        short_id(cimage_layer_diff_digest(layer), diff);
        if (parent[0] == '\0')
            snprintf(parent, sizeof parent, "-");
        if (diff[0] == '\0')
            snprintf(diff, sizeof diff, "-");
        human_age(cimage_layer_created(layer), created, sizeof created);
        human_size(cimage_layer_diff_size(layer), size, sizeof size);
        table_add_row(&t, row);
    }
    table_print_and_free(&t);
}

static void print_layers_json(const cimage_layer_list *list)
{
    size_t count = cimage_layer_list_len(list);
    fputc('[', stdout);
    for (size_t i = 0; i < count; i++) {
        const cimage_layer *layer = cimage_layer_list_get(list, i);
        if (i > 0)
            fputc(',', stdout);
        fputc('{', stdout);
        json_key(stdout, "id", true);
        json_string(stdout, cimage_layer_id(layer));
        json_key(stdout, "parent", false);
        json_string(stdout, cimage_layer_parent(layer));
        json_key(stdout, "diff_digest", false);
        json_string(stdout, cimage_layer_diff_digest(layer));
        json_key(stdout, "compressed_digest", false);
        json_string(stdout, cimage_layer_compressed_digest(layer));
        json_key(stdout, "size", false);
        json_size(stdout, cimage_layer_diff_size(layer));
        fputc('}', stdout);
    }
    fputs("]\n", stdout);
}

static int cmd_layers(int argc, char **argv)
{
    cimage_store *store = NULL;
    cimage_layer_list *list = NULL;
    cimage_error *err = NULL;
    cimage_status status;
    int rc = parse_command_args(argc, argv, NULL, NULL, NULL, 0);

    if (rc != 0)
        return rc;
    if (open_store(&store) != 0)
        return EXIT_FAILURE;
    status = cimage_store_layers(store, &list, &err);
    if (status != CIMAGE_STATUS_OK)
        rc = report_error(status, err);
    else if (options.json)
        print_layers_json(list);
    else
        print_layers_table(list);
    cimage_layer_list_free(list);
    cimage_store_free(store);
    return rc;
}

/* The name podman would show for an image ID: its first name, else its short ID. */
static void image_display_name(const cimage_image_list *images, const char *image_id, char *out, size_t out_len)
{
    size_t count = cimage_image_list_len(images);
    char id[SHORT_ID_LEN + 1];

    for (size_t i = 0; image_id != NULL && i < count; i++) {
        const cimage_image *image = cimage_image_list_get(images, i);
        const char *candidate = cimage_image_id(image);
        if (candidate != NULL && strcmp(candidate, image_id) == 0 && cimage_image_names_len(image) > 0) {
            const char *name = cimage_image_name(image, 0);
            if (name != NULL) {
                snprintf(out, out_len, "%s", name);
                return;
            }
        }
    }
    short_id(image_id, id);
    snprintf(out, out_len, "%s", id[0] != '\0' ? id : "-");
}

static void print_containers_table(const cimage_container_list *list, const cimage_image_list *images)
{
    struct table t = {5, 0, 0, NULL};
    const char *header[] = {"CONTAINER ID", "IMAGE", "CREATED", "MOUNTED", "NAMES"};
    size_t count = cimage_container_list_len(list);

    table_add_row(&t, header);
    for (size_t i = 0; i < count; i++) {
        const cimage_container *container = cimage_container_list_get(list, i);
        char id[SHORT_ID_LEN + 1], image[512], created[64], names[512] = "";
        const char *row[] = {id, image, created, cimage_container_mount_point(container) != NULL ? "yes" : "no", names};
        size_t name_count = cimage_container_names_len(container);
        size_t used = 0;

        short_id(cimage_container_id(container), id);
        image_display_name(images, cimage_container_image_id(container), image, sizeof image);
        human_age(cimage_container_created(container), created, sizeof created);
        for (size_t n = 0; n < name_count && used < sizeof names; n++) {
            const char *name = cimage_container_name(container, n);
            int written = snprintf(names + used, sizeof names - used, "%s%s", n > 0 ? "," : "", name != NULL ? name : "");
            if (written > 0)
                used += (size_t)written;
        }
        table_add_row(&t, row);
    }
    table_print_and_free(&t);
}

static void print_containers_json(const cimage_container_list *list)
{
    size_t count = cimage_container_list_len(list);
    fputc('[', stdout);
    for (size_t i = 0; i < count; i++) {
        const cimage_container *container = cimage_container_list_get(list, i);
        if (i > 0)
            fputc(',', stdout);
        fputc('{', stdout);
        json_key(stdout, "id", true);
        json_string(stdout, cimage_container_id(container));
        json_key(stdout, "names", false);
        json_container_names(stdout, container);
        json_key(stdout, "image", false);
        json_string(stdout, cimage_container_image_id(container));
        json_key(stdout, "layer", false);
        json_string(stdout, cimage_container_layer_id(container));
        json_key(stdout, "mount_point", false);
        json_string(stdout, cimage_container_mount_point(container));
        fputc('}', stdout);
    }
    fputs("]\n", stdout);
}

static int cmd_containers(int argc, char **argv)
{
    cimage_store *store = NULL;
    cimage_container_list *list = NULL;
    cimage_image_list *images = NULL;
    cimage_error *err = NULL;
    cimage_status status;
    int rc = parse_command_args(argc, argv, NULL, NULL, NULL, 0);

    if (rc != 0)
        return rc;
    if (open_store(&store) != 0)
        return EXIT_FAILURE;
    status = cimage_store_containers(store, &list, &err);
    /* The table shows image names, which only the image list knows. */
    if (status == CIMAGE_STATUS_OK && !options.json)
        status = cimage_store_images(store, &images, &err);
    if (status != CIMAGE_STATUS_OK)
        rc = report_error(status, err);
    else if (options.json)
        print_containers_json(list);
    else
        print_containers_table(list, images);
    cimage_image_list_free(images);
    cimage_container_list_free(list);
    cimage_store_free(store);
    return rc;
}

/* -- container, mount, unmount -- */

static enum option_match parse_container_option(int argc, char **argv, int *i, void *state)
{
    return match_value_option(argc, argv, i, NULL, "--name", (const char **)state);
}

static int cmd_container(int argc, char **argv)
{
    const char *name = NULL, *image = NULL;
    cimage_container_options *container_options = NULL;
    cimage_store *store = NULL;
    cimage_container *container = NULL;
    cimage_error *err = NULL;
    cimage_status status = CIMAGE_STATUS_OK;
    int rc = parse_command_args(argc, argv, parse_container_option, &name, &image, 1);

    if (rc != 0)
        return rc;
    if (name != NULL) {
        container_options = cimage_container_options_new();
        if (container_options == NULL)
            return report_failure(CIMAGE_STATUS_INTERNAL, "cannot allocate container options");
        status = cimage_container_options_set_name(container_options, name, &err);
        if (status != CIMAGE_STATUS_OK) {
            cimage_container_options_free(container_options);
            return report_error(status, err);
        }
    }
    rc = open_store(&store);
    if (rc == 0) {
        status = cimage_store_container_create(store, image, container_options, &container, &err);
        if (status != CIMAGE_STATUS_OK) {
            rc = report_error(status, err);
        } else if (options.json) {
            fputc('{', stdout);
            json_key(stdout, "id", true);
            json_string(stdout, cimage_container_id(container));
            json_key(stdout, "layer", false);
            json_string(stdout, cimage_container_layer_id(container));
            fputs("}\n", stdout);
        } else {
            const char *id = cimage_container_id(container);
            printf("%s\n", id != NULL ? id : "");
        }
    }
    cimage_container_free(container);
    cimage_store_free(store);
    cimage_container_options_free(container_options);
    return rc;
}

static int cmd_mount(int argc, char **argv)
{
    const char *container = NULL;
    cimage_store *store = NULL;
    char *path = NULL;
    cimage_error *err = NULL;
    cimage_status status;
    int rc = parse_command_args(argc, argv, NULL, NULL, &container, 1);

    if (rc != 0)
        return rc;
    if (open_store(&store) != 0)
        return EXIT_FAILURE;
    status = cimage_store_container_mount(store, container, &path, &err);
    if (status != CIMAGE_STATUS_OK) {
        rc = report_error(status, err);
    } else if (options.json) {
        fputc('{', stdout);
        json_key(stdout, "path", true);
        json_string(stdout, path);
        fputs("}\n", stdout);
    } else {
        printf("%s\n", path != NULL ? path : "");
    }
    cimage_string_free(path);
    cimage_store_free(store);
    return rc;
}

/* Prints the empty JSON document of commands that have nothing to say. */
static void print_empty_json(void)
{
    if (options.json)
        fputs("{}\n", stdout);
}

static int cmd_unmount(int argc, char **argv)
{
    const char *container = NULL;
    cimage_store *store = NULL;
    cimage_error *err = NULL;
    cimage_status status;
    int rc = parse_command_args(argc, argv, NULL, NULL, &container, 1);

    if (rc != 0)
        return rc;
    if (open_store(&store) != 0)
        return EXIT_FAILURE;
    status = cimage_store_container_unmount(store, container, false, &err);
    if (status != CIMAGE_STATUS_OK)
        rc = report_error(status, err);
    else
        print_empty_json();
    cimage_store_free(store);
    return rc;
}

/* -- delete -- */

/*
 * Result of looking for the thing to delete: FOUND (ID copied out), NOT_FOUND (look
 * further), or an error already reported (exit status 1).
 */
enum lookup_result { LOOKUP_FOUND, LOOKUP_NOT_FOUND, LOOKUP_FAILED };

static enum lookup_result lookup_outcome(cimage_status status, cimage_error *err, const char *id, char **id_out)
{
    if (status == CIMAGE_STATUS_NOT_FOUND) {
        cimage_error_free(err);
        return LOOKUP_NOT_FOUND;
    }
    if (status != CIMAGE_STATUS_OK) {
        report_error(status, err);
        return LOOKUP_FAILED;
    }
    *id_out = xstrdup(id != NULL ? id : "");
    return LOOKUP_FOUND;
}

static enum lookup_result find_container(cimage_store *store, const char *name, char **id_out)
{
    cimage_container *container = NULL;
    cimage_error *err = NULL;
    cimage_status status = cimage_store_container_lookup(store, name, &container, &err);
    enum lookup_result result = lookup_outcome(status, err, cimage_container_id(container), id_out);
    cimage_container_free(container);
    return result;
}

static enum lookup_result find_image(cimage_store *store, const char *name, char **id_out)
{
    cimage_image *image = NULL;
    cimage_error *err = NULL;
    cimage_status status = cimage_store_image_lookup(store, name, &image, &err);
    enum lookup_result result = lookup_outcome(status, err, cimage_image_id(image), id_out);
    cimage_image_free(image);
    return result;
}

static enum lookup_result find_layer(cimage_store *store, const char *name, char **id_out)
{
    cimage_layer *layer = NULL;
    cimage_error *err = NULL;
    cimage_status status = cimage_store_layer_lookup(store, name, &layer, &err);
    enum lookup_result result = lookup_outcome(status, err, cimage_layer_id(layer), id_out);
    cimage_layer_free(layer);
    return result;
}

/* One kind of thing delete can remove, tried in the order of the table below. */
struct deletable {
    enum lookup_result (*find)(cimage_store *store, const char *name, char **id_out);
    cimage_status (*remove)(cimage_store *store, const char *id, cimage_error **err);
};

static const struct deletable deletables[] = {
    {find_container, cimage_store_container_delete},
    {find_image, cimage_store_image_delete},
    {find_layer, cimage_store_layer_delete},
};

static int cmd_delete(int argc, char **argv)
{
    const char *name = NULL;
    cimage_store *store = NULL;
    int rc = parse_command_args(argc, argv, NULL, NULL, &name, 1);
    enum lookup_result result = LOOKUP_NOT_FOUND;

    if (rc != 0)
        return rc;
    if (open_store(&store) != 0)
        return EXIT_FAILURE;
    for (size_t k = 0; k < sizeof deletables / sizeof deletables[0] && result == LOOKUP_NOT_FOUND; k++) {
        char *id = NULL;
        result = deletables[k].find(store, name, &id);
        if (result == LOOKUP_FOUND) {
            cimage_error *err = NULL;
            /* Delete by full ID: the name or prefix found it, the ID cannot be ambiguous. */
            cimage_status status = deletables[k].remove(store, id, &err);
            if (status != CIMAGE_STATUS_OK)
                rc = report_error(status, err);
            else
                print_empty_json();
        }
        free(id);
    }
    if (result == LOOKUP_FAILED)
        rc = EXIT_FAILURE;
    else if (result == LOOKUP_NOT_FOUND)
        rc = report_failure(CIMAGE_STATUS_NOT_FOUND, "no container, image or layer matches \"%s\"", name);
    cimage_store_free(store);
    return rc;
}

static int cmd_wipe(int argc, char **argv)
{
    cimage_store *store = NULL;
    cimage_error *err = NULL;
    cimage_status status;
    int rc = parse_command_args(argc, argv, NULL, NULL, NULL, 0);

    if (rc != 0)
        return rc;
    if (open_store(&store) != 0)
        return EXIT_FAILURE;
    status = cimage_store_wipe(store, &err);
    if (status != CIMAGE_STATUS_OK)
        rc = report_error(status, err);
    else
        print_empty_json();
    cimage_store_free(store);
    return rc;
}

/* -- check -- */

struct check_args {
    bool repair;
    uint32_t flags;
};

static enum option_match parse_check_option(int argc, char **argv, int *i, void *state)
{
    struct check_args *args = state;
    (void)argc;

    if (strcmp(argv[*i], "--repair") == 0)
        args->repair = true;
    else if (strcmp(argv[*i], "--no-content") == 0)
        args->flags |= CIMAGE_CHECK_NO_CONTENT;
    else if (strcmp(argv[*i], "--unreferenced-any-age") == 0)
        args->flags |= CIMAGE_CHECK_UNREFERENCED_ANY_AGE;
    else if (strcmp(argv[*i], "--remove-containers") == 0)
        args->flags |= CIMAGE_CHECK_REMOVE_CONTAINERS;
    else
        return OPTION_NO_MATCH;
    return OPTION_MATCH;
}

/* Prints one list of the report as "LABEL kind id: message" lines. */
static void print_findings(const cimage_check_report *report, int32_t which, const char *label)
{
    size_t n = cimage_check_report_len(report, which);
    for (size_t i = 0; i < n; i++) {
        const char *kind = cimage_check_report_kind(report, which, i);
        const char *id = cimage_check_report_id(report, which, i);
        const char *message = cimage_check_report_message(report, which, i);
        printf("%s %s %s: ", label, kind != NULL ? kind : "", id != NULL ? id : "");
        print_on_one_line(stdout, message != NULL ? message : "");
        fputc('\n', stdout);
    }
}

static int cmd_check(int argc, char **argv)
{
    struct check_args args = {false, 0};
    cimage_store *store = NULL;
    cimage_check_report *report = NULL;
    cimage_error *err = NULL;
    cimage_status status;
    int rc = parse_command_args(argc, argv, parse_check_option, &args, NULL, 0);

    if (rc != 0)
        return rc;
    if (open_store(&store) != 0)
        return EXIT_FAILURE;
    if (args.repair)
        status = cimage_store_repair(store, args.flags, &report, &err);
    else
        status = cimage_store_check(store, args.flags, &report, &err);
    if (status != CIMAGE_STATUS_OK) {
        rc = report_error(status, err);
    } else {
        if (options.json) {
            const char *json = cimage_check_report_json(report);
            printf("%s\n", json != NULL ? json : "{}");
        } else {
            print_findings(report, CIMAGE_CHECK_REPAIRED, "repaired");
            print_findings(report, CIMAGE_CHECK_WARNINGS, "warning");
            print_findings(report, CIMAGE_CHECK_ERRORS, "error");
            if (cimage_check_report_is_clean(report))
                printf("clean\n");
            else
                printf("%zu problems\n", cimage_check_report_len(report, CIMAGE_CHECK_ERRORS));
        }
        rc = cimage_check_report_is_clean(report) ? EXIT_SUCCESS : EXIT_NOT_CLEAN;
    }
    cimage_check_report_free(report);
    cimage_store_free(store);
    return rc;
}

/* ------------------------------------------------------------------------------------ */
/* main                                                                                 */

/* Each command gets its own argv, starting with the command's name. */
static const struct command {
    const char *name;
    int (*run)(int argc, char **argv);
} commands[] = {
    {"store", cmd_store},
    {"pull", cmd_pull},
    {"inspect", cmd_inspect},
    {"tags", cmd_tags},
    {"images", cmd_images},
    {"layers", cmd_layers},
    {"containers", cmd_containers},
    {"container", cmd_container},
    {"mount", cmd_mount},
    {"unmount", cmd_unmount},
    {"delete", cmd_delete},
    {"wipe", cmd_wipe},
    {"check", cmd_check},
};

/* Parses the global options; returns the index of the command, or -1 after a usage error. */
static int parse_global_options(int argc, char **argv)
{
    int i;
    for (i = 1; i < argc && argv[i][0] == '-'; i++) {
        enum option_match m = OPTION_NO_MATCH;
        if (strcmp(argv[i], "--json") == 0) {
            options.json = true;
            continue;
        }
        if (strcmp(argv[i], "--sync=true") == 0 || strcmp(argv[i], "--sync=false") == 0) {
            options.sync = argv[i][7] == 't' ? 1 : -1;
            continue;
        }
        if (strcmp(argv[i], "-h") == 0 || strcmp(argv[i], "--help") == 0) {
            fputs(usage_text, stdout);
            exit(EXIT_SUCCESS);
        }
        if (m == OPTION_NO_MATCH)
            m = match_value_option(argc, argv, &i, "-d", "--driver", &options.driver);
        if (m == OPTION_NO_MATCH)
            m = match_value_option(argc, argv, &i, "-r", "--root", &options.root);
        if (m == OPTION_NO_MATCH)
            m = match_value_option(argc, argv, &i, "-R", "--run-root", &options.run_root);
        if (m == OPTION_NO_MATCH) {
            usage_error("unknown option %s", argv[i]);
            return -1;
        }
        if (m == OPTION_MISSING_VALUE) {
            usage_error("option %s needs a value", argv[i]);
            return -1;
        }
    }
    if (i >= argc) {
        usage_error("no command given");
        return -1;
    }
    return i;
}

int main(int argc, char **argv)
{
    int command_index = parse_global_options(argc, argv);

    if (command_index < 0)
        return EXIT_USAGE;
    for (size_t k = 0; k < sizeof commands / sizeof commands[0]; k++) {
        if (strcmp(argv[command_index], commands[k].name) == 0)
            return commands[k].run(argc - command_index, argv + command_index);
    }
    return usage_error("unknown command \"%s\"", argv[command_index]);
}
