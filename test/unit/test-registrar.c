/* SPDX-License-Identifier: MIT */
/* The registrar stores behind their asynchronous interface. Every case runs against every store
 * in `stores` (a loop test), so a new store only adds a row there. */
#include <jansson.h>
#include <sqlite3.h>
#include <stdio.h>

#include <sofia-sip/su_wait.h>

#include "loop.h"
#include "macro.h"
#include "redis.h"
#include "registrar-store-redis.h"
#include "registrar-store.h"
#include "testlib.h"

typedef int (*store_new_fn)(struct loop *l, struct registrar_store **ret);

static char *db_path(void) {
        static unsigned n;
        char name[64];
        snprintf(name, sizeof name, "registrar-%d-%u.db", (int)getpid(), n++);
        return tl_path(name);
}

static int sqlite_new(struct loop *l, struct registrar_store **ret) {
        _cleanup_free_ char *path = db_path();
        return registrar_store_sqlite_new(l, path, ret);
}

/* One redis-server for the store cases (an unchecked fixture: started before the tests
 * fork), flushed before each test. */
static struct tl_redis server;

static int redis_store_new(struct loop *l, struct registrar_store **ret) {
        _cleanup_free_ char *flushed = tl_redis_cmd(&server, "FLUSHALL");
        ck_assert_str_eq(flushed, "OK");
        const struct registrar_redis_config cfg = {
                .redis = {.host = "127.0.0.1", .port = (uint16_t)server.port},
                .key_prefix = "test:",
        };
        return registrar_store_redis_new(l, &cfg, ret);
}

static const struct {
        const char *name;
        store_new_fn new;
        bool expires_itself; /* drops an expired AOR by itself, before any purge */
} stores[] = {
        {"internal", registrar_store_internal_new, false},
        {"sqlite", sqlite_new, false},
        {"redis", redis_store_new, true},
};

struct fixture {
        su_root_t *root;
        struct loop *loop;
        struct registrar_store *store;
};

static struct fixture fx;

static void on_poll(struct loop_timer *t, void *userdata) {
        loop_quit(fx.loop);
}

static void setup(int i) {
        fx.root = su_root_create(NULL);
        ck_assert_ptr_nonnull(fx.root);
        ck_assert_int_eq(loop_new_su(fx.root, &fx.loop), 0);
        ck_assert_int_eq(stores[i].new(fx.loop, &fx.store), 0);
        if (streq(stores[i].name, "redis")) {
                /* Connected and counted, within 5 s. */
                struct loop_timer *t;
                ck_assert_int_eq(loop_timer_new(fx.loop, on_poll, NULL, &t), 0);
                for (int n = 0; n < 500 && !registrar_store_redis_ready(fx.store); n++) {
                        ck_assert_int_eq(loop_timer_arm(t, 10), 0);
                        loop_run(fx.loop);
                }
                loop_timer_free(t);
                ck_assert(registrar_store_redis_ready(fx.store));
        }
}

static void teardown(void) {
        registrar_store_free(fx.store);
        loop_free(fx.loop);
        su_root_destroy(fx.root);
        fx = (struct fixture){0};
}

/* One completed operation. */
struct result {
        bool done;
        int error;
        struct registrar_record *rec;
        char **aors;
};

static void on_record(int error, struct registrar_record *rec, void *userdata) {
        struct result *res = userdata;
        res->done = true;
        res->error = error;
        res->rec = rec;
        loop_quit(fx.loop);
}

static void on_dump(int error, char **aors, void *userdata) {
        struct result *res = userdata;
        res->done = true;
        res->error = error;
        res->aors = aors;
        loop_quit(fx.loop);
}

static void on_done(int result, void *userdata) {
        struct result *res = userdata;
        res->done = true;
        res->error = result;
        loop_quit(fx.loop);
}

/* The callback must not run inside the call: only from the loop. */
static void wait_for(struct result *res, int r) {
        ck_assert_int_eq(r, 0);
        ck_assert_msg(!res->done, "completion ran inside the call");
        loop_run(fx.loop);
        ck_assert(res->done);
}

static void result_done(struct result *res) {
        registrar_record_free(res->rec);
        strv_free(res->aors);
        *res = (struct result){0};
}

static struct result fetch(const char *aor) {
        struct result res = {0};
        wait_for(&res, fx.store->ops->fetch(fx.store, aor, on_record, &res));
        return res;
}

struct reg {
        const char *call_id;
        uint32_t cseq;
        size_t max;
        struct registrar_contact c[3];
};

static struct result apply(const char *aor, const struct reg *g) {
        size_t n = 0;
        while (n < ELEMENTSOF(g->c) && g->c[n].contact)
                n++;
        char *path[] = {"<sip:edge.example.org;lr>", NULL};
        const struct registrar_update u = {
                .aor = aor,
                .contacts = g->c,
                .n_contacts = n,
                .call_id = g->call_id,
                .cseq = g->cseq,
                .path = path,
                .user_agent = "unit/1",
                .max_contacts = g->max,
                .now = realtime_msec(),
        };
        struct result res = {0};
        wait_for(&res, fx.store->ops->apply(fx.store, &u, on_record, &res));
        return res;
}

static const struct registrar_binding *find_contact(const struct registrar_record *r,
                                                    const char *contact) {
        for (size_t i = 0; i < r->n_bindings; i++)
                if (streq(r->bindings[i].contact, contact))
                        return &r->bindings[i];
        return NULL;
}

#define AOR "sip:alice@example.org"

START_TEST(test_registrar_fetch_unknown_is_empty) {
        setup(_i);
        struct result res = fetch(AOR);
        ck_assert_int_eq(res.error, 0);
        ck_assert_str_eq(res.rec->aor, AOR);
        ck_assert_uint_eq(res.rec->n_bindings, 0);
        ck_assert_uint_eq(fx.store->ops->n_aors(fx.store), 0);
        result_done(&res);
        teardown();
}
END_TEST

