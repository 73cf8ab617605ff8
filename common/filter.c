/* SPDX-License-Identifier: MIT */
/* Filter expressions: a recursive-descent parser into a tree, and its evaluator. The language is
 * described in filter.h. && and || nodes are n-ary, so the tree depth (and the evaluator's
 * recursion) is bounded by the nesting of '(' and '!', which the parser limits. */
#define LOG_SUBSYSTEM LOG_config
#include <assert.h>
#include <ctype.h>
#include <regex.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>

#include "filter.h"
#include "log.h"
#include "macro.h"

enum node_type {
        NODE_TRUE,
        NODE_FALSE,
        NODE_AND,     /* children */
        NODE_OR,      /* children */
        NODE_NOT,     /* children[0] */
        NODE_BOOL,    /* var == "true" */
        NODE_DEFINED, /* var */
        NODE_NUMERIC, /* var */
        NODE_EQ,      /* var == str, or var == rhs_var */
        NODE_CONTAINS,
        NODE_IN, /* words */
        NODE_REGEX,
};

struct node {
        enum node_type type;
        bool negate; /* !=, nin, notin */
        char *var;
        char *str;
        char *rhs_var;
        char **words;
        regex_t *re;
        struct node **children;
        size_t n_children;
};

struct filter {
        char *source;
        struct node *root; /* NULL = true */
};

enum token_type {
        TOK_END,
        TOK_LPAREN,
        TOK_RPAREN,
        TOK_NOT,
        TOK_AND,
        TOK_OR,
        TOK_EQ,
        TOK_NE,
        TOK_STRING,
        TOK_WORD, /* identifier or keyword */
};

struct token {
        enum token_type type;
        size_t start, len; /* in the text; for a string, quotes included */
};

struct parser {
        const char *text;
        size_t pos; /* after the current token */
        struct token tok;
        unsigned depth;
        const char *const *known;
        struct filter_error *error;
        int r; /* first error */
};

static const char *const keywords[] = {
        "true", "false", "defined", "numeric", "contains", "in", "nin", "notin", "regex", "regexp",
        NULL,
};

static void node_free(struct node *n) {
        if (!n)
                return;
        for (size_t i = 0; i < n->n_children; i++)
                node_free(n->children[i]);
        free(n->children);
        free(n->var);
        free(n->str);
        free(n->rhs_var);
        strv_free(n->words);
        if (n->re) {
                regfree(n->re);
                free(n->re);
        }
        free(n);
}

static void node_freep(struct node **n) {
        node_free(*n);
}

static struct node *node_new(enum node_type type) {
        struct node *n = calloc(1, sizeof *n);
        if (n)
                n->type = type;
        return n;
}

static int node_add_child(struct node *n, struct node *child) {
        struct node **c = realloc(n->children, (n->n_children + 1) * sizeof *c);
        if (!c)
                return -ENOMEM;
        n->children = c;
        n->children[n->n_children++] = child;
        return 0;
}

void filter_free(struct filter *f) {
        if (!f)
                return;
        node_free(f->root);
        free(f->source);
        free(f);
}

const char *filter_source(const struct filter *f) {
        return f ? f->source : "";
}

/* Records the first error: column is 1-based, 0 for none. Returns p->r. */
_printf_(3, 4) static int fail(struct parser *p, size_t offset_plus_1, const char *fmt, ...) {
        if (p->r < 0)
                return p->r;
        p->r = -EINVAL;
        if (!p->error)
                return p->r;
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(p->error->reason, sizeof p->error->reason, fmt, ap);
        va_end(ap);
        p->error->column = (unsigned)offset_plus_1;
        if (offset_plus_1 > 0)
                snprintf(p->error->message, sizeof p->error->message, "filter: column %u: %s",
                         p->error->column, p->error->reason);
        else
                snprintf(p->error->message, sizeof p->error->message, "filter: %s",
                         p->error->reason);
        return p->r;
}

static int fail_oom(struct parser *p) {
        (void)fail(p, 0, "out of memory");
        p->r = -ENOMEM;
        return p->r;
}

/* Words are names and keywords; numbers lex as words too, to be refused with a hint. */
static bool is_word_start(char c) {
        return isascii(c) && (isalnum(c) || c == '_');
}

static bool is_word_char(char c) {
        return isascii(c) && (isalnum(c) || c == '_' || c == '.' || c == '-');
}

