/* SPDX-License-Identifier: MIT */
/* Filter expressions (common/filter.c): parser, every operator, precedence, error messages with
 * columns, limits, and evaluation through a getter. */
#include <stdio.h>

#include "filter.h"
#include "macro.h"
#include "testlib.h"

/* A message as a list of name=value pairs; names not listed are undefined. */
struct vars {
        const char *const *pairs; /* name, value, name, value, ..., NULL */
        unsigned calls;
};

static const char *get(const char *name, void *userdata) {
        struct vars *v = userdata;
        v->calls++;
        for (const char *const *p = v->pairs; *p; p += 2)
                if (streq(*p, name))
                        return p[1];
        return NULL;
}

static const char *const invite[] = {
        "is_request",         "true",
        "is_response",        "false",
        "request.method",     "INVITE",
        "request.uri.user",   "bob",
        "request.uri.domain", "example.org",
        "request.uri.params", "transport=tcp;user=phone",
        "from.uri.user",      "alice",
        "from.uri.domain",    "example.org",
        "to.uri.user",        "bob",
        "user-agent",         "Linphone/5.2 (belle-sip)",
        "call-id.hash",       "1234567",
        "empty",              "",
        NULL,
};

static const char *const known[] = {
        "is_request", "is_response", "request.method", "request.uri.user", "request.uri.domain",
        "user-agent", NULL,
};

/* Compiles (any name accepted) and evaluates against the INVITE above. */
static bool eval(const char *expr) {
        struct filter *f = NULL;
        struct filter_error e;
        int r = filter_compile(expr, NULL, &f, &e);
        ck_assert_msg(r == 0, "'%s' did not compile: %s", expr, e.message);
        struct vars v = {.pairs = invite};
        bool b = filter_eval(f, get, &v);
        filter_free(f);
        return b;
}

#define ck_true(expr) ck_assert_msg(eval(expr), "'%s' should be true", expr)
#define ck_false(expr) ck_assert_msg(!eval(expr), "'%s' should be false", expr)

/* Compiles expr expecting an error; checks the column and that the reason contains `reason`. */
static void ck_error_full(const char *expr, const char *const *names, unsigned column,
                          const char *reason) {
        struct filter *f = NULL;
        struct filter_error e;
        int r = filter_compile(expr, names, &f, &e);
        ck_assert_msg(r == -EINVAL, "'%s' compiled (r=%d)", expr, r);
        ck_assert_ptr_null(f);
        ck_assert_msg(e.column == column, "'%s': column %u, expected %u (%s)", expr, e.column,
                      column, e.message);
        ck_assert_msg(strstr(e.reason, reason), "'%s': reason '%s' lacks '%s'", expr, e.reason,
                      reason);
        char prefix[64];
        if (column)
                snprintf(prefix, sizeof prefix, "filter: column %u: ", column);
        else
                snprintf(prefix, sizeof prefix, "filter: ");
        ck_assert_msg(strncmp(e.message, prefix, strlen(prefix)) == 0 &&
                              streq(e.message + strlen(prefix), e.reason),
                      "'%s': message '%s'", expr, e.message);
}

static void ck_error(const char *expr, unsigned column, const char *reason) {
        ck_error_full(expr, NULL, column, reason);
}

START_TEST(test_filter_constants_and_empty) {
        ck_true("true");
        ck_false("false");
        ck_true("");
        ck_true("   \t ");
        ck_assert(eval(NULL));
        /* A NULL filter is true too. */
        struct vars v = {.pairs = invite};
        ck_assert(filter_eval(NULL, get, &v));
        ck_assert_str_eq(filter_source(NULL), "");

        struct filter *f = NULL;
        ck_assert_int_eq(filter_compile("  is_request  ", NULL, &f, NULL), 0);
        ck_assert_str_eq(filter_source(f), "  is_request  ");
        filter_free(f);
}
END_TEST

