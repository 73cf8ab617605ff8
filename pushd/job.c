/* SPDX-License-Identifier: MIT */
#include <jansson.h>
#include <stdarg.h>
#include <stdio.h>

#include "job.h"
#include "macro.h"

static const char *const provider_names[] = {"apns", "fcm", "generic"};
static const char *const type_names[] = {"call", "message", "background"};

const char *push_provider_name(enum push_provider p) {
        return p < _PUSH_PROVIDER_MAX ? provider_names[p] : "unknown";
}

const char *push_type_name(enum push_type t) {
        return t < _PUSH_TYPE_MAX ? type_names[t] : "unknown";
}

void push_job_free(struct push_job *j) {
        if (!j)
                return;
        strv_free(j->tokens);
        free(j->id);
        free(j->app_id);
        free(j->from_uri);
        free(j->from_name);
        free(j->call_id);
        free(j->msg_id);
        free(j->uuid);
        free(j->loc_key);
        free(j->text);
        free(j->collapse_id);
        json_decref(j->custom);
        free(j);
}

_printf_(2, 3) static int fail(char **error, const char *fmt, ...) {
        va_list ap;
        va_start(ap, fmt);
        if (vasprintf(error, fmt, ap) < 0)
                *error = NULL;
        va_end(ap);
        return -EINVAL;
}

static bool has_control_chars(const char *s) {
        for (; *s; s++)
                if ((unsigned char)*s < 0x20 || *s == 0x7f)
                        return true;
        return false;
}

/* A string field: absent (NULL stays), or a string without NUL of at most max bytes. */
static int get_string(json_t *obj, const char *key, size_t max, bool allow_newlines, char **out,
                      char **error) {
        json_t *v = json_object_get(obj, key);
        if (!v)
                return 0;
        if (!json_is_string(v))
                return fail(error, "'%s' must be a string", key);
        const char *s = json_string_value(v);
        size_t len = json_string_length(v);
        if (strlen(s) != len)
                return fail(error, "'%s' must not contain NUL characters", key);
        if (len > max)
                return fail(error, "'%s' is too long (%zu bytes, at most %zu)", key, len, max);
        if (!allow_newlines && has_control_chars(s))
                return fail(error, "'%s' must not contain control characters", key);
        *out = strdup(s);
        return *out ? 0 : -ENOMEM;
}

static int enum_index(const char *const *names, size_t n, const char *s) {
        for (size_t i = 0; i < n; i++)
                if (streq(names[i], s))
                        return (int)i;
        return -1;
}

static bool is_hex(const char *s) {
        for (; *s; s++)
                if (!((*s >= '0' && *s <= '9') || (*s >= 'a' && *s <= 'f') ||
                      (*s >= 'A' && *s <= 'F')))
                        return false;
        return true;
}

/* Tokens go into URLs (APNs path) and JSON: printable ASCII without spaces or '/'. */
static int check_token(const struct push_job *j, const char *t, char **error) {
        size_t len = strlen(t);
        if (len == 0)
                return fail(error, "a token must not be empty");
        if (len > PUSH_JOB_MAX_TOKEN_LEN)
                return fail(error, "a token is too long (%zu bytes, at most %d)", len,
                            PUSH_JOB_MAX_TOKEN_LEN);
        if (j->provider == PUSH_PROVIDER_APNS) {
                if (!is_hex(t) || len % 2 != 0 || len < 16)
                        return fail(error, "an APNs device token must be an even number (16 or "
                                           "more) of hexadecimal digits");
                return 0;
        }
        for (const char *c = t; *c; c++)
                if ((unsigned char)*c <= 0x20 || (unsigned char)*c >= 0x7f || *c == '/' ||
                    *c == '?' || *c == '#' || *c == '%')
                        return fail(error, "a token may hold printable ASCII only, without "
                                           "spaces, '/', '?', '#' or '%%'");
        return 0;
}

static const char *const known_keys[] = {
        "provider", "token",    "tokens",    "app-id",      "type",   "sandbox",
        "id",       "from-uri", "from-name", "call-id",     "msg-id", "uuid",
        "loc-key",  "text",     "ttl",       "collapse-id", "custom",
};

