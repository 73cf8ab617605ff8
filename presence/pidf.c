/* SPDX-License-Identifier: MIT */
#define LOG_SUBSYSTEM LOG_presence
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <libxml/parser.h>
#include <libxml/xmlsave.h>

#include "macro.h"
#include "pidf.h"

static bool depth_ok(xmlNodePtr n, unsigned depth) {
        if (depth > XML_MAX_DEPTH)
                return false;
        for (xmlNodePtr c = n->children; c; c = c->next)
                if (c->type == XML_ELEMENT_NODE && !depth_ok(c, depth + 1))
                        return false;
        return true;
}

static bool has_doctype(const char *buf, size_t len) {
        /* A DTD can only appear in the prolog, but looking everywhere costs nothing and also
         * catches one hidden behind a comment trick; presence documents never carry one. */
        static const char *const marks[] = {"<!DOCTYPE", "<!ENTITY"};
        for (size_t i = 0; i < ELEMENTSOF(marks); i++)
                if (memmem(buf, len, marks[i], strlen(marks[i])))
                        return true;
        return false;
}

int xml_parse(const char *buf, size_t len, size_t max_size, xmlDocPtr *ret) {
        if (len > max_size)
                return -E2BIG;
        if (len > INT32_MAX)
                return -E2BIG;
        if (has_doctype(buf, len))
                return -EPERM;
        xmlParserCtxtPtr ctxt = xmlNewParserCtxt();
        if (!ctxt)
                return -ENOMEM;
        /* No XML_PARSE_NOENT (entities stay unexpanded), no XML_PARSE_DTDLOAD/DTDATTR/DTDVALID
         * (nothing is fetched), XML_PARSE_NONET (no network even if asked). */
        xmlDocPtr doc = xmlCtxtReadMemory(ctxt, buf, (int)len, NULL, "UTF-8",
                                          XML_PARSE_NONET | XML_PARSE_NOERROR |
                                                  XML_PARSE_NOWARNING | XML_PARSE_NOCDATA);
        xmlFreeParserCtxt(ctxt);
        if (!doc)
                return -EINVAL;
        xmlNodePtr root = xmlDocGetRootElement(doc);
        if (doc->intSubset || doc->extSubset) {
                xmlFreeDoc(doc);
                return -EPERM;
        }
        if (!root || !depth_ok(root, 1)) {
                xmlFreeDoc(doc);
                return -EINVAL;
        }
        *ret = doc;
        return 0;
}

char *xml_to_string(xmlDocPtr doc, size_t *ret_len) {
        xmlChar *mem = NULL;
        int size = 0;
        xmlDocDumpMemoryEnc(doc, &mem, &size, "UTF-8");
        if (!mem)
                return NULL;
        char *s = malloc((size_t)size + 1);
        if (s) {
                memcpy(s, mem, (size_t)size);
                s[size] = 0;
                if (ret_len)
                        *ret_len = (size_t)size;
        }
        xmlFree(mem);
        return s;
}

static bool is(xmlNodePtr n, const char *ns, const char *name) {
        return n && n->type == XML_ELEMENT_NODE && n->ns && n->ns->href &&
               streq((const char *)n->ns->href, ns) && streq((const char *)n->name, name);
}

static xmlNodePtr child(xmlNodePtr n, const char *ns, const char *name) {
        for (xmlNodePtr c = n->children; c; c = c->next)
                if (is(c, ns, name))
                        return c;
        return NULL;
}

bool pidf_valid(xmlDocPtr doc, const char **reason) {
        xmlNodePtr root = xmlDocGetRootElement(doc);
        if (!is(root, PIDF_NS, "presence")) {
                *reason = "root element is not a PIDF <presence>";
                return false;
        }
        xmlChar *entity = xmlGetProp(root, BAD_CAST "entity");
        bool ok = entity && *entity;
        xmlFree(entity);
        if (!ok) {
                *reason = "<presence> has no entity";
                return false;
        }
        for (xmlNodePtr t = root->children; t; t = t->next) {
                if (!is(t, PIDF_NS, "tuple"))
                        continue;
                xmlChar *id = xmlGetProp(t, BAD_CAST "id");
                ok = id && *id;
                xmlFree(id);
                if (!ok) {
                        *reason = "a <tuple> has no id";
                        return false;
                }
                if (!child(t, PIDF_NS, "status")) {
                        *reason = "a <tuple> has no <status>";
                        return false;
                }
        }
        return true;
}

