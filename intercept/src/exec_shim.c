/* The variadic members of the exec family, which stable Rust cannot define. Each collects its
 * argument list into an argv array on the stack and calls the non-variadic hook (execv, execvp,
 * execve), which restores LD_PRELOAD and accel's variables in the new image. */
#include <errno.h>
#include <stdarg.h>
#include <stddef.h>
#include <unistd.h>

#define ACCEL_MAX_ARGS 65536 /* far beyond ARG_MAX's worth of pointers on the stack */

#define COLLECT(argv, arg0, ap, count)                                                        \
    do {                                                                                       \
        va_list cp_;                                                                           \
        va_copy(cp_, ap);                                                                      \
        count = 1;                                                                             \
        while (va_arg(cp_, const char *) != NULL) {                                            \
            if (++count > ACCEL_MAX_ARGS) { va_end(cp_); errno = E2BIG; return -1; }           \
        }                                                                                      \
        va_end(cp_);                                                                           \
    } while (0)

__attribute__((visibility("hidden"))) int accel_shim_execl(const char *path, const char *arg0, ...) {
    va_list ap;
    size_t n;
    va_start(ap, arg0);
    COLLECT(argv, arg0, ap, n);
    const char *argv[n + 1];
    argv[0] = arg0;
    for (size_t i = 1; i <= n; i++) argv[i] = va_arg(ap, const char *);
    va_end(ap);
    return execv(path, (char *const *)argv);
}

__attribute__((visibility("hidden"))) int accel_shim_execlp(const char *file, const char *arg0, ...) {
    va_list ap;
    size_t n;
    va_start(ap, arg0);
    COLLECT(argv, arg0, ap, n);
    const char *argv[n + 1];
    argv[0] = arg0;
    for (size_t i = 1; i <= n; i++) argv[i] = va_arg(ap, const char *);
    va_end(ap);
    return execvp(file, (char *const *)argv);
}

__attribute__((visibility("hidden"))) int accel_shim_execle(const char *path, const char *arg0, ...) {
    va_list ap;
    size_t n;
    va_start(ap, arg0);
    COLLECT(argv, arg0, ap, n);
    const char *argv[n + 1];
    argv[0] = arg0;
    for (size_t i = 1; i <= n; i++) argv[i] = va_arg(ap, const char *);
    char *const *envp = va_arg(ap, char *const *); /* after the NULL that ends argv */
    va_end(ap);
    return execve(path, (char *const *)argv, envp);
}
