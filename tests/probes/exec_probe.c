/*
 * exec_probe: starts itself again through one exec/spawn METHOD after scrubbing the environment
 * (empty envp, clearenv() or unsetenv("LD_PRELOAD")), and the started copy reports whether
 * libaccel.so is mapped into it and which of the library's variables it still has.
 *
 * Usage: exec_probe METHOD      (exec_probe list: the methods)
 *        exec_probe report      (what the started copy runs)
 * Output of the started copy: `report mapped=M preload=P level=L logfile=F` (each 0 or 1).
 *
 * Build: cc -O1 -Wall -o exec_probe exec_probe.c -lpthread
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

extern char **environ;

static char self[4096];
static char *const child_argv[] = {self, "report", NULL};
static char *empty_env[] = {NULL};

static int report(void) {
    int mapped = 0;
    FILE *m = fopen("/proc/self/maps", "r");
    char line[4096];
    while (m && fgets(line, sizeof line, m))
        if (strstr(line, "libaccel")) mapped = 1;
    if (m) fclose(m);
    const char *p = getenv("LD_PRELOAD");
    printf("report mapped=%d preload=%d level=%d logfile=%d\n", mapped,
           p != NULL && strstr(p, "libaccel") != NULL, getenv("ACCEL_LOG_LEVEL") != NULL,
           getenv("ACCEL_LOG_FILE") != NULL);
    return 0;
}

static void scrub(void) {
    unsetenv("LD_PRELOAD");
    unsetenv("ACCEL_LOG_LEVEL");
    unsetenv("ACCEL_LOG_FILE");
}

static int wait_child(pid_t pid) {
    int st;
    if (waitpid(pid, &st, 0) < 0) return 1;
    return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
}

static int spawn_wait(int (*fn)(pid_t *, const char *, const posix_spawn_file_actions_t *,
                                const posix_spawnattr_t *, char *const[], char *const[]),
                      const char *path, char *const envp[]) {
    pid_t pid;
    int e = fn(&pid, path, NULL, NULL, child_argv, envp);
    if (e) {
        fprintf(stderr, "spawn: %s\n", strerror(e));
        return 1;
    }
    return wait_child(pid);
}

static int run(const char *method) {
    fflush(stdout);
    if (!strcmp(method, "execve_empty")) {
        execve(self, child_argv, empty_env);
    } else if (!strcmp(method, "execve_null_envp")) {
        execve(self, child_argv, NULL);
    } else if (!strcmp(method, "execve_scrubbed_environ")) {
        scrub();
        execve(self, child_argv, environ);
    } else if (!strcmp(method, "execv_clearenv")) {
        clearenv();
        execv(self, child_argv);
    } else if (!strcmp(method, "execvp_unsetenv")) {
        scrub();
        execvp(self, child_argv);
    } else if (!strcmp(method, "execvpe_empty")) {
        execvpe(self, child_argv, empty_env);
    } else if (!strcmp(method, "execl_unsetenv")) {
        scrub();
        execl(self, self, "report", (char *)NULL);
    } else if (!strcmp(method, "execlp_unsetenv")) {
        scrub();
        execlp(self, self, "report", (char *)NULL);
    } else if (!strcmp(method, "execle_empty")) {
        execle(self, self, "report", (char *)NULL, empty_env);
    } else if (!strcmp(method, "fexecve_empty")) {
        int fd = open(self, O_RDONLY | O_CLOEXEC);
        fexecve(fd, child_argv, empty_env);
    } else if (!strcmp(method, "syscall_execve_empty")) {
        syscall(SYS_execve, self, child_argv, empty_env);
    } else if (!strcmp(method, "fork_execve_empty")) {
        pid_t pid = fork();
        if (pid == 0) {
            execve(self, child_argv, empty_env);
            _exit(127);
        }
        return wait_child(pid);
    } else if (!strcmp(method, "vfork_execve_empty")) {
        pid_t pid = vfork();
        if (pid == 0) {
            execve(self, child_argv, empty_env);
            _exit(127);
        }
        return wait_child(pid);
    } else if (!strcmp(method, "posix_spawn_empty")) {
        return spawn_wait(posix_spawn, self, empty_env);
    } else if (!strcmp(method, "posix_spawnp_empty")) {
        return spawn_wait(posix_spawnp, self, empty_env);
    } else if (!strcmp(method, "posix_spawn_scrubbed_environ")) {
        scrub();
        return spawn_wait(posix_spawn, self, environ);
    } else if (!strcmp(method, "system_unsetenv")) {
        char cmd[4200];
        scrub();
        snprintf(cmd, sizeof cmd, "%s report", self);
        int st = system(cmd);
        return WIFEXITED(st) ? WEXITSTATUS(st) : 1;
    } else if (!strcmp(method, "popen_unsetenv")) {
        char cmd[4200], line[256];
        scrub();
        snprintf(cmd, sizeof cmd, "%s report", self);
        FILE *f = popen(cmd, "r");
        if (!f) return 1;
        while (fgets(line, sizeof line, f)) fputs(line, stdout);
        return pclose(f) == 0 ? 0 : 1;
    } else {
        fprintf(stderr, "unknown method %s\n", method);
        return 2;
    }
    fprintf(stderr, "%s: exec failed: %s\n", method, strerror(errno));
    return 1;
}

static const char *methods[] = {
    "execve_empty", "execve_null_envp", "execve_scrubbed_environ", "execv_clearenv",
    "execvp_unsetenv", "execvpe_empty", "execl_unsetenv", "execlp_unsetenv", "execle_empty",
    "fexecve_empty", "syscall_execve_empty", "fork_execve_empty", "vfork_execve_empty",
    "posix_spawn_empty", "posix_spawnp_empty", "posix_spawn_scrubbed_environ",
    "system_unsetenv", "popen_unsetenv", NULL};

int main(int argc, char **argv) {
    if (argc != 2) {
        fprintf(stderr, "usage: %s METHOD|list|report\n", argv[0]);
        return 2;
    }
    if (!strcmp(argv[1], "report")) return report();
    if (!strcmp(argv[1], "list")) {
        for (int i = 0; methods[i]; i++) puts(methods[i]);
        return 0;
    }
    ssize_t n = readlink("/proc/self/exe", self, sizeof self - 1);
    if (n <= 0) return 1;
    self[n] = 0;
    return run(argv[1]);
}
