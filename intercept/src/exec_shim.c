/* The variadic members of the exec family, which stable Rust cannot define. Each collects its
 * argument list into an argv array on the stack and calls the non-variadic hook (execv, execvp,
 * execve), which restores LD_PRELOAD and accel's variables in the new image. */
#include <errno.h>
#include <stdarg.h>
#include <stddef.h>
#include <unistd.h>

#define ACCEL_MAX_ARGS 65536 /* far beyond ARG_MAX's worth of pointers on the stack */

/* How many arguments follow arg0 up to the terminating NULL (0 if too many). */
static size_t count_args(va_list ap) {
    va_list cp;
    va_copy(cp, ap);
    size_t n = 1;
    while (va_arg(cp, const char *) != NULL) {
        if (++n > ACCEL_MAX_ARGS) {
            n = 0;
            break;
        }
    }
    va_end(cp);
    return n;
}

/* Fills argv[0..n] (argv[n] = NULL) from arg0 and the n - 1 arguments in *ap. */
static void fill_args(const char **argv, size_t n, const char *arg0, va_list *ap) {
    argv[0] = arg0;
    for (size_t i = 1; i <= n; i++) argv[i] = va_arg(*ap, const char *);
}

/* Declares argv on the caller's stack from its variable arguments, or fails with E2BIG. */
#define COLLECT_ARGV(ap, arg0, n)                                                              \
    size_t n = count_args(ap);                                                                 \
    if (n == 0) {                                                                              \
        va_end(ap);                                                                            \
        errno = E2BIG;                                                                         \
        return -1;                                                                             \
    }                                                                                          \
    const char *argv[n + 1];                                                                   \
    fill_args(argv, n, arg0, &ap)

__attribute__((visibility("hidden"))) int accel_shim_execl(const char *path, const char *arg0, ...) {
    va_list ap;
    va_start(ap, arg0);
    COLLECT_ARGV(ap, arg0, n);
    va_end(ap);
    return execv(path, (char *const *)argv);
}

__attribute__((visibility("hidden"))) int accel_shim_execlp(const char *file, const char *arg0, ...) {
    va_list ap;
    va_start(ap, arg0);
    COLLECT_ARGV(ap, arg0, n);
    va_end(ap);
    return execvp(file, (char *const *)argv);
}

__attribute__((visibility("hidden"))) int accel_shim_execle(const char *path, const char *arg0, ...) {
    va_list ap;
    va_start(ap, arg0);
    COLLECT_ARGV(ap, arg0, n);
    char *const *envp = va_arg(ap, char *const *); /* after the NULL that ends argv */
    va_end(ap);
    return execve(path, (char *const *)argv, envp);
}