static bool valid_app_id(const char *s) {
        for (; *s; s++)
                if (!((*s >= '0' && *s <= '9') || (*s >= 'a' && *s <= 'z') ||
                      (*s >= 'A' && *s <= 'Z') || *s == '.' || *s == '-' || *s == '_'))
                        return false;
        return true;
}

int push_job_from_json(json_t *obj, struct push_job **ret, char **error) {
        _cleanup_(push_job_freep) struct push_job *j = NULL;
        const char *key;
        json_t *v;
        int r;

        *error = NULL;
        if (!json_is_object(obj))
                return fail(error, "a push job must be a JSON object");
        json_object_foreach(obj, key, v) {
                bool known = false;
                for (size_t i = 0; i < ELEMENTSOF(known_keys) && !known; i++)
                        known = streq(key, known_keys[i]);
                if (!known)
                        return fail(error, "unknown key '%s'", key);
        }

        j = calloc(1, sizeof *j);
        if (!j)
                return -ENOMEM;
        j->ttl = -1;

        v = json_object_get(obj, "provider");
        if (!v)
                return fail(error, "'provider' is missing (apns, fcm or generic)");
        if (!json_is_string(v) ||
            (r = enum_index(provider_names, ELEMENTSOF(provider_names), json_string_value(v))) < 0)
                return fail(error, "'provider' must be \"apns\", \"fcm\" or \"generic\"");
        j->provider = (enum push_provider)r;

        v = json_object_get(obj, "type");
        if (!v)
                return fail(error, "'type' is missing (call, message or background)");
        if (!json_is_string(v) ||
            (r = enum_index(type_names, ELEMENTSOF(type_names), json_string_value(v))) < 0)
                return fail(error, "'type' must be \"call\", \"message\" or \"background\"");
        j->type = (enum push_type)r;

        json_t *token = json_object_get(obj, "token"), *tokens = json_object_get(obj, "tokens");
        if (token && tokens)
                return fail(error, "give either 'token' or 'tokens', not both");
        if (!token && !tokens)
                return fail(error, "'token' (or 'tokens') is missing");
        if (token) {
                if (!json_is_string(token))
                        return fail(error, "'token' must be a string");
                if (strv_extend(&j->tokens, json_string_value(token)) < 0)
                        return -ENOMEM;
        } else {
                if (!json_is_array(tokens) || json_array_size(tokens) == 0 ||
                    json_array_size(tokens) > PUSH_JOB_MAX_TOKENS)
                        return fail(error, "'tokens' must be an array of 1 to %d strings",
                                    PUSH_JOB_MAX_TOKENS);
                size_t i;
                json_array_foreach(tokens, i, v) {
                        if (!json_is_string(v))
                                return fail(error, "'tokens' must be an array of strings");
                        if (strv_extend(&j->tokens, json_string_value(v)) < 0)
                                return -ENOMEM;
                }
        }
        j->n_tokens = strv_length(j->tokens);
        STRV_FOREACH(t, j->tokens) {
                r = check_token(j, *t, error);
                if (r < 0)
                        return r;
        }

        struct {
                const char *key;
                char **out;
                size_t max;
                bool newlines;
        } strings[] = {
                {"id", &j->id, PUSH_JOB_MAX_ID, false},
                {"app-id", &j->app_id, PUSH_JOB_MAX_STRING, false},
                {"from-uri", &j->from_uri, PUSH_JOB_MAX_STRING, false},
                {"from-name", &j->from_name, PUSH_JOB_MAX_STRING, false},
                {"call-id", &j->call_id, PUSH_JOB_MAX_STRING, false},
                {"msg-id", &j->msg_id, PUSH_JOB_MAX_STRING, false},
                {"uuid", &j->uuid, PUSH_JOB_MAX_STRING, false},
                {"loc-key", &j->loc_key, PUSH_JOB_MAX_STRING, false},
                {"text", &j->text, PUSH_JOB_MAX_TEXT, true},
                {"collapse-id", &j->collapse_id, PUSH_JOB_MAX_COLLAPSE_ID, false},
        };
        for (size_t i = 0; i < ELEMENTSOF(strings); i++) {
                r = get_string(obj, strings[i].key, strings[i].max, strings[i].newlines,
                               strings[i].out, error);
                if (r < 0)
                        return r;
        }

        if (j->provider != PUSH_PROVIDER_GENERIC && isempty(j->app_id))
                return fail(error, "'app-id' is missing: the %s",
                            j->provider == PUSH_PROVIDER_APNS ? "bundle id of the iOS app"
                                                              : "Firebase project id");
        if (j->provider != PUSH_PROVIDER_GENERIC && !valid_app_id(j->app_id))
                return fail(error, "'app-id' may hold letters, digits, '.', '-' and '_' only");
        if (j->provider == PUSH_PROVIDER_APNS && j->app_id && strlen(j->app_id) > 5 &&
            streq(j->app_id + strlen(j->app_id) - 5, ".voip"))
                return fail(error, "'app-id' is the bundle id without \".voip\": pushd adds it "
                                   "for calls");

        v = json_object_get(obj, "sandbox");
        if (v) {
                if (!json_is_boolean(v))
                        return fail(error, "'sandbox' must be true or false");
                j->sandbox = json_is_true(v);
        }

        v = json_object_get(obj, "ttl");
        if (v) {
                if (!json_is_integer(v) || json_integer_value(v) < 0 ||
                    json_integer_value(v) > PUSH_JOB_MAX_TTL)
                        return fail(error,
                                    "'ttl' must be an integer number of seconds from 0 to "
                                    "%d",
                                    PUSH_JOB_MAX_TTL);
                j->ttl = json_integer_value(v);
        }

        v = json_object_get(obj, "custom");
        if (v) {
                if (!json_is_object(v))
                        return fail(error, "'custom' must be a JSON object");
                _cleanup_free_ char *dump = json_dumps(v, JSON_COMPACT);
                if (!dump)
                        return -ENOMEM;
                if (strlen(dump) > PUSH_JOB_MAX_CUSTOM)
                        return fail(error, "'custom' is too large (%zu bytes, at most %d)",
                                    strlen(dump), PUSH_JOB_MAX_CUSTOM);
                j->custom = json_incref(v);
        }

        *ret = TAKE_PTR(j);
        return 0;
}

