/* SPDX-License-Identifier: MIT */
/* lp-ua: a liblinphone user agent for the acceptance tests. It registers an identity through a
 * proxy (UDP, TCP or TLS), then places one call (--call), answers one (--answer) or just stays
 * registered until SIGTERM. Audio runs from a generated tone file into a file: no sound card,
 * no video. Its state lives in a private temporary directory (HOME and XDG_* point there too),
 * removed at exit. One line per event on stdout, "event=<name> key=value...", liblinphone's
 * own log on stderr. Presence: --presence publishes a sequence of states (online, away, busy,
 * on-the-phone), one every --presence-interval seconds; --watch subscribes to a friend (through
 * a friend list with an RLS address when --rls is given: one list subscription) and --expect
 * makes the goal seeing the friend in the listed states, in order. Exit status: 0 when the goal
 * was met, 1 on failure, 2 on bad usage, 3 when --max-time ran out (a hard alarm also ends a run
 * stuck inside the library). Push: --pn-provider, --pn-prid and --pn-param give the account
 * liblinphone's push notification configuration, which it puts into its Contact as RFC 8599
 * pn-* parameters (what a phone does with the tokens its OS gave it); --contact-params adds
 * raw contact URI parameters. */
#include <errno.h>
#include <ftw.h>
#include <getopt.h>
#include <inttypes.h>
#include <linphone/core.h>
#include <linphone/logging.h>
#include <math.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

/* After liblinphone's headers, which define MIN and MAX their own way. */
#undef MIN
#undef MAX
#include "macro.h"

#define EXIT_USAGE   2
#define EXIT_TIMEOUT 3
/* Bounds of the phases that follow the goal (hang-up, unregistration, core stop). */
#define HANGUP_TIMEOUT_MS     5000
#define UNREGISTER_TIMEOUT_MS 3000
#define ITERATE_MS            10
#define STATS_EVERY_MS        200

struct ua_options {
        const char *identity;
        const char *proxy;
        const char *ca_file;
        const char *call_uri;
        const char *password;
        int expires;
        int sip_port;
        int rtp_port;
        int duration_s;
        int max_time_s;
        bool answer;
        bool verbose;
        /* presence */
        char *presence[8]; /* states to publish, in turn */
        size_t n_presence;
        int presence_interval_s;
        const char *watch_uri;
        const char *rls_uri;
        char *specs;     /* --specs: the Contact's +org.linphone.specs, comma-separated */
        char *expect[8]; /* states to see the watched friend in, in order */
        size_t n_expect;
        /* instant messages */
        const char *message_to;
        const char *message;
        int expect_messages;
        /* push notifications (RFC 8599 contact parameters) */
        const char *pn_provider;
        const char *pn_prid;
        const char *pn_param;
        const char *contact_params;
};

struct ua {
        struct ua_options o;
        bool tls; /* the proxy is reached over TLS */
        LinphoneCore *core;
        LinphoneAccount *account;
        char dir[256];

        bool registered;
        bool unregistered;
        bool registration_failed;

        LinphoneCall *call; /* referenced */
        bool call_placed;
        bool accept_pending;
        bool call_running; /* reached StreamsRunning */
        bool call_ended;   /* End or Released */
        bool call_error;   /* Error before or instead of End */
        bool hangup_sent;
        int64_t running_since_ms;
        int64_t last_stats_ms;
        uint64_t rtp_sent;
        uint64_t rtp_received;
        bool stats_printed;

        size_t presence_next;     /* index of the next state to publish */
        int64_t presence_due_ms;  /* when to publish it */
        LinphoneFriend *friend;   /* watched (referenced) */
        LinphoneFriendList *list; /* with --rls (referenced) */
        size_t expect_seen;       /* states of --expect seen so far */

        LinphoneChatMessage *sent;   /* --message (referenced) */
        bool message_done;           /* its final state reached */
        bool message_failed;
        int messages_received;
};

static volatile sig_atomic_t stop_requested;

