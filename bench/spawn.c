/*
 * spawn: runs one command and reports its wall time, CPU time and peak RSS.
 *
 *     spawn REPORT PROGRAM [ARG...]
 *
 * Writes "WALL_SECONDS USER_SECONDS SYS_SECONDS MAXRSS_KIB" to REPORT and exits with the
 * command's status (128 + signal if it was killed). bench/measure.py starts every measured
 * command through it because Linux carries a process's peak RSS across exec: a command forked
 * from the Python interpreter would report at least the interpreter's ~15 MiB, whatever it used.
 * Forked from this small program, the floor is about 1 MiB.
 */
#define _DEFAULT_SOURCE /* wait4 */

#include <stdio.h>
#include <sys/resource.h>
#include <sys/time.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static double seconds(struct timeval tv)
{
    return (double)tv.tv_sec + (double)tv.tv_usec / 1e6;
}

int main(int argc, char **argv)
{
    if (argc < 3) {
        fputs("usage: spawn REPORT PROGRAM [ARG...]\n", stderr);
        return 2;
    }
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    pid_t pid = fork();
    if (pid < 0) {
        perror("spawn: fork");
        return 2;
    }
    if (pid == 0) {
        execvp(argv[2], argv + 2);
        perror("spawn: exec");
        _exit(127);
    }
    int status;
    struct rusage ru;
    if (wait4(pid, &status, 0, &ru) < 0) {
        perror("spawn: wait4");
        return 2;
    }
    clock_gettime(CLOCK_MONOTONIC, &t1);
    FILE *report = fopen(argv[1], "w");
    if (report == NULL) {
        perror("spawn: report");
        return 2;
    }
    fprintf(report, "%.6f %.6f %.6f %ld\n",
            (double)(t1.tv_sec - t0.tv_sec) + (double)(t1.tv_nsec - t0.tv_nsec) / 1e9,
            seconds(ru.ru_utime), seconds(ru.ru_stime), ru.ru_maxrss);
    if (fclose(report) != 0) {
        perror("spawn: report");
        return 2;
    }
    return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}
