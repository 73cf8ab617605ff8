/* SPDX-License-Identifier: MIT */
/* pushd's pieces without the network: the job schema and its errors, JWT signing (ES256 and
 * RS256, checked by the test library's own verifier), the APNs payloads, the FCM message and
 * the generic URL template. */
#include <jansson.h>
#include <openssl/evp.h>

#include "apns.h"
#include "fcm.h"
#include "generic.h"
#include "job.h"
#include "jwt.h"
#include "macro.h"
#include "testlib-jwt.h"
#include "testlib.h"

#define APNS_TOKEN "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"

static struct push_job *parse_ok(const char *text) {
        struct push_job *j = NULL;
        _cleanup_free_ char *error = NULL;
        int r = push_job_parse(text, strlen(text), &j, &error);
        ck_assert_msg(r == 0, "'%s' refused: %s", text, strna(error));
        ck_assert_ptr_null(error);
        return j;
}

static void parse_fails(const char *text, const char *expected) {
        struct push_job *j = NULL;
        _cleanup_free_ char *error = NULL;
        int r = push_job_parse(text, strlen(text), &j, &error);
        ck_assert_msg(r == -EINVAL, "'%s' accepted", text);
        ck_assert_ptr_null(j);
        ck_assert_ptr_nonnull(error);
        ck_assert_msg(strstr(error, expected), "'%s': error '%s' lacks '%s'", text, error,
                      expected);
}

START_TEST(test_pushd_job_valid) {
        struct push_job *j = parse_ok(
                "{\"provider\":\"apns\",\"token\":\"" APNS_TOKEN "\",\"app-id\":\"org.example."
                "app\",\"type\":\"call\",\"from-uri\":\"sip:alice@example.org\",\"from-name\":"
                "\"Alice\",\"call-id\":\"c1\",\"ttl\":30,\"collapse-id\":\"c1\",\"sandbox\":true,"
                "\"id\":\"job-1\",\"custom\":{\"k\":1}}");
        ck_assert_int_eq(j->provider, PUSH_PROVIDER_APNS);
        ck_assert_int_eq(j->type, PUSH_TYPE_CALL);
        ck_assert_uint_eq(j->n_tokens, 1);
        ck_assert_str_eq(j->tokens[0], APNS_TOKEN);
        ck_assert_str_eq(j->app_id, "org.example.app");
        ck_assert_str_eq(j->from_name, "Alice");
        ck_assert_int_eq(j->ttl, 30);
        ck_assert(j->sandbox);
        ck_assert_str_eq(j->id, "job-1");
        ck_assert_int_eq(json_integer_value(json_object_get(j->custom, "k")), 1);

        /* The canonical JSON parses back to the same job. */
        json_t *o = push_job_to_json(j);
        _cleanup_free_ char *text = json_dumps(o, JSON_COMPACT);
        json_decref(o);
        struct push_job *k = parse_ok(text);
        ck_assert_str_eq(k->tokens[0], APNS_TOKEN);
        ck_assert_str_eq(k->call_id, "c1");
        ck_assert_int_eq(k->ttl, 30);
        ck_assert(k->sandbox);
        push_job_free(k);
        push_job_free(j);

        j = parse_ok("{\"provider\":\"fcm\",\"tokens\":[\"t1:AP\",\"t2-x_y\"],\"app-id\":"
                     "\"my-project\",\"type\":\"message\",\"text\":\"hello\\nworld\"}");
        ck_assert_uint_eq(j->n_tokens, 2);
        ck_assert_str_eq(j->tokens[1], "t2-x_y");
        ck_assert_int_eq(j->ttl, -1);
        ck_assert_str_eq(j->text, "hello\nworld");
        push_job_free(j);

        j = parse_ok("{\"provider\":\"generic\",\"token\":\"abc\",\"type\":\"background\"}");
        ck_assert_ptr_null(j->app_id);
        push_job_free(j);
}
END_TEST

