/* SPDX-License-Identifier: MIT */
/* PUBLISH (RFC 3903) for the presence event package: each accepted initial PUBLISH makes a
 * publication named by a fresh entity tag; SIP-If-Match refreshes, modifies or (Expires: 0)
 * removes it. The publications of one presentity are merged into its state. */
#define LOG_SUBSYSTEM LOG_presence
#include <stdio.h>
#include <stdlib.h>

#include <openssl/rand.h>
#include <sofia-sip/su_tagarg.h>

#include "daemon.h"
#include "loop.h"
#include "macro.h"
#include "pidf.h"
#include "presence.h"
#include "stats.h"

#define PIDF_TYPE "application/pidf+xml"

void publication_free(struct publication *pub) {
        struct presentity *pr = pub->presentity;
        struct publication **pp = &pr->publications;
        while (*pp != pub)
                pp = &(*pp)->next;
        *pp = pub->next;
        pr->n_publications--;
        pr->presence->n_publications--;
        loop_timer_free(pub->timer);
        xmlFreeDoc(pub->doc);
        free(pub);
}

static void publication_expired(struct loop_timer *t, void *userdata) {
        struct publication *pub = userdata;
        struct presentity *pr = pub->presentity;
        stats_inc(pr->presence->count.publish_expired);
        log_info("Publication '%s' of '%s' expired.", pub->etag, pr->key);
        publication_free(pub);
        presentity_changed(pr);
        presentity_maybe_free(pr);
}

void new_etag(struct presence *p, char *buf, size_t size) {
        unsigned char rnd[8];
        if (RAND_bytes(rnd, sizeof rnd) != 1)
                memset(rnd, 0, sizeof rnd);
        snprintf(buf, size, "%02x%02x%02x%02x%02x%02x%02x%02x%04x", rnd[0], rnd[1], rnd[2], rnd[3],
                 rnd[4], rnd[5], rnd[6], rnd[7], (unsigned)(++p->next_id & 0xffff));
}

/* Inserts pub, newest first by updated_ms (the merge lets the latest person element win). */
static void insert_sorted(struct presentity *pr, struct publication *pub) {
        struct publication **pp = &pr->publications;
        while (*pp && (*pp)->updated_ms > pub->updated_ms)
                pp = &(*pp)->next;
        pub->next = *pp;
        *pp = pub;
}

struct publication *publication_new(struct presentity *pr, xmlDocPtr doc, uint64_t expires_ms,
                                    uint64_t updated_ms) {
        struct presence *p = pr->presence;
        struct publication *pub = calloc(1, sizeof *pub);
        if (!pub ||
            loop_timer_new(daemon_loop(p->daemon), publication_expired, pub, &pub->timer) < 0) {
                free(pub);
                return NULL;
        }
        pub->presentity = pr;
        pub->doc = doc;
        pub->updated_ms = updated_ms;
        insert_sorted(pr, pub);
        pr->n_publications++;
        p->n_publications++;
        pub->expires_at = now_msec() + expires_ms;
        loop_timer_arm(pub->timer, expires_ms);
        return pub;
}

static struct publication *find_etag(struct presentity *pr, const char *etag) {
        for (struct publication *pub = pr ? pr->publications : NULL; pub; pub = pub->next)
                if (streq(pub->etag, etag))
                        return pub;
        return NULL;
}

/* Parses and checks the PIDF body; answers and returns a status >= 400 when it is refused. */
static int read_body(struct presence *p, nta_incoming_t *irq, const sip_t *sip, xmlDocPtr *ret) {
        const sip_payload_t *pl = sip->sip_payload;
        const char *reason = NULL;
        xmlDocPtr doc = NULL;
        if (!sip->sip_content_type || !sip->sip_content_type->c_type ||
            !strcaseeq(sip->sip_content_type->c_type, PIDF_TYPE)) {
                nta_incoming_treply(irq, SIP_415_UNSUPPORTED_MEDIA, SIPTAG_ACCEPT_STR(PIDF_TYPE),
                                    TAG_END());
                return 415;
        }
        if (presence_body_encoded(sip)) {
                nta_incoming_treply(irq, SIP_415_UNSUPPORTED_MEDIA,
                                    SIPTAG_ACCEPT_ENCODING_STR("identity"), TAG_END());
                return 415;
        }
        int r = xml_parse(pl->pl_data, pl->pl_len, p->config.max_body_size, &doc);
        if (r == -E2BIG) {
                stats_inc(p->count.xml_rejected);
                nta_incoming_treply(irq, 413, "Body Too Large", TAG_END());
                return 413;
        }
        if (r < 0) {
                stats_inc(p->count.xml_rejected);
                log_info("PUBLISH refused: %s.",
                         r == -EPERM ? "the PIDF has a DTD" : "malformed PIDF");
                nta_incoming_treply(irq, 400, r == -EPERM ? "DTD Not Allowed" : "Malformed PIDF",
                                    TAG_END());
                return 400;
        }
        if (!pidf_valid(doc, &reason)) {
                stats_inc(p->count.xml_rejected);
                xmlFreeDoc(doc);
                log_info("PUBLISH refused: %s.", reason);
                nta_incoming_treply(irq, 400, "Invalid PIDF", TAG_END());
                return 400;
        }
        if (pidf_stamp_tuples(doc, time(NULL)) < 0) {
                xmlFreeDoc(doc);
                return 500;
        }
        *ret = doc;
        return 0;
}

static int reply_ok(struct publication *pub, nta_incoming_t *irq, uint64_t expires_s) {
        char exp[24];
        snprintf(exp, sizeof exp, "%llu", (unsigned long long)expires_s);
        nta_incoming_treply(irq, SIP_200_OK, SIPTAG_ETAG_STR(pub->etag), SIPTAG_EXPIRES_STR(exp),
                            TAG_END());
        return 200;
}