START_TEST(test_filter_equality) {
        ck_true("request.method == 'INVITE'");
        ck_false("request.method == 'invite'"); /* case-sensitive */
        ck_false("request.method == 'INVITE '");
        ck_true("request.method != 'REGISTER'");
        ck_false("request.method != 'INVITE'");
        /* Undefined: == is false, != is its negation. */
        ck_false("contact.uri.user == 'x'");
        ck_true("contact.uri.user != 'x'");
        /* The empty string is a value. */
        ck_true("empty == ''");
        ck_false("request.method == ''");
        /* Two variables. */
        ck_true("request.uri.user == to.uri.user");
        ck_false("request.uri.user == from.uri.user");
        ck_true("request.uri.user != from.uri.user");
        ck_false("request.uri.user == contact.uri.user");
        ck_true("request.uri.user != contact.uri.user");
        ck_true("request.uri.domain == from.uri.domain");
        /* No blanks needed around operators. */
        ck_true("request.method=='INVITE'&&request.uri.user!='x'");
        /* \' is a quote. */
        ck_false("request.method == 'it\\'s'");
}
END_TEST

START_TEST(test_filter_contains_in_regex) {
        ck_true("request.uri.params contains 'user=phone'");
        ck_true("user-agent contains 'Linphone'");
        ck_false("user-agent contains 'linphone'");
        ck_true("user-agent contains ''");
        ck_false("contact.uri.params contains ''");

        ck_true("request.method in 'REGISTER INVITE MESSAGE'");
        ck_true("request.method in '  INVITE  '");
        ck_false("request.method in 'REGISTER MESSAGE'");
        ck_false("request.method in 'INVITEX INV'");
        ck_true("request.method nin 'REGISTER MESSAGE'");
        ck_true("request.method notin 'REGISTER MESSAGE'");
        ck_false("request.method nin 'INVITE'");
        ck_false("contact.uri.user in 'a b'");
        ck_true("contact.uri.user nin 'a b'");

        /* regex must match the whole value. */
        ck_true("request.method regex 'INV.*'");
        ck_true("request.method regexp 'I(NVITE|NFO)'");
        ck_false("request.method regex 'NVITE'");
        ck_false("request.method regex 'INV'");
        ck_true("request.uri.domain regex '.*\\.example\\.org|example\\.org'");
        ck_true("call-id.hash regex '[0-9]*[13579]'");
        ck_false("call-id.hash regex '[0-9]*[02468]'");
        ck_true("user-agent regex 'Linphone/[[:digit:].]+ .*'");
        /* Alternation takes the longest match: "a|ab" matches all of "ab". */
        ck_true("request.uri.user regex 'b|bo|bob'");
        ck_false("contact.uri.user regex '.*'");
        ck_true("empty regex '.*'");
        ck_true("request.uri.user regex '^bob$'");
        /* GNU escapes that POSIX regcomp understands. */
        ck_true("user-agent regex '\\w+/[0-9.]+\\s.*'");
        ck_false("user-agent regex '\\w+'");

        ck_true("defined request.method");
        ck_true("defined(request.method)");
        ck_true("defined empty");
        ck_false("defined contact.uri.user");
        ck_true("!defined(contact.uri.user)");
        ck_true("numeric call-id.hash");
        ck_true("numeric(call-id.hash)");
        ck_false("numeric request.method");
        ck_false("numeric empty");
        ck_false("numeric contact.uri.user");

        /* A variable alone is true when it is "true". */
        ck_true("is_request");
        ck_false("is_response");
        ck_false("request.method");
        ck_false("contact.uri.user");
}
END_TEST

START_TEST(test_filter_precedence) {
        /* && binds tighter than ||, ! tighter than both. */
        ck_true("true || false && false");
        ck_false("(true || false) && false");
        ck_true("false && false || true");
        ck_false("false && (false || true)");
        ck_false("!true && false");
        ck_true("!(true && false)");
        ck_false("!true || false");
        ck_true("!false || false");
        ck_true("!!true");
        ck_false("!!!true");
        ck_true("! request.method == 'REGISTER'");
        ck_false("!request.method == 'INVITE'");
        ck_true("is_request && (request.method == 'REGISTER' || request.method == 'INVITE')");
        ck_true("((((is_request))))");
        ck_true("is_response || is_request && request.uri.params contains 'user=phone'");
        ck_true("false || false || false || true");
        ck_false("true && true && true && false");
}
END_TEST

