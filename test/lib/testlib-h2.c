/* SPDX-License-Identifier: MIT */
/* The HTTP/2 push provider test server fixture of testlib-h2.h. */
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "macro.h"
#include "testlib-h2.h"
#include "testlib-jwt.h"

const char *tl_h2_tls_dir(void) {
        static char *dir;
        if (!dir)
                dir = tl_tls_dir("tls", NULL);
        return dir;
}

void tl_h2_server_scenario(struct tl_h2_server *s, const char *json) {
        _cleanup_free_ char *tmp = NULL, *name = NULL;
        ck_assert_int_ge(asprintf(&name, "%s-scenario.tmp", s->name), 0);
        tmp = tl_write_file(name, json);
        ck_assert_int_eq(rename(tmp, s->scenario), 0);
}

void tl_h2_server_start(struct tl_h2_server *s, const char *name, const char *mode,
                        const char *client_ca, const char *scenario) {
        *s = (struct tl_h2_server){.port = tl_free_port(), .name = strdup(name)};
        _cleanup_free_ char *rec = NULL, *sc = NULL, *cert = NULL, *key = NULL, *port = NULL,
                            *script = tl_source_path("test/servers/h2-push-server.py");
        ck_assert_int_ge(asprintf(&rec, "%s.jsonl", name), 0);
        ck_assert_int_ge(asprintf(&sc, "%s-scenario.json", name), 0);
        s->record = tl_path(rec);
        s->scenario = tl_write_file(sc, scenario ? scenario : "{}");
        ck_assert_int_ge(asprintf(&cert, "%s/agent.crt", tl_h2_tls_dir()), 0);
        ck_assert_int_ge(asprintf(&key, "%s/agent.key", tl_h2_tls_dir()), 0);
        ck_assert_int_ge(asprintf(&port, "%d", s->port), 0);
        char *argv[] = {"/usr/bin/python3", script,     "--mode",     (char *)mode,
                        "--port",           port,       "--cert",     cert,
                        "--key",            key,        "--record",   s->record,
                        "--scenario",       s->scenario, client_ca ? "--client-ca" : NULL,
                        (char *)client_ca,  NULL};
        tl_spawn(name, argv, &s->proc);
        if (tl_wait_tcp(s->port, 10000) < 0) {
                _cleanup_free_ char *log = tl_log(&s->proc);
                ck_abort_msg("%s server did not start: %s", name, log);
        }
}

void tl_h2_server_stop(struct tl_h2_server *s) {
        tl_stop(&s->proc);
        free(s->proc.log);
        free(s->record);
        free(s->scenario);
        free(s->name);
        *s = (struct tl_h2_server){0};
}

json_t *tl_h2_server_records(struct tl_h2_server *s) {
        json_t *all = json_array();
        _cleanup_free_ char *text = tl_read_file(s->record, NULL);
        if (!text)
                return all;
        for (char *line = text, *nl; *line; line = nl + 1) {
                nl = strchr(line, '\n');
                if (!nl)
                        break;
                *nl = 0;
                json_t *r = json_loads(line, 0, NULL);
                ck_assert_msg(r, "bad record line: %s", line);
                json_array_append_new(all, r);
        }
        return all;
}

json_t *tl_h2_server_wait(struct tl_h2_server *s, size_t n, int timeout_ms) {
        for (int waited = 0;; waited += 50) {
                json_t *r = tl_h2_server_records(s);
                if (json_array_size(r) >= n)
                        return r;
                if (waited >= timeout_ms)
                        ck_abort_msg("%s: %zu request(s) recorded, %zu expected", s->name,
                                     json_array_size(r), n);
                json_decref(r);
                nanosleep(&(struct timespec){0, 50 * 1000000L}, NULL);
        }
}

const char *tl_h2_header(json_t *rec, const char *name) {
        return json_string_value(json_object_get(json_object_get(rec, "headers"), name));
}

json_t *tl_h2_body(json_t *rec) {
        const char *body = json_string_value(json_object_get(rec, "body"));
        json_t *j = body ? json_loads(body, 0, NULL) : NULL;
        ck_assert_msg(j, "request body is not JSON: %s", body ? body : "(none)");
        return j;
}

char *tl_h2_write_service_account(const char *name, const char *project, int port,
                                  char **key_path) {
        _cleanup_free_ char *pem = NULL, *keyname = NULL, *uri = NULL;
        ck_assert_int_ge(asprintf(&keyname, "%s.key", name), 0);
        *key_path = tl_write_rsa_key(keyname, &pem);
        ck_assert_int_ge(asprintf(&uri, "https://127.0.0.1:%d/token", port), 0);
        json_t *sa = json_pack("{s:s,s:s,s:s,s:s,s:s,s:s}", "type", "service_account",
                               "project_id", project, "private_key_id", "kid-0123", "private_key",
                               pem, "client_email", "pushd@test-project.iam.gserviceaccount.com",
                               "token_uri", uri);
        ck_assert_ptr_nonnull(sa);
        _cleanup_free_ char *text = json_dumps(sa, JSON_INDENT(2));
        json_decref(sa);
        return tl_write_file(name, text);
}
