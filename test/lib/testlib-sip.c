/* SPDX-License-Identifier: MIT */
#define NTA_LEG_MAGIC_T      struct tl_ua
#define NTA_OUTGOING_MAGIC_T struct tl_pending
#define NTA_AGENT_MAGIC_T    struct tl_ua
#define SU_ROOT_MAGIC_T      void
#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <sofia-sip/nta.h>
#include <sofia-sip/sip_header.h>
#include <sofia-sip/sip_status.h>
#include <sofia-sip/su_wait.h>

#include "loop.h"
#include "testlib-sip.h"

#define MAX_QUEUED 4096

struct tl_ua {
        nta_agent_t *agent;
        nta_leg_t *default_leg;
        int reply;
        char proxy[256];
        msg_t *queue[MAX_QUEUED];
        size_t head, tail;
};

struct tl_dialog {
        struct tl_ua *ua;
        nta_leg_t *leg;
        bool established;
};

struct tl_pending {
        struct tl_dialog *d;
        int status;
        msg_t *msg;
};

static su_root_t *root;

static su_root_t *shared_root(void) {
        if (!root) {
                su_init();
                root = su_root_create(NULL);
                ck_assert_ptr_nonnull(root);
        }
        return root;
}

void tl_sip_run(int ms) {
        uint64_t end = now_msec() + (uint64_t)ms;
        for (uint64_t now = now_msec(); now < end; now = now_msec())
                su_root_step(shared_root(), (su_duration_t)(end - now));
}

static int on_request(struct tl_ua *ua, nta_leg_t *leg, nta_incoming_t *irq, const sip_t *sip) {
        if (sip->sip_request->rq_method == sip_method_ack)
                return 200;
        if (ua->tail - ua->head < MAX_QUEUED)
                ua->queue[ua->tail++ % MAX_QUEUED] = nta_incoming_getrequest(irq);
        return ua->reply;
}

static int on_message(struct tl_ua *ua, nta_agent_t *agent, msg_t *msg, sip_t *sip) {
        msg_destroy(msg);
        return 0;
}

struct tl_ua *tl_ua_new(void) {
        return tl_ua_new_at("127.0.0.1");
}

struct tl_ua *tl_ua_new_at(const char *host) {
        struct tl_ua *ua = calloc(1, sizeof *ua);
        ck_assert_ptr_nonnull(ua);
        ua->reply = 200;
        char bind[64];
        snprintf(bind, sizeof bind, "sip:%s:*", host);
        ua->agent = nta_agent_create(shared_root(), URL_STRING_MAKE(bind), on_message, ua,
                                     NTATAG_UA(1), NTATAG_SIP_T1X64(4000), TAG_END());
        ck_assert_msg(ua->agent != NULL, "test UA cannot bind");
        ua->default_leg =
                nta_leg_tcreate(ua->agent, on_request, ua, NTATAG_NO_DIALOG(1), TAG_END());
        ck_assert_ptr_nonnull(ua->default_leg);
        return ua;
}

void tl_ua_free(struct tl_ua *ua) {
        if (!ua)
                return;
        while (ua->head < ua->tail)
                msg_destroy(ua->queue[ua->head++ % MAX_QUEUED]);
        nta_leg_destroy(ua->default_leg);
        nta_agent_destroy(ua->agent);
        free(ua);
}

int tl_ua_port(struct tl_ua *ua) {
        const sip_contact_t *m = nta_agent_contact(ua->agent);
        return m && m->m_url->url_port ? atoi(m->m_url->url_port) : -1;
}

void tl_ua_set_proxy(struct tl_ua *ua, const char *uri) {
        snprintf(ua->proxy, sizeof ua->proxy, "%s", uri ? uri : "");
}

void tl_ua_set_reply(struct tl_ua *ua, int status) {
        ua->reply = status;
}

struct tl_dialog *tl_dialog_new(struct tl_ua *ua, const char *from, const char *to) {
        struct tl_dialog *d = calloc(1, sizeof *d);
        ck_assert_ptr_nonnull(d);
        d->ua = ua;
        d->leg = nta_leg_tcreate(ua->agent, on_request, ua, SIPTAG_FROM_STR(from),
                                 SIPTAG_TO_STR(to), TAG_END());
        ck_assert_ptr_nonnull(d->leg);
        nta_leg_tag(d->leg, NULL);
        return d;
}

void tl_dialog_free(struct tl_dialog *d) {
        if (!d)
                return;
        nta_leg_destroy(d->leg);
        free(d);
}

static int on_response(struct tl_pending *pd, nta_outgoing_t *orq, const sip_t *sip) {
        int status = sip && sip->sip_status ? sip->sip_status->st_status : 408;
        if (status < 200)
                return 0;
        if (status < 300 && sip && !pd->d->established) {
                if (sip->sip_to && sip->sip_to->a_tag)
                        nta_leg_rtag(pd->d->leg, sip->sip_to->a_tag);
                nta_leg_client_route(pd->d->leg, sip->sip_record_route, sip->sip_contact);
                pd->d->established = true;
        }
        pd->status = status;
        pd->msg = nta_outgoing_getresponse(orq);
        return 0;
}

int tl_ua_send(struct tl_dialog *d, const char *method, const char *ruri, const char *headers,
               const char *body, msg_t **ret) {
        struct tl_pending pd = {.d = d};
        nta_outgoing_t *orq = nta_outgoing_tcreate(
                d->leg, on_response, &pd,
                !d->established && d->ua->proxy[0] ? URL_STRING_MAKE(d->ua->proxy) : NULL,
                sip_method_unknown, method, d->established ? NULL : URL_STRING_MAKE(ruri),
                SIPTAG_CONTACT(nta_agent_contact(d->ua->agent)),
                TAG_IF(headers, SIPTAG_HEADER_STR(headers)), TAG_IF(body, SIPTAG_PAYLOAD_STR(body)),
                TAG_END());
        ck_assert_msg(orq != NULL, "cannot send %s", method);
        uint64_t end = now_msec() + 10000;
        while (pd.status == 0 && now_msec() < end)
                su_root_step(shared_root(), 50);
        nta_outgoing_destroy(orq);
        if (ret)
                *ret = pd.msg;
        else if (pd.msg)
                msg_destroy(pd.msg);
        return pd.status ? pd.status : -1;
}

msg_t *tl_ua_next_request(struct tl_ua *ua, int timeout_ms) {
        uint64_t end = now_msec() + (uint64_t)timeout_ms;
        while (ua->head == ua->tail && now_msec() < end)
                su_root_step(shared_root(), 20);
        if (ua->head == ua->tail)
                return NULL;
        return ua->queue[ua->head++ % MAX_QUEUED];
}