static int64_t now_ms(void) {
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Set once the exit line is out: the core's last callbacks while it stops stay silent. */
static bool events_closed;

/* One event line, written whole. */
_printf_(1, 2) static void event(const char *fmt, ...) {
        if (events_closed)
                return;
        char line[1024];
        va_list ap;
        va_start(ap, fmt);
        int n = vsnprintf(line, sizeof line - 1, fmt, ap);
        va_end(ap);
        if (n < 0)
                return;
        if ((size_t)n > sizeof line - 2)
                n = sizeof line - 2;
        line[n++] = '\n';
        fwrite(line, 1, (size_t)n, stdout);
        fflush(stdout);
}

/* Drops the "Linphone<Kind>" prefix of liblinphone's enum names: "StreamsRunning", "Ok". */
static const char *short_name(const char *name, const char *prefix) {
        size_t n = strlen(prefix);
        return name && strncmp(name, prefix, n) == 0 ? name + n : name ? name : "?";
}

static void on_stop_signal(int sig) {
        stop_requested = 1;
}

static void on_alarm(int sig) {
        static const char line[] = "event=timeout hard=1\n";
        ssize_t r = write(STDOUT_FILENO, line, sizeof line - 1);
        (void)r;
        _exit(EXIT_TIMEOUT);
}

static void on_log(LinphoneLoggingService *svc, const char *domain, LinphoneLogLevel level,
                   const char *message) {
        const char *tag = level == LinphoneLogLevelError     ? "error"
                          : level == LinphoneLogLevelWarning ? "warning"
                          : level == LinphoneLogLevelFatal   ? "fatal"
                                                             : "debug";
        fprintf(stderr, "lp %s %s: %s\n", tag, domain ? domain : "-", message);
}

static void snapshot_stats(struct ua *ua) {
        if (!ua->call)
                return;
        LinphoneCallStats *stats = linphone_call_get_audio_stats(ua->call);
        if (!stats)
                return;
        const rtp_stats_t *rtp = linphone_call_stats_get_rtp_stats(stats);
        if (rtp) {
                /* Counters only grow; a stream torn down reports zeros, keep the last values. */
                if (rtp->packet_sent > ua->rtp_sent)
                        ua->rtp_sent = rtp->packet_sent;
                if (rtp->packet_recv > ua->rtp_received)
                        ua->rtp_received = rtp->packet_recv;
        }
        linphone_call_stats_unref(stats);
}

static void print_stats(struct ua *ua) {
        if (ua->stats_printed || !ua->call_running)
                return;
        ua->stats_printed = true;
        event("event=rtp-stats sent=%" PRIu64 " received=%" PRIu64, ua->rtp_sent, ua->rtp_received);
}

static void on_registration(LinphoneCore *core, LinphoneAccount *account,
                            LinphoneRegistrationState state, const char *message) {
        struct ua *ua = linphone_core_cbs_get_user_data(linphone_core_get_current_callbacks(core));
        const char *name =
                short_name(linphone_registration_state_to_string(state), "LinphoneRegistration");
        switch (state) {
        case LinphoneRegistrationOk:
                if (!ua->registered)
                        event("event=registered identity=%s", ua->o.identity);
                ua->registered = true;
                break;
        case LinphoneRegistrationCleared:
                if (ua->registered && !ua->unregistered)
                        event("event=unregistered identity=%s", ua->o.identity);
                ua->unregistered = true;
                break;
        case LinphoneRegistrationFailed: {
                const LinphoneErrorInfo *ei = linphone_account_get_error_info(account);
                event("event=registration-failed reason=\"%s\" code=%d message=\"%s\"",
                      linphone_reason_to_string(linphone_account_get_error(account)),
                      ei ? linphone_error_info_get_protocol_code(ei) : 0, message ? message : "");
                ua->registration_failed = true;
                break;
        }
        default:
                event("event=registration state=%s", name);
        }
}

/* Presence states by name: "online" is an open status without activity. */
static const struct {
        const char *name;
        LinphonePresenceActivityType type;
} activities[] = {
        {"away", LinphonePresenceActivityAway},
        {"busy", LinphonePresenceActivityBusy},
        {"on-the-phone", LinphonePresenceActivityOnThePhone},
        {"meeting", LinphonePresenceActivityMeeting},
};

static const char *activity_name(LinphonePresenceActivityType type) {
        for (size_t i = 0; i < ELEMENTSOF(activities); i++)
                if (activities[i].type == type)
                        return activities[i].name;
        return "other";
}

static bool state_known(const char *name) {
        if (streq(name, "online"))
                return true;
        for (size_t i = 0; i < ELEMENTSOF(activities); i++)
                if (streq(activities[i].name, name))
                        return true;
        return false;
}

/* The state of a presence model as one of our names (or "offline", "other"). */
static const char *model_state(const LinphonePresenceModel *model) {
        if (!model)
                return "offline";
        LinphonePresenceActivity *a = linphone_presence_model_get_activity(model);
        if (a)
                return activity_name(linphone_presence_activity_get_type(a));
        return linphone_presence_model_get_basic_status(model) == LinphonePresenceBasicStatusOpen
                       ? "online"
                       : "offline";
}

static void on_message_received(LinphoneCore *core, LinphoneChatRoom *room,
                                LinphoneChatMessage *msg) {
        struct ua *ua = linphone_core_cbs_get_user_data(linphone_core_get_current_callbacks(core));
        const LinphoneAddress *from = linphone_chat_message_get_from_address(msg);
        char *from_text = from ? linphone_address_as_string_uri_only(from) : NULL;
        const char *text = linphone_chat_message_get_utf8_text(msg);
        ua->messages_received++;
        event("event=message-received n=%d from=%s text=\"%s\"", ua->messages_received,
              from_text ? from_text : "?", text ? text : "");
        bctbx_free(from_text);
}

/* Sends --message to --message-to in a basic (SIP MESSAGE) chat room. */
static void send_message(struct ua *ua) {
        LinphoneChatRoomParams *params = linphone_core_create_default_chat_room_params(ua->core);
        linphone_chat_room_params_set_backend(params, LinphoneChatRoomBackendBasic);
        linphone_chat_room_params_enable_group(params, FALSE);
        linphone_chat_room_params_enable_encryption(params, FALSE);
        LinphoneAddress *to = linphone_core_create_address(ua->core, ua->o.message_to);
        const LinphoneAddress *local =
                linphone_account_params_get_identity_address(linphone_account_get_params(ua->account));
        bctbx_list_t *participants = to ? bctbx_list_append(NULL, to) : NULL;
        LinphoneChatRoom *room =
                to ? linphone_core_create_chat_room_6(ua->core, params, local, participants) : NULL;
        bctbx_list_free(participants);
        if (to)
                linphone_address_unref(to);
        linphone_chat_room_params_unref(params);
        if (!room) {
                event("event=message-failed reason=no-chat-room");
                ua->message_done = ua->message_failed = true;
                return;
        }
        ua->sent = linphone_chat_room_create_message_from_utf8(room, ua->o.message);
        linphone_chat_message_send(ua->sent);
        event("event=message-sent to=%s", ua->o.message_to);
}

static void check_message(struct ua *ua) {
        if (!ua->sent || ua->message_done)
                return;
        LinphoneChatMessageState st = linphone_chat_message_get_state(ua->sent);
        if (st == LinphoneChatMessageStateDelivered || st == LinphoneChatMessageStateDeliveredToUser ||
            st == LinphoneChatMessageStateDisplayed) {
                event("event=message-delivered");
                ua->message_done = true;
        } else if (st == LinphoneChatMessageStateNotDelivered) {
                event("event=message-failed reason=not-delivered");
                ua->message_done = ua->message_failed = true;
        }
}

static void on_presence_received(LinphoneCore *core, LinphoneFriend *fr) {
        struct ua *ua = linphone_core_cbs_get_user_data(linphone_core_get_current_callbacks(core));
        const LinphonePresenceModel *model = linphone_friend_get_presence_model(fr);
        const char *state = model_state(model);
        const LinphoneAddress *addr = linphone_friend_get_address(fr);
        char *uri = addr ? linphone_address_as_string_uri_only(addr) : NULL;
        int caps = linphone_friend_get_capabilities(fr);
        event("event=presence-received uri=%s state=%s capabilities=%s%s%s%s "
              "groupchat-version=%.1f",
              uri ? uri : "?", state, caps & LinphoneFriendCapabilityGroupChat ? "groupchat," : "",
              caps & LinphoneFriendCapabilityLimeX3dh ? "lime," : "",
              caps & LinphoneFriendCapabilityEphemeralMessages ? "ephemeral," : "",
              caps ? "" : "none",
              (double)linphone_friend_get_capability_version(fr,
                                                             LinphoneFriendCapabilityGroupChat));
        if (uri)
                ortp_free(uri);
        if (ua->expect_seen < ua->o.n_expect && streq(state, ua->o.expect[ua->expect_seen]))
                ua->expect_seen++;
}

/* Publishes the next state of --presence when it is due. */
static void publish_presence(struct ua *ua, int64_t now) {
        if (ua->presence_next >= ua->o.n_presence || now < ua->presence_due_ms)
                return;
        const char *name = ua->o.presence[ua->presence_next++];
        LinphonePresenceModel *model = NULL;
        if (streq(name, "online")) {
                model = linphone_presence_model_new();
                linphone_presence_model_set_basic_status(model, LinphonePresenceBasicStatusOpen);
        } else {
                for (size_t i = 0; i < ELEMENTSOF(activities); i++)
                        if (streq(activities[i].name, name))
                                model = linphone_presence_model_new_with_activity(
                                        activities[i].type, NULL);
        }
        if (!model)
                return;
        linphone_core_set_presence_model(ua->core, model);
        linphone_presence_model_unref(model);
        event("event=presence-published state=%s", name);
        ua->presence_due_ms = now + (int64_t)ua->o.presence_interval_s * 1000;
}

/* Subscribes to --watch as a friend of the default list. */
static int watch_friend(struct ua *ua) {
        ua->friend = linphone_core_create_friend_with_address(ua->core, ua->o.watch_uri);
        if (!ua->friend) {
                fprintf(stderr, "lp-ua: invalid --watch '%s'\n", ua->o.watch_uri);
                return -EINVAL;
        }
        linphone_friend_enable_subscribes(ua->friend, TRUE);
        linphone_friend_set_inc_subscribe_policy(ua->friend, LinphoneSPAccept);
        if (ua->o.rls_uri) {
                LinphoneAddress *rls = linphone_core_create_address(ua->core, ua->o.rls_uri);
                if (!rls) {
                        fprintf(stderr, "lp-ua: invalid --rls '%s'\n", ua->o.rls_uri);
                        return -EINVAL;
                }
                ua->list = linphone_core_create_friend_list(ua->core);
                linphone_friend_list_set_display_name(ua->list, "watched");
                linphone_friend_list_set_rls_address(ua->list, rls);
                linphone_address_unref(rls);
                linphone_core_add_friend_list(ua->core, ua->list);
                linphone_friend_list_add_friend(ua->list, ua->friend);
                linphone_friend_list_enable_subscriptions(ua->list, TRUE);
        } else {
                linphone_friend_list_add_friend(linphone_core_get_default_friend_list(ua->core),
                                                ua->friend);
        }
        linphone_core_enable_friend_list_subscription(ua->core, TRUE);
        event("event=watching uri=%s%s%s", ua->o.watch_uri, ua->o.rls_uri ? " rls=" : "",
              ua->o.rls_uri ? ua->o.rls_uri : "");
        return 0;
}

/* "a,b,c" into names (the string is modified); false when a name is unknown or too many. */
static bool parse_states(char *list, char **names, size_t max, size_t *n) {
        *n = 0;
        for (char *save = NULL, *t = strtok_r(list, ",", &save); t;
             t = strtok_r(NULL, ",", &save)) {
                if (*n >= max || !state_known(t))
                        return false;
                names[(*n)++] = t;
        }
        return *n > 0;
}

static void on_call_state(LinphoneCore *core, LinphoneCall *call, LinphoneCallState state,
                          const char *message) {
        struct ua *ua = linphone_core_cbs_get_user_data(linphone_core_get_current_callbacks(core));
        const char *name = short_name(linphone_call_state_to_string(state), "LinphoneCall");

        if (state == LinphoneCallIncomingReceived) {
                if (!ua->o.answer || ua->call) {
                        event("event=call-declined reason=busy");
                        linphone_call_decline(call, LinphoneReasonBusy);
                        return;
                }
                ua->call = linphone_call_ref(call);
                ua->accept_pending = true;
        }
        if (call != ua->call)
                return;

        if (state == LinphoneCallError || state == LinphoneCallEnd) {
                const LinphoneErrorInfo *ei = linphone_call_get_error_info(call);
                event("event=call-state state=%s reason=\"%s\" code=%d", name,
                      linphone_reason_to_string(linphone_call_get_reason(call)),
                      ei ? linphone_error_info_get_protocol_code(ei) : 0);
        } else {
                event("event=call-state state=%s", name);
        }

        switch (state) {
        case LinphoneCallStreamsRunning:
                if (!ua->call_running)
                        ua->running_since_ms = now_ms();
                ua->call_running = true;
                break;
        case LinphoneCallError:
                ua->call_error = true;
                /* fall through */
        case LinphoneCallEnd:
        case LinphoneCallReleased:
                if (!ua->call_ended) {
                        snapshot_stats(ua);
                        print_stats(ua);
                        event("event=call-end result=%s", ua->call_error     ? "error"
                                                          : ua->call_running ? "ok"
                                                                             : "not-connected");
                }
                ua->call_ended = true;
                break;
        default:
                break;
        }
}

static void usage(FILE *f) {
        fputs("Usage: lp-ua --identity sip:user@domain --proxy URI [options]\n"
              "  --identity URI     address of record to register\n"
              "  --proxy URI        registrar and outbound proxy, e.g.\n"
              "                     sip:127.0.0.1:5060;transport=udp or sips:127.0.0.1:5061\n"
              "  --expires N        registration expiry in seconds (default 60)\n"
              "  --ca-file PATH     trusted root CAs for TLS (the server certificate is verified)\n"
              "  --sip-port N       local UDP/TCP SIP port, 0 = random (default 0); with a TLS\n"
              "                     proxy, TLS is client-only and the option is ignored\n"
              "  --rtp-port N       local RTP port, 0 = random (default 0)\n"
              "  --call URI         once registered, call URI; hang up after --duration\n"
              "                     seconds of established call\n"
              "  --duration N       seconds of established call before hanging up (default 3)\n"
              "  --answer           answer one incoming call, exit when it ends\n"
              "  --max-time N       give up after N seconds, exit status 3 (default 30)\n"
              "  --presence LIST    publish these states in turn (online, away, busy,\n"
              "                     on-the-phone, meeting), comma separated\n"
              "  --presence-interval N  seconds between two of them (default 2)\n"
              "  --watch URI        subscribe to the presence of URI (a friend)\n"
              "  --rls URI          watch through a friend list whose RLS address is URI\n"
              "  --specs LIST       capabilities to register with (+org.linphone.specs),\n"
              "                     e.g. groupchat/1.1,lime, instead of liblinphone's own\n"
              "                     (the account gets a conference factory URI, never used)\n"
              "  --expect LIST      goal: see the watched friend in these states, in order\n"
              "  --message-to URI   with --message TEXT: goal: send one instant message, and\n"
              "                     see it accepted (a 2xx, 202 included)\n"
              "  --expect-messages N  goal: receive N instant messages\n"
              "  --verbose          liblinphone's debug log on stderr\n"
              "  --password PW      answer digest challenges as the identity's user with PW\n"
              "  --pn-provider P --pn-prid TOKENS --pn-param PARAM\n"
              "                     register with these push parameters (liblinphone's push\n"
              "                     notification configuration of the account)\n"
              "  --contact-params S more contact URI parameters (\"a=b;c=d\")\n"
              "Without --call or --answer: stay registered until SIGTERM, then unregister.\n"
              "Events go to stdout, one per line: event=NAME key=value...\n",
              f);
}

static int parse_int(const char *s, int min, int max, int *ret) {
        char *end;
        errno = 0;
        long v = strtol(s, &end, 10);
        if (errno || end == s || *end || v < min || v > max)
                return -EINVAL;
        *ret = (int)v;
        return 0;
}

static int parse_options(int argc, char **argv, struct ua_options *o) {
        enum {
                OPT_IDENTITY = 256,
                OPT_PROXY,
                OPT_EXPIRES,
                OPT_CA_FILE,
                OPT_SIP_PORT,
                OPT_RTP_PORT,
                OPT_CALL,
                OPT_DURATION,
                OPT_ANSWER,
                OPT_MAX_TIME,
                OPT_VERBOSE,
                OPT_HELP,
                OPT_PRESENCE,
                OPT_PRESENCE_INTERVAL,
                OPT_WATCH,
                OPT_RLS,
                OPT_EXPECT,
                OPT_MESSAGE_TO,
                OPT_MESSAGE,
                OPT_EXPECT_MESSAGES,
                OPT_PASSWORD,
                OPT_SPECS,
                OPT_PN_PROVIDER,
                OPT_PN_PRID,
                OPT_PN_PARAM,
                OPT_CONTACT_PARAMS,
        };
        static const struct option options[] = {
                {"identity", required_argument, NULL, OPT_IDENTITY},
                {"proxy", required_argument, NULL, OPT_PROXY},
                {"expires", required_argument, NULL, OPT_EXPIRES},
                {"ca-file", required_argument, NULL, OPT_CA_FILE},
                {"sip-port", required_argument, NULL, OPT_SIP_PORT},
                {"rtp-port", required_argument, NULL, OPT_RTP_PORT},
                {"call", required_argument, NULL, OPT_CALL},
                {"duration", required_argument, NULL, OPT_DURATION},
                {"answer", no_argument, NULL, OPT_ANSWER},
                {"max-time", required_argument, NULL, OPT_MAX_TIME},
                {"verbose", no_argument, NULL, OPT_VERBOSE},
                {"help", no_argument, NULL, OPT_HELP},
                {"presence", required_argument, NULL, OPT_PRESENCE},
                {"presence-interval", required_argument, NULL, OPT_PRESENCE_INTERVAL},
                {"watch", required_argument, NULL, OPT_WATCH},
                {"rls", required_argument, NULL, OPT_RLS},
                {"expect", required_argument, NULL, OPT_EXPECT},
                {"message-to", required_argument, NULL, OPT_MESSAGE_TO},
                {"message", required_argument, NULL, OPT_MESSAGE},
                {"expect-messages", required_argument, NULL, OPT_EXPECT_MESSAGES},
                {"password", required_argument, NULL, OPT_PASSWORD},
                {"specs", required_argument, NULL, OPT_SPECS},
                {"pn-provider", required_argument, NULL, OPT_PN_PROVIDER},
                {"pn-prid", required_argument, NULL, OPT_PN_PRID},
                {"pn-param", required_argument, NULL, OPT_PN_PARAM},
                {"contact-params", required_argument, NULL, OPT_CONTACT_PARAMS},
                {0},
        };
        *o = (struct ua_options){
                .expires = 60, .duration_s = 3, .max_time_s = 30, .presence_interval_s = 2};
        int c, r = 0;
        while ((c = getopt_long(argc, argv, "", options, NULL)) >= 0) {
                switch (c) {
                case OPT_IDENTITY:
                        o->identity = optarg;
                        break;
                case OPT_PROXY:
                        o->proxy = optarg;
                        break;
                case OPT_EXPIRES:
                        r = parse_int(optarg, 1, 86400, &o->expires);
                        break;
                case OPT_CA_FILE:
                        o->ca_file = optarg;
                        break;
                case OPT_SIP_PORT:
                        r = parse_int(optarg, 0, 65535, &o->sip_port);
                        break;
                case OPT_RTP_PORT:
                        r = parse_int(optarg, 0, 65535, &o->rtp_port);
                        break;
                case OPT_CALL:
                        o->call_uri = optarg;
                        break;
                case OPT_DURATION:
                        r = parse_int(optarg, 0, 3600, &o->duration_s);
                        break;
                case OPT_ANSWER:
                        o->answer = true;
                        break;
                case OPT_MAX_TIME:
                        r = parse_int(optarg, 1, 3600, &o->max_time_s);
                        break;
                case OPT_VERBOSE:
                        o->verbose = true;
                        break;
                case OPT_PASSWORD:
                        o->password = optarg;
                        break;
                case OPT_PN_PROVIDER:
                        o->pn_provider = optarg;
                        break;
                case OPT_PN_PRID:
                        o->pn_prid = optarg;
                        break;
                case OPT_PN_PARAM:
                        o->pn_param = optarg;
                        break;
                case OPT_CONTACT_PARAMS:
                        o->contact_params = optarg;
                        break;
                case OPT_HELP:
                        usage(stdout);
                        exit(EXIT_SUCCESS);
                case OPT_PRESENCE:
                        if (!parse_states(optarg, o->presence, ELEMENTSOF(o->presence),
                                          &o->n_presence))
                                r = -EINVAL;
                        break;
                case OPT_PRESENCE_INTERVAL:
                        r = parse_int(optarg, 1, 3600, &o->presence_interval_s);
                        break;
                case OPT_MESSAGE_TO:
                        o->message_to = optarg;
                        break;
                case OPT_MESSAGE:
                        o->message = optarg;
                        break;
                case OPT_EXPECT_MESSAGES:
                        r = parse_int(optarg, 1, 1000, &o->expect_messages);
                        break;
                case OPT_WATCH:
                        o->watch_uri = optarg;
                        break;
                case OPT_RLS:
                        o->rls_uri = optarg;
                        break;
                case OPT_SPECS:
                        o->specs = optarg;
                        break;
                case OPT_EXPECT:
                        if (!parse_states(optarg, o->expect, ELEMENTSOF(o->expect), &o->n_expect))
                                r = -EINVAL;
                        break;
                default:
                        return -EINVAL;
                }
                if (r < 0) {
                        fprintf(stderr, "lp-ua: invalid value '%s' for --%s\n", optarg,
                                options[c - OPT_IDENTITY].name);
                        return r;
                }
        }
        if (optind < argc) {
                fprintf(stderr, "lp-ua: unexpected argument '%s'\n", argv[optind]);
                return -EINVAL;
        }
        if (!o->identity || !o->proxy) {
                fprintf(stderr, "lp-ua: --identity and --proxy are required\n");
                return -EINVAL;
        }
        if (o->call_uri && o->answer) {
                fprintf(stderr, "lp-ua: --call and --answer exclude each other\n");
                return -EINVAL;
        }
        if (!o->message != !o->message_to) {
                fprintf(stderr, "lp-ua: --message and --message-to go together\n");
                return -EINVAL;
        }
        if (o->n_expect && !o->watch_uri) {
                fprintf(stderr, "lp-ua: --expect needs --watch\n");
                return -EINVAL;
        }
        if (!o->pn_provider != !o->pn_prid || !o->pn_provider != !o->pn_param) {
                fprintf(stderr, "lp-ua: --pn-provider, --pn-prid and --pn-param go together\n");
                return -EINVAL;
        }
        if (o->ca_file && access(o->ca_file, R_OK) < 0) {
                fprintf(stderr, "lp-ua: cannot read --ca-file '%s': %s\n", o->ca_file,
                        strerror(errno));
                return -EINVAL;
        }
        return 0;
}

static int rm_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw) {
        return remove(path);
}

