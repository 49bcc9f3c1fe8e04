/* measure: runs a command N times and prints, per run, its wall time, its peak RSS and
 * its exit status: "WALL_US MAXRSS_KIB STATUS", one line a run.
 *
 *   measure N INPUT ERRFILE -- COMMAND [ARG...]
 *
 * Each run reads INPUT on stdin (a file, opened anew; "-" for /dev/null), writes stdout to
 * /dev/null and appends stderr to ERRFILE. Wall time is CLOCK_MONOTONIC around
 * fork+exec+wait4; peak RSS is wait4's ru_maxrss.
 *
 * Why not from Python: Linux charges the RSS of the process that forked (or vforked) a
 * child to the child's ru_maxrss when the child execs, so a 30 MiB Python driver would
 * make every child look at least 30 MiB big. This helper is small, so its children start
 * from its own tiny RSS and ru_maxrss is theirs. */
#define _GNU_SOURCE
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static long long now_us(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long long)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

int main(int argc, char **argv) {
    if (argc < 6 || strcmp(argv[4], "--") != 0) {
        fprintf(stderr, "usage: measure N INPUT ERRFILE -- COMMAND [ARG...]\n");
        return 64;
    }
    int runs = atoi(argv[1]);
    const char *input = strcmp(argv[2], "-") == 0 ? "/dev/null" : argv[2];
    const char *errfile = argv[3];
    char **command = argv + 5;
    for (int i = 0; i < runs; i++) {
        long long start = now_us();
        pid_t pid = fork();
        if (pid < 0) {
            perror("measure: fork");
            return 71;
        }
        if (pid == 0) {
            int in = open(input, O_RDONLY);
            int out = open("/dev/null", O_WRONLY);
            int err = open(errfile, O_WRONLY | O_CREAT | O_APPEND, 0600);
            if (in < 0 || out < 0 || err < 0) {
                perror("measure: open");
                _exit(71);
            }
            dup2(in, 0);
            dup2(out, 1);
            dup2(err, 2);
            execvp(command[0], command);
            perror("measure: exec");
            _exit(127);
        }
        int status;
        struct rusage usage;
        if (wait4(pid, &status, 0, &usage) < 0) {
            perror("measure: wait4");
            return 71;
        }
        long long wall = now_us() - start;
        int code = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
        printf("%lld %ld %d\n", wall, usage.ru_maxrss, code);
        fflush(stdout);
    }
    return 0;
}