/* A short, printable rendering of the current token for messages. */
static const char *token_describe(struct parser *p, char *buf, size_t size) {
        const struct token *t = &p->tok;
        if (t->type == TOK_END)
                return "the end of the expression";
        size_t len = t->len;
        const char *ell = "";
        if (len > 40) {
                len = 40;
                ell = "...";
        }
        snprintf(buf, size, "'%.*s%s'", (int)len, p->text + t->start, ell);
        return buf;
}

/* Reads the next token into p->tok. */
static int next(struct parser *p) {
        const char *s = p->text;
        size_t i = p->pos;
        while (s[i] == ' ' || s[i] == '\t' || s[i] == '\r' || s[i] == '\n')
                i++;
        struct token t = {.start = i, .len = 1};
        char c = s[i];
        switch (c) {
        case 0:
                t.type = TOK_END;
                t.len = 0;
                break;
        case '(':
                t.type = TOK_LPAREN;
                break;
        case ')':
                t.type = TOK_RPAREN;
                break;
        case '!':
                if (s[i + 1] == '=') {
                        t.type = TOK_NE;
                        t.len = 2;
                } else
                        t.type = TOK_NOT;
                break;
        case '=':
                if (s[i + 1] != '=')
                        return fail(p, i + 1, "unexpected '=' (did you mean '=='?)");
                t.type = TOK_EQ;
                t.len = 2;
                break;
        case '&':
                if (s[i + 1] != '&')
                        return fail(p, i + 1, "unexpected '&' (did you mean '&&'?)");
                t.type = TOK_AND;
                t.len = 2;
                break;
        case '|':
                if (s[i + 1] != '|')
                        return fail(p, i + 1, "unexpected '|' (did you mean '||'?)");
                t.type = TOK_OR;
                t.len = 2;
                break;
        case '\'': {
                size_t j = i + 1;
                for (;;) {
                        if (!s[j])
                                return fail(p, i + 1, "unterminated string (missing ')");
                        if (s[j] == '\\' && s[j + 1] == '\'')
                                j += 2;
                        else if (s[j] == '\'')
                                break;
                        else
                                j++;
                }
                t.type = TOK_STRING;
                t.len = j + 1 - i;
                break;
        }
        case '"':
                return fail(p, i + 1, "strings are written in single quotes, not double quotes");
        default:
                if (!is_word_start(c)) {
                        if (isascii(c) && isprint(c))
                                return fail(p, i + 1, "unexpected character '%c'", c);
                        return fail(p, i + 1, "unexpected byte 0x%02x", (unsigned char)c);
                }
                t.type = TOK_WORD;
                while (is_word_char(s[i + t.len]))
                        t.len++;
                break;
        }
        p->tok = t;
        p->pos = t.start + t.len;
        return 0;
}

static bool tok_is_word(struct parser *p, const char *w) {
        return p->tok.type == TOK_WORD && strlen(w) == p->tok.len &&
               memcmp(p->text + p->tok.start, w, p->tok.len) == 0;
}

static bool tok_is_keyword(struct parser *p) {
        STRV_FOREACH(k, (char *const *)keywords)
                if (tok_is_word(p, *k))
                        return true;
        return false;
}

static bool tok_is_var(struct parser *p) {
        char c = p->text[p->tok.start];
        return p->tok.type == TOK_WORD && !isdigit((unsigned char)c) && !tok_is_keyword(p);
}

/* " (write numbers in quotes: '200')" when the current token is a number, else "". */
static const char *number_hint(struct parser *p, char *buf, size_t size) {
        if (p->tok.type != TOK_WORD || !isdigit((unsigned char)p->text[p->tok.start]))
                return "";
        snprintf(buf, size, " (write numbers in quotes: '%.*s')", (int)MIN(p->tok.len, 20),
                 p->text + p->tok.start);
        return buf;
}

/* The current string token's value, malloc'd, \' turned into '. */
static char *tok_string(struct parser *p) {
        const char *s = p->text + p->tok.start + 1;
        size_t n = p->tok.len - 2;
        char *v = malloc(n + 1), *o = v;
        if (!v)
                return NULL;
        for (size_t i = 0; i < n; i++) {
                if (s[i] == '\\' && i + 1 < n && s[i + 1] == '\'')
                        i++;
                *o++ = s[i];
        }
        *o = 0;
        return v;
}