void xml_format_time(time_t t, char *buf, size_t size) {
        struct tm tm;
        if (!gmtime_r(&t, &tm) || strftime(buf, size, "%Y-%m-%dT%H:%M:%SZ", &tm) == 0)
                snprintf(buf, size, "1970-01-01T00:00:00Z");
}

int pidf_stamp_tuples(xmlDocPtr doc, time_t now) {
        xmlNodePtr root = xmlDocGetRootElement(doc);
        char stamp[32];
        xml_format_time(now, stamp, sizeof stamp);
        for (xmlNodePtr t = root->children; t; t = t->next) {
                if (!is(t, PIDF_NS, "tuple") || child(t, PIDF_NS, "timestamp"))
                        continue;
                if (!xmlNewChild(t, t->ns, BAD_CAST "timestamp", BAD_CAST stamp))
                        return -ENOMEM;
        }
        return 0;
}

static bool is_person(xmlNodePtr n) {
        return is(n, DM_NS, "person");
}

size_t pidf_activities(xmlDocPtr doc, char **names, size_t max) {
        size_t n = 0;
        xmlNodePtr root = xmlDocGetRootElement(doc);
        for (xmlNodePtr p = root ? root->children : NULL; p && n < max; p = p->next) {
                if (!is_person(p))
                        continue;
                xmlNodePtr acts = child(p, RPID_NS, "activities");
                for (xmlNodePtr a = acts ? acts->children : NULL; a && n < max; a = a->next)
                        if (a->type == XML_ELEMENT_NODE && a->ns && a->ns->href &&
                            streq((const char *)a->ns->href, RPID_NS) &&
                            !streq((const char *)a->name, "note")) {
                                names[n] = strdup((const char *)a->name);
                                if (names[n])
                                        n++;
                        }
        }
        return n;
}

bool pidf_is_open(xmlDocPtr doc) {
        xmlNodePtr root = xmlDocGetRootElement(doc);
        for (xmlNodePtr t = root ? root->children : NULL; t; t = t->next) {
                xmlNodePtr st = is(t, PIDF_NS, "tuple") ? child(t, PIDF_NS, "status") : NULL;
                xmlNodePtr basic = st ? child(st, PIDF_NS, "basic") : NULL;
                if (!basic)
                        continue;
                xmlChar *v = xmlNodeGetContent(basic);
                bool open = v && streq((const char *)v, "open");
                xmlFree(v);
                if (open)
                        return true;
        }
        return false;
}

xmlDocPtr pidf_merge_new(const char *entity) {
        xmlDocPtr doc = xmlNewDoc(BAD_CAST "1.0");
        if (!doc)
                return NULL;
        xmlNodePtr root = xmlNewDocNode(doc, NULL, BAD_CAST "presence", NULL);
        xmlNsPtr ns = root ? xmlNewNs(root, BAD_CAST PIDF_NS, NULL) : NULL;
        if (!ns || !xmlNewNs(root, BAD_CAST DM_NS, BAD_CAST "dm") ||
            !xmlNewNs(root, BAD_CAST RPID_NS, BAD_CAST "rpid") ||
            !xmlNewProp(root, BAD_CAST "entity", BAD_CAST entity)) {
                xmlFreeNode(root);
                xmlFreeDoc(doc);
                return NULL;
        }
        xmlSetNs(root, ns);
        xmlDocSetRootElement(doc, root);
        return doc;
}

static bool has_tuple_id(xmlNodePtr root, const xmlChar *id) {
        for (xmlNodePtr t = root->children; t; t = t->next) {
                if (!is(t, PIDF_NS, "tuple"))
                        continue;
                xmlChar *other = xmlGetProp(t, BAD_CAST "id");
                bool same = other && xmlStrEqual(other, id);
                xmlFree(other);
                if (same)
                        return true;
        }
        return false;
}