static int reject(struct presence *p, int status) {
        stats_inc(p->count.publish_rejected);
        return status;
}

int publish_handle(struct presence *p, nta_incoming_t *irq, const sip_t *sip) {
        const struct presence_config *c = &p->config;
        stats_inc(p->count.publish);

        if (!sip->sip_event || !streq(sip->sip_event->o_type, "presence")) {
                nta_incoming_treply(irq, SIP_489_BAD_EVENT, SIPTAG_ALLOW_EVENTS_STR("presence"),
                                    TAG_END());
                return reject(p, 489);
        }
        uint64_t expires_ms = c->publish_expires_ms;
        if (sip->sip_expires)
                expires_ms = (uint64_t)sip->sip_expires->ex_delta * 1000;
        if (expires_ms > 0 && expires_ms < c->publish_min_expires_ms) {
                char min[24];
                snprintf(min, sizeof min, "%llu",
                         (unsigned long long)(c->publish_min_expires_ms / 1000));
                nta_incoming_treply(irq, SIP_423_INTERVAL_TOO_BRIEF, SIPTAG_MIN_EXPIRES_STR(min),
                                    TAG_END());
                return reject(p, 423);
        }
        if (expires_ms > c->publish_max_expires_ms)
                expires_ms = c->publish_max_expires_ms;

        _cleanup_free_ char *key = presence_uri_key(sip->sip_request->rq_url);
        if (!key)
                return reject(p, 400);
        const char *if_match = sip->sip_if_match ? sip->sip_if_match->g_string : NULL;
        bool has_body = sip->sip_payload && sip->sip_payload->pl_len > 0;
        xmlDocPtr doc = NULL;
        int r;

        if (!if_match) {
                /* Initial publication: a body is required. */
                if (!has_body) {
                        nta_incoming_treply(irq, 400, "Missing Body", TAG_END());
                        return reject(p, 400);
                }
                if (expires_ms == 0) {
                        nta_incoming_treply(irq, 400, "Nothing To Remove", TAG_END());
                        return reject(p, 400);
                }
                if ((r = read_body(p, irq, sip, &doc)) != 0)
                        return reject(p, r);
                if (p->redis)
                        return shared_publish(p, irq, key, NULL, doc, expires_ms);
                struct presentity *pr = presentity_get(p, key, true);
                if (!pr || pr->n_publications >= (unsigned)c->max_publications) {
                        xmlFreeDoc(doc);
                        log_warning("PUBLISH for '%s' refused: %s.", key,
                                    pr ? "max-presence-elements reached"
                                       : "max-presentities reached");
                        nta_incoming_treply(irq, SIP_503_SERVICE_UNAVAILABLE,
                                            SIPTAG_RETRY_AFTER_STR("60"), TAG_END());
                        return reject(p, 503);
                }
                struct publication *pub = publication_new(pr, doc, expires_ms, now_wall_ms());
                if (!pub) {
                        xmlFreeDoc(doc);
                        presentity_maybe_free(pr);
                        return reject(p, 500);
                }
                new_etag(p, pub->etag, sizeof pub->etag);
                stats_inc(p->count.publish_new);
                log_info("New publication '%s' of '%s' for %llus.", pub->etag, key,
                         (unsigned long long)(expires_ms / 1000));
                reply_ok(pub, irq, expires_ms / 1000);
                presentity_changed(pr);
                return 200;
        }

        if (p->redis) {
                /* The publication may have been made on another server: Redis decides. */
                if (expires_ms > 0 && has_body && (r = read_body(p, irq, sip, &doc)) != 0)
                        return reject(p, r);
                return shared_publish(p, irq, key, if_match, doc, expires_ms);
        }
        struct presentity *pr = presentity_get(p, key, false);
        struct publication *pub = find_etag(pr, if_match);
        if (!pub) {
                log_info("PUBLISH for '%s' with unknown entity tag '%s'.", key, if_match);
                nta_incoming_treply(irq, SIP_412_PRECONDITION_FAILED, TAG_END());
                return reject(p, 412);
        }
        if (expires_ms == 0) {
                stats_inc(p->count.publish_remove);
                log_info("Publication '%s' of '%s' removed.", pub->etag, key);
                char etag[sizeof pub->etag];
                memcpy(etag, pub->etag, sizeof etag);
                publication_free(pub);
                nta_incoming_treply(irq, SIP_200_OK, SIPTAG_ETAG_STR(etag), SIPTAG_EXPIRES_STR("0"),
                                    TAG_END());
                presentity_changed(pr);
                presentity_maybe_free(pr);
                return 200;
        }
        if (has_body) {
                if ((r = read_body(p, irq, sip, &doc)) != 0)
                        return reject(p, r);
                xmlFreeDoc(pub->doc);
                pub->doc = doc;
                pub->updated_ms = now_wall_ms();
                /* Newest first: the merge lets the latest source's person element win. */
                struct publication **pp = &pr->publications;
                while (*pp != pub)
                        pp = &(*pp)->next;
                *pp = pub->next;
                insert_sorted(pr, pub);
                stats_inc(p->count.publish_modify);
        } else {
                stats_inc(p->count.publish_refresh);
        }
        new_etag(p, pub->etag, sizeof pub->etag);
        pub->expires_at = now_msec() + expires_ms;
        loop_timer_arm(pub->timer, expires_ms);
        reply_ok(pub, irq, expires_ms / 1000);
        if (has_body)
                presentity_changed(pr);
        return 200;
}