static const char *suggest(const char *const *known, const char *name) {
        const char *best = NULL;
        size_t best_d = SIZE_MAX;
        STRV_FOREACH(k, (char *const *)known) {
                size_t d = string_distance(*k, name);
                if (d < best_d) {
                        best_d = d;
                        best = *k;
                }
        }
        /* Close enough to be a typo: at most a third of the name wrong, and at most 3 edits. */
        if (best && best_d <= 3 && best_d * 3 <= strlen(name))
                return best;
        return NULL;
}

/* Consumes a variable name token into *ret (malloc'd). `after` names what came before, for the
 * error message (NULL: nothing). */
static int parse_var(struct parser *p, const char *after, char **ret) {
        char buf[64];
        if (!tok_is_var(p)) {
                if (after)
                        return fail(p, p->tok.start + 1,
                                    "expected a variable name after '%s' but found %s", after,
                                    token_describe(p, buf, sizeof buf));
                return fail(p, p->tok.start + 1, "expected a variable name but found %s",
                            token_describe(p, buf, sizeof buf));
        }
        char *name = strndup(p->text + p->tok.start, p->tok.len);
        if (!name)
                return fail_oom(p);
        if (p->known && !strv_contains((char *const *)p->known, name)) {
                const char *hint = suggest(p->known, name);
                int r;
                if (hint)
                        r = fail(p, p->tok.start + 1, "unknown variable '%s' (did you mean '%s'?)",
                                 name, hint);
                else
                        r = fail(p, p->tok.start + 1, "unknown variable '%s'", name);
                free(name);
                return r;
        }
        if (next(p) < 0) {
                free(name);
                return p->r;
        }
        *ret = name;
        return 0;
}

/* Checks what POSIX would accept but read differently from the ECMAScript the reference uses,
 * and estimates the size regcomp gives the pattern once counted repetitions are expanded. */
static int regex_check(struct parser *p, size_t col, const char *re) {
        enum { MAX_GROUPS = 32 };
        size_t sum[MAX_GROUPS + 1] = {0};
        size_t last = 0; /* size of the last atom, for a following {m,n} */
        unsigned depth = 0;
        bool after_quantifier = false;

        for (size_t i = 0; re[i];) {
                char c = re[i];
                bool quantifier = false;
                if (c == '?' && after_quantifier)
                        return fail(p, col,
                                    "regex: lazy quantifiers (*? +? ?? {n}?) are not "
                                    "POSIX; write the pattern without them");
                switch (c) {
                case '\\': {
                        char e = re[i + 1];
                        if (e >= '1' && e <= '9')
                                return fail(p, col,
                                            "regex: back-references (\\%c) are not supported", e);
                        if (e == 'd' || e == 'D')
                                return fail(p, col, "regex: \\%c is not POSIX; use %s", e,
                                            e == 'd' ? "[0-9]" : "[^0-9]");
                        last = 1;
                        sum[depth] += 1;
                        i += e ? 2 : 1;
                        break;
                }
                case '[': {
                        size_t j = i + 1;
                        if (re[j] == '^')
                                j++;
                        if (re[j] == ']')
                                j++;
                        while (re[j] && re[j] != ']') {
                                char end = re[j + 1];
                                if (re[j] == '[' && (end == ':' || end == '=' || end == '.')) {
                                        /* [:class:], [=equiv=], [.coll.] */
                                        size_t k = j + 2;
                                        while (re[k] && !(re[k] == end && re[k + 1] == ']'))
                                                k++;
                                        j = re[k] ? k + 2 : k;
                                } else
                                        j++;
                        }
                        /* An unterminated bracket is left to regcomp's own error. */
                        last = 1;
                        sum[depth] += 1;
                        i = re[j] ? j + 1 : j;
                        break;
                }
                case '(':
                        if (re[i + 1] == '?')
                                return fail(p, col,
                                            "regex: (?...) groups are not POSIX; use plain (...)");
                        if (depth == MAX_GROUPS)
                                return fail(p, col, "regex: groups nested deeper than %d",
                                            MAX_GROUPS);
                        sum[++depth] = 0;
                        last = 0;
                        i++;
                        break;
                case ')':
                        if (depth == 0) {
                                last = 1;
                                sum[0] += 1;
                        } else {
                                last = sum[depth--] + 1;
                                sum[depth] += last;
                        }
                        i++;
                        break;
                case '|':
                        last = 0;
                        i++;
                        break;
                case '*':
                case '+':
                case '?':
                        quantifier = true;
                        i++;
                        break;
                case '{': {
                        /* {m}, {m,}, {m,n} and glibc's {,n}; anything else is literal. */
                        const char *start = re + i + 1;
                        char *end = (char *)start;
                        unsigned long m = 0, n;
                        if (isdigit((unsigned char)*end)) {
                                m = strtoul(end, &end, 10);
                                m = MIN(m, (unsigned long)FILTER_MAX_REGEX_SIZE + 1);
                        }
                        if (*end == ',') {
                                end++;
                                n = isdigit((unsigned char)*end) ? strtoul(end, &end, 10) : m + 1;
                        } else
                                n = m;
                        if (end == start || *end != '}') {
                                last = 1;
                                sum[depth] += 1;
                                i++;
                                break;
                        }
                        n = MIN(n, (unsigned long)FILTER_MAX_REGEX_SIZE + 1);
                        if (n > 1) {
                                size_t grown = last * n;
                                sum[depth] += grown - last;
                                last = grown;
                        }
                        quantifier = true;
                        i = (size_t)(end - re) + 1;
                        break;
                }
                default:
                        last = 1;
                        sum[depth] += 1;
                        i++;
                        break;
                }
                after_quantifier = quantifier;
                for (unsigned d = 0; d <= depth; d++)
                        if (sum[d] > FILTER_MAX_REGEX_SIZE)
                                return fail(p, col,
                                            "regex: too large once its repetitions are expanded "
                                            "(over %d elements)",
                                            FILTER_MAX_REGEX_SIZE);
                if (last > FILTER_MAX_REGEX_SIZE)
                        return fail(p, col,
                                    "regex: too large once its repetitions are expanded (over %d "
                                    "elements)",
                                    FILTER_MAX_REGEX_SIZE);
        }
        return 0;
}

