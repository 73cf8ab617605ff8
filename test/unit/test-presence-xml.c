/* SPDX-License-Identifier: MIT */
/* The presence server's XML layer (presence/pidf.c) on libxml2: safe parsing (size, DTD and
 * entities, depth), PIDF checks, tuple timestamps, RPID activities, the merge of several
 * sources and the last-activity document, resource lists. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <hiredis/hiredis.h>

#include "macro.h"
#include "pidf.h"
#include "presence.h"
#include "testlib.h"

#define PIDF_HEAD                                                                                  \
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n"                                             \
        "<presence xmlns=\"urn:ietf:params:xml:ns:pidf\" "                                         \
        "xmlns:dm=\"urn:ietf:params:xml:ns:pidf:data-model\" "                                     \
        "xmlns:rpid=\"urn:ietf:params:xml:ns:pidf:rpid\" entity=\"sip:alice@example.org\">"

static const char *phone_pidf =
        PIDF_HEAD "<tuple id=\"phone\"><status><basic>open</basic></status>"
                  "<contact priority=\"0.8\">sip:alice@10.0.0.1</contact>"
                  "<timestamp>2026-01-01T10:00:00Z</timestamp></tuple>"
                  "<dm:person id=\"p1\"><rpid:activities><rpid:away/></rpid:activities>"
                  "</dm:person></presence>";
static const char *desk_pidf =
        PIDF_HEAD "<tuple id=\"desk\"><status><basic>closed</basic></status>"
                  "<contact priority=\"0.2\">sip:alice@10.0.0.2</contact></tuple>"
                  "<tuple id=\"phone\"><status><basic>closed</basic></status></tuple>"
                  "<dm:person id=\"p2\"><rpid:activities><rpid:on-the-phone/>"
                  "</rpid:activities></dm:person></presence>";

static xmlDocPtr parse_ok(const char *s) {
        xmlDocPtr doc = NULL;
        ck_assert_int_eq(xml_parse(s, strlen(s), 65536, &doc), 0);
        return doc;
}

START_TEST(test_presence_xml_refuses_entities_and_dtd) {
        static const char *const attacks[] = {
                /* XXE: an external entity naming a local file */
                "<?xml version=\"1.0\"?><!DOCTYPE p [<!ENTITY x SYSTEM \"file:///etc/passwd\">]>"
                "<presence xmlns=\"urn:ietf:params:xml:ns:pidf\" entity=\"sip:a@b\">"
                "<note>&x;</note></presence>",
                /* blind XXE through a parameter entity fetched over the network */
                "<?xml version=\"1.0\"?><!DOCTYPE p [<!ENTITY % r SYSTEM "
                "\"http://127.0.0.1:9/x.dtd\"> %r;]><presence/>",
                /* billion laughs */
                "<?xml version=\"1.0\"?><!DOCTYPE l [<!ENTITY a \"aaaaaaaaaa\">"
                "<!ENTITY b \"&a;&a;&a;&a;&a;&a;&a;&a;&a;&a;\"><!ENTITY c "
                "\"&b;&b;&b;&b;&b;&b;&b;\">]>"
                "<l>&c;&c;&c;&c;</l>",
                /* an external DTD */
                "<?xml version=\"1.0\"?><!DOCTYPE presence SYSTEM \"/etc/passwd\"><presence/>",
        };
        for (size_t i = 0; i < ELEMENTSOF(attacks); i++) {
                xmlDocPtr doc = NULL;
                ck_assert_int_eq(xml_parse(attacks[i], strlen(attacks[i]), 65536, &doc), -EPERM);
                ck_assert_ptr_null(doc);
        }
}
END_TEST

START_TEST(test_presence_xml_bounds_size_and_depth) {
        xmlDocPtr doc = NULL;
        ck_assert_int_eq(xml_parse(phone_pidf, strlen(phone_pidf), 100, &doc), -E2BIG);
        /* XML_MAX_DEPTH + 1 nested elements */
        char deep[2048] = "";
        for (int i = 0; i <= XML_MAX_DEPTH; i++)
                strcat(deep, "<a>");
        for (int i = 0; i <= XML_MAX_DEPTH; i++)
                strcat(deep, "</a>");
        ck_assert_int_eq(xml_parse(deep, strlen(deep), 65536, &doc), -EINVAL);
        /* exactly the limit is fine */
        char ok[2048] = "";
        for (int i = 0; i < XML_MAX_DEPTH; i++)
                strcat(ok, "<a>");
        for (int i = 0; i < XML_MAX_DEPTH; i++)
                strcat(ok, "</a>");
        ck_assert_int_eq(xml_parse(ok, strlen(ok), 65536, &doc), 0);
        xmlFreeDoc(doc);
        ck_assert_int_eq(xml_parse("<a><b></a>", 10, 65536, &doc), -EINVAL);
        ck_assert_int_eq(xml_parse("", 0, 65536, &doc), -EINVAL);
}
END_TEST

