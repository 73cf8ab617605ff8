/* SPDX-License-Identifier: MIT */
#pragma once

/* Configuration: one option table per daemon (rows may come from several modules), ini files
 * with drop-ins, typed values, --dump-default, --check-config, --set, CLI get/set and reload.
 *
 * File format: "[section]", "key=value", lines starting with '#' (or ';') are comments,
 * whitespace around names and values is trimmed. Section and key names are case-insensitive.
 * Drop-ins: files named "*.conf" in the directory "<file>.d" are read in name (strcmp) order
 * after the file; a key set again in a later file wins. A key set twice in one file is an error.
 * Overrides (--set section/key=value) are applied last. Lines are limited to 20 KiB. */

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <sys/socket.h>

struct json_t;

enum conf_type {
        CONF_BOOL,     /* bool: true/false, yes/no, on/off, 1/0 */
        CONF_INT,      /* int64_t, within [min, max] */
        CONF_RANGE,    /* struct conf_range: "n" or "n-m", both within [min, max], n <= m */
        CONF_STRING,   /* char * (NULL when empty) */
        CONF_LIST,     /* char ** NULL-terminated, whitespace separated (never NULL) */
        CONF_DURATION, /* uint64_t milliseconds; units ms s min h d; without a unit: row.unit */
        CONF_SIZE,     /* uint64_t bytes; suffixes B K KB KiB M MB MiB G GB GiB (K = 1024) */
        CONF_URI,      /* char *: a SIP/SIPS URI, validated by sofia's parser (NULL when empty) */
        CONF_URI_LIST, /* char **: list of SIP/SIPS URIs */
        CONF_ADDRESS,  /* struct conf_address: "host:port", "[v6]:port", or "/path" (unix) */
        CONF_ENUM,     /* int: index into row.choices */
};

enum conf_unit { CONF_UNIT_MS, CONF_UNIT_S, CONF_UNIT_MIN };

enum {
        CONF_RELOADABLE = 1 << 0, /* applied by SIGHUP reload and by the control socket's SET */
        CONF_SECRET = 1 << 1,     /* never printed: GET/LIST/dump show "(secret)" */
};

struct conf_range {
        int64_t min, max;
};

struct conf_address {
        char *str; /* as written; NULL when empty */
        struct sockaddr_storage sa;
        socklen_t len; /* 0 when empty */
};

struct conf_option {
        const char *section;
        const char *key;
        enum conf_type type;
        size_t offset; /* into the block this row's table is registered with */
        const char *def; /* default as text, parsed like a file value; NULL = empty */
        int64_t min, max; /* CONF_INT, CONF_RANGE; both 0 = unbounded */
        unsigned flags;
        const char *doc; /* one line */
        enum conf_unit unit; /* CONF_DURATION: unit of a bare number and of the dump */
        const char *const *choices; /* CONF_ENUM: NULL-terminated */
};

struct conf_section {
        const char *name;
        const char *doc;
};

struct conf;

/* Called after a reload or a SET changed reloadable values (keys: "section/key"). */
typedef void (*conf_changed_fn)(struct conf *c, char *const *changed, void *userdata);

int conf_new(const char *role, struct conf **ret);
void conf_free(struct conf *c);

/* Register sections (for docs, and so that an empty known section is accepted) and option rows
 * whose offsets point into base. Rows are copied; the strings they point to (names, docs,
 * defaults, choices) must outlive the conf. A row's section need not be registered first. -EEXIST for a key registered twice, -EINVAL for a bad row
 * (including a default that does not parse). Strings, lists and addresses stored into a block
 * belong to the conf: valid until the value is replaced or conf_free(). */
int conf_add_sections(struct conf *c, const struct conf_section *sections, size_t n);
int conf_add_table(struct conf *c, const struct conf_option *rows, size_t n, void *base);

void conf_set_changed_callback(struct conf *c, conf_changed_fn fn, void *userdata);

/* Add an override "section/key=value" (from --set). Returns -EINVAL with *error set. */
int conf_add_override(struct conf *c, const char *assignment, char **error);

/* Load defaults, then path (NULL = defaults only) and its drop-ins, then overrides, and on
 * success store the values into the registered blocks. On failure nothing is changed, -errno
 * is returned and *error receives "file:line: message" (caller frees). */
int conf_load(struct conf *c, const char *path, char **error);
/* Re-read the same files. Reloadable keys that changed are applied (then the changed callback
 * runs); changed non-reloadable keys are reported in *warnings (one per line, caller frees) and
 * keep their old value. On error the old configuration stays. */
int conf_reload(struct conf *c, char **error, char **warnings);

/* Value as text ("(secret)" for secrets). -ENOENT for an unknown key. */
int conf_get(struct conf *c, const char *path, char **value);
/* Set a reloadable key at run time: parse, store, run the changed callback.
 * -ENOENT unknown key (with a hint in *error), -EPERM not reloadable, -EINVAL bad value. */
int conf_set(struct conf *c, const char *path, const char *value, char **error);
/* {"section/key": {"value":..., "default":..., "doc":..., "reloadable":bool, "source":"file:line",
 * "type":"duration"}} for one section or all (section NULL or "all"); values and defaults as
 * conf_get() shows them. NULL when the section is unknown. */
struct json_t *conf_list(struct conf *c, const char *section);
bool conf_has_section(struct conf *c, const char *section);

/* Every section and key, commented out, with its doc and default. */
int conf_dump_default(struct conf *c, FILE *f);

/* Look up a row, e.g. to print help. NULL if unknown. */
const struct conf_option *conf_find(struct conf *c, const char *section, const char *key);
/* Closest known name to a misspelling; NULL if nothing is close. With a section, key is a key
 * name and the closest key of that section is returned; with section NULL, key is a
 * "section/key" path and the closest path is returned. */
const char *conf_suggest_key(struct conf *c, const char *section, const char *key);
const char *conf_suggest_section(struct conf *c, const char *section);

/* Individual typed parsers, also for other parsers (password file, routes file...).
 * Return 0 or -EINVAL/-ERANGE. conf_parse_duration() refuses a value that is not a whole
 * number of unit ("500ms" for CONF_UNIT_S). conf_parse_address() fills a->str (free it with
 * conf_address_done()). */
int conf_parse_bool(const char *s, bool *ret);
int conf_parse_int(const char *s, int64_t *ret);
int conf_parse_duration(const char *s, enum conf_unit unit, uint64_t *ret_ms);
int conf_parse_size(const char *s, uint64_t *ret);
int conf_parse_address(const char *s, struct conf_address *ret);
void conf_address_done(struct conf_address *a);
bool conf_uri_valid(const char *s);