static int parse_or(struct parser *p, struct node **ret);

/* The right-hand side of a comparison whose operator token is current. */
static int parse_comparison(struct parser *p, char *var, struct node **ret) {
        _cleanup_(node_freep) struct node *n = node_new(NODE_EQ);
        if (!n) {
                free(var);
                return fail_oom(p);
        }
        n->var = var;

        char op[16];
        snprintf(op, sizeof op, "%.*s", (int)p->tok.len, p->text + p->tok.start);
        if (p->tok.type == TOK_NE || tok_is_word(p, "nin") || tok_is_word(p, "notin"))
                n->negate = true;
        if (p->tok.type == TOK_EQ || p->tok.type == TOK_NE)
                n->type = NODE_EQ;
        else if (tok_is_word(p, "contains"))
                n->type = NODE_CONTAINS;
        else if (tok_is_word(p, "in") || tok_is_word(p, "nin") || tok_is_word(p, "notin"))
                n->type = NODE_IN;
        else
                n->type = NODE_REGEX;
        if (next(p) < 0)
                return p->r;

        char buf[64], hint[48];
        if (p->tok.type != TOK_STRING) {
                if (n->type == NODE_EQ && tok_is_var(p)) {
                        if (parse_var(p, op, &n->rhs_var) < 0)
                                return p->r;
                        *ret = TAKE_PTR(n);
                        return 0;
                }
                return fail(p, p->tok.start + 1, "expected a %s after '%s' but found %s%s",
                            n->type == NODE_EQ ? "string or a variable" : "string", op,
                            token_describe(p, buf, sizeof buf), number_hint(p, hint, sizeof hint));
        }

        size_t col = p->tok.start + 2; /* inside the quote */
        _cleanup_free_ char *s = tok_string(p);
        if (!s)
                return fail_oom(p);
        switch (n->type) {
        case NODE_IN:
                n->words = strv_split(s, " \t\r\n");
                if (!n->words)
                        return fail_oom(p);
                if (!n->words[0])
                        return fail(p, col - 1, "expected at least one word in the list after '%s'",
                                    op);
                break;
        case NODE_REGEX: {
                if (regex_check(p, col, s) < 0)
                        return p->r;
                n->re = malloc(sizeof *n->re);
                if (!n->re)
                        return fail_oom(p);
                int e = regcomp(n->re, s, REG_EXTENDED);
                if (e != 0) {
                        char msg[128];
                        regerror(e, n->re, msg, sizeof msg);
                        free(TAKE_PTR(n->re));
                        if (e == REG_ESPACE)
                                return fail_oom(p);
                        return fail(p, col, "bad regular expression: %s", msg);
                }
                break;
        }
        default:
                n->str = TAKE_PTR(s);
                break;
        }
        if (next(p) < 0)
                return p->r;
        *ret = TAKE_PTR(n);
        return 0;
}

