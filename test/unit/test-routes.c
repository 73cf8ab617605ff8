/* SPDX-License-Identifier: MIT */
/* The Forward routes file (proxy/routes.c) and the SIP variables of filters
 * (proxy/filter-sip.c), against messages parsed from real SIP text by sofia. */
#include <stdio.h>

#include <sofia-sip/msg.h>

#include "filter-sip.h"
#include "filter.h"
#include "macro.h"
#include "routes.h"
#include "testlib.h"

#define CRLF "\r\n"

static const char invite_text[] =
        "INVITE sip:bob@example.org;transport=tcp SIP/2.0" CRLF
        "Via: SIP/2.0/TCP 192.0.2.10:5060;branch=z9hG4bK-1" CRLF
        "Max-Forwards: 70" CRLF
        "From: \"Alice\" <sip:alice@example.com;user=phone>;tag=a1" CRLF
        "To: <sip:bob@example.org>" CRLF
        "Call-ID: call-1@192.0.2.10" CRLF
        "CSeq: 1 INVITE" CRLF
        "Contact: <sip:alice@192.0.2.10:5060;transport=tcp>;expires=60" CRLF
        "User-Agent: Linphone/5.2.0 (belle-sip/5.2.0)" CRLF
        "Content-Type: application/sdp; charset=utf-8" CRLF
        "Content-Length: 4" CRLF
        CRLF
        "v=0" CRLF;

static const char message_text[] =
        "MESSAGE sip:+33123456789@10.0.0.5;user=phone SIP/2.0" CRLF
        "Via: SIP/2.0/UDP 192.0.2.11:5060;branch=z9hG4bK-2" CRLF
        "Max-Forwards: 70" CRLF
        "From: <sip:carol@example.net>;tag=c1" CRLF
        "To: <tel:+33123456789>" CRLF
        "Call-ID: call-2" CRLF
        "CSeq: 7 MESSAGE" CRLF
        "Content-Type: text/plain" CRLF
        "Content-Length: 2" CRLF
        CRLF
        "hi";

static const char register_text[] =
        "REGISTER sip:example.net SIP/2.0" CRLF
        "Via: SIP/2.0/UDP 192.0.2.12:5060;branch=z9hG4bK-3" CRLF
        "Max-Forwards: 70" CRLF
        "From: <sip:dave@example.com>;tag=d1" CRLF
        "To: <sip:dave@example.com>" CRLF
        "Call-ID: call-3" CRLF
        "CSeq: 2 REGISTER" CRLF
        "Contact: *" CRLF
        "Expires: 0" CRLF
        "Content-Length: 0" CRLF
        CRLF;

static const char options_text[] =
        "OPTIONS sip:carol@other.org SIP/2.0" CRLF
        "Via: SIP/2.0/UDP 192.0.2.13:5060;branch=z9hG4bK-4" CRLF
        "Max-Forwards: 70" CRLF
        "From: <sip:erin@other.org>;tag=e1" CRLF
        "To: <sip:carol@other.org>" CRLF
        "Call-ID: call-4" CRLF
        "CSeq: 1 OPTIONS" CRLF
        "Content-Length: 0" CRLF
        CRLF;

static const char response_text[] =
        "SIP/2.0 486 Busy Here" CRLF
        "Via: SIP/2.0/TCP 192.0.2.10:5060;branch=z9hG4bK-1" CRLF
        "From: \"Alice\" <sip:alice@example.com>;tag=a1" CRLF
        "To: <sip:bob@example.org;transport=tcp>;tag=b1" CRLF
        "Call-ID: call-1@192.0.2.10" CRLF
        "CSeq: 1 INVITE" CRLF
        "Server: unit" CRLF
        "Content-Length: 0" CRLF
        CRLF;

static msg_t *parse(const char *text) {
        msg_t *m = msg_make(sip_default_mclass(), 0, text, (ssize_t)strlen(text));
        ck_assert_ptr_nonnull(m);
        sip_t *sip = sip_object(m);
        ck_assert_ptr_nonnull(sip);
        ck_assert_ptr_nonnull(sip->sip_call_id);
        return m;
}

static void msg_destroyp(msg_t **m) {
        msg_destroy(*m);
}
#define _cleanup_msg_ _cleanup_(msg_destroyp)

static const char *var(msg_t *m, const char *name, const char *direction) {
        static struct filter_sip_context ctx;
        ctx = (struct filter_sip_context){.sip = sip_object(m), .direction = direction};
        return filter_sip_get(name, &ctx);
}

