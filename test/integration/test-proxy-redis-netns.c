/* SPDX-License-Identifier: MIT */
/* The failure scenario of the HA seed on three hosts made of network namespaces. Each host
 * (namespace h1, h2, h3, address 10.77.0.<n>/24 on a veth) runs a Redis (6379), a Sentinel
 * (26379) and a proxy; the veths meet on a bridge in a fourth namespace (the switch). Host 1
 * holds the master. Cutting host 1 takes its switch port down: the other hosts see silence,
 * as with a lost host or cable. Hosts 2 and 3 keep serving after the Sentinels elect a new
 * master; host 1 comes back (port up), its Redis is turned into a replica and its proxy
 * migrates to the new master. The devices of each host reach their proxy on the host's
 * loopback (the test enters the host's namespace to send).
 *
 * The namespaces are created and deleted by the parent test process (an unchecked fixture),
 * so they go away even when the test fails or times out. Without the right to create
 * namespaces (no CAP_SYS_ADMIN, no iproute2), the whole test is skipped, saying so. */
#include <fcntl.h>
#include <jansson.h>
#include <sched.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "macro.h"
#include "testlib-redis.h"
#include "testlib.h"

#define MASTER        "ha"
#define REDIS_PORT    6379
#define SENTINEL_PORT 26379
#define N_HOSTS       3

static char ns_names[N_HOSTS + 1][32]; /* hosts, then the switch */
static bool ns_made[N_HOSTS + 1];

static long long mono_ms(void) {
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        return ts.tv_sec * 1000LL + ts.tv_nsec / 1000000;
}

static void sleep_ms(long ms) {
        nanosleep(&(struct timespec){ms / 1000, (ms % 1000) * 1000000L}, NULL);
}

