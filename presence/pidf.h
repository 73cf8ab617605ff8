/* SPDX-License-Identifier: MIT */
#pragma once

/* The XML documents of presence, on libxml2, parsed defensively: a size bound checked before
 * the parser runs, no DTD at all (a DOCTYPE is refused, so no entity of any kind, internal or
 * external, is ever declared or expanded), no network access, a depth bound on the tree.
 *   - PIDF (RFC 3863) with the data model (RFC 4479) and RPID (RFC 4480) person elements;
 *   - resource lists (RFC 4826) carried in a SUBSCRIBE (RFC 5367);
 *   - the merged PIDF of one presentity, built from the documents of its publications. */

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <time.h>

#include <libxml/tree.h>

#define PIDF_NS           "urn:ietf:params:xml:ns:pidf"
#define DM_NS             "urn:ietf:params:xml:ns:pidf:data-model"
#define RPID_NS           "urn:ietf:params:xml:ns:pidf:rpid"
#define RESOURCE_LISTS_NS "urn:ietf:params:xml:ns:resource-lists"
#define RLMI_NS           "urn:ietf:params:xml:ns:rlmi"
#define OMA_PRES_NS       "urn:oma:xml:prs:pidf:oma-pres"

/* Deepest element nesting accepted in any document we parse. */
#define XML_MAX_DEPTH 32

/* Parses buf. -E2BIG when len > max_size, -EPERM when the document has a DOCTYPE (entities),
 * -EINVAL when it is not well-formed or nests deeper than XML_MAX_DEPTH. */
int xml_parse(const char *buf, size_t len, size_t max_size, xmlDocPtr *ret);

/* The document as UTF-8 text with an XML declaration, malloc'd (NUL-terminated). */
char *xml_to_string(xmlDocPtr doc, size_t *ret_len);

/* Is this a PIDF document (root <presence> in the PIDF namespace with an entity, each <tuple>
 * with an id and a <status>)? *reason says what is wrong. */
bool pidf_valid(xmlDocPtr doc, const char **reason);
/* Gives each tuple without a <timestamp> one (now, RFC 3339 UTC). */
int pidf_stamp_tuples(xmlDocPtr doc, time_t now);
/* The RPID activity names of the person elements ("away", "on-the-phone"...), up to max;
 * returns how many were stored (names are malloc'd). */
size_t pidf_activities(xmlDocPtr doc, char **names, size_t max);
/* Is any tuple's basic status "open"? */
bool pidf_is_open(xmlDocPtr doc);

/* A merged document: pidf_merge_new(entity), then for each source from the newest to the
 * oldest pidf_merge_add() (tuples whose id is already present are skipped, the first person
 * element wins), or pidf_merge_last_activity() for a presentity whose publications all ended. */
xmlDocPtr pidf_merge_new(const char *entity);
int pidf_merge_add(xmlDocPtr out, xmlDocPtr src);
int pidf_merge_last_activity(xmlDocPtr out, time_t last);
/* Long-term presence: the default tuple of a user of the service with nothing published
 * (id "long-term", basic open), with one OMA <service-description> (service-id, version) per
 * capability of capabilities ("groupchat/1.1,lime"; NULL or "": none), which liblinphone
 * reads as the capabilities of the presence model. */
int pidf_merge_default(xmlDocPtr out, const char *capabilities);

/* RFC 3339 UTC time ("2026-11-23T18:42:22Z") into buf (at least 32 bytes). */
void xml_format_time(time_t t, char *buf, size_t size);

/* The entry URIs of a resource-lists document, nested lists flattened, duplicates dropped, in
 * document order. -E2BIG when there are more than max, -EINVAL for another document. *ret is a
 * NULL-terminated malloc'd strv. */
int resource_lists_uris(xmlDocPtr doc, size_t max, char ***ret);