#define ck_var(m, name, expected) ck_assert_pstr_eq(var(m, name, NULL), expected)

START_TEST(test_routes_sip_variables_of_a_request) {
        _cleanup_msg_ msg_t *m = parse(invite_text);
        ck_var(m, "is_request", "true");
        ck_var(m, "is_response", "false");
        ck_var(m, "request.method", "INVITE");
        ck_var(m, "request.method-name", "INVITE");
        ck_var(m, "request.uri.user", "bob");
        ck_var(m, "request.uri.domain", "example.org");
        ck_var(m, "request.uri.params", "transport=tcp");
        ck_var(m, "from.uri.user", "alice");
        ck_var(m, "from.uri.domain", "example.com");
        ck_var(m, "from.uri.params", "user=phone");
        ck_var(m, "to.uri.user", "bob");
        ck_var(m, "to.uri.domain", "example.org");
        ck_var(m, "to.uri.params", NULL);
        ck_var(m, "contact.uri.user", "alice");
        ck_var(m, "contact.uri.domain", "192.0.2.10");
        ck_var(m, "contact.uri.params", "transport=tcp");
        ck_var(m, "user-agent", "Linphone/5.2.0 (belle-sip/5.2.0)");
        ck_var(m, "content-type", "application/sdp");
        ck_var(m, "call-id", "call-1@192.0.2.10");
        ck_var(m, "status.code", NULL);
        ck_var(m, "status.phrase", NULL);
        ck_var(m, "direction", NULL);
        ck_assert_str_eq(var(m, "direction", "outgoing"), "outgoing");
        ck_var(m, "no.such.variable", NULL);
        ck_var(m, "request.uri.port", NULL);

        /* call-id.hash: decimal, stable for the Call-ID, same in the response. */
        const char *h = var(m, "call-id.hash", NULL);
        ck_assert_ptr_nonnull(h);
        ck_assert_int_gt(strlen(h), 0);
        ck_assert_uint_eq(strspn(h, "0123456789"), strlen(h));
        _cleanup_free_ char *h1 = strdup(h);
        _cleanup_msg_ msg_t *r = parse(response_text);
        ck_assert_str_eq(var(r, "call-id.hash", NULL), h1);

        /* Every listed name is answered for some message (none is a dead entry). */
        _cleanup_msg_ msg_t *msg = parse(message_text);
        for (const char *const *n = filter_sip_variables; *n; n++) {
                bool some = var(m, *n, "d") || var(r, *n, "d") || var(msg, *n, "d");
                ck_assert_msg(some, "%s never defined", *n);
        }
}
END_TEST

START_TEST(test_routes_sip_variables_of_other_messages) {
        _cleanup_msg_ msg_t *r = parse(response_text);
        ck_var(r, "is_request", "false");
        ck_var(r, "is_response", "true");
        ck_var(r, "status.code", "486");
        ck_var(r, "status.phrase", "Busy Here");
        ck_var(r, "request.method", "INVITE"); /* from CSeq */
        ck_var(r, "request.uri.user", NULL);
        ck_var(r, "request.uri.domain", NULL);
        ck_var(r, "to.uri.domain", "example.org");
        ck_var(r, "to.uri.params", "transport=tcp");
        ck_var(r, "user-agent", NULL);
        ck_var(r, "contact.uri.user", NULL);
        ck_var(r, "content-type", NULL);

        /* tel: To, user=phone Request-URI. */
        _cleanup_msg_ msg_t *m = parse(message_text);
        ck_var(m, "request.method", "MESSAGE");
        ck_var(m, "request.uri.user", "+33123456789");
        ck_var(m, "request.uri.domain", "10.0.0.5");
        ck_var(m, "request.uri.params", "user=phone");
        ck_var(m, "to.uri.domain", NULL);
        ck_var(m, "content-type", "text/plain");
        ck_var(m, "contact.uri.domain", NULL);

        /* Contact: * has no URI parts; no user in the Request-URI. */
        _cleanup_msg_ msg_t *g = parse(register_text);
        ck_var(g, "request.uri.user", NULL);
        ck_var(g, "request.uri.domain", "example.net");
        ck_var(g, "contact.uri.user", NULL);
        ck_var(g, "contact.uri.domain", NULL);

        /* Filters over these messages, with the known names enforced. */
        struct filter *f = NULL;
        struct filter_error e;
        ck_assert_int_eq(filter_sip_compile("is_response && status.code regex '4[0-9][0-9]' && "
                                            "numeric(status.code) && request.method == 'INVITE'",
                                            &f, &e),
                         0);
        ck_assert(filter_sip_eval(f, sip_object(r), NULL));
        ck_assert(!filter_sip_eval(f, sip_object(m), NULL));
        filter_free(f);
        ck_assert_int_eq(filter_sip_compile("direction == 'incoming' && is_request", &f, &e), 0);
        ck_assert(filter_sip_eval(f, sip_object(m), "incoming"));
        ck_assert(!filter_sip_eval(f, sip_object(m), "outgoing"));
        ck_assert(!filter_sip_eval(f, sip_object(m), NULL));
        filter_free(f);
        ck_assert_int_eq(filter_sip_compile("reqest.method == 'INVITE'", &f, &e), -EINVAL);
        ck_assert_str_eq(e.message,
                         "filter: column 1: unknown variable 'reqest.method' (did you mean "
                         "'request.method'?)");
        ck_assert(filter_sip_eval(NULL, sip_object(m), NULL));
}
END_TEST