/* Every truncation of a valid document is refused cleanly (the sanitizer build watches). */
START_TEST(test_presence_xml_truncated_documents) {
        size_t len = strlen(phone_pidf);
        for (size_t n = 0; n < len; n++) {
                xmlDocPtr doc = NULL;
                ck_assert_int_eq(xml_parse(phone_pidf, n, 65536, &doc), -EINVAL);
                ck_assert_ptr_null(doc);
        }
}
END_TEST

START_TEST(test_presence_xml_pidf_checks) {
        const char *reason = NULL;
        xmlDocPtr doc = parse_ok(phone_pidf);
        ck_assert(pidf_valid(doc, &reason));
        ck_assert(pidf_is_open(doc));
        char *names[4];
        ck_assert_uint_eq(pidf_activities(doc, names, 4), 1);
        ck_assert_str_eq(names[0], "away");
        free(names[0]);
        xmlFreeDoc(doc);

        doc = parse_ok("<presence xmlns=\"urn:ietf:params:xml:ns:pidf\"/>");
        ck_assert(!pidf_valid(doc, &reason));
        ck_assert_str_eq(reason, "<presence> has no entity");
        xmlFreeDoc(doc);
        doc = parse_ok("<presence xmlns=\"urn:example\" entity=\"sip:a@b\"/>");
        ck_assert(!pidf_valid(doc, &reason));
        xmlFreeDoc(doc);
        doc = parse_ok("<presence xmlns=\"urn:ietf:params:xml:ns:pidf\" entity=\"sip:a@b\">"
                       "<tuple><status/></tuple></presence>");
        ck_assert(!pidf_valid(doc, &reason));
        ck_assert_str_eq(reason, "a <tuple> has no id");
        xmlFreeDoc(doc);
}
END_TEST

START_TEST(test_presence_xml_merge_keeps_each_tuple) {
        xmlDocPtr phone = parse_ok(phone_pidf), desk = parse_ok(desk_pidf);
        ck_assert_int_eq(pidf_stamp_tuples(desk, 1700000000), 0);
        xmlDocPtr out = pidf_merge_new("sip:alice@example.org");
        /* newest (desk) first: its person wins and its "phone" tuple hides the older one */
        ck_assert_int_eq(pidf_merge_add(out, desk), 0);
        ck_assert_int_eq(pidf_merge_add(out, phone), 0);
        _cleanup_free_ char *s = xml_to_string(out, NULL);
        ck_assert_ptr_nonnull(strstr(s, "entity=\"sip:alice@example.org\""));
        ck_assert_ptr_nonnull(strstr(s, "<tuple id=\"desk\">"));
        ck_assert_ptr_nonnull(strstr(s, "<contact priority=\"0.2\">sip:alice@10.0.0.2</contact>"));
        ck_assert_ptr_nonnull(strstr(s, "<timestamp>2023-11-14T22:13:20Z</timestamp>"));
        ck_assert_ptr_nonnull(strstr(s, "rpid:on-the-phone"));
        ck_assert_ptr_null(strstr(s, "rpid:away"));
        ck_assert_ptr_null(strstr(s, "10.0.0.1"));
        /* the result parses again as valid PIDF */
        const char *reason;
        xmlDocPtr again = parse_ok(s);
        ck_assert(pidf_valid(again, &reason));
        xmlFreeDoc(again);
        xmlFreeDoc(out);

        out = pidf_merge_new("sip:alice@example.org");
        ck_assert_int_eq(pidf_merge_add(out, phone), 0);
        ck_assert_int_eq(pidf_merge_add(out, desk), 0);
        _cleanup_free_ char *s2 = xml_to_string(out, NULL);
        ck_assert_ptr_nonnull(strstr(s2, "<contact priority=\"0.8\">sip:alice@10.0.0.1</contact>"));
        ck_assert_ptr_nonnull(strstr(s2, "<timestamp>2026-01-01T10:00:00Z</timestamp>"));
        ck_assert_ptr_nonnull(strstr(s2, "<tuple id=\"desk\">"));
        ck_assert_ptr_nonnull(strstr(s2, "rpid:away"));
        xmlFreeDoc(out);

        out = pidf_merge_new("sip:alice@example.org");
        ck_assert_int_eq(pidf_merge_last_activity(out, 1700000000), 0);
        _cleanup_free_ char *s3 = xml_to_string(out, NULL);
        ck_assert_ptr_nonnull(strstr(s3, "<basic>closed</basic>"));
        ck_assert_ptr_nonnull(strstr(s3, "<rpid:away/>"));
        ck_assert_ptr_nonnull(strstr(s3, "<dm:timestamp>2023-11-14T22:13:20Z</dm:timestamp>"));
        xmlFreeDoc(out);
        xmlFreeDoc(phone);
        xmlFreeDoc(desk);
}
END_TEST