START_TEST(test_filter_short_circuit) {
        /* The right side of && after false, and of || after true, is never read. */
        struct filter *f = NULL;
        ck_assert_int_eq(filter_compile("is_response && a == 'x' && b == 'y'", NULL, &f, NULL), 0);
        struct vars v = {.pairs = invite};
        ck_assert(!filter_eval(f, get, &v));
        ck_assert_uint_eq(v.calls, 1);
        filter_free(f);

        ck_assert_int_eq(filter_compile("is_request || a == 'x'", NULL, &f, NULL), 0);
        v.calls = 0;
        ck_assert(filter_eval(f, get, &v));
        ck_assert_uint_eq(v.calls, 1);
        filter_free(f);
}
END_TEST

START_TEST(test_filter_errors_with_columns) {
        /*               1234567890123456789 */
        ck_error("request.method contains", 24,
                 "expected a string after 'contains' but found the end");
        ck_error("user-agent contains 12", 21,
                 "expected a string after 'contains' but found '12' (write numbers in quotes: "
                 "'12')");
        ck_error("status.code == 200", 16,
                 "expected a string or a variable after '==' but found '200' (write numbers in "
                 "quotes: '200')");
        ck_error("user-agent in x", 15, "expected a string after 'in'");
        ck_error("user-agent regex (x)", 18, "expected a string after 'regex'");
        ck_error("request.method ==", 18, "expected a string or a variable after '=='");
        ck_error("request.method = 'INVITE'", 16, "unexpected '=' (did you mean '=='?)");
        ck_error("is_request & is_response", 12, "did you mean '&&'?");
        ck_error("is_request | is_response", 12, "did you mean '||'?");
        ck_error("request.method == 'INVITE", 19, "unterminated string");
        ck_error("request.method == \"INVITE\"", 19, "single quotes");
        ck_error("(is_request", 12, "expected ')' to close the '(' of column 1 but found the end");
        ck_error("is_request)", 11, "unmatched ')'");
        ck_error("is_request is_response", 12, "expected an operator");
        ck_error("request.method 'INVITE'", 16,
                 "expected an operator (==, !=, contains, in, nin, regex) after 'request.method'");
        ck_error("is_request &&", 14,
                 "expected a variable, 'true', 'false', '!' or '(' but found the end");
        ck_error("&& is_request", 1, "expected a variable");
        ck_error("()", 2, "expected a variable");
        ck_error("true false", 6,
                 "expected '&&', '||' or the end of the expression but found 'false'");
        ck_error("a == 'x' == 'y'", 10, "expected '&&', '||' or the end");
        ck_error("contains == 'x'", 1, "expected a variable");
        ck_error("a == contains", 6,
                 "expected a string or a variable after '==' but found 'contains'");
        ck_error("defined", 8, "expected a variable name after 'defined'");
        ck_error("defined 'x'", 9, "expected a variable name after 'defined'");
        ck_error("numeric(a", 10, "expected ')' to close the '(' of column 8");
        ck_error("a in ''", 6, "expected at least one word in the list after 'in'");
        ck_error("a in '  '", 6, "expected at least one word");
        ck_error("a == 'x' # comment", 10, "unexpected character '#'");
        ck_error("a == 'x' && \x01", 13, "unexpected byte 0x01");
        ck_error("a == 'x' && \xc3\xa9", 13, "unexpected byte 0xc3");
        ck_error("1abc", 1, "expected a variable, 'true', 'false', '!' or '(' but found '1abc'");
        /* Long tokens are shortened in messages. */
        ck_error("a b0123456789012345678901234567890123456789012345678901234567890", 3,
                 "'b012345678901234567890123456789012345678...'");
}
END_TEST