static const char routes_text[] =
        "# Routes of the unit test\n"
        "<sip:example.org;transport=tls>     request.uri.domain == 'example.org' && "
        "request.method == 'INVITE'\n"
        "\n"
        "\t# an indented comment between rules\n"
        "<sip:10.0.0.2:5070;transport=tcp>   request.uri.params contains 'user=phone'\n"
        "sip:registrar.example.net           request.method == 'REGISTER'\n"
        "        && from.uri.domain in 'example.net example.com'\n"
        "   # a comment inside a rule\n"
        "\t&& !defined(request.uri.user)   \n"
        "<sips:backend.example.org:5061>*\n";

static struct routes *load_text(const char *text) {
        struct routes *r = NULL;
        _cleanup_free_ char *error = NULL;
        _cleanup_free_ char *path = tl_write_file("routes.conf", text);
        int k = routes_load(path, &r, &error);
        ck_assert_msg(k == 0, "routes_load: %d %s", k, strna(error));
        ck_assert_ptr_null(error);
        return r;
}

static const char *match_text(const struct routes *r, const char *text) {
        _cleanup_msg_ msg_t *m = parse(text);
        return routes_match(r, sip_object(m));
}

START_TEST(test_routes_parse_file) {
        _cleanup_(routes_freep) struct routes *r = load_text(routes_text);
        ck_assert_uint_eq(routes_count(r), 4);

        const struct route *rt = routes_get(r, 0);
        ck_assert_str_eq(rt->next_hop, "sip:example.org;transport=tls");
        ck_assert_str_eq(rt->filter_text,
                         "request.uri.domain == 'example.org' && request.method == 'INVITE'");
        ck_assert_uint_eq(rt->line, 2);
        ck_assert_ptr_nonnull(rt->filter);

        rt = routes_get(r, 1);
        ck_assert_str_eq(rt->next_hop, "sip:10.0.0.2:5070;transport=tcp");
        ck_assert_uint_eq(rt->line, 5);

        rt = routes_get(r, 2);
        ck_assert_str_eq(rt->next_hop, "sip:registrar.example.net");
        ck_assert_str_eq(rt->filter_text,
                         "request.method == 'REGISTER' && from.uri.domain in 'example.net "
                         "example.com' && !defined(request.uri.user)");
        ck_assert_uint_eq(rt->line, 6);

        rt = routes_get(r, 3);
        ck_assert_str_eq(rt->next_hop, "sips:backend.example.org:5061");
        ck_assert_str_eq(rt->filter_text, "*");
        ck_assert_ptr_null(rt->filter);
        ck_assert_uint_eq(rt->line, 10);

        ck_assert_ptr_null(routes_get(r, 4));
        ck_assert_uint_eq(routes_count(NULL), 0);
        ck_assert_ptr_null(routes_get(NULL, 0));
}
END_TEST

