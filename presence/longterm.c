/* SPDX-License-Identifier: MIT */
/* Long-term presence: a presentity with nothing to report (no publication, no remembered last
 * activity) is looked up in the account store ([accounts]: password file, SQLite or
 * MariaDB/MySQL, the proxy's common/accounts.c). A user of the service is then reported with a
 * default tuple (basic open), with its devices' capabilities when the proxy's registrar is on
 * Redis (devices.c); anyone else stays unknown. Lookups run in the store's threads
 * and answer through the loop; the first NOTIFY of a subscription waits for the lookups of its
 * resources, at most long-term-max-wait, after which it goes out with what is known and late
 * answers follow in partial NOTIFYs. */
#define LOG_SUBSYSTEM LOG_presence
#include <stdlib.h>
#include <string.h>

#include "accounts.h"
#include "daemon.h"
#include "loop.h"
#include "macro.h"
#include "presence.h"
#include "stats.h"

struct longterm {
        struct presence *presence;
        /* [presence] */
        bool enabled;
        uint64_t max_wait_ms;
        struct account_store_settings accounts; /* [accounts] */

        struct account_store *store;
        struct stats_counter *count_lookup, *count_user, *count_not_user, *count_failed,
                *count_held, *count_hold_expired;
};

/* One lookup under way; pr is NULL once the presentity is gone. */
struct longterm_lookup {
        struct presentity *pr;
};

#define SECTION  "accounts"
#define L(field) offsetof(struct longterm, field)

static const struct conf_section longterm_sections[] = {
        {SECTION, "Account store of long-term presence ([presence] long-term-enabled): who is a "
                  "user of the service; the same keys as the proxy's [module::Authentication]"},
};

static const struct conf_option longterm_rows[] = {
        {"presence", "long-term-enabled", CONF_BOOL, L(enabled), "false", 0, 0, 0,
         "Long-term presence: a presentity with no publication and no last activity is looked "
         "up in the [accounts] store; users of the service get a default open tuple, the "
         "others stay unknown"},
        {"presence", "long-term-max-wait", CONF_DURATION, L(max_wait_ms), "2s", 0, 0, 0,
         "How long the first NOTIFY of a subscription waits for the account lookups of its "
         "resources; later answers follow in partial NOTIFYs",
         .unit = CONF_UNIT_MS},
        ACCOUNT_STORE_ROWS(SECTION, L(accounts)),
};

int longterm_new(struct presence *p) {
        struct longterm *lt = calloc(1, sizeof *lt);
        if (!lt)
                return -ENOMEM;
        lt->presence = p;
        p->longterm = lt;
        int r = conf_add_sections(daemon_conf(p->daemon), longterm_sections,
                                  ELEMENTSOF(longterm_sections));
        if (r >= 0)
                r = conf_add_table(daemon_conf(p->daemon), longterm_rows, ELEMENTSOF(longterm_rows),
                                   lt);
        return r;
}

int longterm_start(struct presence *p) {
        struct longterm *lt = p->longterm;
        struct stats *st = daemon_stats(p->daemon);
        lt->count_lookup = stats_declare(st, "presence", "count-long-term-lookup",
                                         "Account lookups of long-term presence");
        lt->count_user = stats_declare(st, "presence", "count-long-term-user",
                                       "Lookups that found a user of the service");
        lt->count_not_user = stats_declare(st, "presence", "count-long-term-not-user",
                                           "Lookups that found no account");
        lt->count_failed = stats_declare(st, "presence", "count-long-term-failed",
                                         "Lookups the account store could not answer (or "
                                         "refused: queue full)");
        lt->count_held = stats_declare(
                st, "presence", "count-notify-held",
                "Full-state NOTIFYs (first, or of a refresh) that waited for account lookups");
        lt->count_hold_expired = stats_declare(st, "presence", "count-notify-hold-expired",
                                               "Held NOTIFYs sent at long-term-max-wait, "
                                               "before every lookup answered");
        if (!lt->enabled)
                return 0;
        return account_store_open_config(daemon_loop(p->daemon), SECTION, &lt->accounts,
                                         &lt->store);
}

void longterm_free(struct presence *p) {
        struct longterm *lt = p->longterm;
        if (!lt)
                return;
        account_store_free(lt->store); /* pending answers come back cancelled */
        free(lt);
        p->longterm = NULL;
}

bool longterm_is_user(const struct presentity *pr) {
        const struct longterm *lt = pr->presence->longterm;
        return lt && lt->enabled && pr->account == ACCOUNT_USER;
}

