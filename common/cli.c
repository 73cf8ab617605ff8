/* SPDX-License-Identifier: MIT */
/* sipfleet-cli: send one command to a daemon's control socket and print the JSON reply. */

#include <getopt.h>
#include <jansson.h>
#include <stdint.h>
#include <stdio.h>
#include <sysexits.h>

#include "config.h"
#include "ctl.h"
#include "macro.h"

#define DEFAULT_ROLE "proxy"
#define DEFAULT_TIMEOUT_MS 5000

static void help(void) {
        printf("Usage: sipfleet-cli [OPTIONS] COMMAND [ARGS...]\n"
               "\n"
               "Sends COMMAND to a sipfleet daemon's control socket and prints the JSON reply.\n"
               "Try 'sipfleet-cli HELP' for the commands a daemon knows.\n"
               "\n"
               "  -r, --role ROLE      daemon role, socket " RUNSTATEDIR "/sipfleet/ROLE.sock\n"
               "                       (default: " DEFAULT_ROLE ")\n"
               "  -s, --socket PATH    control socket path (overrides --role)\n"
               "  -t, --timeout MS     reply timeout in milliseconds, 0 = none (default: %d)\n"
               "      --raw            print the reply line as received\n"
               "  -h, --help           show this help\n"
               "  -V, --version        show the version\n"
               "\n"
               "Exit status: 0 success, 1 error reply, 64 bad usage, 69 no daemon listening,\n"
               "75 timeout, 76 invalid reply, 77 permission denied.\n",
               DEFAULT_TIMEOUT_MS);
}

static bool role_valid(const char *role) {
        return !isempty(role) && strlen(role) < 64 &&
               !role[strspn(role, "abcdefghijklmnopqrstuvwxyz0123456789-_")];
}

/* One command line: arguments with whitespace, quotes or backslashes (or empty) are
 * double-quoted, with " and \ escaped inside. */
static char *join_args(char *const *args, size_t n) {
        char *buf = NULL;
        size_t size = 0;
        FILE *f;

        f = open_memstream(&buf, &size);
        if (!f)
                return NULL;

        for (size_t i = 0; i < n; i++) {
                const char *a = args[i];

                if (i > 0)
                        fputc(' ', f);
                if (*a && !a[strcspn(a, " \t\r\v\f\"\\")]) {
                        fputs(a, f);
                        continue;
                }
                fputc('"', f);
                for (; *a; a++) {
                        if (*a == '"' || *a == '\\')
                                fputc('\\', f);
                        fputc(*a, f);
                }
                fputc('"', f);
        }

        if (fclose(f) != 0) {
                free(buf);
                return NULL;
        }
        return buf;
}

static int parse_timeout(const char *s, int *ret) {
        char *end;
        long v;

        errno = 0;
        v = strtol(s, &end, 10);
        if (errno != 0 || end == s || *end || v < 0 || v > INT32_MAX)
                return -EINVAL;
        *ret = (int)v;
        return 0;
}

int main(int argc, char *argv[]) {
        enum { ARG_RAW = 0x100 };
        static const struct option options[] = {
                {"role", required_argument, NULL, 'r'},
                {"socket", required_argument, NULL, 's'},
                {"timeout", required_argument, NULL, 't'},
                {"raw", no_argument, NULL, ARG_RAW},
                {"help", no_argument, NULL, 'h'},
                {"version", no_argument, NULL, 'V'},
                {NULL, 0, NULL, 0}
        };
        _cleanup_free_ char *socket_path = NULL, *line = NULL, *reply = NULL, *pretty = NULL;
        const char *role = DEFAULT_ROLE, *socket_arg = NULL;
        int timeout_ms = DEFAULT_TIMEOUT_MS, c, r;
        bool raw = false;
        json_t *j, *error;
        json_error_t jerr;

        /* '+': stop at the command, so that its arguments may start with '-'. */
        while ((c = getopt_long(argc, argv, "+r:s:t:hV", options, NULL)) >= 0)
                switch (c) {
                case 'r':
                        role = optarg;
                        break;
                case 's':
                        socket_arg = optarg;
                        break;
                case 't':
                        if (parse_timeout(optarg, &timeout_ms) < 0) {
                                fprintf(stderr, "sipfleet-cli: invalid timeout '%s'\n", optarg);
                                return EX_USAGE;
                        }
                        break;
                case ARG_RAW:
                        raw = true;
                        break;
                case 'h':
                        help();
                        return EXIT_SUCCESS;
                case 'V':
                        printf("sipfleet-cli %s\n", PACKAGE_VERSION);
                        return EXIT_SUCCESS;
                default:
                        fprintf(stderr, "Try 'sipfleet-cli --help'.\n");
                        return EX_USAGE;
                }

        if (optind >= argc) {
                fprintf(stderr, "sipfleet-cli: no command given. Try 'sipfleet-cli --help'.\n");
                return EX_USAGE;
        }
        if (!socket_arg && !role_valid(role)) {
                fprintf(stderr, "sipfleet-cli: invalid role '%s'\n", role);
                return EX_USAGE;
        }
        for (int i = optind; i < argc; i++)
                if (strchr(argv[i], '\n')) {
                        fprintf(stderr, "sipfleet-cli: arguments may not contain line feeds\n");
                        return EX_USAGE;
                }

        if (socket_arg)
                socket_path = strdup(socket_arg);
        else if (asprintf(&socket_path, "%s/sipfleet/%s.sock", RUNSTATEDIR, role) < 0)
                socket_path = NULL;
        line = join_args(argv + optind, argc - optind);
        if (!socket_path || !line) {
                fprintf(stderr, "sipfleet-cli: out of memory\n");
                return EX_OSERR;
        }
        if (strlen(line) > CTL_MAX_LINE) {
                fprintf(stderr, "sipfleet-cli: command too long (at most %d bytes)\n",
                        CTL_MAX_LINE);
                return EX_USAGE;
        }

        r = ctl_client_call(socket_path, line, timeout_ms, &reply);
        if (r < 0) {
                fprintf(stderr, "sipfleet-cli: %s: %s\n", socket_path,
                        r == -ENOENT || r == -ECONNREFUSED ? "no daemon listening" : strerror(-r));
                switch (-r) {
                case EACCES:
                case EPERM:
                        return EX_NOPERM;
                case ETIMEDOUT:
                        return EX_TEMPFAIL;
                case EMSGSIZE:
                        return EX_PROTOCOL;
                default:
                        return EX_UNAVAILABLE;
                }
        }

        j = json_loads(reply, 0, &jerr);
        if (raw || !j)
                printf("%s\n", reply);
        if (!j) {
                fprintf(stderr, "sipfleet-cli: invalid reply: %s\n", jerr.text);
                return EX_PROTOCOL;
        }

        error = json_is_object(j) ? json_object_get(j, "error") : NULL;
        if (error) {
                fprintf(stderr, "sipfleet-cli: %s\n",
                        json_is_string(error) ? json_string_value(error) : "error reply");
                json_decref(j);
                return EXIT_FAILURE;
        }

        if (!raw) {
                pretty = json_dumps(j, JSON_INDENT(2));
                if (pretty)
                        printf("%s\n", pretty);
                else
                        printf("%s\n", reply);
        }
        json_decref(j);
        return EXIT_SUCCESS;
}
