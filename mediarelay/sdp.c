/* SPDX-License-Identifier: MIT */
/* SDP rewriting with sofia-sip's parser: every m= line is pointed at the relay (c= and port),
 * RTCP attributes, rtcp-mux, ICE and SDES crypto are rewritten according to the NG options,
 * and the streams of both legs learn the sender's addresses, rtcp-mux and keys.
 *
 * Media are matched by position (the n-th m= line of an answer answers the n-th of the offer),
 * so a re-offer finds the streams, and the ports, of the first one. */
#define LOG_SUBSYSTEM LOG_media
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <sofia-sip/sdp.h>
#include <sofia-sip/su_alloc.h>

#include "log.h"
#include "mediarelay.h"

static const char *const ice_attrs[] = {"ice-ufrag",         "ice-pwd",           "ice-options",
                                        "candidate",         "remote-candidates", "end-of-candidates",
                                        "ice-lite",          "ice-mismatch",      NULL};

static bool name_in(const char *name, const char *const *list) {
        for (; *list; list++)
                if (strcaseeq(name, *list))
                        return true;
        return false;
}

_printf_(3, 4) static int fail(char *error, size_t size, const char *fmt, ...) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(error, size, fmt, ap);
        va_end(ap);
        return -EINVAL;
}

static void attr_append(su_home_t *home, sdp_attribute_t **list, const char *name,
                        const char *value) {
        sdp_attribute_t *a = su_zalloc(home, sizeof(*a));
        if (!a)
                return;
        a->a_size = sizeof(*a);
        a->a_name = su_strdup(home, name);
        a->a_value = value ? su_strdup(home, value) : NULL;
        while (*list)
                list = &(*list)->a_next;
        *list = a;
}

/* Drops ICE attributes, RTCP attributes and (when strip_crypto) a=crypto. */
static void attrs_filter(sdp_attribute_t **list, bool ice, bool rtcp, bool strip_crypto) {
        while (*list) {
                const char *n = (*list)->a_name;
                if ((ice && name_in(n, ice_attrs)) ||
                    (rtcp && (strcaseeq(n, "rtcp") || strcaseeq(n, "rtcp-mux"))) ||
                    (strip_crypto && strcaseeq(n, "crypto")))
                        *list = (*list)->a_next;
                else
                        list = &(*list)->a_next;
        }
}

static void set_connection(su_home_t *home, sdp_connection_t *c, const char *addr, bool ipv6) {
        c->c_nettype = sdp_net_in;
        c->c_addrtype = ipv6 ? sdp_addr_ip6 : sdp_addr_ip4;
        c->c_address = su_strdup(home, addr);
        c->c_mcast = 0;
        c->c_ttl = 0;
        c->c_groups = 0;
}

static void copy_trunc(char *dst, size_t size, const char *src) {
        snprintf(dst, size, "%s", src ? src : "");
}

static int pick_offered_crypto(struct stream *ss, sdp_attribute_t *attrs, char *error,
                               size_t esize) {
        for (sdp_attribute_t *a = attrs; a; a = a->a_next) {
                struct crypto_params p;
                memset(&p, 0, sizeof(p));
                if (!strcaseeq(a->a_name, "crypto") || !a->a_value ||
                    crypto_parse(a->a_value, &p) < 0)
                        continue;
                for (unsigned i = 0; i < ss->n_offered; i++)
                        if (ss->offered[i].tag == p.tag && ss->offered[i].suite == p.suite) {
                                ss->crypto_remote = p;
                                ss->crypto_local = ss->offered[i];
                                return 0;
                        }
        }
        return fail(error, esize, "The answer's a=crypto matches no suite the relay offered");
}

static int pick_first_crypto(struct stream *ss, sdp_attribute_t *attrs, char *error,
                             size_t esize) {
        for (sdp_attribute_t *a = attrs; a; a = a->a_next) {
                struct crypto_params p;
                memset(&p, 0, sizeof(p));
                if (!strcaseeq(a->a_name, "crypto") || !a->a_value ||
                    crypto_parse(a->a_value, &p) < 0)
                        continue;
                ss->crypto_remote = p;
                /* Keep the relay's key across re-offers of the same suite and tag. */
                if (ss->crypto_local.suite != p.suite || ss->crypto_local.tag != p.tag)
                        crypto_generate(&ss->crypto_local, p.suite, p.tag);
                return 0;
        }
        return fail(error, esize, "No supported a=crypto line (SDES suites: "
                                  "AES_CM_128_HMAC_SHA1_80/32, AES_256_CM_HMAC_SHA1_80/32)");
}

static void add_crypto(su_home_t *home, sdp_attribute_t **list, const struct crypto_params *p) {
        char *line = crypto_format(p);
        if (line) {
                attr_append(home, list, "crypto", line);
                free(line);
        }
}

