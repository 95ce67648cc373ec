/*
 * test_slab: the requests' slab (proxy/slab.h) hands out distinct, aligned
 * objects of its size from blocks of SLAB_BLOCK_BYTES, reuses a given-back
 * object before any new block, keeps empty blocks until slab_trim (which
 * leaves SLAB_KEEP_EMPTY), says when a trim has work, and fills the blocks
 * in use before an empty one.  RSS: a burst's blocks are gone after the
 * trim (/proc/self/statm).
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "pclimits.h"
#include "slab.h"
#include "check.h"

#define OBJ 1608		/* sizeof(struct req) on x86-64 today */
#define BURST 1000

static long
rss_pages(void)
{
	FILE *f = fopen("/proc/self/statm", "r");
	long size = 0, rss = -1;

	if (f == NULL)
		return -1;
	if (fscanf(f, "%ld %ld", &size, &rss) != 2)
		rss = -1;
	fclose(f);
	return rss;
}

static uintptr_t
block_of(const void *p)
{
	return (uintptr_t)p & ~(uintptr_t)(SLAB_BLOCK_BYTES - 1);
}

int
main(void)
{
	static char *obj[BURST];
	struct slab sl;
	unsigned per;
	bool any_true = false;
	long before, peak, after;

	slab_init(&sl, OBJ);
	CHECK(sl.size >= OBJ && sl.size % 16 == 0 && sl.size < OBJ + 16,
	    "size %zu", sl.size);
	per = sl.per_block;
	CHECK(per >= 1 && (size_t)per * sl.size <= SLAB_BLOCK_BYTES);

	/* The baseline after the code and stdio this test runs are paged
	 * in (file pages count in RSS too): one round trip first. */
	slab_put(slab_get(&sl));
	slab_trim(&sl);
	CHECK(rss_pages() > 0);
	printf("%s", "");

	/* Distinct, 16-aligned, writable over the whole size, no overlap. */
	before = rss_pages();
	for (int i = 0; i < BURST; i++) {
		obj[i] = slab_get(&sl);
		CHECK(obj[i] != NULL);
		if (obj[i] == NULL)
			return check_done();
		CHECK((uintptr_t)obj[i] % 16 == 0);
		memset(obj[i], i & 0xff, OBJ);
	}
	peak = rss_pages();
	for (int i = 0; i < BURST; i++)
		for (int j = 0; j < OBJ; j += 97)
			if ((unsigned char)obj[i][j] != (i & 0xff)) {
				CHECK_FAIL();
				printf("object %d byte %d overwritten\n", i, j);
				break;
			}
	CHECK(sl.inuse == BURST);
	CHECK(sl.nblocks == (BURST + per - 1) / per, "%u blocks for %d",
	    sl.nblocks, BURST);
	CHECK(sl.nempty == 0);

	/* A given-back object is the next one handed out (its block is
	 * first), not a new block's. */
	{
		char *p = obj[BURST / 2];
		unsigned nb = sl.nblocks;

		CHECK(!slab_put(p));
		obj[BURST / 2] = slab_get(&sl);
		CHECK(obj[BURST / 2] == p);
		CHECK(sl.nblocks == nb);
	}

	for (int i = 0; i < BURST; i++) {
		unsigned was = sl.nempty;
		bool r = slab_put(obj[i]);

		any_true |= r;
		/* put returns true exactly when it emptied a block and more
		 * than SLAB_KEEP_EMPTY blocks are empty after it. */
		if (r != (sl.nempty > was && sl.nempty > SLAB_KEEP_EMPTY)) {
			CHECK_FAIL();
			printf("put %d returned %d with %u empty\n", i, r,
			    sl.nempty);
		}
		obj[i] = NULL;
	}
	CHECK(any_true);
	CHECK(sl.inuse == 0);
	/* slab_put keeps every empty block (no unmap on the hot path). */
	CHECK(sl.nempty == sl.nblocks && sl.nblocks == (BURST + per - 1) / per,
	    "%u empty of %u", sl.nempty, sl.nblocks);
	slab_trim(&sl);
	CHECK(sl.nblocks == SLAB_KEEP_EMPTY && sl.nempty == SLAB_KEEP_EMPTY,
	    "after trim: %u blocks, %u empty", sl.nblocks, sl.nempty);
	after = rss_pages();
	/* The burst's pages went back to the kernel with the blocks.  (Not
	 * under ASan: poisoning them made shadow pages, resident after the
	 * blocks are gone, and they are the sanitizer's, not the slab's.) */
#ifndef __SANITIZE_ADDRESS__
	CHECK(before > 0 && peak - before >= (long)(BURST * OBJ / 4096) - 1,
	    "peak %ld before %ld", peak, before);
	CHECK(after - before <= (long)(SLAB_KEEP_EMPTY * SLAB_BLOCK_BYTES /
	    4096) + 2, "rss after trim %ld pages over %ld", after, before);
#else
	printf("RSS after trim not checked under ASan (%ld -> %ld -> %ld)\n",
	    before, peak, after);
#endif

	/* Objects fill the blocks in use before an empty one: blocks 0 and
	 * 1 with one object out each, block 2 empty; the next 2 x (per - 1)
	 * objects all come from blocks 0 and 1. */
	{
		char *a[3 * 64];
		unsigned n = 3 * per;
		uintptr_t b0, b1, b2;
		unsigned i, ok = 0;

		CHECK(n <= sizeof(a) / sizeof(a[0]));
		if (n > sizeof(a) / sizeof(a[0]))
			return check_done();
		for (i = 0; i < n; i++)
			a[i] = slab_get(&sl);
		CHECK(sl.nblocks == 3, "%u blocks", sl.nblocks);
		b0 = block_of(a[0]);
		b1 = block_of(a[per]);
		b2 = block_of(a[2 * per]);
		CHECK(b0 != b1 && b1 != b2 && b0 != b2);
		/* Block 2 empty first, then all but a[0] and a[per]. */
		for (i = 2 * per; i < n; i++)
			slab_put(a[i]);
		for (i = 1; i < 2 * per; i++)
			if (i != per)
				slab_put(a[i]);
		CHECK(sl.nempty == 1, "%u empty", sl.nempty);
		for (i = 0; i < 2 * (per - 1); i++) {
			char *p = slab_get(&sl);

			if (block_of(p) == b0 || block_of(p) == b1)
				ok++;
			a[i < per - 1 ? 1 + i : per + 1 + (i - (per - 1))] = p;
		}
		CHECK(ok == 2 * (per - 1), "%u of %u from the blocks in use",
		    ok, 2 * (per - 1));
		CHECK(sl.nempty == 1 && sl.nblocks == 3);
		for (i = 0; i < 2 * per; i++)
			slab_put(a[i]);
		CHECK(sl.inuse == 0 && sl.nempty == 3);
		slab_trim(&sl);
		CHECK(sl.nblocks == SLAB_KEEP_EMPTY);
	}
	slab_put(NULL);		/* ignored */
	slab_drain(&sl);
	CHECK(sl.nblocks == 0 && sl.avail == NULL);
	return check_done();
}
