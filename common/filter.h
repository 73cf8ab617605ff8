/* SPDX-License-Identifier: MIT */
#pragma once

/* Filter expressions: the boolean language of every module's `filter` key and of the Forward
 * routes file, compiled once into a tree and evaluated against any message through a getter.
 * No SIP here: proxy/filter-sip.h supplies the variables of a sofia message.
 *
 * Syntax (precedence from low to high: ||, &&, !, then the operators):
 *
 *   expr     := and ( '||' and )*
 *   and      := unary ( '&&' unary )*
 *   unary    := '!' unary | '(' expr ')' | 'true' | 'false'
 *             | 'defined' var | 'defined' '(' var ')' | 'numeric' var | 'numeric' '(' var ')'
 *             | var OP-STR string | var ('==' | '!=') (string | var) | var
 *   OP-STR   := '==' | '!=' | 'contains' | 'in' | 'nin' | 'notin' | 'regex' | 'regexp'
 *   var      := [A-Za-z_][A-Za-z0-9_.-]*   (not a keyword: true false defined numeric contains
 *                                           in nin notin regex regexp)
 *   string   := '...' in single quotes; \' is a quote, any other backslash is kept as written
 *               (so '\.' reaches a regex as \.); a string cannot end with a backslash.
 *   Numbers are strings too: status.code == '200' (a bare 200 is refused with that hint).
 *
 * Meaning (values are strings, compared byte for byte, case-sensitive):
 *   a == 'x'        a is defined and equals x           a == b   both defined and equal
 *   a contains 'x'  a is defined and has x as a substring
 *   a in 'x y z'    a is defined and equals one of the space-separated words
 *   a regex 'p'     a is defined and the POSIX extended regular expression p matches all of a
 *   defined a       the getter returns a value for a (the empty string counts as defined)
 *   numeric a       a is defined, not empty, and made of decimal digits only
 *   a  (alone)      a is defined and equals "true" (for is_request, is_response...)
 *   a != ..., a nin/notin ...  are exactly !(a == ...), !(a in ...): true when a is undefined.
 * An empty expression (or only blanks) is true. && and || short-circuit.
 *
 * Regular expressions are POSIX extended (regcomp REG_EXTENDED), not ECMAScript as in the
 * reference: the pattern must match the whole value (as if written ^(...)$); alternation takes
 * the longest match; there is no \d (use [0-9]), no lazy quantifiers (*? +?), no (?:...) or
 * look-around groups and no back-references: those are refused at compile time rather than
 * silently meaning something else. [[:digit:]], [[:alpha:]], \w, \s and \b do work. A pattern
 * whose counted repetitions expand beyond FILTER_MAX_REGEX_SIZE is refused.
 *
 * Limits: FILTER_MAX_LENGTH bytes of text, FILTER_MAX_DEPTH nested '(' and '!'. */

#include <stdbool.h>
#include <stddef.h>

#define FILTER_MAX_LENGTH 4096
#define FILTER_MAX_DEPTH 64
#define FILTER_MAX_REGEX_SIZE 10000

struct filter;

/* Where and why filter_compile() failed. */
struct filter_error {
        unsigned column;   /* 1-based byte offset in the expression; 0 when not tied to a place */
        char reason[224];  /* "expected a string after 'contains'" */
        char message[256]; /* "filter: column 17: expected a string after 'contains'" */
};

/* The value of a variable, or NULL when it is not defined for this message. The string must
 * stay valid until filter_eval() returns; the same name may be asked for more than once. */
typedef const char *(*filter_get_fn)(const char *name, void *userdata);

/* Compiles expr (NULL = empty = true). With known (a NULL-terminated list), a variable name not
 * in it is refused, with a "did you mean" hint; NULL accepts any name. Returns 0 and *ret, or
 * -EINVAL (syntax, unknown name, limit, bad regex) / -ENOMEM with *error filled (error may be
 * NULL). */
int filter_compile(const char *expr, const char *const *known, struct filter **ret,
                   struct filter_error *error);
void filter_free(struct filter *f);
static inline void filter_freep(struct filter **f) {
        filter_free(*f);
}

/* Evaluates f (NULL = true); get is called for each variable the evaluation reaches. */
bool filter_eval(const struct filter *f, filter_get_fn get, void *userdata);

/* The expression as given to filter_compile() ("" for an empty one). */
const char *filter_source(const struct filter *f);
