/* SPDX-License-Identifier: MIT */
#include <stdint.h>
#include <stdio.h>

#include "macro.h"

void strv_free(char **l) {
        if (!l)
                return;
        for (char **s = l; *s; s++)
                free(*s);
        free(l);
}

size_t strv_length(char *const *l) {
        size_t n = 0;
        while (l && l[n])
                n++;
        return n;
}

bool strv_contains(char *const *l, const char *s) {
        STRV_FOREACH(i, l)
                if (streq(*i, s))
                        return true;
        return false;
}

char **strv_copy(char *const *l) {
        size_t n = strv_length(l);
        _cleanup_strv_free_ char **r = calloc(n + 1, sizeof(char *));
        if (!r)
                return NULL;
        for (size_t i = 0; i < n; i++)
                if (!(r[i] = strdup(l[i])))
                        return NULL;
        return TAKE_PTR(r);
}

int strv_extend(char ***l, const char *s) {
        size_t n = strv_length(*l);
        char *c = strdup(s);
        if (!c)
                return -ENOMEM;
        char **r = realloc(*l, (n + 2) * sizeof(char *));
        if (!r) {
                free(c);
                return -ENOMEM;
        }
        r[n] = c;
        r[n + 1] = NULL;
        *l = r;
        return 0;
}

char **strv_split(const char *s, const char *sep) {
        _cleanup_strv_free_ char **r = calloc(1, sizeof(char *));
        if (!r)
                return NULL;
        while (s && *s) {
                s += strspn(s, sep);
                size_t n = strcspn(s, sep);
                if (n == 0)
                        break;
                _cleanup_free_ char *w = strndup(s, n);
                if (!w || strv_extend(&r, w) < 0)
                        return NULL;
                s += n;
        }
        return TAKE_PTR(r);
}

char *strv_join(char *const *l, const char *sep) {
        size_t len = 1, seplen = strlen(sep);
        STRV_FOREACH(s, l)
                len += strlen(*s) + seplen;
        char *r = malloc(len), *p = r;
        if (!r)
                return NULL;
        *p = 0;
        STRV_FOREACH(s, l) {
                if (s != l)
                        p = stpcpy(p, sep);
                p = stpcpy(p, *s);
        }
        return r;
}

size_t string_distance(const char *a, const char *b) {
        size_t la = strlen(a), lb = strlen(b);
        if (la > 256 || lb > 256)
                return SIZE_MAX;
        size_t row[257];
        for (size_t j = 0; j <= lb; j++)
                row[j] = j;
        for (size_t i = 1; i <= la; i++) {
                size_t prev = row[0];
                row[0] = i;
                for (size_t j = 1; j <= lb; j++) {
                        size_t cur = row[j];
                        size_t cost = a[i - 1] == b[j - 1] ? 0 : 1;
                        row[j] = MIN(MIN(row[j] + 1, row[j - 1] + 1), prev + cost);
                        prev = cur;
                }
        }
        return row[lb];
}
