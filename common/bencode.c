/* SPDX-License-Identifier: MIT */
#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bencode.h"

struct decoder {
        const unsigned char *p;
        size_t len, pos;
        struct bencode_limits limits;
        size_t items;
        struct bencode_error *err;
};

_printf_(3, 4) static int fail(struct decoder *d, int r, const char *fmt, ...) {
        va_list ap;

        if (d->err) {
                d->err->offset = d->pos;
                va_start(ap, fmt);
                vsnprintf(d->err->msg, sizeof(d->err->msg), fmt, ap);
                va_end(ap);
        }
        return r;
}

static struct bencode *node_new(enum bencode_type type, size_t extra) {
        struct bencode *b = calloc(1, sizeof(*b) + extra);
        if (b)
                b->type = type;
        return b;
}

void bencode_free(struct bencode *b) {
        while (b) {
                struct bencode *next = b->next;
                bencode_free(b->first);
                bencode_free(b->value);
                free(b);
                b = next;
        }
}

/* Digits up to `end`: a non-negative decimal without leading zeros (except "0"). */
static int parse_uint(struct decoder *d, char end, uint64_t max, uint64_t *ret) {
        size_t start = d->pos;
        uint64_t v = 0;

        while (d->pos < d->len && d->p[d->pos] != end) {
                unsigned char c = d->p[d->pos];
                if (c < '0' || c > '9')
                        return fail(d, -EBADMSG, "unexpected byte 0x%02x in a number", c);
                if (d->pos > start && d->p[start] == '0')
                        return fail(d, -EBADMSG, "number with a leading zero");
                if (v > (max - (c - '0')) / 10)
                        return fail(d, -EBADMSG, "number out of range");
                v = v * 10 + (c - '0');
                d->pos++;
        }
        if (d->pos >= d->len)
                return fail(d, -EBADMSG, "truncated number");
        if (d->pos == start)
                return fail(d, -EBADMSG, "empty number");
        d->pos++; /* end */
        *ret = v;
        return 0;
}

static int decode_item(struct decoder *d, unsigned depth, struct bencode **ret);

static int decode_string(struct decoder *d, struct bencode **ret) {
        uint64_t n;
        int r = parse_uint(d, ':', SIZE_MAX / 2, &n);
        if (r < 0)
                return r;
        if (n > d->len - d->pos)
                return fail(d, -EBADMSG, "string of %" PRIu64 " bytes runs past the end", n);
        struct bencode *b = node_new(BENCODE_STRING, n + 1);
        if (!b)
                return -ENOMEM;
        b->s = (char *)(b + 1);
        memcpy(b->s, d->p + d->pos, n);
        b->len = n;
        d->pos += n;
        *ret = b;
        return 0;
}

static int decode_int(struct decoder *d, struct bencode **ret) {
        bool neg = false;
        uint64_t v;
        int r;

        d->pos++; /* 'i' */
        if (d->pos < d->len && d->p[d->pos] == '-') {
                neg = true;
                d->pos++;
        }
        r = parse_uint(d, 'e', neg ? (uint64_t)INT64_MAX + 1 : (uint64_t)INT64_MAX, &v);
        if (r < 0)
                return r;
        if (neg && v == 0)
                return fail(d, -EBADMSG, "negative zero");
        struct bencode *b = node_new(BENCODE_INT, 0);
        if (!b)
                return -ENOMEM;
        b->i = neg ? (int64_t)(0 - v) : (int64_t)v;
        *ret = b;
        return 0;
}

static void append(struct bencode *c, struct bencode *item) {
        if (c->last)
                c->last->next = item;
        else
                c->first = item;
        c->last = item;
        c->n++;
}

static int decode_container(struct decoder *d, unsigned depth, struct bencode **ret) {
        bool dict = d->p[d->pos] == 'd';
        struct bencode *c;
        int r;

        if (depth >= d->limits.max_depth)
                return fail(d, -E2BIG, "nested deeper than %u levels", d->limits.max_depth);
        c = node_new(dict ? BENCODE_DICT : BENCODE_LIST, 0);
        if (!c)
                return -ENOMEM;
        d->pos++;
        for (;;) {
                struct bencode *item = NULL;

                if (d->pos >= d->len) {
                        r = fail(d, -EBADMSG, "truncated %s", dict ? "dictionary" : "list");
                        goto fail;
                }
                if (d->p[d->pos] == 'e') {
                        d->pos++;
                        break;
                }
                r = decode_item(d, depth + 1, &item);
                if (r < 0)
                        goto fail;
                if (dict) {
                        if (item->type != BENCODE_STRING) {
                                bencode_free(item);
                                r = fail(d, -EBADMSG, "dictionary key is not a string");
                                goto fail;
                        }
                        if (d->pos >= d->len || d->p[d->pos] == 'e') {
                                r = fail(d, -EBADMSG, "dictionary key '%.40s' without a value",
                                         item->s);
                                bencode_free(item);
                                goto fail;
                        }
                        r = decode_item(d, depth + 1, &item->value);
                        if (r < 0) {
                                bencode_free(item);
                                goto fail;
                        }
                }
                append(c, item);
        }
        *ret = c;
        return 0;
fail:
        bencode_free(c);
        return r;
}

static int decode_item(struct decoder *d, unsigned depth, struct bencode **ret) {
        if (d->pos >= d->len)
                return fail(d, -EBADMSG, "truncated input");
        if (++d->items > d->limits.max_items)
                return fail(d, -E2BIG, "more than %zu items", d->limits.max_items);
        unsigned char c = d->p[d->pos];
        if (c == 'i')
                return decode_int(d, ret);
        if (c == 'l' || c == 'd')
                return decode_container(d, depth, ret);
        if (c >= '0' && c <= '9')
                return decode_string(d, ret);
        return fail(d, -EBADMSG, "unexpected byte 0x%02x", c);
}

