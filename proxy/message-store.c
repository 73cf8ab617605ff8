/* SPDX-License-Identifier: MIT */
/* What the message stores share (see message-store.h). */
#include <errno.h>

#include "message-store.h"

int message_store_start(struct message_store *s, message_store_each_fn each,
                        message_store_done_fn done, void *userdata) {
        s->each = each;
        s->done = done;
        s->userdata = userdata;
        return s->ops->start(s);
}

void message_store_close(struct message_store *s) {
        if (s)
                s->ops->free(s);
}