START_TEST(test_filter_unknown_variables) {
        ck_error_full("request.methd == 'INVITE'", known, 1,
                      "unknown variable 'request.methd' (did you mean 'request.method'?)");
        ck_error_full("is_request && usr-agent contains 'x'", known, 15,
                      "unknown variable 'usr-agent' (did you mean 'user-agent'?)");
        ck_error_full("is_request && foo", known, 15, "unknown variable 'foo'");
        struct filter *f = NULL;
        struct filter_error e;
        ck_assert_int_eq(filter_compile("is_request && x", known, &f, &e), -EINVAL);
        ck_assert_ptr_null(strstr(e.reason, "did you mean"));
        ck_error_full("defined(reqest.uri.user)", known, 9, "did you mean 'request.uri.user'");
        ck_error_full("user-agent == request.uri.usr", known, 15,
                      "unknown variable 'request.uri.usr'");
        /* With the list, known names compile. */
        ck_assert_int_eq(filter_compile("is_request && request.method == 'INVITE' && "
                                        "user-agent != request.uri.domain",
                                        known, &f, &e),
                         0);
        filter_free(f);
}
END_TEST

START_TEST(test_filter_regex_errors) {
        ck_error("a regex '[a-'", 10, "bad regular expression");
        ck_error("a regex '(ab'", 10, "bad regular expression");
        ck_error("a regex '\\d+'", 10, "\\d is not POSIX; use [0-9]");
        ck_error("a regex '[a-z]\\D'", 10, "use [^0-9]");
        ck_error("a regex 'a*?'", 10, "lazy quantifiers");
        ck_error("a regex 'a{2}?'", 10, "lazy quantifiers");
        ck_error("a regex '(?:ab)'", 10, "(?...) groups are not POSIX");
        ck_error("a regex '(a)\\1'", 10, "back-references");
        /* Repetitions that would expand beyond the limit. */
        ck_error("a regex '((a{1,100}){1,100}){1,100}'", 10, "too large");
        ck_error("a regex '(((a{1,255}){1,255}){1,255})'", 10, "too large");
        ck_error("a regex 'x{20000}'", 10, "too large");
        ck_error("a regex 'x{20000,}'", 10, "too large");
        ck_error("a regex '(x{100,}){101}'", 10, "too large");
        ck_error("a regex '((a{,100}){,100}){,100}'", 10, "too large");
        /* Brackets are skipped: these characters are literal inside. */
        ck_true("request.method regex '[\\d?(]*INVITE'");
        ck_true("request.method regex '[[:upper:]]{6}'");
        ck_true("request.method regex '[]I]NVITE'");
        ck_true("request.uri.domain regex '(a{1,3}){1,2}|.{1,100}'");
        ck_true("request.uri.domain regex '(x{0,20}){1,20}example.org'");
}
END_TEST

START_TEST(test_filter_limits) {
        /* Length: FILTER_MAX_LENGTH accepted, one more refused. */
        char *s = malloc(FILTER_MAX_LENGTH + 2);
        ck_assert_ptr_nonnull(s);
        memset(s, ' ', FILTER_MAX_LENGTH + 1);
        memcpy(s, "true", 4);
        s[FILTER_MAX_LENGTH] = 0;
        ck_true(s);
        s[FILTER_MAX_LENGTH] = ' ';
        s[FILTER_MAX_LENGTH + 1] = 0;
        ck_error(s, 0, "expression longer than 4096 characters");
        free(s);

        /* Depth: 64 nested '(' or '!' accepted, 65 refused. */
        char buf[512];
        size_t n = 0;
        for (int i = 0; i < FILTER_MAX_DEPTH; i++)
                buf[n++] = '(';
        n += (size_t)sprintf(buf + n, "true");
        for (int i = 0; i < FILTER_MAX_DEPTH; i++)
                buf[n++] = ')';
        buf[n] = 0;
        ck_true(buf);
        memmove(buf + 1, buf, n + 1);
        buf[0] = '!';
        ck_error(buf, 65, "nesting deeper than 64");

        n = 0;
        for (int i = 0; i < FILTER_MAX_DEPTH; i++)
                buf[n++] = '!';
        strcpy(buf + n, "false");
        ck_false(buf);
        memmove(buf + 1, buf, strlen(buf) + 1);
        buf[0] = '!';
        ck_error(buf, 65, "nesting deeper than 64");

        /* A long flat chain is not nesting. */
        _cleanup_free_ char *chain = malloc(FILTER_MAX_LENGTH + 1);
        ck_assert_ptr_nonnull(chain);
        strcpy(chain, "false");
        while (strlen(chain) + 9 + 6 <= FILTER_MAX_LENGTH)
                strcat(chain, " || false");
        strcat(chain, "||true");
        ck_true(chain);
}
END_TEST