START_TEST(test_pushd_job_errors) {
        parse_fails("", "invalid JSON");
        parse_fails("{\"provider\":", "invalid JSON");
        parse_fails("[1]", "must be a JSON object");
        parse_fails("{\"type\":\"call\",\"token\":\"x\"}", "'provider' is missing");
        parse_fails("{\"provider\":\"gcm\",\"type\":\"call\",\"token\":\"x\"}",
                    "'provider' must be");
        parse_fails("{\"provider\":\"generic\",\"token\":\"x\"}", "'type' is missing");
        parse_fails("{\"provider\":\"generic\",\"type\":\"ring\",\"token\":\"x\"}",
                    "'type' must be");
        parse_fails("{\"provider\":\"generic\",\"type\":\"call\"}", "'token' (or 'tokens') is "
                                                                    "missing");
        parse_fails("{\"provider\":\"generic\",\"type\":\"call\",\"token\":\"x\",\"tokens\":"
                    "[\"y\"]}",
                    "not both");
        parse_fails("{\"provider\":\"generic\",\"type\":\"call\",\"tokens\":[]}",
                    "array of 1 to 16");
        parse_fails("{\"provider\":\"generic\",\"type\":\"call\",\"tokens\":[1]}",
                    "array of strings");
        parse_fails("{\"provider\":\"generic\",\"type\":\"call\",\"token\":\"a b\"}",
                    "printable ASCII");
        parse_fails("{\"provider\":\"generic\",\"type\":\"call\",\"token\":\"\"}",
                    "must not be empty");
        parse_fails("{\"provider\":\"apns\",\"type\":\"call\",\"token\":\"xyz\",\"app-id\":\"a\"}",
                    "hexadecimal");
        parse_fails("{\"provider\":\"apns\",\"type\":\"call\",\"token\":\"" APNS_TOKEN "\"}",
                    "'app-id' is missing: the bundle id");
        parse_fails("{\"provider\":\"fcm\",\"type\":\"call\",\"token\":\"t\"}",
                    "Firebase project id");
        parse_fails("{\"provider\":\"apns\",\"type\":\"call\",\"token\":\"" APNS_TOKEN
                    "\",\"app-id\":\"org.x.voip\"}",
                    "without \".voip\"");
        parse_fails("{\"provider\":\"apns\",\"type\":\"call\",\"token\":\"" APNS_TOKEN
                    "\",\"app-id\":\"org/x\"}",
                    "'app-id' may hold");
        parse_fails("{\"provider\":\"generic\",\"type\":\"call\",\"token\":\"x\",\"tokne\":1}",
                    "unknown key 'tokne'");
        parse_fails("{\"provider\":\"generic\",\"type\":\"call\",\"token\":\"x\",\"ttl\":-1}",
                    "'ttl' must be an integer");
        parse_fails("{\"provider\":\"generic\",\"type\":\"call\",\"token\":\"x\",\"ttl\":\"3\"}",
                    "'ttl' must be an integer");
        parse_fails("{\"provider\":\"generic\",\"type\":\"call\",\"token\":\"x\",\"sandbox\":1}",
                    "'sandbox' must be true or false");
        parse_fails("{\"provider\":\"generic\",\"type\":\"call\",\"token\":\"x\",\"from-uri\":5}",
                    "'from-uri' must be a string");
        parse_fails("{\"provider\":\"generic\",\"type\":\"call\",\"token\":\"x\",\"call-id\":"
                    "\"a\\u0000b\"}",
                    "NUL");
        parse_fails("{\"provider\":\"generic\",\"type\":\"call\",\"token\":\"x\",\"call-id\":"
                    "\"a\\nb\"}",
                    "control characters");
        parse_fails("{\"provider\":\"generic\",\"type\":\"call\",\"token\":\"x\",\"collapse-id\":"
                    "\"0123456789012345678901234567890123456789012345678901234567890123456789\"}",
                    "'collapse-id' is too long");
        parse_fails("{\"provider\":\"generic\",\"type\":\"call\",\"token\":\"x\",\"custom\":[]}",
                    "'custom' must be a JSON object");
        parse_fails(
                "{\"provider\":\"generic\",\"type\":\"call\",\"token\":\"x\",\"type\":\"call\"}",
                "duplicate");

        /* Long values are bounded. */
        _cleanup_free_ char *big = malloc(PUSH_JOB_MAX_TEXT + 200);
        memset(big, 'a', PUSH_JOB_MAX_TEXT + 100);
        big[PUSH_JOB_MAX_TEXT + 100] = 0;
        _cleanup_free_ char *text = NULL;
        ck_assert_int_ge(asprintf(&text,
                                  "{\"provider\":\"generic\",\"type\":\"message\","
                                  "\"token\":\"x\",\"text\":\"%s\"}",
                                  big),
                         0);
        parse_fails(text, "'text' is too long");

        /* The JSON text itself is bounded, whatever it holds. */
        _cleanup_free_ char *huge = malloc(PUSH_JOB_MAX_SIZE + 16);
        memset(huge, ' ', PUSH_JOB_MAX_SIZE + 15);
        huge[0] = '{';
        huge[PUSH_JOB_MAX_SIZE + 14] = '}';
        huge[PUSH_JOB_MAX_SIZE + 15] = 0;
        parse_fails(huge, "at most 65536 bytes");
}
END_TEST