START_TEST(test_registrar_bind_two_contacts) {
        setup(_i);
        uint64_t before = realtime_msec();
        struct result res = apply(AOR, &(struct reg){"c1", 1, 12,
                                                    {{"sip:a@10.0.0.1:5060", "transport=udp",
                                                      NULL, 3600, 1000},
                                                     {"sip:a@10.0.0.2", NULL, "\"<urn:uuid:1>\"",
                                                      60, 500}}});
        ck_assert_int_eq(res.error, 0);
        ck_assert_uint_eq(res.rec->n_bindings, 2);
        result_done(&res);

        res = fetch(AOR);
        ck_assert_uint_eq(res.rec->n_bindings, 2);
        const struct registrar_binding *b = find_contact(res.rec, "sip:a@10.0.0.1:5060");
        ck_assert_ptr_nonnull(b);
        ck_assert(b->generated_id);
        ck_assert_str_eq(b->params, "transport=udp");
        ck_assert_str_eq(b->call_id, "c1");
        ck_assert_uint_eq(b->cseq, 1);
        ck_assert_uint_eq(b->q, 1000);
        ck_assert_str_eq(b->user_agent, "unit/1");
        ck_assert_str_eq(b->path[0], "<sip:edge.example.org;lr>");
        ck_assert_uint_ge(b->expires_at, before + 3600 * 1000);
        ck_assert_uint_le(b->expires_at, realtime_msec() + 3600 * 1000);
        b = find_contact(res.rec, "sip:a@10.0.0.2");
        ck_assert_ptr_nonnull(b);
        ck_assert(!b->generated_id);
        ck_assert_str_eq(b->unique_id, "\"<urn:uuid:1>\"");
        ck_assert_uint_eq(b->q, 500);
        ck_assert_uint_eq(fx.store->ops->n_aors(fx.store), 1);
        result_done(&res);
        teardown();
}
END_TEST

START_TEST(test_registrar_refresh_keeps_one_binding) {
        setup(_i);
        struct result res = apply(AOR, &(struct reg){"c1", 1, 12, {{"sip:a@h:5060", .expires_s = 60}}});
        char *id = strdup(res.rec->bindings[0].unique_id);
        result_done(&res);
        /* Same URI written differently (RFC 3261 comparison), higher CSeq. */
        res = apply(AOR, &(struct reg){"c1", 2, 12, {{"sip:a@H:5060", .expires_s = 120}}});
        ck_assert_int_eq(res.error, 0);
        ck_assert_uint_eq(res.rec->n_bindings, 1);
        ck_assert_str_eq(res.rec->bindings[0].unique_id, id);
        ck_assert_uint_eq(res.rec->bindings[0].cseq, 2);
        result_done(&res);
        /* Another Call-ID with any CSeq replaces too. */
        res = apply(AOR, &(struct reg){"c2", 1, 12, {{"sip:a@h:5060", .expires_s = 120}}});
        ck_assert_int_eq(res.error, 0);
        ck_assert_uint_eq(res.rec->n_bindings, 1);
        ck_assert_str_eq(res.rec->bindings[0].call_id, "c2");
        result_done(&res);
        free(id);
        teardown();
}
END_TEST

START_TEST(test_registrar_replayed_cseq_refused) {
        setup(_i);
        struct result res = apply(AOR, &(struct reg){"c1", 5, 12, {{"sip:a@h", .expires_s = 60}}});
        result_done(&res);
        res = apply(AOR, &(struct reg){"c1", 5, 12,
                                       {{"sip:new@h", .expires_s = 60},
                                        {"sip:a@h", .expires_s = 0}}});
        ck_assert_int_eq(res.error, -ESTALE);
        ck_assert_ptr_null(res.rec);
        result_done(&res);
        /* All or nothing: the first contact was not added, the second not removed. */
        res = fetch(AOR);
        ck_assert_uint_eq(res.rec->n_bindings, 1);
        ck_assert_str_eq(res.rec->bindings[0].contact, "sip:a@h");
        result_done(&res);
        teardown();
}
END_TEST

START_TEST(test_registrar_instance_replaces) {
        setup(_i);
        struct result res = apply(AOR, &(struct reg){"c1", 1, 12,
                                                    {{"sip:a@10.0.0.1", NULL, "\"<urn:uuid:7>\"",
                                                      60, 1000}}});
        result_done(&res);
        res = apply(AOR, &(struct reg){"c9", 1, 12,
                                       {{"sip:a@10.0.0.9", NULL, "\"<urn:uuid:7>\"", 60, 1000}}});
        ck_assert_int_eq(res.error, 0);
        ck_assert_uint_eq(res.rec->n_bindings, 1);
        ck_assert_str_eq(res.rec->bindings[0].contact, "sip:a@10.0.0.9");
        result_done(&res);
        teardown();
}
END_TEST

#define TOKEN1 "sip:a@10.0.0.1;pn-provider=apns;pn-prid=TOKEN1;pn-param=T.app"
#define TOKEN1_AGAIN "sip:a@10.0.0.9;pn-provider=apns;pn-prid=TOKEN1;pn-param=T.app"
#define TOKEN2 "sip:a@10.0.0.2;pn-provider=apns;pn-prid=TOKEN2;pn-param=T.app"
#define LEGACY "sip:a@10.0.0.3;pn-type=firebase;pn-tok=TOKEN1;app-id=x"

START_TEST(test_registrar_same_push_token_replaces) {
        /* Same phone (same token), new instance id: the old binding goes; another token and a
         * legacy pn-tok of the same value stay apart. */
        setup(_i);
        struct result res = apply(AOR, &(struct reg){"p1", 1, 12,
                                                    {{TOKEN1, NULL, "\"<urn:uuid:1>\"", 60, 1000},
                                                     {TOKEN2, NULL, "\"<urn:uuid:2>\"", 60, 1000},
                                                     {LEGACY, NULL, "\"<urn:uuid:3>\"", 60, 1000}}});
        ck_assert_int_eq(res.error, 0);
        ck_assert_uint_eq(res.rec->n_bindings, 3);
        result_done(&res);
        res = apply(AOR, &(struct reg){"p2", 1, 12,
                                       {{TOKEN1_AGAIN, NULL, "\"<urn:uuid:9>\"", 60, 1000}}});
        ck_assert_int_eq(res.error, 0);
        ck_assert_uint_eq(res.rec->n_bindings, 3);
        ck_assert_ptr_null(find_contact(res.rec, TOKEN1));
        ck_assert_ptr_nonnull(find_contact(res.rec, TOKEN1_AGAIN));
        ck_assert_ptr_nonnull(find_contact(res.rec, TOKEN2));
        ck_assert_ptr_nonnull(find_contact(res.rec, LEGACY));
        result_done(&res);
        teardown();
}
END_TEST