static int parse_unary(struct parser *p, struct node **ret) {
        char buf[64];
        size_t start = p->tok.start;

        if (p->tok.type == TOK_NOT || p->tok.type == TOK_LPAREN) {
                if (++p->depth > FILTER_MAX_DEPTH)
                        return fail(p, start + 1, "nesting deeper than %d", FILTER_MAX_DEPTH);
                bool paren = p->tok.type == TOK_LPAREN;
                if (next(p) < 0)
                        return p->r;
                _cleanup_(node_freep) struct node *inner = NULL;
                if ((paren ? parse_or(p, &inner) : parse_unary(p, &inner)) < 0)
                        return p->r;
                p->depth--;
                if (paren) {
                        if (p->tok.type != TOK_RPAREN)
                                return fail(
                                        p, p->tok.start + 1,
                                        "expected ')' to close the '(' of column %zu but found %s",
                                        start + 1, token_describe(p, buf, sizeof buf));
                        if (next(p) < 0)
                                return p->r;
                        *ret = TAKE_PTR(inner);
                        return 0;
                }
                struct node *n = node_new(NODE_NOT);
                if (!n || node_add_child(n, inner) < 0) {
                        free(n);
                        return fail_oom(p);
                }
                inner = NULL;
                *ret = n;
                return 0;
        }

        if (tok_is_word(p, "true") || tok_is_word(p, "false")) {
                struct node *n = node_new(tok_is_word(p, "true") ? NODE_TRUE : NODE_FALSE);
                if (!n)
                        return fail_oom(p);
                *ret = n;
                return next(p);
        }

        if (tok_is_word(p, "defined") || tok_is_word(p, "numeric")) {
                const char *kw = tok_is_word(p, "defined") ? "defined" : "numeric";
                _cleanup_(node_freep) struct node *n =
                        node_new(kw[0] == 'd' ? NODE_DEFINED : NODE_NUMERIC);
                if (!n)
                        return fail_oom(p);
                if (next(p) < 0)
                        return p->r;
                bool paren = p->tok.type == TOK_LPAREN;
                size_t open = p->tok.start;
                if (paren && next(p) < 0)
                        return p->r;
                if (parse_var(p, paren ? "(" : kw, &n->var) < 0)
                        return p->r;
                if (paren) {
                        if (p->tok.type != TOK_RPAREN)
                                return fail(
                                        p, p->tok.start + 1,
                                        "expected ')' to close the '(' of column %zu but found %s",
                                        open + 1, token_describe(p, buf, sizeof buf));
                        if (next(p) < 0)
                                return p->r;
                }
                *ret = TAKE_PTR(n);
                return 0;
        }

        if (tok_is_var(p)) {
                char *var = NULL;
                size_t var_start = p->tok.start, var_len = p->tok.len;
                if (parse_var(p, NULL, &var) < 0)
                        return p->r;
                if (p->tok.type == TOK_EQ || p->tok.type == TOK_NE || tok_is_word(p, "contains") ||
                    tok_is_word(p, "in") || tok_is_word(p, "nin") || tok_is_word(p, "notin") ||
                    tok_is_word(p, "regex") || tok_is_word(p, "regexp"))
                        return parse_comparison(p, var, ret);
                if (p->tok.type == TOK_STRING || p->tok.type == TOK_WORD) {
                        free(var);
                        return fail(p, p->tok.start + 1,
                                    "expected an operator (==, !=, contains, in, nin, regex) after "
                                    "'%.*s' but found %s",
                                    (int)var_len, p->text + var_start,
                                    token_describe(p, buf, sizeof buf));
                }
                struct node *n = node_new(NODE_BOOL);
                if (!n) {
                        free(var);
                        return fail_oom(p);
                }
                n->var = var;
                *ret = n;
                return 0;
        }

        return fail(p, start + 1, "expected a variable, 'true', 'false', '!' or '(' but found %s",
                    token_describe(p, buf, sizeof buf));
}

/* One level of a left-associative n-ary operator. */
static int parse_nary(struct parser *p, enum token_type op, enum node_type type,
                      int (*sub)(struct parser *, struct node **), struct node **ret) {
        _cleanup_(node_freep) struct node *first = NULL;
        if (sub(p, &first) < 0)
                return p->r;
        if (p->tok.type != op) {
                *ret = TAKE_PTR(first);
                return 0;
        }
        _cleanup_(node_freep) struct node *n = node_new(type);
        if (!n || node_add_child(n, first) < 0)
                return fail_oom(p);
        first = NULL;
        while (p->tok.type == op) {
                if (next(p) < 0)
                        return p->r;
                _cleanup_(node_freep) struct node *child = NULL;
                if (sub(p, &child) < 0)
                        return p->r;
                if (node_add_child(n, child) < 0)
                        return fail_oom(p);
                child = NULL;
        }
        *ret = TAKE_PTR(n);
        return 0;
}

