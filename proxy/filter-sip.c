/* SPDX-License-Identifier: MIT */
/* The filter variables of a sofia sip_t (see filter-sip.h). Pure functions of the message:
 * strings point into the parsed headers, numbers are printed into the per-evaluation context. */
#include <stdio.h>

#include "filter-sip.h"
#include "macro.h"

const char *const filter_sip_variables[] = {
        "is_request",
        "is_response",
        "request.method",
        "request.method-name",
        "request.uri.user",
        "request.uri.domain",
        "request.uri.params",
        "from.uri.user",
        "from.uri.domain",
        "from.uri.params",
        "to.uri.user",
        "to.uri.domain",
        "to.uri.params",
        "contact.uri.user",
        "contact.uri.domain",
        "contact.uri.params",
        "user-agent",
        "content-type",
        "call-id",
        "call-id.hash",
        "status.code",
        "status.phrase",
        "direction",
        NULL,
};

/* name = "<prefix>.uri.<part>": the part of url, or NULL. */
static const char *uri_part(const url_t *url, const char *part) {
        if (!url)
                return NULL;
        if (streq(part, "user"))
                return url->url_user;
        if (streq(part, "domain"))
                return url->url_host;
        if (streq(part, "params"))
                return url->url_params;
        return NULL;
}

static const url_t *uri_of(const sip_t *sip, const char *name, const char **part) {
        static const char *const prefixes[] = {"request.uri.", "from.uri.", "to.uri.",
                                               "contact.uri."};
        for (size_t i = 0; i < ELEMENTSOF(prefixes); i++) {
                size_t n = strlen(prefixes[i]);
                if (strncmp(name, prefixes[i], n) != 0)
                        continue;
                *part = name + n;
                switch (i) {
                case 0:
                        return sip->sip_request ? sip->sip_request->rq_url : NULL;
                case 1:
                        return sip->sip_from ? sip->sip_from->a_url : NULL;
                case 2:
                        return sip->sip_to ? sip->sip_to->a_url : NULL;
                default:
                        return sip->sip_contact ? sip->sip_contact->m_url : NULL;
                }
        }
        return NULL;
}

const char *filter_sip_get(const char *name, void *userdata) {
        struct filter_sip_context *ctx = userdata;
        const sip_t *sip = ctx->sip;
        const char *part = NULL;

        if (!sip)
                return NULL;
        if (streq(name, "is_request"))
                return sip->sip_request ? "true" : "false";
        if (streq(name, "is_response"))
                return sip->sip_status ? "true" : "false";
        if (streq(name, "request.method") || streq(name, "request.method-name")) {
                if (sip->sip_request)
                        return sip->sip_request->rq_method_name;
                return sip->sip_cseq ? sip->sip_cseq->cs_method_name : NULL;
        }
        const url_t *url = uri_of(sip, name, &part);
        if (part)
                return uri_part(url, part);
        if (streq(name, "user-agent"))
                return sip->sip_user_agent ? sip->sip_user_agent->g_string : NULL;
        if (streq(name, "content-type"))
                return sip->sip_content_type ? sip->sip_content_type->c_type : NULL;
        if (streq(name, "call-id"))
                return sip->sip_call_id ? sip->sip_call_id->i_id : NULL;
        if (streq(name, "call-id.hash")) {
                if (!sip->sip_call_id)
                        return NULL;
                snprintf(ctx->hash, sizeof ctx->hash, "%u", (unsigned)sip->sip_call_id->i_hash);
                return ctx->hash;
        }
        if (streq(name, "status.code")) {
                if (!sip->sip_status)
                        return NULL;
                snprintf(ctx->code, sizeof ctx->code, "%d", sip->sip_status->st_status);
                return ctx->code;
        }
        if (streq(name, "status.phrase"))
                return sip->sip_status ? sip->sip_status->st_phrase : NULL;
        if (streq(name, "direction"))
                return ctx->direction;
        return NULL;
}

int filter_sip_compile(const char *expr, struct filter **ret, struct filter_error *error) {
        return filter_compile(expr, filter_sip_variables, ret, error);
}

bool filter_sip_eval(const struct filter *f, const sip_t *sip, const char *direction) {
        struct filter_sip_context ctx = {.sip = sip, .direction = direction};
        return filter_eval(f, filter_sip_get, &ctx);
}