START_TEST(test_registrar_expires_zero_removes) {
        setup(_i);
        struct result res = apply(AOR, &(struct reg){"c1", 1, 12,
                                                    {{"sip:a@h1", .expires_s = 60},
                                                     {"sip:a@h2", .expires_s = 60}}});
        result_done(&res);
        res = apply(AOR, &(struct reg){"c1", 2, 12, {{"sip:a@h1", .expires_s = 0}}});
        ck_assert_uint_eq(res.rec->n_bindings, 1);
        ck_assert_str_eq(res.rec->bindings[0].contact, "sip:a@h2");
        result_done(&res);
        res = apply(AOR, &(struct reg){"c1", 3, 12, {{"sip:a@h2", .expires_s = 0}}});
        ck_assert_uint_eq(res.rec->n_bindings, 0);
        result_done(&res);
        ck_assert_uint_eq(fx.store->ops->n_aors(fx.store), 0);
        teardown();
}
END_TEST

START_TEST(test_registrar_max_contacts_evicts_oldest) {
        setup(_i);
        struct result res = apply(AOR, &(struct reg){"c1", 1, 2, {{"sip:a@h1", .expires_s = 60}}});
        result_done(&res);
        usleep(2000);
        res = apply(AOR, &(struct reg){"c2", 1, 2, {{"sip:a@h2", .expires_s = 60}}});
        result_done(&res);
        usleep(2000);
        res = apply(AOR, &(struct reg){"c3", 1, 2, {{"sip:a@h3", .expires_s = 60}}});
        ck_assert_uint_eq(res.rec->n_bindings, 2);
        ck_assert_ptr_null(find_contact(res.rec, "sip:a@h1"));
        ck_assert_ptr_nonnull(find_contact(res.rec, "sip:a@h2"));
        ck_assert_ptr_nonnull(find_contact(res.rec, "sip:a@h3"));
        result_done(&res);
        teardown();
}
END_TEST

START_TEST(test_registrar_clear_remove_dump) {
        setup(_i);
        struct result res = apply(AOR, &(struct reg){"c1", 1, 12,
                                                    {{"sip:a@h1", .expires_s = 60},
                                                     {"sip:a@h2", NULL, "id-2", 60, 1000}}});
        result_done(&res);
        res = apply("sip:bob@example.org",
                    &(struct reg){"c2", 1, 12, {{"sip:b@h", .expires_s = 60}}});
        result_done(&res);

        wait_for(&res, fx.store->ops->dump(fx.store, on_dump, &res));
        ck_assert_uint_eq(strv_length(res.aors), 2);
        ck_assert(strv_contains(res.aors, AOR));
        ck_assert(strv_contains(res.aors, "sip:bob@example.org"));
        result_done(&res);

        wait_for(&res, fx.store->ops->remove(fx.store, AOR, "id-2", on_record, &res));
        ck_assert_int_eq(res.error, 0);
        ck_assert_uint_eq(res.rec->n_bindings, 1);
        result_done(&res);
        wait_for(&res, fx.store->ops->remove(fx.store, AOR, "id-2", on_record, &res));
        ck_assert_int_eq(res.error, -ENOENT);
        result_done(&res);

        wait_for(&res, fx.store->ops->clear(fx.store, AOR, on_done, &res));
        ck_assert_int_eq(res.error, 1);
        result_done(&res);
        wait_for(&res, fx.store->ops->clear(fx.store, AOR, on_done, &res));
        ck_assert_int_eq(res.error, 0);
        result_done(&res);
        ck_assert_uint_eq(fx.store->ops->n_aors(fx.store), 1);
        res = fetch(AOR);
        ck_assert_uint_eq(res.rec->n_bindings, 0);
        result_done(&res);
        teardown();
}
END_TEST

/* Many addresses (the internal store grows its table past 1024): each keeps its own record,
 * removals find theirs. */
START_TEST(test_registrar_many_aors) {
        setup(_i);
        enum { N = 3000 };
        char aor[64];
        for (int k = 0; k < N; k++) {
                snprintf(aor, sizeof aor, "sip:user%d@example.org", k);
                struct result res = apply(aor, &(struct reg){"c", 1, 12, {{"sip:d@h", .expires_s = 60}}});
                ck_assert_int_eq(res.error, 0);
                result_done(&res);
        }
        ck_assert_uint_eq(fx.store->ops->n_aors(fx.store), N);
        for (int k = 0; k < N; k += 7) {
                snprintf(aor, sizeof aor, "sip:user%d@example.org", k);
                struct result res = fetch(aor);
                ck_assert_uint_eq(res.rec->n_bindings, 1);
                ck_assert_str_eq(res.rec->aor, aor);
                result_done(&res);
        }
        snprintf(aor, sizeof aor, "sip:user%d@example.org", N - 1);
        struct result res = {0};
        wait_for(&res, fx.store->ops->clear(fx.store, aor, on_done, &res));
        ck_assert_int_eq(res.error, 1);
        result_done(&res);
        ck_assert_uint_eq(fx.store->ops->n_aors(fx.store), N - 1);
        res = fetch(aor);
        ck_assert_uint_eq(res.rec->n_bindings, 0);
        result_done(&res);
        teardown();
}
END_TEST

START_TEST(test_registrar_expired_hidden_and_purged) {
        setup(_i);
        struct registrar_contact c = {"sip:a@h", .expires_s = 1, .q = 1000};
        const struct registrar_update u = {.aor = AOR, .contacts = &c, .n_contacts = 1,
                                           .call_id = "c1", .cseq = 1,
                                           .now = realtime_msec() - 10000};
        struct result res = {0};
        wait_for(&res, fx.store->ops->apply(fx.store, &u, on_record, &res));
        result_done(&res);
        res = fetch(AOR);
        ck_assert_uint_eq(res.rec->n_bindings, 0);
        result_done(&res);
        wait_for(&res, fx.store->ops->purge(fx.store, realtime_msec(), on_done, &res));
        ck_assert_int_eq(res.error, stores[_i].expires_itself ? 0 : 1);
        result_done(&res);
        ck_assert_uint_eq(fx.store->ops->n_aors(fx.store), 0);
        teardown();
}
END_TEST