START_TEST(test_pushd_base64url) {
        _cleanup_free_ char *a = base64url_encode("", 0), *b = base64url_encode("f", 1),
                            *c = base64url_encode("fo", 2), *d = base64url_encode("foo", 3),
                            *e = base64url_encode("\xfb\xff\xbf", 3);
        ck_assert_str_eq(a, "");
        ck_assert_str_eq(b, "Zg");
        ck_assert_str_eq(c, "Zm8");
        ck_assert_str_eq(d, "Zm9v");
        ck_assert_str_eq(e, "-_-_");
}
END_TEST

START_TEST(test_pushd_jwt_sign) {
        _cleanup_free_ char *ec = tl_write_ec_key("key.p8");
        _cleanup_free_ char *rsa = tl_write_rsa_key("rsa.pem", NULL);
        struct evp_pkey_st *k = NULL;

        /* The wrong kind of key is refused for each algorithm. */
        ck_assert_int_eq(jwt_load_key_file(ec, JWT_RS256, &k), -EINVAL);
        ck_assert_int_eq(jwt_load_key_file(rsa, JWT_ES256, &k), -EINVAL);
        ck_assert_int_eq(jwt_load_key_file("/nonexistent", JWT_ES256, &k), -ENOENT);
        ck_assert_int_eq(jwt_load_key("garbage", 7, JWT_ES256, &k), -EINVAL);

        const struct {
                const char *path;
                enum jwt_alg alg;
                const char *name;
        } cases[] = {{ec, JWT_ES256, "ES256"}, {rsa, JWT_RS256, "RS256"}};
        for (size_t i = 0; i < ELEMENTSOF(cases); i++) {
                ck_assert_int_eq(jwt_load_key_file(cases[i].path, cases[i].alg, &k), 0);
                json_t *h = json_pack("{s:s}", "kid", "KEY1234567");
                json_t *c = json_pack("{s:s,s:i}", "iss", "TEAM123456", "iat", 1700000000);
                _cleanup_free_ char *jwt = NULL;
                ck_assert_int_eq(jwt_sign(k, cases[i].alg, h, c, &jwt), 0);
                json_decref(h);
                json_decref(c);
                json_t *hh, *cc;
                ck_assert(tl_jwt_verify(jwt, cases[i].path, &hh, &cc));
                ck_assert_str_eq(json_string_value(json_object_get(hh, "alg")), cases[i].name);
                ck_assert_str_eq(json_string_value(json_object_get(hh, "kid")), "KEY1234567");
                ck_assert_str_eq(json_string_value(json_object_get(cc, "iss")), "TEAM123456");
                ck_assert_int_eq(json_integer_value(json_object_get(cc, "iat")), 1700000000);
                json_decref(hh);
                json_decref(cc);
                /* A changed signature no longer verifies. */
                char *sig = strrchr(jwt, '.') + 10;
                *sig = *sig == 'A' ? 'B' : 'A';
                ck_assert(!tl_jwt_verify(jwt, cases[i].path, &hh, &cc));
                json_decref(hh);
                json_decref(cc);
                jwt_key_free(k);
                k = NULL;
        }
}
END_TEST