START_TEST(test_routes_first_match_wins) {
        _cleanup_(routes_freep) struct routes *r = load_text(routes_text);
        ck_assert_str_eq(match_text(r, invite_text), "sip:example.org;transport=tls");
        ck_assert_str_eq(match_text(r, message_text), "sip:10.0.0.2:5070;transport=tcp");
        ck_assert_str_eq(match_text(r, register_text), "sip:registrar.example.net");
        ck_assert_str_eq(match_text(r, options_text), "sips:backend.example.org:5061");
        /* '*' takes responses too; routes_match does not judge what it is given. */
        ck_assert_str_eq(match_text(r, response_text), "sips:backend.example.org:5061");
        ck_assert_ptr_null(routes_match(NULL, NULL));
        ck_assert_ptr_null(routes_match(r, NULL));

        /* Order matters: the same rules reversed pick the catch-all first. */
        _cleanup_(routes_freep) struct routes *rev =
                load_text("sip:all.example.org *\n"
                          "sip:invite.example.org request.method == 'INVITE'\n");
        ck_assert_str_eq(match_text(rev, invite_text), "sip:all.example.org");

        /* Without a catch-all, nothing may match. */
        _cleanup_(routes_freep) struct routes *some =
                load_text("sip:phones.example.org request.uri.params contains 'user=phone'\r\n"
                          "sip:linphone.example.org user-agent regex 'Linphone/.*'\r\n"
                          "sip:never.example.org direction == 'incoming'\r\n");
        ck_assert_uint_eq(routes_count(some), 3);
        ck_assert_str_eq(match_text(some, invite_text), "sip:linphone.example.org");
        ck_assert_str_eq(match_text(some, message_text), "sip:phones.example.org");
        ck_assert_ptr_null(match_text(some, options_text));
        ck_assert_ptr_null(match_text(some, response_text));

        /* An empty file (or only comments) has no rules and matches nothing. */
        _cleanup_(routes_freep) struct routes *empty = load_text("# nothing yet\n\n   \n");
        ck_assert_uint_eq(routes_count(empty), 0);
        ck_assert_ptr_null(match_text(empty, invite_text));
}
END_TEST

/* routes_parse() of text must fail with exactly this message and code. */
static void ck_refused(const char *text, int code, const char *message) {
        struct routes *r = NULL;
        char *error = NULL;
        int k = routes_parse(text, strlen(text), "routes.conf", &r, &error);
        ck_assert_msg(k == code, "'%.60s': %d instead of %d (%s)", text, k, code, strna(error));
        ck_assert_ptr_null(r);
        ck_assert_ptr_nonnull(error);
        ck_assert_str_eq(error, message);
        free(error);
}

START_TEST(test_routes_errors_name_the_line) {
        ck_refused("<sip:a.example.org;transport=tcp request.method == 'INVITE'\n", -EINVAL,
                   "routes.conf:1: missing '>' after '<' of the next hop");
        ck_refused("# c\nsip:a.example.org *\nsip: *\n", -EINVAL,
                   "routes.conf:3: bad next hop 'sip:': not a valid sip: or sips: URI");
        ck_refused("http://a.example.org *\n", -EINVAL,
                   "routes.conf:1: bad next hop 'http://a.example.org': not a sip: or sips: URI");
        ck_refused("sip:a.example.org:99999 *\n", -EINVAL,
                   "routes.conf:1: bad next hop 'sip:a.example.org:99999': invalid port");
        ck_refused("sip:a..b *\n", -EINVAL, "routes.conf:1: bad next hop 'sip:a..b': invalid host");
        ck_refused("* sip:a.example.org\n", -EINVAL,
                   "routes.conf:1: bad next hop '*': not a sip: or sips: URI");
        ck_refused("sip:a.example.org *\n\nsip:b.example.org\n# end\n", -EINVAL,
                   "routes.conf:3: no filter after the next hop 'sip:b.example.org' (write '*' to "
                   "match every request)");
        ck_refused("  request.method == 'INVITE'\nsip:a.example.org *\n", -EINVAL,
                   "routes.conf:1: indented line continues no rule (a rule starts at the "
                   "beginning of a line)");
        /* Filter errors point at the physical line and column. */
        ck_refused("sip:a.example.org   request.methd == 'INVITE'\n", -EINVAL,
                   "routes.conf:1:21: unknown variable 'request.methd' (did you mean "
                   "'request.method'?)");
        ck_refused("sip:a.example.org *\n"
                   "<sip:b.example.org;lr> request.method == 'INVITE'\n"
                   "    && user-agent contains\n"
                   "# trailing comment\n",
                   -EINVAL,
                   "routes.conf:3:27: expected a string after 'contains' but found the end of the "
                   "expression");
        ck_refused("sip:a.example.org is_request\n"
                   "\t&& (request.method == 'INVITE'\n"
                   "\t    || request.method = 'BYE')\n",
                   -EINVAL, "routes.conf:3:24: unexpected '=' (did you mean '=='?)");
        ck_refused("sip:a.example.org * && is_request\n", -EINVAL,
                   "routes.conf:1:19: unexpected character '*'");
        ck_refused("sip:a.example.org user-agent regex '\\d+'\n", -EINVAL,
                   "routes.conf:1:37: regex: \\d is not POSIX; use [0-9]");
        /* The limit of a filter is per rule, continuations included. */
        _cleanup_free_ char *big = malloc(2 * FILTER_MAX_LENGTH);
        strcpy(big, "sip:a.example.org is_request\n");
        while (strlen(big) < FILTER_MAX_LENGTH + 1000)
                strcat(big, "  && is_request\n");
        ck_refused(big, -EINVAL, "routes.conf:1: filter: expression longer than 4096 characters");

        /* NUL bytes. */
        struct routes *r = NULL;
        char *error = NULL;
        static const char nul[] = "sip:a.example.org *\nsip:b.example.org \0 *\n";
        ck_assert_int_eq(routes_parse(nul, sizeof nul - 1, "x", &r, &error), -EINVAL);
        ck_assert_str_eq(error, "x:2: NUL byte in the line");
        free(error);
}
END_TEST