/* A client's own extension namespace, declared on its root and used inside a tuple, stays
 * declared in the merged document. */
START_TEST(test_presence_xml_merge_keeps_namespaces) {
        xmlDocPtr src = parse_ok(
                "<presence xmlns=\"urn:ietf:params:xml:ns:pidf\" "
                "xmlns:ext=\"urn:example:ext\" xmlns:p=\"urn:ietf:params:xml:ns:pidf:rpid\" "
                "entity=\"sip:a@b\"><tuple id=\"t\"><status><basic>open</basic><ext:online/>"
                "</status><p:activities><p:away/></p:activities></tuple></presence>");
        xmlDocPtr out = pidf_merge_new("sip:a@b");
        ck_assert_int_eq(pidf_merge_add(out, src), 0);
        _cleanup_free_ char *s = xml_to_string(out, NULL);
        ck_assert_ptr_nonnull(strstr(s, "xmlns:ext=\"urn:example:ext\""));
        ck_assert_ptr_nonnull(strstr(s, "<ext:online/>"));
        /* rpid under another prefix: mapped to ours */
        ck_assert_ptr_nonnull(strstr(s, "<rpid:away/>"));
        xmlFreeDoc(out);
        xmlFreeDoc(src);
}
END_TEST

START_TEST(test_presence_xml_resource_lists) {
        const char *text =
                "<?xml version=\"1.0\"?><resource-lists "
                "xmlns=\"urn:ietf:params:xml:ns:resource-lists\"><list>"
                "<entry uri=\"sip:bob@example.org\"/><entry uri=\"sip:carol@example.org\"/>"
                "<list name=\"work\"><entry uri=\"sip:dave@example.org\"/>"
                "<entry uri=\"sip:bob@example.org\"/></list><entry/></list></resource-lists>";
        xmlDocPtr doc = parse_ok(text);
        char **uris = NULL;
        ck_assert_int_eq(resource_lists_uris(doc, 10, &uris), 0);
        ck_assert_uint_eq(strv_length(uris), 3);
        ck_assert_str_eq(uris[0], "sip:bob@example.org");
        ck_assert_str_eq(uris[2], "sip:dave@example.org");
        strv_free(uris);
        ck_assert_int_eq(resource_lists_uris(doc, 2, &uris), -E2BIG);
        xmlFreeDoc(doc);
        doc = parse_ok(phone_pidf);
        ck_assert_int_eq(resource_lists_uris(doc, 10, &uris), -EINVAL);
        xmlFreeDoc(doc);
}
END_TEST

/* The capabilities of a registrar AOR: an HGETALL reply built by hand from field/value
 * pairs, then the default tuple they make. */
static char *capabilities_of(const char *const *pairs, size_t n, uint64_t now) {
        redisReply items[64], *ptrs[64];
        ck_assert_uint_le(n, 64);
        for (size_t i = 0; i < n; i++) {
                items[i] = (redisReply){.type = REDIS_REPLY_STRING, .str = (char *)pairs[i],
                                        .len = strlen(pairs[i])};
                ptrs[i] = &items[i];
        }
        redisReply rep = {.type = REDIS_REPLY_ARRAY, .elements = n, .element = ptrs};
        char *s = devices_capabilities(&rep, now);
        ck_assert_ptr_nonnull(s);
        return s;
}