static void add_ice(struct mediarelay *m, su_home_t *home, sdp_attribute_t **list,
                    struct stream *rs, bool mux) {
        char buf[256];

        attr_append(home, list, "ice-ufrag", rs->ice_ufrag);
        attr_append(home, list, "ice-pwd", rs->ice_pwd);
        for (unsigned comp = 1; comp <= (mux ? 1u : 2u); comp++) {
                unsigned port = comp == 1 ? rs->rtp.port : rs->rtcp.port;
                /* relay type preference 0, local preference 65535 */
                unsigned long prio = (65535ul << 8) + (256 - comp);
                snprintf(buf, sizeof(buf), "1 %u UDP %lu %s %u typ relay raddr %s rport %u", comp,
                         prio, m->advertised, port, m->advertised, port);
                attr_append(home, list, "candidate", buf);
        }
}

static int rewrite_media(struct mediarelay *m, su_home_t *home, sdp_session_t *sess,
                         sdp_media_t *md, struct stream *ss, struct stream *rs,
                         const struct ng_opts *o, bool offer, bool *any_ice, char *error,
                         size_t esize) {
        sdp_connection_t *conn = sdp_media_connections(md);
        sdp_attribute_t *a;
        const char *addr = conn ? conn->c_address : NULL;
        const char *in_proto = md->m_proto_name ? md->m_proto_name : "RTP/AVP";
        const char *out_proto;
        bool in_savp = strstr(in_proto, "SAVP") != NULL, out_savp;
        bool in_mux = sdp_attribute_find(md->m_attributes, "rtcp-mux") != NULL;
        const char *ufrag = NULL;
        bool rejected = md->m_rejected || md->m_port == 0;
        bool out_mux, ice_out, bridging;
        unsigned rtcp_port = (unsigned)md->m_port + 1;
        char rtcp_addr[64] = "";
        int r;

        a = sdp_attribute_find(md->m_attributes, "ice-ufrag");
        if (!a)
                a = sdp_attribute_find(sess->sdp_attributes, "ice-ufrag");
        if (a)
                ufrag = a->a_value;
        a = sdp_attribute_find(md->m_attributes, "rtcp");
        if (a && a->a_value) {
                unsigned p;
                char ab[64];
                int n = sscanf(a->a_value, "%u IN IP%*1[46] %63s", &p, ab);
                if (n >= 1 && p > 0 && p < 65536) {
                        rtcp_port = p;
                        if (n == 2)
                                copy_trunc(rtcp_addr, sizeof(rtcp_addr), ab);
                }
        }

        copy_trunc(ss->type, sizeof(ss->type), md->m_type_name);
        copy_trunc(rs->type, sizeof(rs->type), md->m_type_name);
        ss->rejected = rejected;
        if (!offer)
                rs->rejected = rejected || rs->rejected;
        else
                rs->rejected = rejected;
        if (!rejected) {
                stream_set_signalled(ss, false, addr, (unsigned)md->m_port);
                stream_set_signalled(ss, true, in_mux ? addr : (rtcp_addr[0] ? rtcp_addr : addr),
                                     in_mux ? (unsigned)md->m_port : rtcp_port);
        }
        copy_trunc(ss->remote_ufrag, sizeof(ss->remote_ufrag), ufrag);
        ss->latch = o->latch;

        if (offer) {
                if (o->transport && (strstr(in_proto, "UDP/TLS") || strstr(o->transport, "UDP/TLS")))
                        return fail(error, esize, "DTLS-SRTP is not supported");
                out_proto = o->transport ? o->transport : in_proto;
                out_savp = strstr(out_proto, "SAVP") != NULL;
                copy_trunc(ss->proto, sizeof(ss->proto), in_proto);
                copy_trunc(rs->proto, sizeof(rs->proto), out_proto);
                ss->srtp = in_savp && !out_savp;
                rs->srtp = out_savp && !in_savp;
                if (ss->srtp) {
                        r = pick_first_crypto(ss, md->m_attributes, error, esize);
                        if (r < 0)
                                return r;
                        if (stream_srtp_setup(ss) < 0)
                                return fail(error, esize, "SRTP context setup failed");
                }
                if (rs->srtp && rs->n_offered == 0) {
                        rs->n_offered = MIN(crypto_suite_count(), ELEMENTSOF(rs->offered));
                        for (unsigned i = 0; i < rs->n_offered; i++)
                                crypto_generate(&rs->offered[i], (int)i, i + 1);
                }
                if (!rs->srtp)
                        stream_srtp_setup(rs); /* frees contexts of a former bridge */
                if (!ss->srtp)
                        stream_srtp_setup(ss);
                ss->mux_offered = in_mux;
                ss->mux = in_mux && !o->mux_reject;
                out_mux = (in_mux && !o->mux_demux) || o->mux_offer || o->mux_require;
                rs->mux_offered = out_mux;
                ice_out = o->ice == NG_ICE_FORCE || (o->ice == NG_ICE_DEFAULT && ufrag);
        } else {
                out_proto = rs->proto[0] ? rs->proto : in_proto;
                copy_trunc(ss->proto, sizeof(ss->proto), in_proto);
                if (ss->srtp) {
                        if (!in_savp) {
                                /* the answerer declined SRTP */
                                ss->srtp = false;
                        } else {
                                r = pick_offered_crypto(ss, md->m_attributes, error, esize);
                                if (r < 0)
                                        return r;
                        }
                        if (stream_srtp_setup(ss) < 0)
                                return fail(error, esize, "SRTP context setup failed");
                }
                ss->mux = in_mux && ss->mux_offered;
                out_mux = rs->mux;
                ice_out = o->ice == NG_ICE_FORCE ||
                          (o->ice == NG_ICE_DEFAULT && (ufrag || rs->remote_ufrag[0]));
        }
        bridging = ss->srtp || rs->srtp;
        rs->ice = ice_out && !rejected;
        *any_ice = *any_ice || rs->ice;

        /* The rewritten media description. */
        if (!rejected)
                md->m_port = rs->rtp.port;
        md->m_number_of_ports = 0;
        if (!streq(out_proto, in_proto))
                sdp_media_transport(md, out_proto);
        if (md->m_connections)
                for (sdp_connection_t *c = md->m_connections; c; c = c->c_next)
                        set_connection(home, c, m->advertised, m->ipv6);
        /* The relay terminates ICE on each side (ICE-lite): the party's own candidates and
         * credentials never pass through. */
        attrs_filter(&md->m_attributes, true, true, bridging);
        if (rejected)
                return 0;
        if (out_mux)
                attr_append(home, &md->m_attributes, "rtcp-mux", NULL);
        if (rs->srtp) {
                if (offer)
                        for (unsigned i = 0; i < rs->n_offered; i++)
                                add_crypto(home, &md->m_attributes, &rs->offered[i]);
                else if (rs->crypto_local.suite >= 0)
                        add_crypto(home, &md->m_attributes, &rs->crypto_local);
        }
        if (rs->ice)
                add_ice(m, home, &md->m_attributes, rs, out_mux);
        return 0;
}

