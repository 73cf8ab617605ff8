/* SPDX-License-Identifier: MIT */
#include <stdlib.h>

#include "daemon.h"
#include "presence.h"

int main(int argc, char **argv) {
        struct daemon *d = NULL;
        struct presence *p = NULL;
        enum daemon_args_result res;
        int status = EXIT_FAILURE;

        if (daemon_new("presence", argc, argv, &d, &res) < 0)
                return EXIT_FAILURE;
        if (res != DAEMON_CONTINUE)
                goto finish_args;
        if (presence_new(d, &p) < 0)
                goto finish;
        res = daemon_load_config(d);
        if (res != DAEMON_CONTINUE)
                goto finish_args;
        if (daemon_start(d, DAEMON_LOOP_SU,
                         &(struct daemon_hooks){.stop = presence_hooks.stop, .userdata = p}) < 0)
                goto finish;
        if (presence_start(p) < 0 || daemon_listen(d) < 0 || daemon_drop_privileges(d) < 0)
                goto finish;
        daemon_ready(d);
        status = daemon_run(d);
        goto finish;
finish_args:
        status = res == DAEMON_EXIT_OK ? EXIT_SUCCESS : EXIT_FAILURE;
finish:
        presence_free(p);
        daemon_free(d);
        return status;
}