START_TEST(test_presence_xml_device_capabilities) {
        static const char *const pairs[] = {
                "v", "abc",
                "c:1", "{\"contact\":\"sip:a@h\",\"params\":\"+sip.instance=\\\"<urn:x;a=b>\\\";"
                       "+org.linphone.specs=\\\"groupchat/1.1,lime\\\"\",\"expires-at\":2000}",
                "c:2", "{\"contact\":\"sip:a@h\",\"params\":\"+Org.Linphone.Specs = "
                       "groupchat/1.10 , ephemeral;x\",\"expires-at\":2000}",
                "c:3", "{\"contact\":\"sip:a@h\",\"params\":\"+org.linphone.specs=old\","
                       "\"expires-at\":500}",
                "c:4", "not json",
                "c:5", "{\"params\":[1]}",
                "c:6", "{\"params\":\"+org.linphone.specs=\\\"a b,<c>,d/,/e,f/1/2,"
                       "g\\\"\"}",
                "c:7", "{\"params\":\"+org.linphone.specs\"}",
                "x:8", "{\"params\":\"+org.linphone.specs=notabinding\"}",
        };
        _cleanup_free_ char *caps = capabilities_of(pairs, ELEMENTSOF(pairs), 1000);
        ck_assert_str_eq(caps, "ephemeral,g,groupchat/1.10,lime");
        _cleanup_free_ char *later = capabilities_of(pairs, ELEMENTSOF(pairs), 3000);
        ck_assert_str_eq(later, "g"); /* the bindings with expires-at 2000 expired */
        _cleanup_free_ char *none = capabilities_of(pairs, 2, 1000);
        ck_assert_str_eq(none, "");
        _cleanup_free_ char *odd = capabilities_of(pairs, 3, 1000); /* an odd count */
        ck_assert_str_eq(odd, "");

        /* At most 32 names, however many a device lists. */
        char many[4096] = "{\"params\":\"+org.linphone.specs=";
        for (int i = 0; i < 100; i++)
                snprintf(many + strlen(many), sizeof many - strlen(many), "%sc%03d",
                         i ? "," : "", i);
        strcat(many, "\"}");
        const char *big[] = {"c:1", many};
        _cleanup_free_ char *capped = capabilities_of(big, 2, 0);
        size_t commas = 0;
        for (const char *p = capped; *p; p++)
                commas += *p == ',';
        ck_assert_uint_eq(commas, 31);

        xmlDocPtr doc = pidf_merge_new("sip:a@example.org");
        ck_assert_int_eq(pidf_merge_default(doc, caps), 0);
        size_t len = 0;
        _cleanup_free_ char *text = xml_to_string(doc, &len);
        xmlFreeDoc(doc);
        ck_assert_ptr_nonnull(strstr(text, "xmlns:oma-pres=\"urn:oma:xml:prs:pidf:oma-pres\""));
        ck_assert_ptr_nonnull(strstr(
                text, "<tuple id=\"long-term\"><status><basic>open</basic></status>"
                      "<oma-pres:service-description><oma-pres:service-id>ephemeral"
                      "</oma-pres:service-id></oma-pres:service-description>"));
        ck_assert_ptr_nonnull(strstr(text, "<oma-pres:service-id>groupchat</oma-pres:service-id>"
                                           "<oma-pres:version>1.10</oma-pres:version>"));
        xmlDocPtr parsed = NULL;
        ck_assert_int_eq(xml_parse(text, len, 65536, &parsed), 0);
        const char *why = NULL;
        ck_assert_msg(pidf_valid(parsed, &why), "%s", strempty(why));
        xmlFreeDoc(parsed);
}
END_TEST

static Suite *suite(void) {
        Suite *s = suite_create("presence-xml");
        TCase *tc = tcase_create("parse");
        tcase_add_test(tc, test_presence_xml_refuses_entities_and_dtd);
        tcase_add_test(tc, test_presence_xml_bounds_size_and_depth);
        tcase_add_test(tc, test_presence_xml_truncated_documents);
        suite_add_tcase(s, tc);
        tc = tcase_create("pidf");
        tcase_add_test(tc, test_presence_xml_pidf_checks);
        tcase_add_test(tc, test_presence_xml_merge_keeps_each_tuple);
        tcase_add_test(tc, test_presence_xml_merge_keeps_namespaces);
        suite_add_tcase(s, tc);
        tc = tcase_create("lists");
        tcase_add_test(tc, test_presence_xml_resource_lists);
        tcase_add_test(tc, test_presence_xml_device_capabilities);
        suite_add_tcase(s, tc);
        return s;
}

int main(void) {
        return tl_run(suite());
}