/* ---- message-expires: a contact kept for MESSAGE after its SIP expiry ---- */

/* One contact registered at the given time (realtime ms). */
static struct result apply_at(const char *aor, uint64_t at, const char *call_id, size_t max,
                              const struct registrar_contact *c) {
        const struct registrar_update u = {.aor = aor, .contacts = c, .n_contacts = 1,
                                           .call_id = call_id, .cseq = 1, .max_contacts = max,
                                           .now = at};
        struct result res = {0};
        wait_for(&res, fx.store->ops->apply(fx.store, &u, on_record, &res));
        ck_assert_int_eq(res.error, 0);
        return res;
}

START_TEST(test_registrar_message_expires_kept) {
        /* Registered 10 s ago for 1 s, message-expires 1 h: kept, routable for MESSAGE only,
         * not listed as registered; purged once the hour is over. */
        setup(_i);
        uint64_t at = realtime_msec() - 10000;
        struct result res = apply_at(AOR, at, "m1", 12,
                                     &(struct registrar_contact){"sip:a@h", NULL,
                                                                 "\"<urn:uuid:m>\"", 1, 1000,
                                                                 3600});
        result_done(&res);
        res = fetch(AOR);
        ck_assert_uint_eq(res.rec->n_bindings, 1);
        const struct registrar_binding *b = &res.rec->bindings[0];
        ck_assert_uint_eq(b->expires_at, at + 1000);
        ck_assert_uint_eq(b->message_expires_at, at + 3600 * 1000);
        uint64_t now = realtime_msec();
        ck_assert(!registrar_binding_live(b, now));
        ck_assert(!registrar_binding_routable(b, now, false));
        ck_assert(registrar_binding_routable(b, now, true));
        ck_assert_uint_eq(registrar_binding_kept_until(b), at + 3600 * 1000);
        /* The CLI view: not among the contacts, among the message contacts. */
        json_t *j = registrar_record_to_json(res.rec, now);
        ck_assert_uint_eq(json_array_size(json_object_get(j, "contacts")), 0);
        json_t *m = json_array_get(json_object_get(j, "message-contacts"), 0);
        ck_assert_ptr_nonnull(m);
        ck_assert_str_eq(json_string_value(json_object_get(m, "contact")), "sip:a@h");
        ck_assert_int_eq(json_integer_value(json_object_get(m, "expires")), 0);
        json_int_t left = json_integer_value(json_object_get(m, "message-expires"));
        ck_assert_int_gt(left, 3500);
        ck_assert_int_le(left, 3590);
        json_decref(j);
        /* The live view of the same record is empty. */
        registrar_record_keep_live(res.rec, now);
        ck_assert_uint_eq(res.rec->n_bindings, 0);
        result_done(&res);

        /* A purge now keeps it; the AOR is still in the store. */
        wait_for(&res, fx.store->ops->purge(fx.store, realtime_msec(), on_done, &res));
        ck_assert_int_eq(res.error, 0);
        result_done(&res);
        ck_assert_uint_eq(fx.store->ops->n_aors(fx.store), 1);
        wait_for(&res, fx.store->ops->dump(fx.store, on_dump, &res));
        ck_assert(strv_contains(res.aors, AOR));
        result_done(&res);
        res = fetch(AOR);
        ck_assert_uint_eq(res.rec->n_bindings, 1);
        result_done(&res);

        /* After the hour: purged (and no longer fetched). */
        wait_for(&res, fx.store->ops->purge(fx.store, at + 3601 * 1000, on_done, &res));
        ck_assert_int_eq(res.error, 1);
        result_done(&res);
        ck_assert_uint_eq(fx.store->ops->n_aors(fx.store), 0);
        res = fetch(AOR);
        ck_assert_uint_eq(res.rec->n_bindings, 0);
        result_done(&res);
        teardown();
}
END_TEST

START_TEST(test_registrar_message_expires_not_longer) {
        /* A message-expires not beyond the expiry adds nothing; a live binding with a longer
         * one is routable for everything. */
        setup(_i);
        uint64_t at = realtime_msec();
        struct result res = apply_at(AOR, at, "m1", 12,
                                     &(struct registrar_contact){"sip:a@h", .expires_s = 600,
                                                                 .q = 1000,
                                                                 .message_expires_s = 60});
        ck_assert_uint_eq(res.rec->bindings[0].message_expires_at, 0);
        result_done(&res);
        res = apply_at(AOR, at, "m2", 12,
                       &(struct registrar_contact){"sip:b@h", .expires_s = 600, .q = 1000,
                                                   .message_expires_s = 6000});
        result_done(&res);
        res = fetch(AOR);
        ck_assert_uint_eq(res.rec->n_bindings, 2);
        const struct registrar_binding *b = find_contact(res.rec, "sip:b@h");
        ck_assert_uint_eq(b->message_expires_at, at + 6000 * 1000);
        ck_assert(registrar_binding_routable(b, realtime_msec(), false));
        ck_assert(registrar_binding_routable(b, realtime_msec(), true));
        json_t *j = registrar_record_to_json(res.rec, realtime_msec());
        ck_assert_uint_eq(json_array_size(json_object_get(j, "contacts")), 2);
        ck_assert_uint_eq(json_array_size(json_object_get(j, "message-contacts")), 0);
        json_decref(j);
        result_done(&res);
        teardown();
}
END_TEST

