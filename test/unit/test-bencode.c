/* SPDX-License-Identifier: MIT */
#include <dirent.h>
#include <stdio.h>
#include <string.h>

#include "bencode.h"
#include "macro.h"
#include "testlib.h"

static int decode_str(const char *s, struct bencode **ret, struct bencode_error *err) {
        return bencode_decode(s, strlen(s), NULL, ret, NULL, err);
}

static char *encode_str(const struct bencode *b) {
        char *out = NULL;
        size_t len;
        ck_assert_int_eq(bencode_encode(b, &out, &len), 0);
        ck_assert_uint_eq(strlen(out), len);
        return out;
}

START_TEST(test_bencode_decode_scalars) {
        struct bencode *b;
        struct bencode_error err;
        size_t used;

        ck_assert_int_eq(decode_str("i42e", &b, &err), 0);
        ck_assert_int_eq(b->type, BENCODE_INT);
        ck_assert_int_eq(b->i, 42);
        bencode_free(b);

        ck_assert_int_eq(decode_str("i-9223372036854775808e", &b, &err), 0);
        ck_assert(b->i == INT64_MIN);
        bencode_free(b);
        ck_assert_int_eq(decode_str("i9223372036854775807e", &b, &err), 0);
        ck_assert(b->i == INT64_MAX);
        bencode_free(b);

        ck_assert_int_eq(decode_str("i0e", &b, &err), 0);
        ck_assert_int_eq(b->i, 0);
        bencode_free(b);

        ck_assert_int_eq(bencode_decode("4:spamXY", 8, NULL, &b, &used, &err), 0);
        ck_assert_int_eq(b->type, BENCODE_STRING);
        ck_assert_uint_eq(b->len, 4);
        ck_assert_str_eq(b->s, "spam");
        ck_assert_uint_eq(used, 6);
        bencode_free(b);

        ck_assert_int_eq(decode_str("0:", &b, &err), 0);
        ck_assert_uint_eq(b->len, 0);
        ck_assert_str_eq(b->s, "");
        bencode_free(b);

        /* Binary strings keep their NUL bytes. */
        ck_assert_int_eq(bencode_decode("3:a\0b", 5, NULL, &b, NULL, &err), 0);
        ck_assert_uint_eq(b->len, 3);
        ck_assert_int_eq(memcmp(b->s, "a\0b", 3), 0);
        bencode_free(b);
}
END_TEST

START_TEST(test_bencode_decode_containers) {
        struct bencode *b, *v;
        struct bencode_error err;

        ck_assert_int_eq(decode_str("d7:command5:offer5:flagsl13:trust-address9:symmetrice"
                                    "5:limiti3ee",
                                    &b, &err),
                         0);
        ck_assert_int_eq(b->type, BENCODE_DICT);
        ck_assert_uint_eq(b->n, 3);
        ck_assert_str_eq(bencode_dict_get_str(b, "command"), "offer");
        v = bencode_dict_get(b, "flags");
        ck_assert_ptr_nonnull(v);
        ck_assert_int_eq(v->type, BENCODE_LIST);
        ck_assert_uint_eq(v->n, 2);
        ck_assert(bencode_is_str(v->first, "trust-address"));
        ck_assert(bencode_is_str(v->first->next, "symmetric"));
        ck_assert_int_eq(bencode_dict_get(b, "limit")->i, 3);
        ck_assert_ptr_null(bencode_dict_get(b, "nothere"));
        ck_assert_ptr_null(bencode_dict_get_str(b, "limit"));
        bencode_free(b);

        ck_assert_int_eq(decode_str("le", &b, &err), 0);
        ck_assert_uint_eq(b->n, 0);
        bencode_free(b);
        ck_assert_int_eq(decode_str("de", &b, &err), 0);
        ck_assert_int_eq(b->type, BENCODE_DICT);
        bencode_free(b);

        /* Unsorted keys are accepted; a duplicate key's first value wins. */
        ck_assert_int_eq(decode_str("d1:bi2e1:ai1e1:bi3ee", &b, &err), 0);
        ck_assert_int_eq(bencode_dict_get(b, "b")->i, 2);
        ck_assert_int_eq(bencode_dict_get(b, "a")->i, 1);
        bencode_free(b);
}
END_TEST