START_TEST(test_routes_limits_and_files) {
        struct routes *r = NULL;
        char *error = NULL;

        /* Size. */
        _cleanup_free_ char *huge = malloc(ROUTES_MAX_SIZE + 1);
        memset(huge, '#', ROUTES_MAX_SIZE + 1);
        ck_assert_int_eq(routes_parse(huge, ROUTES_MAX_SIZE + 1, "big", &r, &error), -EFBIG);
        ck_assert_str_eq(error, "big: larger than 1048576 bytes");
        free(error);
        huge[ROUTES_MAX_SIZE] = 0;
        _cleanup_free_ char *huge_path = tl_write_file("huge.conf", huge);
        ck_assert_int_eq(routes_load(huge_path, &r, &error), 0); /* exactly the limit */
        ck_assert_uint_eq(routes_count(r), 0);
        routes_free(r);
        r = NULL;
        FILE *f = fopen(huge_path, "a");
        ck_assert_ptr_nonnull(f);
        fputs("\n", f);
        fclose(f);
        ck_assert_int_eq(routes_load(huge_path, &r, &error), -EFBIG);
        ck_assert_ptr_nonnull(strstr(error, "huge.conf: larger than 1048576 bytes"));
        free(error);

        /* Rule count. */
        size_t n = (ROUTES_MAX_RULES + 1) * 8 + 1;
        _cleanup_free_ char *many = malloc(n);
        char *end = many;
        for (int i = 0; i < ROUTES_MAX_RULES; i++)
                end = stpcpy(end, "sip:h *\n");
        ck_assert_int_eq(routes_parse(many, strlen(many), "many", &r, &error), 0);
        ck_assert_uint_eq(routes_count(r), ROUTES_MAX_RULES);
        routes_free(r);
        r = NULL;
        stpcpy(end, "sip:h *\n");
        ck_assert_int_eq(routes_parse(many, strlen(many), "many", &r, &error), -E2BIG);
        ck_assert_str_eq(error, "many:10001: more than 10000 rules");
        free(error);

        /* Files that cannot be read. */
        _cleanup_free_ char *missing = tl_path("missing.conf");
        ck_assert_int_eq(routes_load(missing, &r, &error), -ENOENT);
        ck_assert_ptr_nonnull(
                strstr(error, "missing.conf: cannot open: No such file or directory"));
        free(error);
        ck_assert_int_eq(routes_load(tl_tmpdir(), &r, &error), -EINVAL);
        ck_assert_ptr_nonnull(strstr(error, ": not a regular file"));
        free(error);
        ck_assert_ptr_null(r);

        /* error may be NULL. */
        ck_assert_int_eq(routes_parse("sip:h\n", 6, NULL, &r, NULL), -EINVAL);
        ck_assert_ptr_null(r);
}
END_TEST

int main(void) {
        Suite *s = suite_create("routes");
        TCase *tv = tcase_create("variables");
        tcase_add_test(tv, test_routes_sip_variables_of_a_request);
        tcase_add_test(tv, test_routes_sip_variables_of_other_messages);
        suite_add_tcase(s, tv);
        TCase *tc = tcase_create("file");
        tcase_add_test(tc, test_routes_parse_file);
        tcase_add_test(tc, test_routes_first_match_wins);
        tcase_add_test(tc, test_routes_errors_name_the_line);
        tcase_add_test(tc, test_routes_limits_and_files);
        suite_add_tcase(s, tc);
        return tl_run(s);
}