int bencode_decode(const void *buf, size_t len, const struct bencode_limits *limits,
                   struct bencode **ret, size_t *consumed, struct bencode_error *err) {
        struct decoder d = {
                .p = buf,
                .len = len,
                .limits = limits ? *limits : BENCODE_LIMITS_DEFAULT,
                .err = err,
        };
        struct bencode *b = NULL;
        int r;

        if (err)
                *err = (struct bencode_error){0};
        if (!buf && len > 0)
                return fail(&d, -EBADMSG, "no input");
        r = decode_item(&d, 0, &b);
        if (r < 0)
                return r;
        if (consumed)
                *consumed = d.pos;
        *ret = b;
        return 0;
}

/* Builders. */

struct bencode *bencode_new_int(int64_t i) {
        struct bencode *b = node_new(BENCODE_INT, 0);
        if (b)
                b->i = i;
        return b;
}

struct bencode *bencode_new_string(const void *s, size_t len) {
        struct bencode *b = node_new(BENCODE_STRING, len + 1);
        if (!b)
                return NULL;
        b->s = (char *)(b + 1);
        if (len)
                memcpy(b->s, s, len);
        b->len = len;
        return b;
}

struct bencode *bencode_new_str(const char *s) {
        return bencode_new_string(s, s ? strlen(s) : 0);
}

struct bencode *bencode_new_list(void) {
        return node_new(BENCODE_LIST, 0);
}

struct bencode *bencode_new_dict(void) {
        return node_new(BENCODE_DICT, 0);
}

struct bencode *bencode_list_add(struct bencode *list, struct bencode *item) {
        if (!list) {
                bencode_free(item);
                return NULL;
        }
        if (!item) {
                list->failed = true;
                return NULL;
        }
        append(list, item);
        return item;
}

struct bencode *bencode_dict_add(struct bencode *dict, const char *key, struct bencode *item) {
        if (!dict) {
                bencode_free(item);
                return NULL;
        }
        struct bencode *k = item ? bencode_new_str(key) : NULL;
        if (!k) {
                bencode_free(item);
                dict->failed = true;
                return NULL;
        }
        k->value = item;
        append(dict, k);
        return item;
}

struct bencode *bencode_dict_add_str(struct bencode *dict, const char *key, const char *s) {
        return bencode_dict_add(dict, key, bencode_new_str(s));
}

struct bencode *bencode_dict_add_int(struct bencode *dict, const char *key, int64_t i) {
        return bencode_dict_add(dict, key, bencode_new_int(i));
}

/* Encoder. */

static int cmp_keys(const void *a, const void *b) {
        const struct bencode *x = *(const struct bencode *const *)a;
        const struct bencode *y = *(const struct bencode *const *)b;
        int c = memcmp(x->s, y->s, MIN(x->len, y->len));
        if (c)
                return c;
        return x->len < y->len ? -1 : x->len > y->len;
}

static int encode(FILE *f, const struct bencode *b) {
        switch (b->type) {
        case BENCODE_INT:
                fprintf(f, "i%" PRId64 "e", b->i);
                return 0;
        case BENCODE_STRING:
                fprintf(f, "%zu:", b->len);
                fwrite(b->s, 1, b->len, f);
                return 0;
        case BENCODE_LIST:
                if (b->failed)
                        return -ENOMEM;
                fputc('l', f);
                for (const struct bencode *i = b->first; i; i = i->next) {
                        int r = encode(f, i);
                        if (r < 0)
                                return r;
                }
                fputc('e', f);
                return 0;
        case BENCODE_DICT: {
                if (b->failed)
                        return -ENOMEM;
                const struct bencode **keys = calloc(b->n ? b->n : 1, sizeof(*keys));
                size_t n = 0;
                int r = 0;

                if (!keys)
                        return -ENOMEM;
                for (const struct bencode *k = b->first; k; k = k->next)
                        keys[n++] = k;
                qsort(keys, n, sizeof(*keys), cmp_keys);
                fputc('d', f);
                for (size_t i = 0; i < n && r >= 0; i++) {
                        fprintf(f, "%zu:", keys[i]->len);
                        fwrite(keys[i]->s, 1, keys[i]->len, f);
                        r = encode(f, keys[i]->value);
                }
                fputc('e', f);
                free(keys);
                return r;
        }
        }
        return -EINVAL;
}

int bencode_encode(const struct bencode *b, char **ret, size_t *ret_len) {
        char *buf = NULL;
        size_t size = 0;
        FILE *f;
        int r;

        if (!b)
                return -ENOMEM;
        f = open_memstream(&buf, &size);
        if (!f)
                return -ENOMEM;
        r = encode(f, b);
        if (fclose(f) != 0 && r >= 0)
                r = -ENOMEM;
        if (r < 0) {
                free(buf);
                return r;
        }
        *ret = buf;
        if (ret_len)
                *ret_len = size;
        return 0;
}

struct bencode *bencode_dict_get(const struct bencode *dict, const char *key) {
        size_t len = strlen(key);

        if (!dict || dict->type != BENCODE_DICT)
                return NULL;
        for (const struct bencode *k = dict->first; k; k = k->next)
                if (k->len == len && memcmp(k->s, key, len) == 0)
                        return k->value;
        return NULL;
}

const char *bencode_dict_get_str(const struct bencode *dict, const char *key) {
        struct bencode *v = bencode_dict_get(dict, key);
        return v && v->type == BENCODE_STRING ? v->s : NULL;
}

bool bencode_is_str(const struct bencode *b, const char *s) {
        size_t len = strlen(s);
        return b && b->type == BENCODE_STRING && b->len == len && memcmp(b->s, s, len) == 0;
}