static void expect_error(const char *in, size_t len, int code, const char *msg_part) {
        struct bencode *b = NULL;
        struct bencode_error err;
        int r = bencode_decode(in, len, NULL, &b, NULL, &err);
        ck_assert_msg(r == code, "'%.*s': got %d, expected %d", (int)MIN(len, 60), in, r, code);
        ck_assert_ptr_null(b);
        ck_assert_msg(strstr(err.msg, msg_part), "'%.*s': error '%s' lacks '%s'",
                      (int)MIN(len, 60), in, err.msg, msg_part);
}
#define EXPECT_ERROR(s, code, part) expect_error(s, strlen(s), code, part)

START_TEST(test_bencode_decode_errors) {
        EXPECT_ERROR("", -EBADMSG, "truncated");
        EXPECT_ERROR("i42", -EBADMSG, "truncated number");
        EXPECT_ERROR("ie", -EBADMSG, "empty number");
        EXPECT_ERROR("i-e", -EBADMSG, "empty number");
        EXPECT_ERROR("i-0e", -EBADMSG, "negative zero");
        EXPECT_ERROR("i007e", -EBADMSG, "leading zero");
        EXPECT_ERROR("i9223372036854775808e", -EBADMSG, "out of range");
        EXPECT_ERROR("i-9223372036854775809e", -EBADMSG, "out of range");
        EXPECT_ERROR("i1x2e", -EBADMSG, "unexpected byte 0x78");
        EXPECT_ERROR("05:hello", -EBADMSG, "leading zero");
        EXPECT_ERROR("10:short", -EBADMSG, "runs past the end");
        EXPECT_ERROR("99999999999999999999999999:x", -EBADMSG, "out of range");
        EXPECT_ERROR("5", -EBADMSG, "truncated number");
        EXPECT_ERROR("l", -EBADMSG, "truncated list");
        EXPECT_ERROR("li1e", -EBADMSG, "truncated list");
        EXPECT_ERROR("d1:a", -EBADMSG, "without a value");
        EXPECT_ERROR("d1:ae", -EBADMSG, "without a value");
        EXPECT_ERROR("di1ei2ee", -EBADMSG, "key is not a string");
        EXPECT_ERROR("dlee1:ae", -EBADMSG, "key is not a string");
        EXPECT_ERROR("x", -EBADMSG, "unexpected byte 0x78");
        EXPECT_ERROR("l\xff" "e", -EBADMSG, "unexpected byte 0xff");
}
END_TEST

START_TEST(test_bencode_decode_limits) {
        struct bencode *b = NULL;
        struct bencode_error err;
        struct bencode_limits lim = {.max_depth = 3, .max_items = 10};
        char deep[2 * 10000 + 1];

        ck_assert_int_eq(bencode_decode("llleee", 6, &lim, &b, NULL, &err), 0);
        bencode_free(b);
        b = NULL;
        ck_assert_int_eq(bencode_decode("lllleeee", 8, &lim, &b, NULL, &err), -E2BIG);
        ck_assert_ptr_null(b);
        ck_assert_ptr_nonnull(strstr(err.msg, "nested deeper than 3"));

        ck_assert_int_eq(bencode_decode("li1ei2ei3ei4ei5ei6ei7ei8ei9ee", 29, &lim, &b, NULL, &err),
                         0);
        bencode_free(b);
        b = NULL;
        ck_assert_int_eq(
                bencode_decode("li1ei2ei3ei4ei5ei6ei7ei8ei9ei10ee", 33, &lim, &b, NULL, &err),
                -E2BIG);
        ck_assert_ptr_nonnull(strstr(err.msg, "more than 10 items"));

        /* The default depth bounds a hostile nesting well before the stack is in danger. */
        memset(deep, 'l', 10000);
        memset(deep + 10000, 'e', 10000);
        deep[20000] = 0;
        ck_assert_int_eq(bencode_decode(deep, 20000, NULL, &b, NULL, &err), -E2BIG);
        ck_assert_uint_eq(err.offset, 32);
}
END_TEST

START_TEST(test_bencode_encode_sorted_roundtrip) {
        struct bencode *d = bencode_new_dict(), *l, *back;
        _cleanup_free_ char *out = NULL, *again = NULL;

        bencode_dict_add_str(d, "result", "ok");
        bencode_dict_add_int(d, "created", 1700000000);
        l = bencode_dict_add(d, "calls", bencode_new_list());
        bencode_list_add(l, bencode_new_str("call-1"));
        bencode_list_add(l, bencode_new_string("a\0b", 3));
        bencode_dict_add_int(d, "neg", -5);
        bencode_dict_add(d, "empty", bencode_new_dict());
        {
                static const char want[] = "d5:callsl6:call-13:a\0be7:createdi1700000000e"
                                           "5:emptyde3:negi-5e6:result2:oke";
                size_t len;
                ck_assert_int_eq(bencode_encode(d, &out, &len), 0);
                ck_assert_uint_eq(len, sizeof(want) - 1);
                ck_assert_int_eq(memcmp(out, want, len), 0);
        }
        bencode_free(d);

        d = bencode_new_dict();
        bencode_dict_add_str(d, "zeta", "z");
        bencode_dict_add_str(d, "alpha", "a");
        bencode_dict_add_str(d, "al", "b");
        bencode_dict_add_int(d, "mid", -5);
        free(out);
        out = encode_str(d);
        ck_assert_str_eq(out, "d2:al1:b5:alpha1:a3:midi-5e4:zeta1:ze");
        ck_assert_int_eq(bencode_decode(out, strlen(out), NULL, &back, NULL, NULL), 0);
        again = encode_str(back);
        ck_assert_str_eq(out, again);
        bencode_free(back);
        bencode_free(d);
}
END_TEST