static int parse_and(struct parser *p, struct node **ret) {
        return parse_nary(p, TOK_AND, NODE_AND, parse_unary, ret);
}

static int parse_or(struct parser *p, struct node **ret) {
        return parse_nary(p, TOK_OR, NODE_OR, parse_and, ret);
}

int filter_compile(const char *expr, const char *const *known, struct filter **ret,
                   struct filter_error *error) {
        assert(ret);
        if (error)
                *error = (struct filter_error){0};
        struct parser p = {.text = expr ? expr : "", .known = known, .error = error};

        size_t len = strnlen(p.text, FILTER_MAX_LENGTH + 1);
        if (len > FILTER_MAX_LENGTH)
                return fail(&p, 0, "expression longer than %d characters", FILTER_MAX_LENGTH);

        _cleanup_(filter_freep) struct filter *f = calloc(1, sizeof *f);
        if (!f)
                return fail_oom(&p);
        f->source = strdup(p.text);
        if (!f->source)
                return fail_oom(&p);

        if (next(&p) < 0)
                goto fail;
        if (p.tok.type != TOK_END) {
                if (parse_or(&p, &f->root) < 0)
                        goto fail;
                if (p.tok.type != TOK_END) {
                        char buf[64];
                        if (p.tok.type == TOK_RPAREN)
                                fail(&p, p.tok.start + 1, "unmatched ')'");
                        else
                                fail(&p, p.tok.start + 1,
                                     "expected '&&', '||' or the end of the expression but found "
                                     "%s",
                                     token_describe(&p, buf, sizeof buf));
                        goto fail;
                }
        }
        *ret = TAKE_PTR(f);
        return 0;
fail:
        log_debug("Bad filter '%s': %s", p.text, error ? error->message : "");
        return p.r;
}

static bool is_numeric(const char *v) {
        if (!*v)
                return false;
        for (; *v; v++)
                if (!isdigit((unsigned char)*v))
                        return false;
        return true;
}

static bool node_eval(const struct node *n, filter_get_fn get, void *userdata) {
        const char *v;
        bool r;
        switch (n->type) {
        case NODE_TRUE:
                return true;
        case NODE_FALSE:
                return false;
        case NODE_AND:
                for (size_t i = 0; i < n->n_children; i++)
                        if (!node_eval(n->children[i], get, userdata))
                                return false;
                return true;
        case NODE_OR:
                for (size_t i = 0; i < n->n_children; i++)
                        if (node_eval(n->children[i], get, userdata))
                                return true;
                return false;
        case NODE_NOT:
                return !node_eval(n->children[0], get, userdata);
        case NODE_BOOL:
                v = get(n->var, userdata);
                return v && streq(v, "true");
        case NODE_DEFINED:
                return get(n->var, userdata) != NULL;
        case NODE_NUMERIC:
                v = get(n->var, userdata);
                return v && is_numeric(v);
        case NODE_EQ:
                v = get(n->var, userdata);
                if (!v)
                        r = false;
                else if (n->rhs_var) {
                        const char *w = get(n->rhs_var, userdata);
                        r = w && streq(v, w);
                } else
                        r = streq(v, n->str);
                return r != n->negate;
        case NODE_CONTAINS:
                v = get(n->var, userdata);
                return v && strstr(v, n->str);
        case NODE_IN:
                v = get(n->var, userdata);
                r = v && strv_contains(n->words, v);
                return r != n->negate;
        case NODE_REGEX: {
                v = get(n->var, userdata);
                if (!v)
                        return false;
                regmatch_t m[1];
                /* POSIX picks the leftmost-longest match: if any match spans the whole value,
                 * this one does. */
                return regexec(n->re, v, 1, m, 0) == 0 && m[0].rm_so == 0 &&
                       (size_t)m[0].rm_eo == strlen(v);
        }
        }
        return false;
}

bool filter_eval(const struct filter *f, filter_get_fn get, void *userdata) {
        if (!f || !f->root)
                return true;
        return node_eval(f->root, get, userdata);
}