START_TEST(test_registrar_message_expires_update_rules) {
        setup(_i);
        uint64_t now = realtime_msec();
        /* old: live, registered 20 s ago for an hour; lapsed: newer, but only kept for
         * messages. With max 2, a third device evicts the lapsed one, not the older live one. */
        struct result res = apply_at(AOR, now - 20000, "old", 2,
                                     &(struct registrar_contact){"sip:old@h", NULL, "id-old",
                                                                 3600, 1000, 0});
        result_done(&res);
        res = apply_at(AOR, now - 10000, "lapsed", 2,
                       &(struct registrar_contact){"sip:lapsed@h", NULL, "id-lapsed", 1, 1000,
                                                   3600});
        ck_assert_uint_eq(res.rec->n_bindings, 2);
        result_done(&res);
        res = apply_at(AOR, now, "new", 2,
                       &(struct registrar_contact){"sip:new@h", NULL, "id-new", 3600, 1000, 0});
        ck_assert_uint_eq(res.rec->n_bindings, 2);
        ck_assert_ptr_null(find_contact(res.rec, "sip:lapsed@h"));
        ck_assert_ptr_nonnull(find_contact(res.rec, "sip:old@h"));
        ck_assert_ptr_nonnull(find_contact(res.rec, "sip:new@h"));
        result_done(&res);

        /* The lapsed device registering again (same instance) takes its binding back. */
        res = apply_at("sip:bob@example.org", now - 10000, "b1", 12,
                       &(struct registrar_contact){"sip:bob@old", NULL, "id-bob", 1, 1000, 3600});
        result_done(&res);
        res = apply_at("sip:bob@example.org", now, "b2", 12,
                       &(struct registrar_contact){"sip:bob@new", NULL, "id-bob", 60, 1000, 0});
        ck_assert_uint_eq(res.rec->n_bindings, 1);
        ck_assert_str_eq(res.rec->bindings[0].contact, "sip:bob@new");
        ck_assert_uint_eq(res.rec->bindings[0].message_expires_at, 0);
        result_done(&res);

        /* An unregistration (expires 0) removes a binding kept for messages. */
        res = apply_at("sip:carol@example.org", now - 10000, "c1", 12,
                       &(struct registrar_contact){"sip:carol@h", NULL, "id-c", 1, 1000, 3600});
        result_done(&res);
        res = apply_at("sip:carol@example.org", now, "c2", 12,
                       &(struct registrar_contact){"sip:carol@h", NULL, "id-c", 0, 1000, 0});
        ck_assert_uint_eq(res.rec->n_bindings, 0);
        result_done(&res);
        res = fetch("sip:carol@example.org");
        ck_assert_uint_eq(res.rec->n_bindings, 0);
        result_done(&res);
        teardown();
}
END_TEST

START_TEST(test_registrar_sqlite_upgrades_v1) {
        /* A file of schema version 1 (before message-expires): its bindings are read, and new
         * ones keep their message-expires. */
        _cleanup_free_ char *path = db_path();
        sqlite3 *db;
        ck_assert_int_eq(sqlite3_open(path, &db), SQLITE_OK);
        char *sql = sqlite3_mprintf(
                "CREATE TABLE bindings (aor TEXT NOT NULL, unique_id TEXT NOT NULL,"
                " generated_id INTEGER NOT NULL, contact TEXT NOT NULL, params TEXT,"
                " call_id TEXT, cseq INTEGER NOT NULL, expires_at INTEGER NOT NULL,"
                " update_time INTEGER NOT NULL, q INTEGER NOT NULL, path TEXT, user_agent TEXT,"
                " position INTEGER NOT NULL, PRIMARY KEY (aor, unique_id));"
                "CREATE INDEX bindings_expires_at ON bindings (expires_at);"
                "INSERT INTO bindings VALUES ('%q', 'id-1', 0, 'sip:a@h', NULL, 'c1', 1, %lld,"
                " %lld, 1000, NULL, NULL, 0);"
                "PRAGMA user_version = 1;",
                AOR, (long long)realtime_msec() + 600000, (long long)realtime_msec());
        ck_assert_int_eq(sqlite3_exec(db, sql, NULL, NULL, NULL), SQLITE_OK);
        sqlite3_free(sql);
        sqlite3_close(db);

        fx.root = su_root_create(NULL);
        ck_assert_int_eq(loop_new_su(fx.root, &fx.loop), 0);
        ck_assert_int_eq(registrar_store_sqlite_new(fx.loop, path, &fx.store), 0);
        struct result res = fetch(AOR);
        ck_assert_uint_eq(res.rec->n_bindings, 1);
        ck_assert_str_eq(res.rec->bindings[0].contact, "sip:a@h");
        ck_assert_uint_eq(res.rec->bindings[0].message_expires_at, 0);
        result_done(&res);
        uint64_t at = realtime_msec() - 10000;
        res = apply_at(AOR, at, "c2", 12,
                       &(struct registrar_contact){"sip:b@h", NULL, "id-2", 1, 1000, 600});
        result_done(&res);
        registrar_store_free(fx.store);

        ck_assert_int_eq(registrar_store_sqlite_new(fx.loop, path, &fx.store), 0);
        res = fetch(AOR);
        ck_assert_uint_eq(res.rec->n_bindings, 2);
        ck_assert_uint_eq(find_contact(res.rec, "sip:b@h")->message_expires_at, at + 600000);
        result_done(&res);
        registrar_store_free(fx.store);
        fx.store = NULL;

        ck_assert_int_eq(sqlite3_open(path, &db), SQLITE_OK);
        sqlite3_stmt *q;
        ck_assert_int_eq(sqlite3_prepare_v2(db, "PRAGMA user_version", -1, &q, NULL), SQLITE_OK);
        ck_assert_int_eq(sqlite3_step(q), SQLITE_ROW);
        ck_assert_int_eq(sqlite3_column_int(q, 0), 2);
        sqlite3_finalize(q);
        /* A file from a newer version is refused, not misread. */
        ck_assert_int_eq(sqlite3_exec(db, "PRAGMA user_version = 3", NULL, NULL, NULL), SQLITE_OK);
        sqlite3_close(db);
        ck_assert_int_lt(registrar_store_sqlite_new(fx.loop, path, &fx.store), 0);
        fx.store = NULL;
        teardown();
}
END_TEST