START_TEST(test_bencode_encode_binary_and_failed) {
        struct bencode *l = bencode_new_list();
        char *out = NULL;
        size_t len = 0;

        bencode_list_add(l, bencode_new_string("a\0b", 3));
        ck_assert_int_eq(bencode_encode(l, &out, &len), 0);
        ck_assert_uint_eq(len, 7);
        ck_assert_int_eq(memcmp(out, "l3:a\0be", 7), 0);
        free(out);

        /* A failed add (here: a NULL item, as after ENOMEM) makes encoding refuse. */
        ck_assert_ptr_null(bencode_list_add(l, NULL));
        ck_assert_int_eq(bencode_encode(l, &out, &len), -ENOMEM);
        bencode_free(l);
        /* Adding to a NULL container frees the item (ASan checks the leak). */
        ck_assert_ptr_null(bencode_dict_add(NULL, "k", bencode_new_str("v")));
}
END_TEST

/* Every file of the malformed corpus: the payload after the cookie either fails with a message,
 * or decodes to a tree whose encoding decodes and encodes back to itself. */
START_TEST(test_bencode_corpus) {
        _cleanup_free_ char *dir = tl_source_path("test/corpus/bencode");
        DIR *d = opendir(dir);
        struct dirent *de;
        int n = 0, failed = 0;

        ck_assert_ptr_nonnull(d);
        while ((de = readdir(d))) {
                if (de->d_name[0] == '.')
                        continue;
                _cleanup_free_ char *path = NULL, *data = NULL;
                size_t len;
                ck_assert_int_ge(asprintf(&path, "%s/%s", dir, de->d_name), 0);
                data = tl_read_file(path, &len);
                ck_assert_ptr_nonnull(data);
                const char *sp = memchr(data, ' ', len);
                const char *p = sp ? sp + 1 : data;
                size_t plen = len - (size_t)(p - data);
                struct bencode *b = NULL;
                struct bencode_error err;
                int r = bencode_decode(p, plen, NULL, &b, NULL, &err);
                if (r < 0) {
                        ck_assert_msg(err.msg[0], "%s: error without a message", de->d_name);
                        ck_assert_ptr_null(b);
                        failed++;
                } else {
                        _cleanup_free_ char *e1 = NULL, *e2 = NULL;
                        size_t l1, l2;
                        struct bencode *b2 = NULL;
                        ck_assert_int_eq(bencode_encode(b, &e1, &l1), 0);
                        ck_assert_int_eq(bencode_decode(e1, l1, NULL, &b2, NULL, NULL), 0);
                        ck_assert_int_eq(bencode_encode(b2, &e2, &l2), 0);
                        ck_assert_uint_eq(l1, l2);
                        ck_assert_int_eq(memcmp(e1, e2, l1), 0);
                        bencode_free(b2);
                }
                bencode_free(b);
                n++;
        }
        closedir(d);
        ck_assert_int_ge(n, 40);
        ck_assert_int_ge(failed, 15);
}
END_TEST

int main(void) {
        Suite *s = suite_create("bencode");
        TCase *tc = tcase_create("decode");
        tcase_add_test(tc, test_bencode_decode_scalars);
        tcase_add_test(tc, test_bencode_decode_containers);
        tcase_add_test(tc, test_bencode_decode_errors);
        tcase_add_test(tc, test_bencode_decode_limits);
        tcase_add_test(tc, test_bencode_corpus);
        suite_add_tcase(s, tc);
        TCase *te = tcase_create("encode");
        tcase_add_test(te, test_bencode_encode_sorted_roundtrip);
        tcase_add_test(te, test_bencode_encode_binary_and_failed);
        suite_add_tcase(s, te);
        return tl_run(s);
}
