/* SPDX-License-Identifier: MIT */
/* Capabilities: answers OPTIONS addressed to the proxy itself (no Route, no user part, the
 * Request-URI names us) with 200 OK and what we support. */
#define LOG_SUBSYSTEM LOG_sip
#include "module.h"
#include "proxy.h"

#define PROXY_ALLOW "INVITE, ACK, CANCEL, BYE, OPTIONS, REGISTER, MESSAGE, SUBSCRIBE, NOTIFY, " \
                    "REFER, INFO, UPDATE, PRACK, PUBLISH"

static enum module_result capabilities_request(struct module *m, struct proxy_request *req) {
        const sip_t *sip = req->sip;
        const url_t *ruri = sip->sip_request->rq_url;
        if (sip->sip_request->rq_method != sip_method_options || sip->sip_route ||
            ruri->url_user || !proxy_is_us(m->proxy, ruri))
                return MODULE_CONTINUE;
        proxy_request_reply(req, SIP_200_OK, SIPTAG_ALLOW_STR(PROXY_ALLOW),
                            SIPTAG_ACCEPT_STR("application/sdp"),
                            SIPTAG_SUPPORTED_STR("path, outbound, gruu"), TAG_END());
        return MODULE_STOP;
}

const struct module_desc module_capabilities = {
        .name = "Capabilities",
        .section = "module::Capabilities",
        .doc = "Answers OPTIONS requests addressed to the proxy itself with 200 OK.",
        .default_enabled = true,
        .on_request = capabilities_request,
};