/* 2 s of a 440 Hz tone, 8 kHz 16-bit mono WAV: what the UA "says" into the call. */
static int write_tone(const char *path) {
        enum { RATE = 8000, SECONDS = 2, SAMPLES = RATE * SECONDS };
        FILE *f = fopen(path, "we");
        if (!f)
                return -errno;
        uint32_t data_len = SAMPLES * 2;
        uint8_t hdr[44];
        memcpy(hdr, "RIFF", 4);
        uint32_t riff_len = 36 + data_len;
        memcpy(hdr + 4, &riff_len, 4);
        memcpy(hdr + 8, "WAVEfmt ", 8);
        uint32_t fmt_len = 16, rate = RATE, byte_rate = RATE * 2;
        uint16_t format = 1, channels = 1, block = 2, bits = 16;
        memcpy(hdr + 16, &fmt_len, 4);
        memcpy(hdr + 20, &format, 2);
        memcpy(hdr + 22, &channels, 2);
        memcpy(hdr + 24, &rate, 4);
        memcpy(hdr + 28, &byte_rate, 4);
        memcpy(hdr + 32, &block, 2);
        memcpy(hdr + 34, &bits, 2);
        memcpy(hdr + 36, "data", 4);
        memcpy(hdr + 40, &data_len, 4);
        fwrite(hdr, 1, sizeof hdr, f);
        for (int i = 0; i < SAMPLES; i++) {
                int16_t s = (int16_t)(8000.0 * sin(2.0 * M_PI * 440.0 * i / RATE));
                fwrite(&s, sizeof s, 1, f);
        }
        return fclose(f) == 0 ? 0 : -errno;
}