START_TEST(test_pushd_apns_payload) {
        struct push_job *j =
                parse_ok("{\"provider\":\"apns\",\"token\":\"" APNS_TOKEN "\",\"app-id\":\"org.x\","
                         "\"type\":\"call\",\"from-uri\":\"sip:alice@example.org\",\"from-name\":"
                         "\"Alice\",\"call-id\":\"c1\",\"uuid\":\"u1\"}");
        json_t *p = apns_payload(j);
        ck_assert_int_eq(json_object_size(json_object_get(p, "aps")), 0);
        ck_assert_str_eq(json_string_value(json_object_get(p, "call-id")), "c1");
        ck_assert_str_eq(json_string_value(json_object_get(p, "from-uri")),
                         "sip:alice@example.org");
        ck_assert_str_eq(json_string_value(json_object_get(p, "type")), "call");
        ck_assert(json_is_integer(json_object_get(p, "send-time")));
        json_decref(p);
        j->type = PUSH_TYPE_MESSAGE;
        p = apns_payload(j);
        json_t *aps = json_object_get(p, "aps");
        ck_assert_int_eq(json_integer_value(json_object_get(aps, "mutable-content")), 1);
        json_t *alert = json_object_get(aps, "alert");
        ck_assert_str_eq(json_string_value(json_object_get(alert, "loc-key")), "IM_MSG");
        ck_assert_str_eq(json_string_value(json_array_get(json_object_get(alert, "loc-args"), 0)),
                         "Alice");
        json_decref(p);
        j->text = strdup("hi");
        p = apns_payload(j);
        alert = json_object_get(json_object_get(p, "aps"), "alert");
        ck_assert_str_eq(json_string_value(json_object_get(alert, "title")), "Alice");
        ck_assert_str_eq(json_string_value(json_object_get(alert, "body")), "hi");
        json_decref(p);
        j->type = PUSH_TYPE_BACKGROUND;
        p = apns_payload(j);
        aps = json_object_get(p, "aps");
        ck_assert_int_eq(json_integer_value(json_object_get(aps, "content-available")), 1);
        ck_assert_ptr_null(json_object_get(aps, "alert"));
        json_decref(p);
        push_job_free(j);
}
END_TEST

START_TEST(test_pushd_fcm_message) {
        struct push_job *j = parse_ok(
                "{\"provider\":\"fcm\",\"token\":\"tok\",\"app-id\":\"proj\",\"type\":\"call\","
                "\"from-uri\":\"sip:alice@example.org\",\"call-id\":\"c1\",\"ttl\":45,"
                "\"collapse-id\":\"c1\",\"custom\":{\"a\":true}}");
        json_t *m = fcm_message(j, "tok");
        json_t *msg = json_object_get(m, "message");
        ck_assert_str_eq(json_string_value(json_object_get(msg, "token")), "tok");
        json_t *android = json_object_get(msg, "android");
        ck_assert_str_eq(json_string_value(json_object_get(android, "priority")), "high");
        ck_assert_str_eq(json_string_value(json_object_get(android, "ttl")), "45s");
        ck_assert_str_eq(json_string_value(json_object_get(android, "collapse_key")), "c1");
        json_t *data = json_object_get(msg, "data");
        ck_assert_str_eq(json_string_value(json_object_get(data, "call-id")), "c1");
        ck_assert_str_eq(json_string_value(json_object_get(data, "type")), "call");
        ck_assert_str_eq(json_string_value(json_object_get(data, "custom")), "{\"a\":true}");
        /* Every data value is a string, as FCM requires. */
        const char *key;
        json_t *v;
        json_object_foreach(data, key, v)
                ck_assert_msg(json_is_string(v), "data '%s' is not a string", key);
        ck_assert_ptr_null(json_object_get(msg, "notification"));
        json_decref(m);
        push_job_free(j);
}
END_TEST

START_TEST(test_pushd_generic_template) {
        struct push_job *j = parse_ok(
                "{\"provider\":\"generic\",\"token\":\"t1\",\"app-id\":\"app\",\"type\":"
                "\"message\",\"from-uri\":\"sip:alice@example.org\",\"from-name\":\"Al ice\","
                "\"text\":\"a&b\",\"id\":\"j1\"}");
        _cleanup_free_ char *u = generic_expand(
                "https://h/p?t=$token&ty=$type&a=$app-id&f=$from-uri&n=$from-name&x=$text&c="
                "$call-id&j=$job-id&p=$provider&$unknown",
                j, "t1");
        ck_assert_str_eq(u, "https://h/p?t=t1&ty=message&a=app&f=sip%3Aalice%40example.org&n=Al%"
                            "20ice&x=a%26b&c=&j=j1&p=generic&$unknown");
        push_job_free(j);
}
END_TEST

int main(void) {
        Suite *s = suite_create("pushd");
        TCase *tc = tcase_create("job");
        tcase_add_test(tc, test_pushd_job_valid);
        tcase_add_test(tc, test_pushd_job_errors);
        suite_add_tcase(s, tc);
        tc = tcase_create("jwt");
        tcase_add_test(tc, test_pushd_base64url);
        tcase_add_test(tc, test_pushd_jwt_sign);
        suite_add_tcase(s, tc);
        tc = tcase_create("payloads");
        tcase_add_test(tc, test_pushd_apns_payload);
        tcase_add_test(tc, test_pushd_fcm_message);
        tcase_add_test(tc, test_pushd_generic_template);
        suite_add_tcase(s, tc);
        return tl_run(s);
}
