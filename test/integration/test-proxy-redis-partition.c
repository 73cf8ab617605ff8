/* SPDX-License-Identifier: MIT */
/* The failure scenario of the HA seed with three "hosts" on loopback, each a Redis, a
 * Sentinel and a proxy (host 1 holds the master). Host 1 is cut: its three processes are
 * frozen (SIGSTOP), so the others see silence, not a reset, as with a lost host. Hosts 2 and 3
 * keep serving after the Sentinels' election; host 1 comes back (SIGCONT), its Redis is turned
 * into a replica, and its proxy migrates to the new master: it sees what was registered
 * meanwhile, and what it registers reaches the others. Loopback only: the hosts are process
 * groups on 127.0.0.1, not network namespaces. */
#include <jansson.h>
#include <signal.h>
#include <stdio.h>
#include <time.h>

#include "macro.h"
#include "testlib-redis.h"
#include "testlib.h"

#define MASTER "ha"

static long long mono_ms(void) {
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        return ts.tv_sec * 1000LL + ts.tv_nsec / 1000000;
}

static void sleep_ms(long ms) {
        nanosleep(&(struct timespec){ms / 1000, (ms % 1000) * 1000000L}, NULL);
}

static void wait_info(struct tl_redis *srv, const char *what, int within_ms) {
        long long end = mono_ms() + within_ms;
        while (mono_ms() < end) {
                _cleanup_free_ char *info = tl_redis_cmd(srv, "INFO replication");
                if (info && strstr(info, what))
                        return;
                sleep_ms(20);
        }
        ck_abort_msg("port %d: no '%s' within %d ms", srv->port, what, within_ms);
}

/* REGISTER user at proxy until 200; the time it took (ms). */
static long long register_until_ok(struct tl_proxy *p, const char *user, int within_ms) {
        static uint32_t cseq = 1;
        char contact[64];
        snprintf(contact, sizeof contact, "sip:%s@192.0.2.7", user);
        long long t0 = mono_ms();
        int status = 0;
        while (mono_ms() - t0 < within_ms) {
                status = tl_sip_register(p->port, user, contact, user, cseq++, 3600, 3000, NULL);
                if (status == 200)
                        return mono_ms() - t0;
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
        struct tl_redis redis[3];
        struct tl_sentinel sentinel[3];
        struct tl_proxy proxy[3] = {{.name = "proxy-1"}, {.name = "proxy-2"}, {.name = "proxy-3"}};
        memset(redis, 0, sizeof redis);
        memset(sentinel, 0, sizeof sentinel);

        tl_redis_start_on(&redis[0], 0, NULL);
        char mport[16];
        snprintf(mport, sizeof mport, "%d", redis[0].port);
        const char *replica_args[] = {"--replicaof", "127.0.0.1", mport, NULL};
        for (int i = 1; i < 3; i++) {
                tl_redis_start_on(&redis[i], 0, replica_args);
                wait_info(&redis[i], "master_link_status:up", 10000);
        }
        for (int i = 0; i < 3; i++)
                tl_sentinel_start(&sentinel[i], MASTER, redis[0].port, 2, 1000, 3000);
        for (int i = 0; i < 3; i++) {
                bool ready = false;
                for (int n = 0; n < 300 && !ready; n++) {
                        _cleanup_free_ char *m = tl_sentinel_cmd(&sentinel[i],
                                                                 "SENTINEL master " MASTER);
                        ready = m && strstr(m, "num-slaves\n2\n") &&
                                strstr(m, "num-other-sentinels\n2\n");
                        if (!ready)
                                sleep_ms(50);
                }
                ck_assert_msg(ready, "sentinel %d did not see the whole setup", i + 1);
        }
        /* Each proxy starts from the Redis of its own host (a replica for hosts 2 and 3). */
        for (int i = 0; i < 3; i++) {
                _cleanup_free_ char *conf = NULL;
                ck_assert_int_ge(asprintf(&conf,
                                          "[module::Registrar]\n"
                                          "db-implementation=redis\n"
                                          "redis-server-port=%d\n"
                                          "redis-sentinels=127.0.0.1:%d 127.0.0.1:%d "
                                          "127.0.0.1:%d\n"
                                          "redis-master-name=" MASTER "\n"
                                          "redis-wait-replicas=1\n",
                                          redis[i].port, sentinel[0].port, sentinel[1].port,
                                          sentinel[2].port),
                                 0);
                tl_proxy_start(&proxy[i], conf);
        }
        register_until_ok(&proxy[0], "before1", 5000);
        register_until_ok(&proxy[1], "before2", 5000);
        register_until_ok(&proxy[2], "before3", 5000);

        /* Host 1 is cut. */
        tl_kill(&redis[0].proc, SIGSTOP);
        tl_kill(&sentinel[0].proc, SIGSTOP);
        tl_kill(&proxy[0].proc, SIGSTOP);
        long long t_cut = mono_ms();
        long long t2 = register_until_ok(&proxy[1], "during2", 30000);
        long long t3 = register_until_ok(&proxy[2], "during3", 30000);
        printf("# host 1 cut: host 2 registers again after %lld ms, host 3 after %lld ms\n", t2,
               mono_ms() - t_cut);
        (void)t3;
        ck_assert(has_binding(&proxy[2], "during2"));
        ck_assert(has_binding(&proxy[1], "before1"));

        /* Host 1 is back: its Redis becomes a replica, its proxy moves to the new master. */
        tl_kill(&redis[0].proc, SIGCONT);
        tl_kill(&sentinel[0].proc, SIGCONT);
        tl_kill(&proxy[0].proc, SIGCONT);
        long long t_back = mono_ms();
        /* Until it reaches the new master, its proxy answers 503 (its old master, alone, has
         * no replica to confirm a write), never a 200 that the resync would erase. */
        long long t1 = register_until_ok(&proxy[0], "after1", 40000);
        wait_info(&redis[0], "role:slave", 30000);
        wait_info(&redis[0], "master_link_status:up", 20000);
        printf("# host 1 back: its proxy registers again after %lld ms, its Redis is a "
               "replica after %lld ms\n",
               t1, mono_ms() - t_back);
        ck_assert(has_binding(&proxy[0], "during2"));
        ck_assert(has_binding(&proxy[0], "during3"));
        ck_assert(has_binding(&proxy[1], "after1"));
        ck_assert(has_binding(&proxy[2], "after1"));
        ck_assert(has_binding(&proxy[0], "before1"));
        _cleanup_free_ char *kept = tl_redis_cmd(&redis[0], "EXISTS fs:during3@localhost");
        ck_assert_str_eq(kept, "1");

        for (int i = 0; i < 3; i++) {
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
        Suite *s = suite_create("proxy-redis-partition");
        TCase *tc = tcase_create("hosts");
        tcase_set_timeout(tc, 120);
        tcase_add_test(tc, test_host_cut_and_back);
        suite_add_tcase(s, tc);
        return tl_run(s);
}