static char *dir_path(const struct ua *ua, const char *name) {
        char *p;
        return asprintf(&p, "%s/%s", ua->dir, name) < 0 ? NULL : p;
}

/* The private directory, and the environment pointed at it before liblinphone reads it. */
static int make_dir(struct ua *ua) {
        const char *base = getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp";
        snprintf(ua->dir, sizeof ua->dir, "%s/lp-ua-XXXXXX", base);
        if (!mkdtemp(ua->dir)) {
                ua->dir[0] = 0;
                return -errno;
        }
        setenv("HOME", ua->dir, 1);
        setenv("XDG_CONFIG_HOME", ua->dir, 1);
        setenv("XDG_DATA_HOME", ua->dir, 1);
        setenv("XDG_CACHE_HOME", ua->dir, 1);
        setenv("XDG_RUNTIME_DIR", ua->dir, 1);
        /* No sound server: PulseAudio would be probed at start otherwise (fails fast, but
         * noisily, and would use a real server if one ran on the machine). */
        setenv("PULSE_SERVER", "unix:/nonexistent", 1);
        return 0;
}

static int create_core(struct ua *ua) {
        LinphoneFactory *factory = linphone_factory_get();
        LinphoneAddress *proxy = linphone_factory_create_address(factory, ua->o.proxy);
        if (!proxy) {
                fprintf(stderr, "lp-ua: invalid --proxy '%s'\n", ua->o.proxy);
                return -EINVAL;
        }
        ua->tls = linphone_address_get_secure(proxy) ||
                  linphone_address_get_transport(proxy) == LinphoneTransportTls;
        linphone_address_unref(proxy);
        /* liblinphone appends file names to these without a separator. */
        _cleanup_free_ char *dir = dir_path(ua, "");
        if (!dir)
                return -ENOMEM;
        linphone_factory_set_config_dir(factory, dir);
        linphone_factory_set_data_dir(factory, dir);
        linphone_factory_set_download_dir(factory, dir);

        _cleanup_free_ char *rc = dir_path(ua, "linphonerc");
        if (!rc)
                return -ENOMEM;
        LinphoneConfig *config = linphone_factory_create_config(factory, rc);
        if (!config)
                return -EIO;
        /* Loopback only: SIP and media bound and advertised on 127.0.0.1, on the requested
         * ports from the start (the core binds while it is created, before the default 5060
         * could be taken). With a TLS proxy, TLS is client-only (see configure_core()), which
         * needs the wildcard bind address; liblinphone then insists on a UDP socket too, which
         * gets a random port and no traffic. */
        int port = ua->o.sip_port ? ua->o.sip_port : LC_SIP_TRANSPORT_RANDOM;
        if (!ua->tls)
                linphone_config_set_string(config, "sip", "bind_address", "127.0.0.1");
        linphone_config_set_int(config, "sip", "use_ipv6", 0);
        linphone_config_set_int(config, "sip", "sip_port",
                                ua->tls ? LC_SIP_TRANSPORT_RANDOM : port);
        linphone_config_set_int(config, "sip", "sip_tcp_port",
                                ua->tls ? LC_SIP_TRANSPORT_DISABLED : port);
        linphone_config_set_int(config, "sip", "sip_tls_port", LC_SIP_TRANSPORT_DISABLED);
        linphone_config_set_string(config, "rtp", "bind_address", "127.0.0.1");
        /* No video from the start (no camera probing at all). */
        linphone_config_set_int(config, "video", "capture", 0);
        linphone_config_set_int(config, "video", "display", 0);
        linphone_config_set_int(config, "video", "automatically_initiate", 0);
        linphone_config_set_int(config, "video", "automatically_accept", 0);

        LinphoneCoreCbs *cbs = linphone_factory_create_core_cbs(factory);
        linphone_core_cbs_set_user_data(cbs, ua);
        linphone_core_cbs_set_account_registration_state_changed(cbs, on_registration);
        linphone_core_cbs_set_call_state_changed(cbs, on_call_state);
        linphone_core_cbs_set_notify_presence_received(cbs, on_presence_received);
        linphone_core_cbs_set_message_received(cbs, on_message_received);

        ua->core = linphone_factory_create_core_with_config_3(factory, config, NULL);
        linphone_config_unref(config);
        if (!ua->core) {
                linphone_core_cbs_unref(cbs);
                return -EIO;
        }
        linphone_core_add_callbacks(ua->core, cbs);
        linphone_core_cbs_unref(cbs);
        return 0;
}