const char *longterm_account_name(const struct presentity *pr) {
        switch (pr->account) {
        case ACCOUNT_USER:
                return "user";
        case ACCOUNT_NOT_USER:
                return "not-user";
        case ACCOUNT_FAILED:
                return "failed";
        default:
                return "unchecked";
        }
}

/* The answer for a presentity: report a user (or no more), release the NOTIFYs that waited
 * for it. */
static void settle(struct longterm *lt, struct presentity *pr, enum presentity_account state,
                   bool capabilities_changed) {
        enum presentity_account old = pr->account;
        stats_inc(state == ACCOUNT_USER       ? lt->count_user
                  : state == ACCOUNT_NOT_USER ? lt->count_not_user
                                              : lt->count_failed);
        if (state == ACCOUNT_FAILED && (old == ACCOUNT_USER || old == ACCOUNT_NOT_USER))
                state = old; /* a store that fails does not unmake a user */
        else
                pr->account_checked = now_msec();
        pr->account = state;
        if (((state == ACCOUNT_USER) != (old == ACCOUNT_USER) ||
             (state == ACCOUNT_USER && capabilities_changed)) &&
            !pr->publications && pr->last_activity == 0) {
                /* The default tuple comes, goes or changes its capabilities, to every
                 * watcher. Its end is no activity to remember: known = false keeps
                 * presentity_changed() from starting a last activity period. */
                pr->known = false;
                presentity_changed(pr);
        }
        for (struct resource *res = pr->watchers, *next; res; res = next) {
                next = res->wnext;
                subscription_lookup_done(res);
        }
}

static void on_devices(int error, const char *capabilities, void *userdata) {
        struct longterm_lookup *l = userdata;
        struct presentity *pr = l->pr;
        free(l);
        if (!pr)
                return; /* gone meanwhile */
        pr->lookup = NULL;
        struct longterm *lt = pr->presence->longterm;
        if (error == -ECANCELED || pr->presence->stopping)
                return;
        bool changed = false;
        if (error < 0)
                log_info("Devices of '%s' not read from the registrar: %s; keeping the "
                         "capabilities known.",
                         pr->key, strerror(-error));
        else {
                pr->capabilities_read = now_msec();
                if (!pr->capabilities || !streq(pr->capabilities, capabilities)) {
                        char *c = strdup(capabilities);
                        if (c) {
                                free(pr->capabilities);
                                pr->capabilities = c;
                                changed = true;
                        } else
                                log_oom();
                }
        }
        settle(lt, pr, ACCOUNT_USER, changed);
}

/* A user: read its devices' capabilities when the registrar is on Redis (l then stays the
 * lookup under way, true), else settle at once (l is freed, false). user is the account's
 * (an alias resolved by the password file), domain the presentity's. */
static bool read_devices(struct longterm *lt, struct presentity *pr, struct longterm_lookup *l,
                         const char *user, const char *domain) {
        struct presence *p = pr->presence;
        if (devices_enabled(p)) {
                int r = devices_read(p, user, domain, on_devices, l);
                if (r >= 0) {
                        pr->lookup = l;
                        return true;
                }
                log_info("Devices of '%s' not read from the registrar: %s.", pr->key,
                         r == -ENOTCONN ? "not connected" : strerror(-r));
        }
        free(l);
        pr->lookup = NULL;
        settle(lt, pr, ACCOUNT_USER, false);
        return false;
}

static void on_answer(int error, const struct account_secret *secret, void *userdata) {
        struct longterm_lookup *l = userdata;
        struct presentity *pr = l->pr;
        if (!pr) {
                free(l);
                return; /* gone meanwhile */
        }
        pr->lookup = NULL;
        struct longterm *lt = pr->presence->longterm;
        if (error == -ECANCELED || pr->presence->stopping) {
                free(l);
                return;
        }
        if (error < 0)
                log_info("Account lookup of '%s' failed: %s.", pr->key, strerror(-error));
        if (error >= 0 && secret) {
                const char *at = strrchr(pr->key, '@');
                (void)read_devices(lt, pr, l, secret->user ? secret->user : "", at + 1);
                return;
        }
        free(l);
        settle(lt, pr, error < 0 ? ACCOUNT_FAILED : ACCOUNT_NOT_USER, false);
}