/* RFC 3863 orders the children of <presence>: tuples, then notes, then extensions. */
static void insert_ordered(xmlNodePtr root, xmlNodePtr n) {
        if (is(n, PIDF_NS, "tuple")) {
                xmlNodePtr after = NULL;
                for (xmlNodePtr c = root->children; c; c = c->next)
                        if (is(c, PIDF_NS, "tuple"))
                                after = c;
                if (after)
                        xmlAddNextSibling(after, n);
                else if (root->children)
                        xmlAddPrevSibling(root->children, n);
                else
                        xmlAddChild(root, n);
                return;
        }
        xmlAddChild(root, n);
}

/* The namespaces the source declares on its root (extensions such as a client's own) are
 * declared on ours too, under the same prefix when it is free, so that copied elements keep
 * a declared prefix. */
static int import_namespaces(xmlDocPtr out, xmlNodePtr root, xmlNodePtr sroot) {
        for (xmlNsPtr ns = sroot->nsDef; ns; ns = ns->next) {
                if (!ns->href || xmlSearchNsByHref(out, root, ns->href))
                        continue;
                if (ns->prefix && xmlSearchNs(out, root, ns->prefix))
                        continue; /* prefix taken: the clone declares it where it is used */
                if (!ns->prefix)
                        continue;
                if (!xmlNewNs(root, ns->href, ns->prefix))
                        return -ENOMEM;
        }
        return 0;
}

int pidf_merge_add(xmlDocPtr out, xmlDocPtr src) {
        xmlNodePtr root = xmlDocGetRootElement(out), sroot = xmlDocGetRootElement(src);
        int r = import_namespaces(out, root, sroot);
        if (r < 0)
                return r;
        bool have_person = false;
        for (xmlNodePtr c = root->children; c; c = c->next)
                if (is_person(c))
                        have_person = true;
        for (xmlNodePtr n = sroot->children; n; n = n->next) {
                if (n->type != XML_ELEMENT_NODE)
                        continue;
                if (is(n, PIDF_NS, "tuple")) {
                        xmlChar *id = xmlGetProp(n, BAD_CAST "id");
                        bool dup = id && has_tuple_id(root, id);
                        xmlFree(id);
                        if (dup)
                                continue;
                } else if (is_person(n)) {
                        if (have_person)
                                continue;
                        have_person = true;
                } else if (!is(n, PIDF_NS, "note")) {
                        /* Other extensions (device elements...) of every source are kept. */
                }
                /* Cloned against the root's in-scope namespaces, so that the copy declares
                 * none of its own when the prefixes agree. */
                xmlNodePtr copy = NULL;
                if (xmlDOMWrapCloneNode(NULL, src, n, &copy, out, root, 1, 0) != 0 || !copy)
                        return -ENOMEM;
                insert_ordered(root, copy);
        }
        return 0;
}

int pidf_merge_last_activity(xmlDocPtr out, time_t last) {
        xmlNodePtr root = xmlDocGetRootElement(out);
        xmlNsPtr pidf = root->ns, dm = xmlSearchNsByHref(out, root, BAD_CAST DM_NS),
                 rpid = xmlSearchNsByHref(out, root, BAD_CAST RPID_NS);
        char stamp[32];
        xml_format_time(last, stamp, sizeof stamp);
        xmlNodePtr t = xmlNewChild(root, pidf, BAD_CAST "tuple", NULL);
        xmlNodePtr st = t ? xmlNewChild(t, pidf, BAD_CAST "status", NULL) : NULL;
        xmlNodePtr p = st ? xmlNewChild(root, dm, BAD_CAST "person", NULL) : NULL;
        xmlNodePtr acts = p ? xmlNewChild(p, rpid, BAD_CAST "activities", NULL) : NULL;
        if (!acts || !xmlNewProp(t, BAD_CAST "id", BAD_CAST "last-activity") ||
            !xmlNewChild(st, pidf, BAD_CAST "basic", BAD_CAST "closed") ||
            !xmlNewChild(t, pidf, BAD_CAST "timestamp", BAD_CAST stamp) ||
            !xmlNewProp(p, BAD_CAST "id", BAD_CAST "last-activity") ||
            !xmlNewChild(acts, rpid, BAD_CAST "away", NULL) ||
            !xmlNewChild(p, dm, BAD_CAST "timestamp", BAD_CAST stamp))
                return -ENOMEM;
        return 0;
}