START_TEST(test_filter_error_out_of_band) {
        /* error may be NULL; a failed compile leaves *ret alone. */
        struct filter *f = (struct filter *)0x1;
        ck_assert_int_eq(filter_compile("a ==", NULL, &f, NULL), -EINVAL);
        ck_assert_ptr_eq(f, (struct filter *)0x1);
        /* A compiled filter can be evaluated many times and on different messages. */
        f = NULL;
        ck_assert_int_eq(filter_compile("request.method == 'INVITE' && defined from.uri.user", NULL,
                                        &f, NULL),
                         0);
        struct vars v1 = {.pairs = invite};
        static const char *const reg[] = {"request.method", "REGISTER", "from.uri.user", "a", NULL};
        struct vars v2 = {.pairs = reg};
        for (int i = 0; i < 3; i++) {
                ck_assert(filter_eval(f, get, &v1));
                ck_assert(!filter_eval(f, get, &v2));
        }
        filter_free(f);
        filter_free(NULL);
}
END_TEST

START_TEST(test_filter_random_input_is_refused_cleanly) {
        /* Token soup from a fixed seed: whatever compiles evaluates; whatever does not gets a
         * message whose column lies within the text (run under ASan for leaks). */
        static const char *const pieces[] = {
                "(", ")", "!", "&&", "||", "==", "!=", "=", "&", "|", " ", "'x'", "'a b'", "'",
                "'[0-9]+'", "'(a|b)*'", "'\\d'", "'a{2,3}'", "\\'", "true", "false", "defined",
                "numeric", "contains", "in", "nin", "notin", "regex", "regexp", "request.method",
                "user-agent", "is_request", "empty", "9", "#", "\"",
        };
        unsigned seed = 12345, compiled = 0;
        for (int i = 0; i < 20000; i++) {
                char text[256] = "";
                int n = (int)(rand_r(&seed) % 12) + 1;
                for (int j = 0; j < n; j++) {
                        strcat(text, pieces[rand_r(&seed) % ELEMENTSOF(pieces)]);
                        if (rand_r(&seed) % 2)
                                strcat(text, " ");
                }
                struct filter *f = NULL;
                struct filter_error e;
                int r = filter_compile(text, NULL, &f, &e);
                if (r == 0) {
                        struct vars v = {.pairs = invite};
                        (void)filter_eval(f, get, &v);
                        filter_free(f);
                        compiled++;
                        continue;
                }
                ck_assert_int_eq(r, -EINVAL);
                ck_assert_msg(e.reason[0] && e.column >= 1 && e.column <= strlen(text) + 1,
                              "'%s': column %u, '%s'", text, e.column, e.message);
        }
        /* The soup is not all garbage: some of it forms expressions. */
        ck_assert_uint_gt(compiled, 100);
}
END_TEST

int main(void) {
        Suite *s = suite_create("filter");
        TCase *tc = tcase_create("operators");
        tcase_add_test(tc, test_filter_constants_and_empty);
        tcase_add_test(tc, test_filter_equality);
        tcase_add_test(tc, test_filter_contains_in_regex);
        tcase_add_test(tc, test_filter_precedence);
        tcase_add_test(tc, test_filter_short_circuit);
        suite_add_tcase(s, tc);
        TCase *te = tcase_create("errors");
        tcase_add_test(te, test_filter_errors_with_columns);
        tcase_add_test(te, test_filter_unknown_variables);
        tcase_add_test(te, test_filter_regex_errors);
        tcase_add_test(te, test_filter_limits);
        tcase_add_test(te, test_filter_error_out_of_band);
        tcase_add_test(te, test_filter_random_input_is_refused_cleanly);
        suite_add_tcase(s, te);
        return tl_run(s);
}