int sdp_rewrite(struct mediarelay *m, struct call *c, struct leg *sender, struct leg *recipient,
                const char *sdp, size_t len, const struct ng_opts *o, bool offer, char **out,
                char *error, size_t esize) {
        su_home_t *home = su_home_new(sizeof(su_home_t));
        sdp_parser_t *parser = NULL;
        sdp_printer_t *printer = NULL;
        sdp_session_t *sess;
        unsigned n = 0;
        bool any_ice = false;
        int r;

        if (!home)
                return -ENOMEM;
        parser = sdp_parse(home, sdp, (issize_t)len, 0);
        sess = sdp_session(parser);
        if (!sess) {
                r = fail(error, esize, "Failed to parse SDP: %s",
                         strna(sdp_parsing_error(parser)));
                goto finish;
        }
        for (sdp_media_t *md = sess->sdp_media; md; md = md->m_next)
                n++;
        if (n == 0) {
                r = fail(error, esize, "SDP without media");
                goto finish;
        }
        if (n > MR_MAX_MEDIA) {
                r = fail(error, esize, "SDP with more than %d media", MR_MAX_MEDIA);
                goto finish;
        }
        for (unsigned i = 0; i < n; i++) {
                r = call_ensure_media(m, c, i);
                if (r < 0) {
                        r = fail(error, esize, "No relay ports available: %s", strerror(-r));
                        goto finish;
                }
        }

        call_lock(c);
        r = 0;
        unsigned i = 0;
        for (sdp_media_t *md = sess->sdp_media; md && r >= 0; md = md->m_next, i++)
                r = rewrite_media(m, sdp_parser_home(parser), sess, md,
                                  sender->media[i], recipient->media[i], o, offer, &any_ice,
                                  error, esize);
        call_unlock(c);
        if (r < 0)
                goto finish;

        su_home_t *ph = sdp_parser_home(parser);
        if (sess->sdp_connection)
                set_connection(ph, sess->sdp_connection, m->advertised, m->ipv6);
        else {
                sdp_connection_t *cn = su_zalloc(ph, sizeof(*cn));
                if (!cn) {
                        r = -ENOMEM;
                        goto finish;
                }
                cn->c_size = sizeof(*cn);
                set_connection(ph, cn, m->advertised, m->ipv6);
                sess->sdp_connection = cn;
                /* media c= lines were rewritten already */
        }
        if (o->replace_origin && sess->sdp_origin && sess->sdp_origin->o_address)
                set_connection(ph, sess->sdp_origin->o_address, m->advertised, m->ipv6);
        attrs_filter(&sess->sdp_attributes, true, false, false);
        if (any_ice)
                attr_append(ph, &sess->sdp_attributes, "ice-lite", NULL);

        printer = sdp_print(home, sess, NULL, 0, sdp_f_mode_always);
        if (!sdp_message(printer)) {
                r = fail(error, esize, "Failed to print SDP: %s",
                         strna(sdp_printing_error(printer)));
                goto finish;
        }
        *out = strdup(sdp_message(printer));
        r = *out ? 0 : -ENOMEM;
finish:
        if (printer)
                sdp_printer_free(printer);
        if (parser)
                sdp_parser_free(parser);
        su_home_unref(home);
        return r;
}
