/* SPDX-License-Identifier: MIT */
#pragma once

/* The variables of a SIP message for filter expressions (common/filter.h): what a module's
 * `filter` key and the Forward routes file can test. Every value is read from the parsed
 * message as written (no unescaping, no case folding); a header or part that is absent leaves
 * the variable undefined.
 *
 *   is_request, is_response            "true" or "false"
 *   request.method, request.method-name
 *                                      the method ("INVITE"); for a response, the CSeq method
 *   request.uri.{user,domain,params}   Request-URI user, host (no port), parameters without
 *                                      the leading ';' ("transport=tcp;lr"); requests only
 *   from.uri.{...} to.uri.{...}        the same parts of the From and To URIs
 *   contact.uri.{...}                  the same parts of the first Contact's URI
 *   user-agent                         the User-Agent header value
 *   content-type                       "type/subtype" of Content-Type, without parameters
 *   call-id                            the Call-ID
 *   call-id.hash                       sofia's 32-bit hash of the Call-ID, in decimal (stable
 *                                      for a Call-ID: spread calls with a regex on its digits)
 *   status.code, status.phrase         of a response; undefined for a request
 *   direction                          whatever the caller passes (NULL = undefined)
 */

#include <stdbool.h>

#include "filter.h"
#include "sofia.h"

/* NULL-terminated: the known names to give filter_compile(). */
extern const char *const filter_sip_variables[];

/* One evaluation's state for filter_sip_get(): the numbers are printed into buf. */
struct filter_sip_context {
        const sip_t *sip;
        const char *direction;
        char code[16], hash[16];
};

/* A filter_get_fn; userdata is a struct filter_sip_context. */
const char *filter_sip_get(const char *name, void *userdata);

/* filter_compile() with filter_sip_variables as the known names. */
int filter_sip_compile(const char *expr, struct filter **ret, struct filter_error *error);

/* Evaluates f (NULL = true) on a parsed request or response. direction may be NULL. */
bool filter_sip_eval(const struct filter *f, const sip_t *sip, const char *direction);
