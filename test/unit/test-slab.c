/* SPDX-License-Identifier: MIT */
/* common/slab: objects of every size class are distinct and keep their bytes, freed slots are
 * reused, empty chunks go back to the system, large objects fall through to malloc. */
#include <stdint.h>
#include <string.h>

#include "slab.h"
#include "testlib.h"

#define N 3000

static size_t size_of(unsigned i) {
        return 1 + (i * 37) % (SLAB_MAX + 100); /* every class, and some above SLAB_MAX */
}

START_TEST(test_slab_objects_keep_their_bytes) {
        struct slab_pool *p = NULL;
        ck_assert_int_eq(slab_pool_new(&p), 0);
        static void *obj[N];
        size_t want = 0;
        for (unsigned i = 0; i < N; i++) {
                obj[i] = slab_alloc(p, size_of(i));
                ck_assert_ptr_nonnull(obj[i]);
                ck_assert_uint_eq((uintptr_t)obj[i] % 16, 0);
                memset(obj[i], (int)(i & 0xff), size_of(i));
                want += size_of(i);
        }
        ck_assert_uint_ge(slab_used(p), want);
        ck_assert_uint_ge(slab_mapped(p), slab_used(p));
        static unsigned char pattern[SLAB_MAX + 100];
        for (unsigned i = 0; i < N; i++) {
                memset(pattern, (int)(i & 0xff), size_of(i));
                ck_assert_msg(memcmp(obj[i], pattern, size_of(i)) == 0, "object %u changed", i);
        }
        for (unsigned i = 0; i < N; i++)
                slab_free(p, obj[i], size_of(i));
        ck_assert_uint_eq(slab_used(p), 0);
        /* At most one spare chunk per class stays mapped. */
        ck_assert_uint_le(slab_mapped(p), (size_t)80 * 64 * 1024);
        slab_pool_free(p);
}
END_TEST

START_TEST(test_slab_reuses_freed_slots) {
        struct slab_pool *p = NULL;
        ck_assert_int_eq(slab_pool_new(&p), 0);
        static void *obj[N];
        for (unsigned i = 0; i < N; i++)
                ck_assert_ptr_nonnull(obj[i] = slab_alloc(p, 300));
        size_t mapped = slab_mapped(p);
        /* Free every other object, then allocate as many: no new chunk is needed. */
        for (unsigned i = 0; i < N; i += 2)
                slab_free(p, obj[i], 300);
        for (unsigned i = 0; i < N; i += 2)
                ck_assert_ptr_nonnull(obj[i] = slab_alloc(p, 290));
        ck_assert_uint_eq(slab_mapped(p), mapped);
        for (unsigned i = 0; i < N; i++)
                slab_free(p, obj[i], 300);
        ck_assert_uint_eq(slab_mapped(p), (size_t)64 * 1024);
        slab_pool_free(p);
}
END_TEST

START_TEST(test_slab_free_pool_with_objects_left) {
        struct slab_pool *p = NULL;
        ck_assert_int_eq(slab_pool_new(&p), 0);
        for (unsigned i = 0; i < 1000; i++)
                ck_assert_ptr_nonnull(slab_alloc(p, 100 + i % 200));
        ck_assert_uint_gt(slab_mapped(p), 0);
        slab_free(p, NULL, 10);
        slab_pool_free(p); /* unmaps the chunks; ASan/valgrind would report a leak otherwise */
        slab_pool_free(NULL);
}
END_TEST

int main(void) {
        Suite *s = suite_create("slab");
        TCase *tc = tcase_create("pool");
        tcase_add_test(tc, test_slab_objects_keep_their_bytes);
        tcase_add_test(tc, test_slab_reuses_freed_slots);
        tcase_add_test(tc, test_slab_free_pool_with_objects_left);
        suite_add_tcase(s, tc);
        return tl_run(s);
}
