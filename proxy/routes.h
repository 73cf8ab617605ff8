/* SPDX-License-Identifier: MIT */
#pragma once

/* The Forward module's routes file ([module::Forward] routes-config-path): static next hops
 * chosen by filter expressions. One rule per line:
 *
 *     # comment (a line whose first non-blank character is '#')
 *     <sip:example.org;transport=tls>     request.uri.domain == 'example.org'
 *     sip:10.0.0.2:5070                   request.method in 'INVITE MESSAGE'
 *             && from.uri.domain != 'example.org'
 *     <sip:backend.example.org>           *
 *
 * - the next hop comes first: a sip: or sips: URI with a host, in angle brackets (needed only
 *   when it has parameters, but always accepted);
 * - the rest of the line is a filter expression (common/filter.h, variables of
 *   proxy/filter-sip.h; `direction` is never defined here), or `*` for every request;
 * - a line starting with a space or a tab continues the filter of the rule above (joined with
 *   one space); blank and comment lines are skipped anywhere;
 * - rules are tried in file order, the first whose filter is true wins.
 * Routes apply to out-of-dialog requests: deciding that is the caller's business.
 *
 * A bad rule fails the whole file, with "file:line: reason" or, for an error inside a filter,
 * "file:line:column: reason" pointing at the physical line (continuations included), so that
 * start-up and reload can refuse it and keep the old routes. Limits: ROUTES_MAX_SIZE bytes of
 * file, ROUTES_MAX_RULES rules, and the filter limits of common/filter.h per rule. */

#include <stddef.h>

#include "sofia.h"

#define ROUTES_MAX_SIZE (1024 * 1024)
#define ROUTES_MAX_RULES 10000

struct filter;
struct routes;

struct route {
        char *next_hop;        /* "sip:10.0.0.2:5070;transport=tcp": angle brackets removed */
        char *filter_text;     /* continuations joined with one space; "*" for every request */
        struct filter *filter; /* NULL for "*" */
        unsigned line;         /* where the rule starts, 1-based */
};

/* Reads and compiles the file. Returns 0 and *ret (an empty file gives 0 rules), or -errno with
 * *error set to a message naming the file (caller frees): -ENOENT/-EACCES..., -EFBIG over
 * ROUTES_MAX_SIZE, -EINVAL for a bad rule, -E2BIG over ROUTES_MAX_RULES. */
int routes_load(const char *path, struct routes **ret, char **error);
/* The same from text of len bytes (it may hold NUL bytes: they are refused); name is used in
 * messages in place of the file name. */
int routes_parse(const char *text, size_t len, const char *name, struct routes **ret, char **error);
void routes_free(struct routes *r);
static inline void routes_freep(struct routes **r) {
        routes_free(*r);
}

/* The next hop of the first rule whose filter is true for sip, or NULL when none matches (or r
 * is NULL). The string belongs to r. */
const char *routes_match(const struct routes *r, const sip_t *sip);

size_t routes_count(const struct routes *r);
/* Rule i (0-based, file order), NULL past the end. */
const struct route *routes_get(const struct routes *r, size_t i);