static int configure_core(struct ua *ua) {
        LinphoneCore *core = ua->core;

        linphone_core_enable_ipv6(core, FALSE);
        linphone_core_enable_video_capture(core, FALSE);
        linphone_core_enable_video_display(core, FALSE);
        linphone_core_enable_echo_cancellation(core, FALSE);
        linphone_core_set_ring(core, NULL);
        linphone_core_set_ringback(core, NULL);
        linphone_core_set_use_files(core, TRUE);
        _cleanup_free_ char *tone = dir_path(ua, "tone.wav"), *rec = dir_path(ua, "received.wav");
        int r = tone && rec ? write_tone(tone) : -ENOMEM;
        if (r < 0)
                return r;
        linphone_core_set_play_file(core, tone);
        linphone_core_set_record_file(core, rec);

        /* TLS as a client only: no certificate of our own to serve, and the Contact carries
         * the connection's own address so the proxy reaches us over it. "Don't bind" works
         * through this call, not as a config value, and only without a bind address (belle-sip
         * otherwise puts port -2 in the Via and Contact). */
        if (ua->tls) {
                LinphoneTransports *tr = linphone_core_get_transports(core);
                if (!tr)
                        return -ENOMEM;
                linphone_transports_set_tls_port(tr, LC_SIP_TRANSPORT_DONTBIND);
                r = linphone_core_set_transports(core, tr);
                linphone_transports_unref(tr);
                if (r < 0)
                        return -EINVAL;
        }
        linphone_core_set_audio_port(core, ua->o.rtp_port ? ua->o.rtp_port : -1);

        if (ua->o.specs) {
                linphone_core_set_linphone_specs_list(core, NULL);
                for (char *save = NULL, *t = strtok_r(ua->o.specs, ",", &save); t;
                     t = strtok_r(NULL, ",", &save))
                        linphone_core_add_linphone_spec(core, t);
        }

        if (ua->o.ca_file) {
                linphone_core_set_root_ca(core, ua->o.ca_file);
                linphone_core_verify_server_certificates(core, TRUE);
                linphone_core_verify_server_cn(core, TRUE);
        }
        return 0;
}