int pidf_merge_default(xmlDocPtr out, const char *capabilities) {
        xmlNodePtr root = xmlDocGetRootElement(out);
        xmlNsPtr pidf = root->ns;
        xmlNodePtr t = xmlNewChild(root, pidf, BAD_CAST "tuple", NULL);
        xmlNodePtr st = t ? xmlNewChild(t, pidf, BAD_CAST "status", NULL) : NULL;
        if (!st || !xmlNewProp(t, BAD_CAST "id", BAD_CAST "long-term") ||
            !xmlNewChild(st, pidf, BAD_CAST "basic", BAD_CAST "open"))
                return -ENOMEM;
        if (isempty(capabilities))
                return 0;
        xmlNsPtr oma = xmlSearchNsByHref(out, root, BAD_CAST OMA_PRES_NS);
        if (!oma)
                oma = xmlNewNs(root, BAD_CAST OMA_PRES_NS, BAD_CAST "oma-pres");
        if (!oma)
                return -ENOMEM;
        /* Items are checked tokens (devices.c): "name" or "name/version". */
        _cleanup_free_ char *copy = strdup(capabilities);
        if (!copy)
                return -ENOMEM;
        char *save = NULL;
        for (char *item = strtok_r(copy, ",", &save); item; item = strtok_r(NULL, ",", &save)) {
                char *slash = strchr(item, '/');
                if (slash)
                        *slash++ = '\0';
                xmlNodePtr d = xmlNewChild(t, oma, BAD_CAST "service-description", NULL);
                if (!d || !xmlNewTextChild(d, oma, BAD_CAST "service-id", BAD_CAST item) ||
                    (slash && !xmlNewTextChild(d, oma, BAD_CAST "version", BAD_CAST slash)))
                        return -ENOMEM;
        }
        return 0;
}

static int collect_entries(xmlNodePtr list, size_t max, char ***uris, size_t *n) {
        for (xmlNodePtr c = list->children; c; c = c->next) {
                if (is(c, RESOURCE_LISTS_NS, "list")) {
                        int r = collect_entries(c, max, uris, n);
                        if (r < 0)
                                return r;
                        continue;
                }
                if (!is(c, RESOURCE_LISTS_NS, "entry"))
                        continue;
                xmlChar *uri = xmlGetProp(c, BAD_CAST "uri");
                if (!uri || !*uri) {
                        xmlFree(uri);
                        continue;
                }
                bool dup = false;
                for (size_t i = 0; i < *n && !dup; i++)
                        dup = streq((*uris)[i], (const char *)uri);
                if (dup) {
                        xmlFree(uri);
                        continue;
                }
                if (*n >= max) {
                        xmlFree(uri);
                        return -E2BIG;
                }
                char **nu = realloc(*uris, (*n + 2) * sizeof *nu);
                if (!nu) {
                        xmlFree(uri);
                        return -ENOMEM;
                }
                *uris = nu;
                nu[*n] = strdup((const char *)uri);
                xmlFree(uri);
                if (!nu[*n])
                        return -ENOMEM;
                nu[++*n] = NULL;
        }
        return 0;
}

int resource_lists_uris(xmlDocPtr doc, size_t max, char ***ret) {
        xmlNodePtr root = xmlDocGetRootElement(doc);
        if (!is(root, RESOURCE_LISTS_NS, "resource-lists"))
                return -EINVAL;
        char **uris = calloc(1, sizeof *uris);
        size_t n = 0;
        if (!uris)
                return -ENOMEM;
        int r = 0;
        for (xmlNodePtr l = root->children; l && r >= 0; l = l->next)
                if (is(l, RESOURCE_LISTS_NS, "list"))
                        r = collect_entries(l, max, &uris, &n);
        if (r < 0) {
                strv_free(uris);
                return r;
        }
        *ret = uris;
        return 0;
}