/* Asks the store about pr; true when the answer is to come. */
static bool lookup(struct longterm *lt, struct presentity *pr) {
        if (pr->lookup)
                return true;
        const char *at = strrchr(pr->key, '@');
        if (!at || at == pr->key) {
                settle(lt, pr, ACCOUNT_NOT_USER, false); /* a bare host is nobody's account */
                return false;
        }
        _cleanup_free_ char *user = strndup(pr->key, (size_t)(at - pr->key));
        if (!user) {
                log_oom();
                return false;
        }
        struct longterm_lookup *l = calloc(1, sizeof *l);
        if (!l) {
                log_oom();
                return false;
        }
        l->pr = pr;
        const struct account_secret *cached = NULL;
        if (account_store_cached_user(lt->store, user, at + 1, &cached) > 0) {
                if (cached)
                        return read_devices(lt, pr, l, cached->user ? cached->user : user,
                                            at + 1);
                free(l);
                settle(lt, pr, ACCOUNT_NOT_USER, false);
                return false;
        }
        stats_inc(lt->count_lookup);
        int r = account_store_lookup_user(lt->store, user, at + 1, on_answer, l);
        if (r < 0) {
                free(l);
                log_info("Account lookup of '%s' not started: %s.", pr->key,
                         r == -EAGAIN ? "max-queue-size reached" : strerror(-r));
                settle(lt, pr, ACCOUNT_FAILED, false);
                return false;
        }
        pr->lookup = l;
        return true;
}

/* Unknown accounts are cached 30 s by the store: ask again after that on a refresh. */
#define NOT_USER_RECHECK_MS (30 * 1000)
#define DEVICES_RECHECK_MS  (5 * 1000)

static bool needs_lookup(const struct longterm *lt, const struct presentity *pr, bool refresh) {
        if (pr->publications || pr->last_activity > 0)
                return false;
        if (pr->lookup || pr->account == ACCOUNT_UNCHECKED || pr->account == ACCOUNT_FAILED)
                return true;
        /* A user's devices change without telling us: their capabilities are read again for
         * a new subscription or a refresh, at most every DEVICES_RECHECK_MS. */
        if (pr->account == ACCOUNT_USER && devices_enabled(pr->presence) &&
            now_msec() - pr->capabilities_read >= DEVICES_RECHECK_MS)
                return true;
        if (!refresh)
                return false;
        uint64_t age = now_msec() - pr->account_checked;
        uint64_t expire = lt->accounts.cache_expire_ms;
        return pr->account == ACCOUNT_USER ? age >= expire
                                           : age >= MIN(expire, NOT_USER_RECHECK_MS);
}

static void hold_expired(struct loop_timer *t, void *userdata) {
        struct subscription *sub = userdata;
        struct longterm *lt = sub->presence->longterm;
        if (sub->ended || sub->n_waiting == 0)
                return;
        log_info("Subscription %llu of '%s': %zu account lookups still under way after %llums, "
                 "sending what is known.",
                 (unsigned long long)sub->id, sub->watcher, sub->n_waiting,
                 (unsigned long long)lt->max_wait_ms);
        stats_inc(lt->count_hold_expired);
        subscription_stop_waiting(sub);
}

void longterm_watch(struct subscription *sub, bool refresh) {
        struct longterm *lt = sub->presence->longterm;
        if (!lt || !lt->enabled || !lt->store)
                return;
        /* A guard: answers found in the cache on the way do not release the NOTIFY early. */
        sub->n_waiting++;
        for (size_t i = 0; i < sub->n_resources; i++) {
                struct resource *res = &sub->resources[i];
                struct presentity *pr = res->presentity;
                if (!pr || res->waiting || !needs_lookup(lt, pr, refresh))
                        continue;
                if (lookup(lt, pr)) {
                        res->waiting = true;
                        sub->n_waiting++;
                }
        }
        if (--sub->n_waiting == 0)
                return;
        stats_inc(lt->count_held);
        if (!sub->hold &&
            loop_timer_new(daemon_loop(sub->presence->daemon), hold_expired, sub, &sub->hold) < 0) {
                log_oom();
                subscription_stop_waiting(sub);
                return;
        }
        loop_timer_arm(sub->hold, lt->max_wait_ms);
}

void longterm_check(struct presentity *pr) {
        struct longterm *lt = pr->presence->longterm;
        if (!lt || !lt->enabled || !lt->store || !pr->watchers || !needs_lookup(lt, pr, false))
                return;
        (void)lookup(lt, pr);
}

void longterm_forget(struct presentity *pr) {
        if (pr->lookup) {
                pr->lookup->pr = NULL;
                pr->lookup = NULL;
        }
}