static int add_account(struct ua *ua) {
        LinphoneCore *core = ua->core;
        LinphoneAddress *identity = linphone_core_create_address(core, ua->o.identity);
        if (!identity) {
                fprintf(stderr, "lp-ua: invalid --identity '%s'\n", ua->o.identity);
                return -EINVAL;
        }
        LinphoneAccountParams *params = linphone_core_create_account_params(core);
        int r = linphone_account_params_set_identity_address(params, identity);
        linphone_address_unref(identity);
        if (r < 0) {
                fprintf(stderr, "lp-ua: invalid --identity '%s'\n", ua->o.identity);
                goto out;
        }
        r = linphone_account_params_set_server_addr(params, ua->o.proxy);
        if (r < 0) {
                fprintf(stderr, "lp-ua: invalid --proxy '%s'\n", ua->o.proxy);
                goto out;
        }
        /* Every request, calls included, goes through the proxy. */
        linphone_account_params_enable_outbound_proxy(params, TRUE);
        linphone_account_params_set_expires(params, ua->o.expires);
        linphone_account_params_enable_register(params, TRUE);
        linphone_account_params_enable_publish(params, ua->o.n_presence > 0);
        /* liblinphone registers the groupchat and ephemeral specs only for an account with a
         * conference factory; --specs asks for them, so give it one (never used here). */
        if (ua->o.specs)
                linphone_account_params_set_conference_factory_uri(
                        params, "sip:conference-factory@invalid.test");
        if (ua->o.contact_params)
                linphone_account_params_set_contact_uri_parameters(params, ua->o.contact_params);
        if (ua->o.pn_provider) {
                LinphonePushNotificationConfig *pn = linphone_push_notification_config_new();
                linphone_push_notification_config_set_provider(pn, ua->o.pn_provider);
                linphone_push_notification_config_set_prid(pn, ua->o.pn_prid);
                linphone_push_notification_config_set_param(pn, ua->o.pn_param);
                linphone_account_params_set_push_notification_config(params, pn);
                linphone_push_notification_config_unref(pn);
                linphone_account_params_set_push_notification_allowed(params, TRUE);
                linphone_account_params_set_remote_push_notification_allowed(params, TRUE);
                linphone_core_set_push_notification_enabled(core, TRUE);
        }
        ua->account = linphone_core_create_account(core, params);
        if (!ua->account || linphone_core_add_account(core, ua->account) < 0) {
                fprintf(stderr, "lp-ua: cannot add the account\n");
                r = -EINVAL;
                goto out;
        }
        linphone_core_set_default_account(core, ua->account);
        if (ua->o.password) {
                const LinphoneAddress *id =
                        linphone_account_params_get_identity_address(params);
                LinphoneAuthInfo *info = linphone_factory_create_auth_info(
                        linphone_factory_get(), linphone_address_get_username(id), NULL,
                        ua->o.password, NULL, NULL, linphone_address_get_domain(id));
                if (!info) {
                        fprintf(stderr, "lp-ua: cannot make the credentials\n");
                        r = -EINVAL;
                        goto out;
                }
                linphone_core_add_auth_info(core, info);
                linphone_auth_info_unref(info);
        }
        r = 0;
out:
        linphone_account_params_unref(params);
        return r < 0 ? -EINVAL : 0;
}