int push_job_parse(const char *text, size_t len, struct push_job **ret, char **error) {
        json_error_t jerr;
        *error = NULL;
        if (len > PUSH_JOB_MAX_SIZE)
                return fail(error, "a push job is at most %d bytes of JSON (this one is %zu)",
                            PUSH_JOB_MAX_SIZE, len);
        json_t *obj = json_loadb(text, len, JSON_REJECT_DUPLICATES, &jerr);
        if (!obj)
                return fail(error, "invalid JSON at line %d, column %d: %s", jerr.line, jerr.column,
                            jerr.text);
        int r = push_job_from_json(obj, ret, error);
        json_decref(obj);
        return r;
}

json_t *push_job_to_json(const struct push_job *j) {
        json_t *o = json_object(), *tokens = json_array();
        if (!o || !tokens) {
                json_decref(o);
                json_decref(tokens);
                return NULL;
        }
        STRV_FOREACH(t, j->tokens)
                json_array_append_new(tokens, json_string(*t));
        json_object_set_new(o, "provider", json_string(push_provider_name(j->provider)));
        json_object_set_new(o, "type", json_string(push_type_name(j->type)));
        json_object_set_new(o, "tokens", tokens);
        const struct {
                const char *key;
                const char *value;
        } strings[] = {
                {"id", j->id},
                {"app-id", j->app_id},
                {"from-uri", j->from_uri},
                {"from-name", j->from_name},
                {"call-id", j->call_id},
                {"msg-id", j->msg_id},
                {"uuid", j->uuid},
                {"loc-key", j->loc_key},
                {"text", j->text},
                {"collapse-id", j->collapse_id},
        };
        for (size_t i = 0; i < ELEMENTSOF(strings); i++)
                if (strings[i].value)
                        json_object_set_new(o, strings[i].key, json_string(strings[i].value));
        if (j->sandbox)
                json_object_set_new(o, "sandbox", json_true());
        if (j->ttl >= 0)
                json_object_set_new(o, "ttl", json_integer(j->ttl));
        if (j->custom)
                json_object_set(o, "custom", j->custom);
        return o;
}
