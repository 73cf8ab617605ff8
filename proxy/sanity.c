/* SPDX-License-Identifier: MIT */
/* SanityChecker: refuses requests whose headers are present but unusable with 400 and a reason
 * phrase naming the problem ("400 Bad From"). nta already drops or answers what sofia cannot
 * parse at all and what fails sip_sanity_check() (no Via, no Call-ID, CSeq method mismatch...);
 * the same rules are checked here too so that the module does not depend on it. A bad ACK is
 * dropped: it is never answered. */
#define LOG_SUBSYSTEM LOG_sip
#include <string.h>
#include <strings.h>

#include <sofia-sip/hostdomain.h>

#include "macro.h"
#include "module.h"
#include "proxy.h"
#include "stats.h"

struct sanity {
        struct stats_counter *count_bad_requests;
        struct stats_counter *count_dropped_acks;
};

/* Headers whose parse failure makes the request unusable; sofia keeps such a header in
 * sip_error instead of its own slot. */
static const struct {
        const char *name;
        const char *phrase;
} critical_headers[] = {
        {"Via", "Bad Via"},
        {"From", "Bad From"},
        {"To", "Bad To"},
        {"Call-ID", "Bad Call-ID"},
        {"CSeq", "Bad CSeq"},
        {"Contact", "Bad Contact"},
        {"Max-Forwards", "Bad Max-Forwards"},
        {"Event", "Bad Event"},
};

static bool has_bad_char(const char *s) {
        return s && strpbrk(s, "@\\");
}

static bool sip_uri_host_ok(const url_t *u) {
        return !isempty(u->url_host) && host_is_valid(u->url_host) && !has_bad_char(u->url_host) &&
               !has_bad_char(u->url_user) && !has_bad_char(u->url_password);
}

/* From and To: a sip/sips URI needs a valid host and no stray '@' or '\'; other schemes (tel)
 * only need to parse. */
static bool address_uri_ok(const url_t *u) {
        switch (u->url_type) {
        case url_invalid:
                return false;
        case url_sip:
        case url_sips:
                return sip_uri_host_ok(u);
        default:
                return true;
        }
}

static const char *check_contacts(const sip_t *sip) {
        for (const sip_contact_t *m = sip->sip_contact; m; m = m->m_next) {
                if (m->m_url->url_type == url_any) {
                        /* "Contact: *" removes every binding of a REGISTER, alone. */
                        if (sip->sip_request->rq_method == sip_method_register &&
                            m == sip->sip_contact && !m->m_next)
                                continue;
                        return "Bad Contact";
                }
                if (m->m_url->url_type != url_sip && m->m_url->url_type != url_sips)
                        return "Bad Contact scheme";
                if (!sip_uri_host_ok(m->m_url))
                        return "Bad Contact";
        }
        return NULL;
}

/* The reason phrase of the 400 for this request, or NULL if it is sane. */
static const char *sanity_check(const sip_t *sip) {
        const sip_request_t *rq = sip->sip_request;

        for (const msg_error_t *e = sip->sip_error; e; e = e->er_next) {
                if (!e->er_name)
                        continue;
                for (size_t i = 0; i < ELEMENTSOF(critical_headers); i++)
                        if (strcasecmp(e->er_name, critical_headers[i].name) == 0)
                                return critical_headers[i].phrase;
        }

        if (!sip->sip_via)
                return "Missing Via";

        if (rq->rq_url->url_type == url_invalid ||
            ((rq->rq_url->url_type == url_sip || rq->rq_url->url_type == url_sips) &&
             !sip_uri_host_ok(rq->rq_url)))
                return "Bad Request-URI";

        if (!sip->sip_from)
                return "Missing From";
        if (!address_uri_ok(sip->sip_from->a_url))
                return "Bad From";
        if (isempty(sip->sip_from->a_tag))
                return "Missing From tag";

        if (!sip->sip_to)
                return "Missing To";
        if (!address_uri_ok(sip->sip_to->a_url))
                return "Bad To";

        if (!sip->sip_call_id || isempty(sip->sip_call_id->i_id))
                return "Missing Call-ID";

        if (!sip->sip_cseq)
                return "Missing CSeq";
        if (sip->sip_cseq->cs_method != rq->rq_method ||
            (rq->rq_method == sip_method_unknown &&
             (!sip->sip_cseq->cs_method_name ||
              strcmp(sip->sip_cseq->cs_method_name, rq->rq_method_name) != 0)))
                return "Bad CSeq method";

        const char *phrase = check_contacts(sip);
        if (phrase)
                return phrase;

        if (rq->rq_method == sip_method_subscribe && !sip->sip_event)
                return "Missing Event";

        return NULL;
}

static enum module_result sanity_request(struct module *m, struct proxy_request *req) {
        struct sanity *s = m->state;
        const sip_t *sip = req->sip;

        const char *phrase = sanity_check(sip);
        if (!phrase)
                return MODULE_CONTINUE;

        if (sip->sip_request->rq_method == sip_method_ack) {
                stats_inc(s->count_dropped_acks);
                log_warning_ratelimited("Dropping malformed ACK (%s), ignoring.", phrase);
                return MODULE_STOP;
        }

        stats_inc(s->count_bad_requests);
        log_warning_ratelimited("Refusing %s: 400 %s.", sip->sip_request->rq_method_name, phrase);
        proxy_request_reply(req, 400, phrase, TAG_END());
        return MODULE_STOP;
}

static int sanity_init(struct module *m) {
        struct sanity *s = m->state;
        struct stats *st = proxy_stats(m->proxy);

        s->count_bad_requests = stats_declare(st, m->desc->section, "count-bad-requests",
                                              "Requests refused with 400 as malformed");
        s->count_dropped_acks = stats_declare(st, m->desc->section, "count-dropped-acks",
                                              "Malformed ACKs dropped without an answer");
        if (!s->count_bad_requests || !s->count_dropped_acks)
                return -ENOMEM;
        return 0;
}

const struct module_desc module_sanity = {
        .name = "SanityChecker",
        .section = "module::SanityChecker",
        .doc = "Refuses malformed requests (missing or unusable Via, From, To, Call-ID, CSeq, "
               "Contact, Request-URI, Max-Forwards, Event of SUBSCRIBE) with 400.",
        .default_enabled = true,
        .state_size = sizeof(struct sanity),
        .init = sanity_init,
        .on_request = sanity_request,
};