static void place_call(struct ua *ua) {
        LinphoneAddress *to = linphone_core_create_address(ua->core, ua->o.call_uri);
        ua->call_placed = true;
        if (!to) {
                event("event=call-end result=error reason=bad-uri");
                ua->call_error = ua->call_ended = true;
                return;
        }
        LinphoneCallParams *params = linphone_core_create_call_params(ua->core, NULL);
        linphone_call_params_enable_video(params, FALSE);
        event("event=calling to=%s", ua->o.call_uri);
        LinphoneCall *call = linphone_core_invite_address_with_params(ua->core, to, params);
        linphone_call_params_unref(params);
        linphone_address_unref(to);
        if (!call) {
                event("event=call-end result=error reason=invite-failed");
                ua->call_error = ua->call_ended = true;
                return;
        }
        if (!ua->call)
                ua->call = linphone_call_ref(call);
}

static void accept_call(struct ua *ua) {
        ua->accept_pending = false;
        LinphoneCallParams *params = linphone_core_create_call_params(ua->core, ua->call);
        linphone_call_params_enable_video(params, FALSE);
        if (linphone_call_accept_with_params(ua->call, params) < 0)
                event("event=answer-failed");
        else
                event("event=answered");
        linphone_call_params_unref(params);
}

static void hang_up(struct ua *ua) {
        ua->hangup_sent = true;
        snapshot_stats(ua);
        print_stats(ua);
        event("event=hangup");
        linphone_call_terminate(ua->call);
}

/* Iterates until done() or the deadline; false on timeout. */
static bool iterate_until(struct ua *ua, bool (*done)(struct ua *), int64_t deadline) {
        while (!done(ua)) {
                if (now_ms() >= deadline)
                        return false;
                linphone_core_iterate(ua->core);
                usleep(ITERATE_MS * 1000);
        }
        return true;
}

static bool is_unregistered(struct ua *ua) {
        return ua->unregistered || ua->registration_failed;
}

static bool is_call_gone(struct ua *ua) {
        return !ua->call || ua->call_ended;
}

/* What the mode asks for is done (true), or can no longer be (also true, *failed set). */
static bool goal_reached(struct ua *ua, bool *failed) {
        if (ua->registration_failed && !ua->registered)
                return *failed = true;
        if (!ua->registered)
                return false;
        if (ua->o.call_uri || ua->o.answer) {
                if (!ua->call_ended)
                        return false;
                *failed = ua->call_error || !ua->call_running || ua->rtp_sent == 0 ||
                          ua->rtp_received == 0;
                return true;
        }
        if (ua->o.n_expect > 0) {
                if (ua->expect_seen < ua->o.n_expect)
                        return false;
                event("event=presence-expected-seen count=%zu", ua->o.n_expect);
                return true;
        }
        if (ua->o.message || ua->o.expect_messages > 0) {
                if (ua->o.message && !ua->message_done)
                        return false;
                if (ua->messages_received < ua->o.expect_messages)
                        return false;
                *failed = ua->message_failed;
                return true;
        }
        return stop_requested;
}