START_TEST(test_registrar_sqlite_persists) {
        _cleanup_free_ char *path = db_path();
        fx.root = su_root_create(NULL);
        ck_assert_int_eq(loop_new_su(fx.root, &fx.loop), 0);
        ck_assert_int_eq(registrar_store_sqlite_new(fx.loop, path, &fx.store), 0);
        struct result res = apply(AOR, &(struct reg){"c1", 7, 12,
                                                    {{"sip:a@h", "transport=tcp", "\"<urn:x>\"",
                                                      600, 250}}});
        ck_assert_int_eq(res.error, 0);
        result_done(&res);
        registrar_store_free(fx.store);

        ck_assert_int_eq(registrar_store_sqlite_new(fx.loop, path, &fx.store), 0);
        ck_assert_uint_eq(fx.store->ops->n_aors(fx.store), 1);
        res = fetch(AOR);
        ck_assert_uint_eq(res.rec->n_bindings, 1);
        const struct registrar_binding *b = &res.rec->bindings[0];
        ck_assert_str_eq(b->contact, "sip:a@h");
        ck_assert_str_eq(b->params, "transport=tcp");
        ck_assert_str_eq(b->unique_id, "\"<urn:x>\"");
        ck_assert(!b->generated_id);
        ck_assert_str_eq(b->call_id, "c1");
        ck_assert_uint_eq(b->cseq, 7);
        ck_assert_uint_eq(b->q, 250);
        ck_assert_str_eq(b->path[0], "<sip:edge.example.org;lr>");
        ck_assert_ptr_null(b->path[1]);
        ck_assert_str_eq(b->user_agent, "unit/1");
        result_done(&res);
        teardown();

        /* An unusable path is an error, not a crash. */
        fx.root = su_root_create(NULL);
        ck_assert_int_eq(loop_new_su(fx.root, &fx.loop), 0);
        ck_assert_int_lt(registrar_store_sqlite_new(fx.loop, "/nonexistent/dir/x.db", &fx.store), 0);
        fx.store = NULL;
        teardown();
}
END_TEST

/* ---- Redis only: layout, concurrent writers, scripts, failures ---- */

static struct registrar_store *redis_store_open(const char *prefix, unsigned wait_replicas,
                                                int port) {
        const struct registrar_redis_config cfg = {
                .redis = {.host = "127.0.0.1", .port = (uint16_t)port,
                          .reconnect_min_ms = 50, .reconnect_max_ms = 200},
                .key_prefix = prefix,
                .wait_replicas = wait_replicas,
                .wait_timeout_ms = 100,
        };
        struct registrar_store *st;
        ck_assert_int_eq(registrar_store_redis_new(fx.loop, &cfg, &st), 0);
        return st;
}

static void redis_wait_ready(struct registrar_store *st) {
        struct loop_timer *t;
        ck_assert_int_eq(loop_timer_new(fx.loop, on_poll, NULL, &t), 0);
        for (int n = 0; n < 500 && !registrar_store_redis_ready(st); n++) {
                ck_assert_int_eq(loop_timer_arm(t, 10), 0);
                loop_run(fx.loop);
        }
        loop_timer_free(t);
        ck_assert(registrar_store_redis_ready(st));
}

static void redis_setup(void) {
        _cleanup_free_ char *flushed = tl_redis_cmd(&server, "FLUSHALL");
        ck_assert_str_eq(flushed, "OK");
        fx.root = su_root_create(NULL);
        ck_assert_int_eq(loop_new_su(fx.root, &fx.loop), 0);
        fx.store = redis_store_open("fs:", 0, server.port);
        redis_wait_ready(fx.store);
}

START_TEST(test_registrar_redis_layout) {
        redis_setup();
        uint64_t before = realtime_msec();
        struct result res = apply(AOR, &(struct reg){"c1", 3, 12,
                                                    {{"sip:a@10.0.0.1", "transport=tcp",
                                                      "\"<urn:uuid:1>\"", 60, 1000},
                                                     {"sip:a@10.0.0.2", .expires_s = 120}}});
        ck_assert_int_eq(res.error, 0);
        result_done(&res);
        _cleanup_free_ char *type = tl_redis_cmd(&server, "TYPE fs:alice@example.org");
        ck_assert_str_eq(type, "hash");
        _cleanup_free_ char *value = tl_redis_cmd(&server, "HGET fs:alice@example.org %s",
                                                  "c:\"<urn:uuid:1>\"");
        ck_assert_ptr_nonnull(strstr(value, "\"contact\":\"sip:a@10.0.0.1\""));
        ck_assert_ptr_nonnull(strstr(value, "\"call-id\":\"c1\""));
        _cleanup_free_ char *n = tl_redis_cmd(&server, "HLEN fs:alice@example.org");
        ck_assert_str_eq(n, "3"); /* version + two bindings */
        /* The key expires with its last binding. */
        _cleanup_free_ char *at = tl_redis_cmd(&server, "PEXPIRETIME fs:alice@example.org");
        long long ms = atoll(at);
        ck_assert_int_ge(ms, (long long)before + 120000);
        ck_assert_int_le(ms, (long long)realtime_msec() + 120000);
        teardown();
}
END_TEST

START_TEST(test_registrar_redis_message_expires_layout) {
        /* The key lives until the message window of its binding ends, the binding says when. */
        redis_setup();
        uint64_t at = realtime_msec() - 10000;
        struct result res = apply_at(AOR, at, "m1", 12,
                                     &(struct registrar_contact){"sip:a@h", NULL, "id-m", 1, 1000,
                                                                 3600});
        result_done(&res);
        _cleanup_free_ char *value = tl_redis_cmd(&server, "HGET fs:alice@example.org c:id-m");
        char want[64];
        snprintf(want, sizeof want, "\"message-expires-at\":%llu",
                 (unsigned long long)(at + 3600 * 1000));
        ck_assert_msg(value && strstr(value, want), "%s", strna(value));
        _cleanup_free_ char *pexp = tl_redis_cmd(&server, "PEXPIRETIME fs:alice@example.org");
        ck_assert_int_eq(atoll(pexp), (long long)(at + 3600 * 1000));
        teardown();
}
END_TEST

struct published {
        int n;
        char data[8][128];
};

static void on_published(struct redis *r, const struct redis_message *m, void *userdata) {
        struct published *p = userdata;
        if (m->type == REDIS_MESSAGE_SUBSCRIBED) {
                loop_quit(fx.loop);
                return;
        }
        if (p->n < 8)
                snprintf(p->data[p->n++], sizeof p->data[0], "%s", m->data);
        loop_quit(fx.loop);
}

