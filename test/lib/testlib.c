/* SPDX-License-Identifier: MIT */
#include <arpa/inet.h>
#include <dirent.h>
#include <fcntl.h>
#include <ftw.h>
#include <hiredis/hiredis.h>
#include <jansson.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>

#include "macro.h"
#include "ctl.h"
#include "testlib.h"

static char tmpdir[256];
static pid_t tmpdir_owner; /* forked tests (Check) inherit it: only its creator removes it */

static int rm_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw) {
        return remove(path);
}

static void tmpdir_cleanup(void) {
        if (tmpdir[0] && tmpdir_owner == getpid() && !getenv("SIPFLEET_KEEP_TMP"))
                nftw(tmpdir, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
}

const char *tl_tmpdir(void) {
        if (!tmpdir[0]) {
                const char *base = getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp";
                snprintf(tmpdir, sizeof tmpdir, "%s/sipfleet-test-XXXXXX", base);
                ck_assert_ptr_nonnull(mkdtemp(tmpdir));
                tmpdir_owner = getpid();
                atexit(tmpdir_cleanup);
        }
        return tmpdir;
}

char *tl_path(const char *name) {
        char *p;
        ck_assert_int_ge(asprintf(&p, "%s/%s", tl_tmpdir(), name), 0);
        return p;
}

char *tl_write_file(const char *name, const char *text) {
        char *p = tl_path(name);
        FILE *f = fopen(p, "we");
        ck_assert_ptr_nonnull(f);
        fputs(text, f);
        ck_assert_int_eq(fclose(f), 0);
        return p;
}

static char *root_path(const char *var, const char *rel) {
        const char *root = getenv(var);
        ck_assert_msg(root, "%s is not set (run the tests with meson test)", var);
        char *p;
        ck_assert_int_ge(asprintf(&p, "%s/%s", root, rel), 0);
        return p;
}

char *tl_build_path(const char *rel) {
        return root_path("SIPFLEET_BUILD_ROOT", rel);
}

char *tl_source_path(const char *rel) {
        return root_path("SIPFLEET_SOURCE_ROOT", rel);
}

int tl_run(Suite *s) {
        SRunner *sr = srunner_create(s);
        srunner_set_tap(sr, "-");
        srunner_run_all(sr, CK_SILENT);
        int failed = srunner_ntests_failed(sr);
        srunner_free(sr);
        return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}

int tl_free_port(void) {
        /* Ask the kernel for an ephemeral TCP port, then check UDP takes it too. Ports handed out
         * are remembered so one test never gets the same one twice. */
        static int given[256];
        static size_t n_given;
        for (int attempt = 0; attempt < 100; attempt++) {
                _cleanup_close_ int t = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
                struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
                socklen_t len = sizeof a;
                if (t < 0 || bind(t, (struct sockaddr *)&a, sizeof a) < 0 ||
                    getsockname(t, (struct sockaddr *)&a, &len) < 0)
                        continue;
                _cleanup_close_ int u = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
                if (u < 0 || bind(u, (struct sockaddr *)&a, sizeof a) < 0)
                        continue;
                int port = ntohs(a.sin_port);
                bool seen = false;
                for (size_t i = 0; i < n_given; i++)
                        seen = seen || given[i] == port;
                if (seen)
                        continue;
                if (n_given < ELEMENTSOF(given))
                        given[n_given++] = port;
                return port;
        }
        ck_abort_msg("no free port");
        return -1;
}

/* Children still running when a test process exits (a failed assertion exits at once) are
 * killed, so that a failure does not leave daemons behind. */
static pid_t spawned[256];

static void kill_spawned(void) {
        for (size_t i = 0; i < ELEMENTSOF(spawned); i++)
                if (spawned[i] > 0 && waitpid(spawned[i], NULL, WNOHANG) == 0) {
                        kill(-spawned[i], SIGKILL);
                        kill(spawned[i], SIGKILL);
                        waitpid(spawned[i], NULL, 0);
                }
}

static void track_spawned(pid_t pid, pid_t done) {
        static bool registered;
        if (!registered) {
                atexit(kill_spawned);
                registered = true;
        }
        for (size_t i = 0; i < ELEMENTSOF(spawned); i++)
                if (spawned[i] == done) {
                        spawned[i] = pid;
                        return;
                }
}

int tl_spawn(const char *name, char *const argv[], struct tl_proc *p) {
        _cleanup_free_ char *logname = NULL;
        ck_assert_int_ge(asprintf(&logname, "%s.log", name), 0);
        p->log = tl_path(logname);
        fflush(NULL);
        pid_t parent = getpid();
        pid_t pid = fork();
        ck_assert_int_ge(pid, 0);
        if (pid == 0) {
                /* A failed assertion may end the test process without its exit handlers:
                 * the child goes with it anyway. */
                if (prctl(PR_SET_PDEATHSIG, SIGKILL) < 0 || getppid() != parent)
                        _exit(127);
                int fd = open(p->log, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
                if (fd >= 0) {
                        dup2(fd, STDOUT_FILENO);
                        dup2(fd, STDERR_FILENO);
                }
                int devnull = open("/dev/null", O_RDONLY | O_CLOEXEC);
                if (devnull >= 0)
                        dup2(devnull, STDIN_FILENO);
                setpgid(0, 0);
                execv(argv[0], argv);
                fprintf(stderr, "exec %s: %s\n", argv[0], strerror(errno));
                _exit(127);
        }
        p->pid = pid;
        track_spawned(pid, 0);
        return 0;
}

int tl_wait(struct tl_proc *p, int timeout_ms) {
        for (int waited = 0;; waited += 10) {
                int status;
                pid_t r = waitpid(p->pid, &status, WNOHANG);
                if (r == p->pid) {
                        track_spawned(0, p->pid);
                        p->pid = 0;
                        return status;
                }
                if (r < 0)
                        return -errno;
                if (waited >= timeout_ms)
                        return -ETIMEDOUT;
                nanosleep(&(struct timespec){0, 10 * 1000 * 1000}, NULL);
        }
}

void tl_kill(struct tl_proc *p, int sig) {
        if (p->pid > 0)
                kill(p->pid, sig);
}

void tl_freeze(struct tl_proc *p) {
        ck_assert_int_gt(p->pid, 0);
        ck_assert_int_eq(kill(p->pid, SIGSTOP), 0);
        /* kill() returns before every thread has stopped: a thread busy on a CPU goes on until
         * it next enters the kernel. Wait until each one shows state T. */
        char dir[64];
        snprintf(dir, sizeof dir, "/proc/%d/task", (int)p->pid);
        for (int waited = 0;; waited += 5) {
                bool all = true;
                DIR *d = opendir(dir);
                ck_assert_ptr_nonnull(d);
                for (struct dirent *e; all && (e = readdir(d));) {
                        if (e->d_name[0] == '.')
                                continue;
                        char path[sizeof dir + 256 + 8], buf[512];
                        snprintf(path, sizeof path, "%s/%s/stat", dir, e->d_name);
                        FILE *f = fopen(path, "re");
                        if (!f)
                                continue; /* the thread ended */
                        size_t n = fread(buf, 1, sizeof buf - 1, f);
                        fclose(f);
                        buf[n] = 0;
                        const char *close_paren = strrchr(buf, ')');
                        all = close_paren && (close_paren[2] == 'T' || close_paren[2] == 't');
                }
                closedir(d);
                if (all)
                        return;
                ck_assert_msg(waited < 5000, "process %d did not stop", (int)p->pid);
                nanosleep(&(struct timespec){0, 5 * 1000 * 1000}, NULL);
        }
}

int tl_stop(struct tl_proc *p) {
        if (p->pid <= 0)
                return 0;
        kill(p->pid, SIGTERM);
        int r = tl_wait(p, 5000);
        if (r == -ETIMEDOUT) {
                kill(p->pid, SIGKILL);
                r = tl_wait(p, 5000);
        }
        return r;
}

char *tl_read_file(const char *path, size_t *len) {
        FILE *f = fopen(path, "rbe");
        if (!f)
                return NULL;
        char *buf = NULL;
        size_t size = 0;
        FILE *m = open_memstream(&buf, &size);
        char chunk[8192];
        size_t n;
        while ((n = fread(chunk, 1, sizeof chunk, f)) > 0)
                fwrite(chunk, 1, n, m);
        fclose(f);
        fclose(m);
        if (len)
                *len = size;
        return buf;
}

char *tl_log(struct tl_proc *p) {
        char *text = p->log ? tl_read_file(p->log, NULL) : NULL;
        return text ? text : strdup("");
}

int tl_wait_unix(const char *path, int timeout_ms) {
        for (int waited = 0; waited <= timeout_ms; waited += 10) {
                _cleanup_close_ int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
                struct sockaddr_un a = {.sun_family = AF_UNIX};
                snprintf(a.sun_path, sizeof a.sun_path, "%s", path);
                if (fd >= 0 && connect(fd, (struct sockaddr *)&a, sizeof a) == 0)
                        return 0;
                nanosleep(&(struct timespec){0, 10 * 1000 * 1000}, NULL);
        }
        return -ETIMEDOUT;
}

int tl_wait_tcp(int port, int timeout_ms) {
        for (int waited = 0; waited <= timeout_ms; waited += 10) {
                _cleanup_close_ int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
                struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons(port),
                                        .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
                if (fd >= 0 && connect(fd, (struct sockaddr *)&a, sizeof a) == 0)
                        return 0;
                nanosleep(&(struct timespec){0, 10 * 1000 * 1000}, NULL);
        }
        return -ETIMEDOUT;
}

int tl_redis_start(struct tl_redis *r, const char *const *extra) {
        char port[16];
        r->port = tl_free_port();
        snprintf(port, sizeof port, "%d", r->port);
        char *argv[64] = {"/usr/bin/redis-server", "--port", port, "--bind", "127.0.0.1",
                          "--save", "", "--appendonly", "no", "--dir", (char *)tl_tmpdir()};
        size_t n = 11;
        for (; extra && *extra && n < ELEMENTSOF(argv) - 1; extra++)
                argv[n++] = (char *)*extra;
        argv[n] = NULL;
        _cleanup_free_ char *name = NULL;
        ck_assert_int_ge(asprintf(&name, "redis-%d", r->port), 0);
        tl_spawn(name, argv, &r->proc);
        for (int i = 0; i < 500; i++) {
                _cleanup_free_ char *pong = tl_redis_cmd(r, "PING");
                if (pong && streq(pong, "PONG"))
                        return 0;
                nanosleep(&(struct timespec){0, 10 * 1000 * 1000}, NULL);
        }
        _cleanup_free_ char *log = tl_log(&r->proc);
        ck_abort_msg("redis-server did not start: %s", log);
        return -ETIMEDOUT;
}

void tl_redis_stop(struct tl_redis *r) {
        tl_stop(&r->proc);
        free(r->proc.log);
        r->proc.log = NULL;
}

static void reply_to_text(FILE *m, redisReply *rep) {
        switch (rep->type) {
        case REDIS_REPLY_INTEGER:
                fprintf(m, "%lld", rep->integer);
                break;
        case REDIS_REPLY_NIL:
                break;
        case REDIS_REPLY_ARRAY:
                for (size_t i = 0; i < rep->elements; i++) {
                        if (i)
                                fputc('\n', m);
                        reply_to_text(m, rep->element[i]);
                }
                break;
        default:
                fwrite(rep->str, 1, rep->len, m);
        }
}

char *tl_redis_cmd(struct tl_redis *r, const char *fmt, ...) {
        struct timeval tv = {1, 0};
        redisContext *c = redisConnectWithTimeout("127.0.0.1", r->port, tv);
        if (!c || c->err) {
                if (c)
                        redisFree(c);
                return NULL;
        }
        va_list ap;
        va_start(ap, fmt);
        redisReply *rep = redisvCommand(c, fmt, ap);
        va_end(ap);
        char *buf = NULL;
        if (rep) {
                size_t len;
                FILE *m = open_memstream(&buf, &len);
                reply_to_text(m, rep);
                fclose(m);
                freeReplyObject(rep);
        }
        redisFree(c);
        return buf;
}

void tl_proxy_write_conf(struct tl_proxy *f, const char *extra) {
        _cleanup_free_ char *text = NULL, *tls = NULL;
        const char *name = f->name ? f->name : "proxy";
        _cleanup_free_ char *sock_name = NULL, *conf_name = NULL;
        ck_assert_int_ge(asprintf(&sock_name, "%s.sock", name), 0);
        ck_assert_int_ge(asprintf(&conf_name, "%s.conf", name), 0);
        if (!f->sock) {
                f->port = tl_free_port();
                f->metrics_port = tl_free_port();
                f->sock = tl_path(sock_name);
        }
        if (f->tls_port > 0)
                ck_assert_int_ge(asprintf(&tls, " sips:127.0.0.1:%d", f->tls_port), 0);
        ck_assert_int_ge(asprintf(&text,
                                  "# generated by the test fixture\n"
                                  "[global]\n"
                                  "transports=sip:127.0.0.1:%d%s\n"
                                  "control-socket=%s\n"
                                  "shutdown-timeout=3s\n"
                                  "prometheus-listen=127.0.0.1:%d\n"
                                  "%s",
                                  f->port, strempty(tls), f->sock, f->metrics_port,
                                  extra ? extra : ""),
                         0);
        free(f->conf);
        f->conf = tl_write_file(conf_name, text);
}

void tl_proxy_start(struct tl_proxy *f, const char *extra) {
        _cleanup_free_ char *bin = tl_build_path("proxy/sipfleet-proxy");
        tl_proxy_write_conf(f, extra);
        char *argv[] = {bin, "--config", f->conf, NULL};
        free(f->proc.log);
        tl_spawn(f->name ? f->name : "proxy", argv, &f->proc);
        if (tl_wait_unix(f->sock, 10000) < 0) {
                _cleanup_free_ char *log = tl_log(&f->proc);
                ck_abort_msg("proxy did not become ready: %s", log);
        }
}

/* Stops a running daemon and checks that it went cleanly: exit status 0 on SIGTERM, and no
 * sanitizer report in its log (the ASan build runs every test). */
static void daemon_stop_checked(const char *name, struct tl_proc *proc) {
        bool running = proc->pid > 0;
        int status = running ? tl_stop(proc) : 0;
        if (!proc->log)
                return;
        _cleanup_free_ char *log = tl_log(proc);
        bool sanitizer = strstr(log, "ERROR: AddressSanitizer") || strstr(log, "runtime error:") ||
                         strstr(log, "ERROR: LeakSanitizer");
        bool clean = !running || (WIFEXITED(status) && WEXITSTATUS(status) == 0);
        if (sanitizer || !clean) /* the log is too long for a Check message */
                fprintf(stderr, "%s log (%s):\n%s\n", name, proc->log, log);
        ck_assert_msg(!sanitizer, "sanitizer report in the %s's log (printed above)", name);
        ck_assert_msg(clean, "the %s did not exit cleanly on SIGTERM (status %d)", name, status);
}

void tl_proxy_stop(struct tl_proxy *f) {
        daemon_stop_checked("proxy", &f->proc);
}

void tl_proxy_done(struct tl_proxy *f) {
        daemon_stop_checked("proxy", &f->proc);
        free(f->proc.log);
        free(f->conf);
        free(f->sock);
        *f = (struct tl_proxy){0};
}

void tl_daemon_write_conf(struct tl_daemon *f, const char *role, const char *extra) {
        _cleanup_free_ char *text = NULL, *sock_name = NULL, *conf_name = NULL;
        if (!f->sock) {
                ck_assert_int_ge(asprintf(&sock_name, "%s.sock", role), 0);
                f->sock = tl_path(sock_name);
                f->metrics_port = tl_free_port();
                f->role = strdup(role);
                ck_assert_ptr_nonnull(f->role);
        }
        ck_assert_int_ge(asprintf(&text,
                                  "# generated by the test fixture\n"
                                  "[global]\n"
                                  "control-socket=%s\n"
                                  "shutdown-timeout=3s\n"
                                  "prometheus-listen=127.0.0.1:%d\n"
                                  "%s",
                                  f->sock, f->metrics_port, extra ? extra : ""),
                         0);
        ck_assert_int_ge(asprintf(&conf_name, "%s.conf", role), 0);
        free(f->conf);
        f->conf = tl_write_file(conf_name, text);
}

void tl_daemon_start(struct tl_daemon *f, const char *role, const char *extra) {
        _cleanup_free_ char *rel = NULL, *bin = NULL;
        ck_assert_int_ge(asprintf(&rel, "%s/sipfleet-%s", role, role), 0);
        bin = tl_build_path(rel);
        tl_daemon_write_conf(f, role, extra);
        char *argv[] = {bin, "--config", f->conf, NULL};
        free(f->proc.log);
        tl_spawn(role, argv, &f->proc);
        if (tl_wait_unix(f->sock, 10000) < 0) {
                _cleanup_free_ char *log = tl_log(&f->proc);
                ck_abort_msg("%s did not become ready: %s", role, log);
        }
}

void tl_daemon_stop(struct tl_daemon *f) {
        daemon_stop_checked(f->role ? f->role : "daemon", &f->proc);
}

void tl_daemon_done(struct tl_daemon *f) {
        tl_daemon_stop(f);
        free(f->proc.log);
        free(f->conf);
        free(f->sock);
        free(f->role);
        *f = (struct tl_daemon){0};
}

json_t *tl_ctl(const char *sock, const char *line) {
        _cleanup_free_ char *reply = NULL;
        int r = ctl_client_call(sock, line, 5000, &reply);
        ck_assert_msg(r == 0, "'%s' on %s: %s", line, sock, strerror(-r));
        json_t *j = json_loads(reply, 0, NULL);
        ck_assert_msg(j, "reply to '%s' is not JSON: %s", line, reply);
        return j;
}

long long tl_counter(const char *sock, const char *path) {
        _cleanup_free_ char *line = NULL;
        ck_assert_int_ge(asprintf(&line, "GET %s", path), 0);
        json_t *j = tl_ctl(sock, line);
        json_t *v = json_object_get(j, path);
        ck_assert_msg(json_is_integer(v), "no counter %s", path);
        long long n = json_integer_value(v);
        json_decref(j);
        return n;
}

int tl_sipp_spawn(struct tl_proc *p, const char *name, const char *scenario, int local_port,
                  const char *const *args) {
        _cleanup_free_ char *sf = scenario[0] == '/' ? strdup(scenario) : tl_source_path(scenario);
        char local[16], cp[16];
        snprintf(local, sizeof local, "%d", local_port > 0 ? local_port : tl_free_port());
        snprintf(cp, sizeof cp, "%d", tl_free_port());
        const char *fixed[] = {"/usr/bin/sipp", "-sf", sf, "-i", "127.0.0.1", "-p", local,
                               "-cp", cp, "-nostdin", "-timeout", "30s", "-timeout_error",
                               "-trace_err", "-error_file", NULL};
        _cleanup_free_ char *errfile = NULL;
        ck_assert_int_ge(asprintf(&errfile, "%s/%s-errors.log", tl_tmpdir(), name), 0);
        size_t n = 0, nf = ELEMENTSOF(fixed) - 1, na = 0;
        while (args && args[na])
                na++;
        const char **argv = calloc(nf + 1 + na + 1, sizeof *argv);
        ck_assert_ptr_nonnull(argv);
        for (size_t i = 0; i < nf; i++)
                argv[n++] = fixed[i];
        argv[n++] = errfile;
        for (size_t i = 0; i < na; i++)
                argv[n++] = args[i];
        argv[n] = NULL;
        int r = tl_spawn(name, (char *const *)argv, p);
        free(argv);
        return r;
}

int tl_sipp_wait(struct tl_proc *p, const char *name, int timeout_ms) {
        int status = tl_wait(p, timeout_ms);
        if (status == -ETIMEDOUT) {
                tl_kill(p, SIGKILL);
                tl_wait(p, 5000);
        }
        if (status != 0) {
                _cleanup_free_ char *log = tl_log(p);
                _cleanup_free_ char *errfile = NULL;
                ck_assert_int_ge(asprintf(&errfile, "%s/%s-errors.log", tl_tmpdir(), name), 0);
                _cleanup_free_ char *errors = tl_read_file(errfile, NULL);
                fprintf(stderr, "sipp %s (status %d):\n%s\n%s\n", name, status, log,
                        errors ? errors : "");
        }
        free(p->log);
        p->log = NULL;
        return status;
}

int tl_sipp(const char *scenario, int port) {
        char remote[64];
        snprintf(remote, sizeof remote, "127.0.0.1:%d", port);
        const char *args[] = {remote, "-m", "1", NULL};
        struct tl_proc sipp;
        tl_sipp_spawn(&sipp, "sipp", scenario, 0, args);
        return tl_sipp_wait(&sipp, "sipp", 40000);
}

static void run_openssl(const char *const *args) {
        const char *argv[24] = {"/usr/bin/openssl"};
        size_t n = 1;
        for (; args[n - 1]; n++) {
                ck_assert_uint_lt(n, ELEMENTSOF(argv) - 1);
                argv[n] = args[n - 1];
        }
        argv[n] = NULL;
        struct tl_proc p;
        tl_spawn("openssl", (char *const *)argv, &p);
        int status = tl_wait(&p, 30000);
        if (status != 0) {
                _cleanup_free_ char *log = tl_log(&p);
                ck_abort_msg("openssl %s failed: %s", args[0], log);
        }
        free(p.log);
}

char *tl_tls_dir(const char *name, const char *subject_alt_name) {
        _cleanup_free_ char *dir = tl_path(name);
        ck_assert_int_eq(mkdir(dir, 0700), 0);
        _cleanup_free_ char *ca_key = NULL, *ca_pem = NULL, *key = NULL, *csr = NULL,
                            *crt = NULL, *ext = NULL, *san = NULL;
        ck_assert_int_ge(asprintf(&ca_key, "%s/ca.key", dir), 0);
        ck_assert_int_ge(asprintf(&ca_pem, "%s/cafile.pem", dir), 0);
        ck_assert_int_ge(asprintf(&key, "%s/agent.key", dir), 0);
        ck_assert_int_ge(asprintf(&csr, "%s/agent.csr", dir), 0);
        ck_assert_int_ge(asprintf(&crt, "%s/agent.crt", dir), 0);
        ck_assert_int_ge(asprintf(&ext, "%s/agent.ext", dir), 0);
        ck_assert_int_ge(asprintf(&san, "subjectAltName=%s\n",
                                  subject_alt_name ? subject_alt_name : "IP:127.0.0.1"),
                         0);
        FILE *f = fopen(ext, "we");
        ck_assert_ptr_nonnull(f);
        fputs(san, f);
        fclose(f);

        run_openssl((const char *[]){"req", "-x509", "-newkey", "ec", "-pkeyopt",
                                     "ec_paramgen_curve:prime256v1", "-nodes", "-days", "2",
                                     "-subj", "/CN=sipfleet test CA", "-keyout", ca_key, "-out",
                                     ca_pem, NULL});
        run_openssl((const char *[]){"req", "-newkey", "ec", "-pkeyopt",
                                     "ec_paramgen_curve:prime256v1", "-nodes", "-subj",
                                     "/CN=127.0.0.1", "-keyout", key, "-out", csr, NULL});
        run_openssl((const char *[]){"x509", "-req", "-in", csr, "-CA", ca_pem, "-CAkey", ca_key,
                                     "-CAcreateserial", "-days", "2", "-extfile", ext, "-out",
                                     crt, NULL});
        /* sofia reads the key and the chain from one file. */
        _cleanup_free_ char *k = tl_read_file(key, NULL), *c = tl_read_file(crt, NULL);
        ck_assert_ptr_nonnull(k);
        ck_assert_ptr_nonnull(c);
        _cleanup_free_ char *agent = NULL;
        ck_assert_int_ge(asprintf(&agent, "%s/agent.pem", dir), 0);
        f = fopen(agent, "we");
        ck_assert_ptr_nonnull(f);
        fputs(k, f);
        fputs(c, f);
        fclose(f);
        return TAKE_PTR(dir);
}

void tl_tls_client_cert(const char *dir, const char *name, const char *cn,
                        const char *subject_alt_name) {
        _cleanup_free_ char *ca_key = NULL, *ca_pem = NULL, *key = NULL, *csr = NULL,
                            *crt = NULL, *ext = NULL, *subj = NULL;
        ck_assert_int_ge(asprintf(&ca_key, "%s/ca.key", dir), 0);
        ck_assert_int_ge(asprintf(&ca_pem, "%s/cafile.pem", dir), 0);
        ck_assert_int_ge(asprintf(&key, "%s/%s.key", dir, name), 0);
        ck_assert_int_ge(asprintf(&csr, "%s/%s.csr", dir, name), 0);
        ck_assert_int_ge(asprintf(&crt, "%s/%s.crt", dir, name), 0);
        ck_assert_int_ge(asprintf(&ext, "%s/%s.ext", dir, name), 0);
        ck_assert_int_ge(asprintf(&subj, "/CN=%s", cn), 0);
        FILE *f = fopen(ext, "we");
        ck_assert_ptr_nonnull(f);
        fputs("extendedKeyUsage=clientAuth\n", f);
        if (subject_alt_name)
                fprintf(f, "subjectAltName=%s\n", subject_alt_name);
        fclose(f);
        run_openssl((const char *[]){"req", "-newkey", "ec", "-pkeyopt",
                                     "ec_paramgen_curve:prime256v1", "-nodes", "-subj", subj,
                                     "-keyout", key, "-out", csr, NULL});
        run_openssl((const char *[]){"x509", "-req", "-in", csr, "-CA", ca_pem, "-CAkey", ca_key,
                                     "-CAcreateserial", "-days", "2", "-extfile", ext, "-out",
                                     crt, NULL});
}