static int run(struct ua *ua) {
        int64_t start = now_ms();
        int64_t deadline = start + (int64_t)ua->o.max_time_s * 1000;
        bool failed = false, timed_out = false;

        if (linphone_core_start(ua->core) < 0) {
                event("event=error what=core-start");
                return EXIT_FAILURE;
        }
        event("event=started");

        for (;;) {
                if (goal_reached(ua, &failed))
                        break;
                if (stop_requested) {
                        event("event=stopped registered=%d", ua->registered);
                        failed = true;
                        break;
                }
                int64_t now = now_ms();
                if (now >= deadline) {
                        event("event=timeout registered=%d call-running=%d", ua->registered,
                              ua->call_running);
                        timed_out = true;
                        break;
                }
                if (ua->registered && ua->o.call_uri && !ua->call_placed)
                        place_call(ua);
                if (ua->accept_pending)
                        accept_call(ua);
                if (ua->registered)
                        publish_presence(ua, now);
                if (ua->registered && ua->o.message && !ua->sent && !ua->message_done)
                        send_message(ua);
                check_message(ua);
                if (ua->call && ua->call_running && !ua->call_ended) {
                        if (now - ua->last_stats_ms >= STATS_EVERY_MS) {
                                snapshot_stats(ua);
                                ua->last_stats_ms = now;
                        }
                        if (ua->o.call_uri && !ua->hangup_sent &&
                            now - ua->running_since_ms >= (int64_t)ua->o.duration_s * 1000)
                                hang_up(ua);
                }
                linphone_core_iterate(ua->core);
                usleep(ITERATE_MS * 1000);
        }

        /* Wind down, each step bounded: end a call still up, then unregister. */
        if (ua->call && !ua->call_ended) {
                if (!ua->hangup_sent)
                        hang_up(ua);
                if (!iterate_until(ua, is_call_gone, now_ms() + HANGUP_TIMEOUT_MS))
                        event("event=hangup-timeout");
        }
        if (ua->registered && !ua->unregistered) {
                LinphoneAccountParams *params =
                        linphone_account_params_clone(linphone_account_get_params(ua->account));
                linphone_account_params_enable_register(params, FALSE);
                linphone_account_set_params(ua->account, params);
                linphone_account_params_unref(params);
                if (!iterate_until(ua, is_unregistered, now_ms() + UNREGISTER_TIMEOUT_MS))
                        event("event=unregister-timeout");
        }
        int status = timed_out ? EXIT_TIMEOUT : failed ? EXIT_FAILURE : EXIT_SUCCESS;
        event("event=exit status=%d elapsed-ms=%" PRId64, status, now_ms() - start);
        events_closed = true;
        return status;
}

int main(int argc, char **argv) {
        struct ua ua = {0};
        int status = EXIT_FAILURE, r;

        if (parse_options(argc, argv, &ua.o) < 0) {
                usage(stderr);
                return EXIT_USAGE;
        }
        setvbuf(stdout, NULL, _IOLBF, 0);

        /* Hard backstop: the wind-down phases and core stop get a few seconds past max-time. */
        signal(SIGALRM, on_alarm);
        alarm((unsigned)ua.o.max_time_s + (HANGUP_TIMEOUT_MS + UNREGISTER_TIMEOUT_MS) / 1000 + 5);
        struct sigaction sa = {.sa_handler = on_stop_signal};
        sigemptyset(&sa.sa_mask);
        sigaction(SIGTERM, &sa, NULL);
        sigaction(SIGINT, &sa, NULL);

        r = make_dir(&ua);
        if (r < 0) {
                fprintf(stderr, "lp-ua: cannot create a temporary directory: %s\n", strerror(-r));
                return EXIT_FAILURE;
        }

        LinphoneLoggingService *log = linphone_logging_service_get();
        LinphoneLoggingServiceCbs *log_cbs =
                linphone_factory_create_logging_service_cbs(linphone_factory_get());
        linphone_logging_service_cbs_set_log_message_written(log_cbs, on_log);
        linphone_logging_service_add_callbacks(log, log_cbs);
        linphone_logging_service_cbs_unref(log_cbs);
        linphone_logging_service_set_log_level(log, ua.o.verbose ? LinphoneLogLevelDebug
                                                                 : LinphoneLogLevelWarning);

        /* -EINVAL: a bad --proxy or --identity, already reported. */
        r = create_core(&ua);
        if (r == -EINVAL) {
                status = EXIT_USAGE;
                goto out;
        }
        if (r < 0) {
                fprintf(stderr, "lp-ua: cannot create the liblinphone core: %s\n", strerror(-r));
                goto out;
        }
        r = configure_core(&ua);
        if (r < 0) {
                fprintf(stderr, "lp-ua: cannot configure the core: %s\n", strerror(-r));
                goto out;
        }
        r = add_account(&ua);
        if (r < 0) {
                status = EXIT_USAGE;
                goto out;
        }

        if (ua.o.watch_uri && watch_friend(&ua) < 0) {
                status = EXIT_USAGE;
                goto out;
        }

        status = run(&ua);
out:
        if (ua.friend)
                linphone_friend_unref(ua.friend);
        if (ua.list)
                linphone_friend_list_unref(ua.list);
        if (ua.call)
                linphone_call_unref(ua.call);
        if (ua.sent)
                linphone_chat_message_unref(ua.sent);
        if (ua.account)
                linphone_account_unref(ua.account);
        if (ua.core) {
                linphone_core_stop(ua.core);
                linphone_core_unref(ua.core);
        }
        if (ua.dir[0] && !getenv("LP_UA_KEEP_DIR"))
                nftw(ua.dir, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
        return status;
}
