/*
 * create_files: how file creation scales with threads on a file system, without cimage.
 *
 *     create_files DIR THREADS samedir|splitdir [FILES [DIRS]]
 *
 * Creates DIRS directories under DIR (made if missing), then times FILES files of 1 KiB spread
 * evenly over them (openat O_CREAT|O_EXCL, write, futimens, close: what a layer's small file
 * costs). samedir: the threads share each directory's files in turn; splitdir: each thread
 * takes its own directories. Prints "MODE T=THREADS SECONDS". Defaults: 50,000 files, 200
 * directories (bench/images.py's smallfiles:50k). It decided the writer threads of
 * src/unpack/writers.rs. On a fresh loop-mounted ext4 each time, as root:
 *
 *     cc -O2 -pthread bench/create_files.c -o /tmp/create_files
 *     truncate -s 3G /tmp/cf.img
 *     for cfg in "1 samedir" "2 samedir" "2 splitdir"; do
 *       mkfs.ext4 -q -F /tmp/cf.img && mkdir -p /tmp/cf && mount -o loop /tmp/cf.img /tmp/cf
 *       /tmp/create_files /tmp/cf/t $cfg; umount /tmp/cf
 *     done
 */
#define _GNU_SOURCE
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

static int files = 50000, dirs = 200, threads = 1, split;
static const char *root;
static char content[1024];

static void *create(void *arg) {
  long t = (long)arg;
  int per_dir = files / dirs;
  for (int d = 0; d < dirs; d++) {
    if (split && d % threads != t) continue;
    char path[4096];
    snprintf(path, sizeof path, "%s/d%03d", root, d);
    int dir = open(path, O_DIRECTORY | O_RDONLY);
    if (dir < 0) { perror(path); exit(1); }
    for (int i = 0; i < per_dir; i++) {
      if (!split && i % threads != t) continue;
      char name[32];
      snprintf(name, sizeof name, "f%05d", d * per_dir + i);
      int fd = openat(dir, name, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW, 0644);
      if (fd < 0) { perror(name); exit(1); }
      if (write(fd, content, sizeof content) != sizeof content) { perror("write"); exit(1); }
      struct timespec times[2] = {{1600000000, 0}, {1600000000, 0}};
      if (futimens(fd, times) != 0) { perror("futimens"); exit(1); }
      close(fd);
    }
    close(dir);
  }
  return NULL;
}

int main(int argc, char **argv) {
  if (argc < 4 || (strcmp(argv[3], "samedir") && strcmp(argv[3], "splitdir"))) {
    fprintf(stderr, "usage: %s DIR THREADS samedir|splitdir [FILES [DIRS]]\n", argv[0]);
    return 2;
  }
  root = argv[1];
  threads = atoi(argv[2]);
  split = !strcmp(argv[3], "splitdir");
  if (argc > 4) files = atoi(argv[4]);
  if (argc > 5) dirs = atoi(argv[5]);
  if (threads < 1 || threads > 64 || dirs < 1 || files < dirs) {
    fprintf(stderr, "create_files: bad numbers\n");
    return 2;
  }
  memset(content, 'x', sizeof content);
  mkdir(root, 0755);
  for (int d = 0; d < dirs; d++) {
    char path[4096];
    snprintf(path, sizeof path, "%s/d%03d", root, d);
    if (mkdir(path, 0755) != 0) { perror(path); return 1; }
  }
  struct timespec start, end;
  clock_gettime(CLOCK_MONOTONIC, &start);
  pthread_t workers[64];
  for (long t = 0; t < threads; t++) pthread_create(&workers[t], NULL, create, (void *)t);
  for (int t = 0; t < threads; t++) pthread_join(workers[t], NULL);
  clock_gettime(CLOCK_MONOTONIC, &end);
  printf("%s T=%d %.3f\n", argv[3], threads,
         (end.tv_sec - start.tv_sec) + (end.tv_nsec - start.tv_nsec) / 1e9);
  return 0;
}