/* Runs /usr/sbin/ip with the arguments (split on spaces), quietly. Returns its exit status. */
static int ip(const char *fmt, ...) {
        char line[256];
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(line, sizeof line, fmt, ap);
        va_end(ap);
        char *argv[32] = {"/usr/sbin/ip"};
        size_t n = 1;
        for (char *save = NULL, *t = strtok_r(line, " ", &save); t && n < ELEMENTSOF(argv) - 1;
             t = strtok_r(NULL, " ", &save))
                argv[n++] = t;
        argv[n] = NULL;
        pid_t pid = fork();
        if (pid < 0)
                return -1;
        if (pid == 0) {
                int null = open("/dev/null", O_WRONLY | O_CLOEXEC);
                if (null >= 0) {
                        dup2(null, 1);
                        dup2(null, 2);
                }
                execv(argv[0], argv);
                _exit(127);
        }
        int status;
        if (waitpid(pid, &status, 0) != pid)
                return -1;
        return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

/* Every process still in our namespaces (a test killed on timeout leaves its daemons) is
 * killed, then the namespaces go, and the veths and the bridge with them. */
static void namespaces_delete(void) {
        for (int i = 0; i <= N_HOSTS; i++)
                if (ns_made[i]) {
                        char cmd[192];
                        snprintf(cmd, sizeof cmd, "/usr/sbin/ip netns pids %s 2>/dev/null",
                                 ns_names[i]);
                        FILE *f = popen(cmd, "re");
                        int pid;
                        while (f && fscanf(f, "%d", &pid) == 1)
                                if (pid > 1 && pid != getpid())
                                        kill(pid, SIGKILL);
                        if (f)
                                pclose(f);
                        ip("netns del %s", ns_names[i]);
                        ns_made[i] = false;
                }
}

/* 0, or -1 when namespaces cannot be made here (what was made is deleted). */
static int namespaces_create(void) {
        for (int i = 0; i <= N_HOSTS; i++) {
                if (i < N_HOSTS)
                        snprintf(ns_names[i], sizeof ns_names[i], "sf%dh%d", (int)getpid(), i + 1);
                else
                        snprintf(ns_names[i], sizeof ns_names[i], "sf%dsw", (int)getpid());
                if (ip("netns add %s", ns_names[i]) != 0)
                        goto fail;
                ns_made[i] = true;
        }
        const char *sw = ns_names[N_HOSTS];
        if (ip("-n %s link add br0 type bridge", sw) != 0 || ip("-n %s link set br0 up", sw) != 0)
                goto fail;
        for (int i = 0; i < N_HOSTS; i++) {
                const char *h = ns_names[i];
                if (ip("-n %s link set lo up", h) != 0 ||
                    ip("link add eth0 netns %s type veth peer name port%d netns %s", h, i + 1, sw) !=
                            0 ||
                    ip("-n %s addr add 10.77.0.%d/24 dev eth0", h, i + 1) != 0 ||
                    ip("-n %s link set eth0 up", h) != 0 ||
                    ip("-n %s link set port%d master br0", sw, i + 1) != 0 ||
                    ip("-n %s link set port%d up", sw, i + 1) != 0)
                        goto fail;
        }
        return 0;
fail:
        namespaces_delete();
        return -1;
}

static void setup(void) {
        ck_assert_msg(namespaces_create() == 0, "cannot create the network namespaces");
}

static void teardown(void) {
        namespaces_delete();
}

/* The test process moves to host i's namespace (N_HOSTS: back where it started): the
 * processes it spawns and the sockets it opens from now on are there. */
static void enter(int i) {
        static int home = -1;
        if (home < 0)
                home = open("/proc/self/ns/net", O_RDONLY | O_CLOEXEC);
        ck_assert_int_ge(home, 0);
        if (i == N_HOSTS) {
                ck_assert_int_eq(setns(home, CLONE_NEWNET), 0);
                return;
        }
        char path[64];
        snprintf(path, sizeof path, "/run/netns/%s", ns_names[i]);
        int fd = open(path, O_RDONLY | O_CLOEXEC);
        ck_assert_msg(fd >= 0, "open %s: %s", path, strerror(errno));
        ck_assert_int_eq(setns(fd, CLONE_NEWNET), 0);
        close(fd);
}

static void wait_info(int host, struct tl_redis *srv, const char *what, int within_ms) {
        long long end = mono_ms() + within_ms;
        enter(host);
        while (mono_ms() < end) {
                _cleanup_free_ char *info = tl_redis_cmd(srv, "INFO replication");
                if (info && strstr(info, what)) {
                        enter(N_HOSTS);
                        return;
                }
                sleep_ms(20);
        }
        ck_abort_msg("host %d: no '%s' within %d ms", host + 1, what, within_ms);
}

static void sentinel_start(int host, struct tl_sentinel *s) {
        _cleanup_free_ char *text = NULL, *file = NULL, *name = NULL;
        s->port = SENTINEL_PORT;
        ck_assert_int_ge(asprintf(&text,
                                  "port %d\n"
                                  "bind 127.0.0.1 10.77.0.%d\n"
                                  "protected-mode no\n"
                                  "daemonize no\n"
                                  "dir %s\n"
                                  "sentinel monitor " MASTER " 10.77.0.1 %d 2\n"
                                  "sentinel down-after-milliseconds " MASTER " 1000\n"
                                  "sentinel failover-timeout " MASTER " 3000\n"
                                  "sentinel parallel-syncs " MASTER " 2\n",
                                  SENTINEL_PORT, host + 1, tl_tmpdir(), REDIS_PORT),
                         0);
        ck_assert_int_ge(asprintf(&file, "sentinel-h%d.conf", host + 1), 0);
        s->conf = tl_write_file(file, text);
        ck_assert_int_ge(asprintf(&name, "sentinel-h%d", host + 1), 0);
        char *argv[] = {"/usr/bin/redis-sentinel", s->conf, NULL};
        enter(host);
        tl_spawn(name, argv, &s->proc);
        for (int i = 0; i < 500; i++) {
                _cleanup_free_ char *pong = tl_sentinel_cmd(s, "PING");
                if (pong && streq(pong, "PONG")) {
                        enter(N_HOSTS);
                        return;
                }
                sleep_ms(10);
        }
        ck_abort_msg("redis-sentinel of host %d did not start", host + 1);
}

/* REGISTER user from a device on host (to its proxy) until 200; the time it took (ms). */
static long long register_until_ok(int host, struct tl_proxy *p, const char *user,
                                   int within_ms) {
        static uint32_t cseq = 1;
        char contact[64];
        snprintf(contact, sizeof contact, "sip:%s@10.77.0.%d:5070", user, host + 1);
        long long t0 = mono_ms();
        int status = 0;
        enter(host);
        while (mono_ms() - t0 < within_ms) {
                status = tl_sip_register(p->port, user, contact, user, cseq++, 3600, 3000, NULL);
                if (status == 200) {
                        enter(N_HOSTS);
                        return mono_ms() - t0;
                }
                ck_assert_msg(status == 503 || status == 0, "REGISTER of %s: %d", user, status);
                sleep_ms(50);
        }
        ck_abort_msg("REGISTER of %s at %s: no 200 within %d ms (last %d)", user, p->name,
                     within_ms, status);
        return -1;
}

static bool has_binding(struct tl_proxy *p, const char *user) {
        char line[96];
        snprintf(line, sizeof line, "REGISTRAR_GET sip:%s@localhost", user);
        json_t *j = tl_ctl(p->sock, line);
        bool found = json_array_size(json_object_get(j, "contacts")) == 1;
        json_decref(j);
        return found;
}

START_TEST(test_host_cut_and_back) {
        long long t_start = mono_ms();
        struct tl_redis redis[N_HOSTS];
        struct tl_sentinel sentinel[N_HOSTS];
        struct tl_proxy proxy[N_HOSTS] = {{.name = "proxy-h1"}, {.name = "proxy-h2"},
                                          {.name = "proxy-h3"}};
        memset(redis, 0, sizeof redis);
        memset(sentinel, 0, sizeof sentinel);

        for (int i = 0; i < N_HOSTS; i++) {
                char bind[32];
                snprintf(bind, sizeof bind, "10.77.0.%d", i + 1);
                const char *master_args[] = {"--bind", "127.0.0.1", bind, "--protected-mode", "no",
                                             NULL};
                const char *replica_args[] = {"--bind", "127.0.0.1", bind, "--protected-mode",
                                              "no", "--replicaof", "10.77.0.1", "6379", NULL};
                enter(i);
                tl_redis_start_on(&redis[i], REDIS_PORT, i == 0 ? master_args : replica_args);
                enter(N_HOSTS);
        }
        for (int i = 1; i < N_HOSTS; i++)
                wait_info(i, &redis[i], "master_link_status:up", 10000);
        for (int i = 0; i < N_HOSTS; i++)
                sentinel_start(i, &sentinel[i]);
        for (int i = 0; i < N_HOSTS; i++) {
                bool ready = false;
                enter(i);
                for (int n = 0; n < 300 && !ready; n++) {
                        _cleanup_free_ char *m = tl_sentinel_cmd(&sentinel[i],
                                                                 "SENTINEL master " MASTER);
                        ready = m && strstr(m, "num-slaves\n2\n") &&
                                strstr(m, "num-other-sentinels\n2\n");
                        if (!ready)
                                sleep_ms(50);
                }
                enter(N_HOSTS);
                ck_assert_msg(ready, "sentinel of host %d did not see the whole setup", i + 1);
        }
        /* Each proxy starts from the Redis of its own host (a replica on hosts 2 and 3). */
        for (int i = 0; i < N_HOSTS; i++) {
                _cleanup_free_ char *conf = NULL;
                ck_assert_int_ge(asprintf(&conf,
                                          "[module::Registrar]\n"
                                          "db-implementation=redis\n"
                                          "redis-server-domain=10.77.0.%d\n"
                                          "redis-server-port=%d\n"
                                          "redis-sentinels=10.77.0.1:%d 10.77.0.2:%d "
                                          "10.77.0.3:%d\n"
                                          "redis-master-name=" MASTER "\n"
                                          "redis-wait-replicas=1\n",
                                          i + 1, REDIS_PORT, SENTINEL_PORT, SENTINEL_PORT,
                                          SENTINEL_PORT),
                                 0);
                enter(i);
                tl_proxy_start(&proxy[i], conf);
                enter(N_HOSTS);
        }
        for (int i = 0; i < N_HOSTS; i++) {
                char user[16];
                snprintf(user, sizeof user, "before%d", i + 1);
                register_until_ok(i, &proxy[i], user, 10000);
        }

        /* Host 1 is cut from the others: its switch port goes down. */
        ck_assert_int_eq(ip("-n %s link set port1 down", ns_names[N_HOSTS]), 0);
        long long t_cut = mono_ms();
        long long t2 = register_until_ok(1, &proxy[1], "during2", 30000);
        register_until_ok(2, &proxy[2], "during3", 30000);
        printf("# host 1 cut: host 2 registers again after %lld ms, host 3 after %lld ms\n", t2,
               mono_ms() - t_cut);
        ck_assert(has_binding(&proxy[2], "during2"));
        ck_assert(has_binding(&proxy[1], "before1"));
        /* Host 1 alone: its Redis has no replica to confirm a write (redis-wait-replicas=1),
         * so its proxy does not acknowledge a REGISTER that the coming resync would erase. */
        enter(0);
        int status = tl_sip_register(proxy[0].port, "cut1", "sip:cut1@10.77.0.1:5070", "cut1", 1,
                                     3600, 3000, NULL);
        enter(N_HOSTS);
        ck_assert_msg(status == 503 || status == 0, "REGISTER on the cut host: %d", status);

        /* Host 1 is back: its Redis becomes a replica, its proxy moves to the new master. */
        ck_assert_int_eq(ip("-n %s link set port1 up", ns_names[N_HOSTS]), 0);
        long long t_back = mono_ms();
        long long t1 = register_until_ok(0, &proxy[0], "after1", 40000);
        wait_info(0, &redis[0], "role:slave", 30000);
        wait_info(0, &redis[0], "master_link_status:up", 20000);
        printf("# host 1 back: its proxy registers again after %lld ms, its Redis is a "
               "replica after %lld ms\n",
               t1, mono_ms() - t_back);
        ck_assert(has_binding(&proxy[0], "during2"));
        ck_assert(has_binding(&proxy[0], "during3"));
        ck_assert(has_binding(&proxy[1], "after1"));
        ck_assert(has_binding(&proxy[2], "after1"));
        ck_assert(has_binding(&proxy[0], "before1"));
        enter(0);
        _cleanup_free_ char *kept = tl_redis_cmd(&redis[0], "EXISTS fs:during3@localhost");
        enter(N_HOSTS);
        ck_assert_str_eq(kept, "1");

        for (int i = 0; i < N_HOSTS; i++) {
                tl_proxy_stop(&proxy[i]);
                tl_proxy_done(&proxy[i]);
                tl_sentinel_stop(&sentinel[i]);
                tl_redis_stop(&redis[i]);
        }
        printf("# scenario took %lld ms\n", mono_ms() - t_start);
        ck_assert_int_lt(mono_ms() - t_start, 90000);
}
END_TEST

int main(void) {
        /* Can namespaces be made here at all? */
        if (namespaces_create() < 0) {
                printf("1..0 # SKIP cannot create network namespaces and veth links here (needs "
                       "CAP_SYS_ADMIN and CAP_NET_ADMIN, and /usr/sbin/ip from iproute2)\n");
                return 0;
        }
        namespaces_delete();
        Suite *s = suite_create("proxy-redis-netns");
        TCase *tc = tcase_create("hosts");
        tcase_set_timeout(tc, 120);
        tcase_add_unchecked_fixture(tc, setup, teardown);
        tcase_add_test(tc, test_host_cut_and_back);
        suite_add_tcase(s, tc);
        return tl_run(s);
}