START_TEST(test_registrar_redis_publishes_device) {
        redis_setup();
        struct redis *sub;
        struct published p = {0};
        ck_assert_int_eq(redis_new(fx.loop, &(struct redis_config){.port = (uint16_t)server.port},
                                   &sub), 0);
        ck_assert_int_eq(redis_subscribe(sub, "fs:alice@example.org", on_published, &p), 0);
        loop_run(fx.loop); /* subscribed */
        struct result res = apply(AOR, &(struct reg){"c1", 1, 12,
                                                    {{"sip:a@h1", NULL, "\"<urn:uuid:9>\"", 60,
                                                      1000}}});
        ck_assert_int_eq(res.error, 0);
        result_done(&res);
        for (int i = 0; i < 50 && p.n < 1; i++)
                loop_run(fx.loop);
        ck_assert_int_eq(p.n, 1);
        ck_assert_str_eq(p.data[0], "\"<urn:uuid:9>\"");
        /* A removal publishes nothing; a refresh of a generated id publishes that id. */
        res = apply(AOR, &(struct reg){"c1", 2, 12, {{"sip:a@h1", NULL, "\"<urn:uuid:9>\"", 0,
                                                     1000},
                                                    {"sip:a@h2", .expires_s = 60}}});
        ck_assert_uint_eq(res.rec->n_bindings, 1);
        char *gen = strdup(res.rec->bindings[0].unique_id);
        result_done(&res);
        for (int i = 0; i < 50 && p.n < 2; i++)
                loop_run(fx.loop);
        ck_assert_int_eq(p.n, 2);
        ck_assert_str_eq(p.data[1], gen);
        free(gen);
        redis_free(sub);
        teardown();
}
END_TEST

START_TEST(test_registrar_redis_concurrent_writers) {
        /* Two stores (two proxies) update the same AOR at the same moment: both read the same
         * version, one write wins, the other reads again and applies on top. */
        redis_setup();
        struct registrar_store *other = redis_store_open("fs:", 0, server.port);
        redis_wait_ready(other);
        struct registrar_contact c1 = {"sip:a@one", .expires_s = 60, .q = 1000};
        struct registrar_contact c2 = {"sip:a@two", .expires_s = 60, .q = 1000};
        const struct registrar_update u1 = {.aor = AOR, .contacts = &c1, .n_contacts = 1,
                                            .call_id = "x1", .cseq = 1, .max_contacts = 12,
                                            .now = realtime_msec()};
        const struct registrar_update u2 = {.aor = AOR, .contacts = &c2, .n_contacts = 1,
                                            .call_id = "x2", .cseq = 1, .max_contacts = 12,
                                            .now = realtime_msec()};
        struct result r1 = {0}, r2 = {0};
        ck_assert_int_eq(fx.store->ops->apply(fx.store, &u1, on_record, &r1), 0);
        ck_assert_int_eq(other->ops->apply(other, &u2, on_record, &r2), 0);
        for (int i = 0; i < 100 && !(r1.done && r2.done); i++)
                loop_run(fx.loop);
        ck_assert_int_eq(r1.error, 0);
        ck_assert_int_eq(r2.error, 0);
        result_done(&r1);
        result_done(&r2);
        struct result res = fetch(AOR);
        ck_assert_uint_eq(res.rec->n_bindings, 2);
        result_done(&res);
        registrar_store_free(other);
        teardown();
}
END_TEST

START_TEST(test_registrar_redis_script_reloaded) {
        /* After SCRIPT FLUSH (a restarted or new master) EVALSHA gets NOSCRIPT: EVAL follows. */
        redis_setup();
        struct result res = apply(AOR, &(struct reg){"c1", 1, 12, {{"sip:a@h", .expires_s = 60}}});
        ck_assert_int_eq(res.error, 0);
        result_done(&res);
        _cleanup_free_ char *ok = tl_redis_cmd(&server, "SCRIPT FLUSH");
        ck_assert_str_eq(ok, "OK");
        res = apply(AOR, &(struct reg){"c1", 2, 12, {{"sip:a@h2", .expires_s = 60}}});
        ck_assert_int_eq(res.error, 0);
        ck_assert_uint_eq(res.rec->n_bindings, 2);
        result_done(&res);
        wait_for(&res, fx.store->ops->purge(fx.store, realtime_msec(), on_done, &res));
        ck_assert_int_eq(res.error, 0);
        result_done(&res);
        ck_assert_uint_eq(fx.store->ops->n_aors(fx.store), 1);
        teardown();
}
END_TEST

START_TEST(test_registrar_redis_failures_are_errors) {
        /* WAIT for a replica that does not exist: the write is not confirmed. */
        fx.root = su_root_create(NULL);
        ck_assert_int_eq(loop_new_su(fx.root, &fx.loop), 0);
        _cleanup_free_ char *flushed = tl_redis_cmd(&server, "FLUSHALL");
        fx.store = redis_store_open("fs:", 1, server.port);
        redis_wait_ready(fx.store);
        struct result res = apply(AOR, &(struct reg){"c1", 1, 12, {{"sip:a@h", .expires_s = 60}}});
        ck_assert_int_eq(res.error, -ETIMEDOUT);
        ck_assert_ptr_null(res.rec);
        result_done(&res);
        registrar_store_free(fx.store);

        /* Nothing listening: every operation is refused at once, none waits. */
        fx.store = redis_store_open("fs:", 0, tl_free_port());
        struct registrar_contact c = {"sip:a@h", .expires_s = 60, .q = 1000};
        const struct registrar_update u = {.aor = AOR, .contacts = &c, .n_contacts = 1,
                                           .now = realtime_msec()};
        ck_assert_int_eq(fx.store->ops->apply(fx.store, &u, on_record, &res), -ENOTCONN);
        ck_assert_int_eq(fx.store->ops->fetch(fx.store, AOR, on_record, &res), -ENOTCONN);
        ck_assert_int_eq(fx.store->ops->clear(fx.store, AOR, on_done, &res), -ENOTCONN);
        ck_assert(!res.done);
        teardown();
}
END_TEST

struct events {
        int n;
        char aor[64], uid[64];
};

static void on_event(const char *aor, const char *uid, void *userdata) {
        struct events *e = userdata;
        e->n++;
        snprintf(e->aor, sizeof e->aor, "%s", aor);
        snprintf(e->uid, sizeof e->uid, "%s", uid);
        loop_quit(fx.loop);
}

START_TEST(test_registrar_redis_watch_other_writer) {
        /* A device registering through another proxy (another store on the same Redis) is
         * seen by a watcher of its AOR; the embedded stores have no watch (registrar.c
         * notifies their listeners itself). */
        redis_setup();
        struct registrar_store *other = redis_store_open("fs:", 0, server.port);
        redis_wait_ready(other);
        struct events e = {0};
        ck_assert(fx.store->ops->watch != NULL);
        ck_assert_int_eq(fx.store->ops->watch(fx.store, AOR, on_event, &e), 0);
        ck_assert_int_eq(fx.store->ops->watch(fx.store, AOR, on_event, &e), -EEXIST);
        struct registrar_store *mine = fx.store;
        /* Let the subscription become active (the pub/sub link connects on demand). */
        for (int i = 0; i < 20; i++) {
                struct loop_timer *t;
                ck_assert_int_eq(loop_timer_new(fx.loop, on_poll, NULL, &t), 0);
                ck_assert_int_eq(loop_timer_arm(t, 10), 0);
                loop_run(fx.loop);
                loop_timer_free(t);
        }
        fx.store = other;
        struct result res = apply(AOR, &(struct reg){"o1", 1, 12,
                                                    {{"sip:a@far", NULL, "\"<urn:uuid:far>\"",
                                                      60, 1000}}});
        ck_assert_int_eq(res.error, 0);
        result_done(&res);
        for (int i = 0; i < 50 && e.n < 1; i++)
                loop_run(fx.loop);
        ck_assert_int_eq(e.n, 1);
        ck_assert_str_eq(e.aor, AOR);
        ck_assert_str_eq(e.uid, "\"<urn:uuid:far>\"");
        ck_assert_int_eq(mine->ops->unwatch(mine, AOR, on_event, &e), 0);
        ck_assert_int_eq(mine->ops->unwatch(mine, AOR, on_event, &e), -ENOENT);
        registrar_store_free(mine);
        teardown();
}
END_TEST

START_TEST(test_registrar_redis_free_drops_callbacks) {
        redis_setup();
        struct result res = {0};
        ck_assert_int_eq(fx.store->ops->fetch(fx.store, AOR, on_record, &res), 0);
        ck_assert_int_eq(fx.store->ops->dump(fx.store, on_dump, &res), 0);
        registrar_store_free(fx.store);
        fx.store = NULL;
        ck_assert(!res.done);
        teardown();
}
END_TEST

START_TEST(test_registrar_aor_and_uri_helpers) {
        char *a = registrar_aor_normalize("<sip:Alice@Example.ORG:5070;transport=tcp>");
        ck_assert_str_eq(a, "sip:Alice@example.org");
        free(a);
        a = registrar_aor_normalize("sips:bob@h");
        ck_assert_str_eq(a, "sip:bob@h");
        free(a);
        ck_assert_ptr_null(registrar_aor_normalize("tel:+123"));
        ck_assert_ptr_null(registrar_aor_normalize("garbage"));
        ck_assert(registrar_uri_equal("sip:a@H:5060;transport=udp", "<sip:a@h:5060;transport=udp>"));
        ck_assert(!registrar_uri_equal("sip:a@h", "sip:b@h"));
        ck_assert(!registrar_uri_equal("sip:a@h", "sip:a@h:5070"));
}
END_TEST

static void server_up(void) {
        tl_redis_start(&server, NULL);
}

static void server_down(void) {
        tl_redis_stop(&server);
}

int main(void) {
        Suite *s = suite_create("registrar");
        TCase *tc = tcase_create("store");
        tcase_add_unchecked_fixture(tc, server_up, server_down);
        int n = (int)ELEMENTSOF(stores);
        tcase_add_loop_test(tc, test_registrar_fetch_unknown_is_empty, 0, n);
        tcase_add_loop_test(tc, test_registrar_bind_two_contacts, 0, n);
        tcase_add_loop_test(tc, test_registrar_refresh_keeps_one_binding, 0, n);
        tcase_add_loop_test(tc, test_registrar_replayed_cseq_refused, 0, n);
        tcase_add_loop_test(tc, test_registrar_instance_replaces, 0, n);
        tcase_add_loop_test(tc, test_registrar_same_push_token_replaces, 0, n);
        tcase_add_loop_test(tc, test_registrar_expires_zero_removes, 0, n);
        tcase_add_loop_test(tc, test_registrar_max_contacts_evicts_oldest, 0, n);
        tcase_add_loop_test(tc, test_registrar_clear_remove_dump, 0, n);
        tcase_add_loop_test(tc, test_registrar_expired_hidden_and_purged, 0, n);
        tcase_add_loop_test(tc, test_registrar_many_aors, 0, n);
        tcase_add_loop_test(tc, test_registrar_message_expires_kept, 0, n);
        tcase_add_loop_test(tc, test_registrar_message_expires_not_longer, 0, n);
        tcase_add_loop_test(tc, test_registrar_message_expires_update_rules, 0, n);
        suite_add_tcase(s, tc);
        TCase *tq = tcase_create("sqlite");
        tcase_add_test(tq, test_registrar_sqlite_persists);
        tcase_add_test(tq, test_registrar_sqlite_upgrades_v1);
        suite_add_tcase(s, tq);
        TCase *tr = tcase_create("redis");
        tcase_add_unchecked_fixture(tr, server_up, server_down);
        tcase_add_test(tr, test_registrar_redis_layout);
        tcase_add_test(tr, test_registrar_redis_message_expires_layout);
        tcase_add_test(tr, test_registrar_redis_publishes_device);
        tcase_add_test(tr, test_registrar_redis_concurrent_writers);
        tcase_add_test(tr, test_registrar_redis_script_reloaded);
        tcase_add_test(tr, test_registrar_redis_failures_are_errors);
        tcase_add_test(tr, test_registrar_redis_free_drops_callbacks);
        tcase_add_test(tr, test_registrar_redis_watch_other_writer);
        suite_add_tcase(s, tr);
        TCase *th = tcase_create("helpers");
        tcase_add_test(th, test_registrar_aor_and_uri_helpers);
        suite_add_tcase(s, th);
        return tl_run(s);
}
