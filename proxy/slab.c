/*
 * slab: fixed-size objects in blocks mapped from the kernel (slab.h).
 *
 * A block is SLAB_BLOCK_BYTES, aligned to its size, so an object's block
 * is its address rounded down: a put needs no slab argument (a request's
 * timer close callback knows only the request).  The block's header comes
 * first; objects are handed out from the never-used end (fresh) and from
 * the block's free list (a freed object's first word links it).  Blocks
 * with a free object are on the slab's avail list: those with objects out
 * first, the empty ones at its tail, so that new objects fill the blocks
 * in use and an empty block stays empty.  slab_put never unmaps: an
 * owner's slab_trim, some time after a burst, unmaps the empty blocks but
 * SLAB_KEEP_EMPTY.  (Unmapping in slab_put as soon as nothing was out, or
 * as soon as more blocks were empty than in use, mapped a block per ~14
 * conns of bench row 3.)
 */
#include <assert.h>
#include <stdbool.h>
#include <stdint.h>
#include <string.h>
#include <sys/mman.h>

#include "pclimits.h"
#include "slab.h"

#if defined(__has_include)
#if __has_include(<valgrind/memcheck.h>)
#include <valgrind/memcheck.h>
#define SLAB_VALGRIND 1
#endif
#endif
#if defined(__SANITIZE_ADDRESS__)
#include <sanitizer/asan_interface.h>
#define SLAB_ASAN 1
#endif

struct slab_block {
	struct slab_block *next, *prev;	/* on sl->avail, while listed */
	struct slab *sl;
	void *free;		/* given-back objects, linked by first word */
	unsigned used;		/* objects out */
	unsigned fresh;		/* objects never handed out, at the end */
	bool listed;		/* on sl->avail */
};

/* Objects start here in a block (the header, cache-line rounded). */
#define SLAB_HDR ((sizeof(struct slab_block) + 63) & ~(size_t)63)

static_assert(SLAB_BLOCK_BYTES % 4096 == 0 &&
    (SLAB_BLOCK_BYTES & (SLAB_BLOCK_BYTES - 1)) == 0,
    "a slab block is a power-of-two number of pages");

/* What the checkers are told: p (n bytes) is a block of its own now, or
 * not any more.  The free-list link is read and written around them. */
static void
slab_mark_out(void *p, size_t n)
{
#ifdef SLAB_ASAN
	ASAN_UNPOISON_MEMORY_REGION(p, n);
#endif
#ifdef SLAB_VALGRIND
	VALGRIND_MALLOCLIKE_BLOCK(p, n, 0, 0);
#endif
	(void)p;
	(void)n;
}

static void
slab_mark_back(void *p, size_t n)
{
#ifdef SLAB_VALGRIND
	VALGRIND_FREELIKE_BLOCK(p, 0);
	VALGRIND_MAKE_MEM_NOACCESS(p, n);
#endif
#ifdef SLAB_ASAN
	ASAN_POISON_MEMORY_REGION(p, n);
#endif
	(void)p;
	(void)n;
}

/* The free-list link of a given-back object (not visible to the
 * checkers otherwise). */
static void *
slab_link_get(void *p)
{
	void *next;

#ifdef SLAB_ASAN
	ASAN_UNPOISON_MEMORY_REGION(p, sizeof(void *));
#endif
#ifdef SLAB_VALGRIND
	VALGRIND_MAKE_MEM_DEFINED(p, sizeof(void *));
#endif
	memcpy(&next, p, sizeof(next));
	return next;
}

static void
slab_link_set(void *p, void *next, size_t n)
{
	memcpy(p, &next, sizeof(next));
	slab_mark_back(p, n);	/* the link too: slab_link_get opens it */
}

void
slab_init(struct slab *sl, size_t size)
{
	memset(sl, 0, sizeof(*sl));
	sl->size = (size < sizeof(void *) ? sizeof(void *) : size + 15) &
	    ~(size_t)15;
	assert(sl->size <= SLAB_BLOCK_BYTES - SLAB_HDR);
	sl->per_block = (unsigned)((SLAB_BLOCK_BYTES - SLAB_HDR) / sl->size);
}

/* Puts b on the avail list: at its head, or its tail if empty. */
static void
slab_list(struct slab *sl, struct slab_block *b)
{
	if (b->used == 0) {
		b->next = NULL;
		b->prev = sl->avail_tail;
		if (sl->avail_tail != NULL)
			sl->avail_tail->next = b;
		else
			sl->avail = b;
		sl->avail_tail = b;
	} else {
		b->prev = NULL;
		b->next = sl->avail;
		if (sl->avail != NULL)
			sl->avail->prev = b;
		else
			sl->avail_tail = b;
		sl->avail = b;
	}
	b->listed = true;
}

static void
slab_unlist(struct slab *sl, struct slab_block *b)
{
	if (b->prev != NULL)
		b->prev->next = b->next;
	else
		sl->avail = b->next;
	if (b->next != NULL)
		b->next->prev = b->prev;
	else
		sl->avail_tail = b->prev;
	b->next = b->prev = NULL;
	b->listed = false;
}

/* A new block, aligned to its size: map twice that, unmap the rest. */
static struct slab_block *
slab_block_new(struct slab *sl)
{
	size_t len = 2 * (size_t)SLAB_BLOCK_BYTES;
	char *m = mmap(NULL, len, PROT_READ | PROT_WRITE,
	    MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	uintptr_t start;
	struct slab_block *b;

	if (m == MAP_FAILED)
		return NULL;
	start = ((uintptr_t)m + SLAB_BLOCK_BYTES - 1) &
	    ~(uintptr_t)(SLAB_BLOCK_BYTES - 1);
	if (start > (uintptr_t)m)
		munmap(m, start - (uintptr_t)m);
	if ((uintptr_t)m + len > start + SLAB_BLOCK_BYTES)
		munmap((void *)(start + SLAB_BLOCK_BYTES),
		    (uintptr_t)m + len - start - SLAB_BLOCK_BYTES);
	b = (struct slab_block *)start;
	b->sl = sl;
	b->fresh = sl->per_block;
#ifdef SLAB_VALGRIND
	VALGRIND_MAKE_MEM_NOACCESS((char *)b + SLAB_HDR,
	    SLAB_BLOCK_BYTES - SLAB_HDR);
#endif
#ifdef SLAB_ASAN
	ASAN_POISON_MEMORY_REGION((char *)b + SLAB_HDR,
	    SLAB_BLOCK_BYTES - SLAB_HDR);
#endif
	sl->nblocks++;
	sl->nempty++;
	slab_list(sl, b);
	return b;
}

static void
slab_block_free(struct slab *sl, struct slab_block *b)
{
	if (b->listed)
		slab_unlist(sl, b);
	sl->nblocks--;
#ifdef SLAB_ASAN
	ASAN_UNPOISON_MEMORY_REGION(b, SLAB_BLOCK_BYTES);
#endif
	munmap(b, SLAB_BLOCK_BYTES);
}

void *
slab_get(struct slab *sl)
{
	struct slab_block *b = sl->avail;
	char *p;

	if (b == NULL && (b = slab_block_new(sl)) == NULL)
		return NULL;
	if (b->free != NULL) {
		p = b->free;
		b->free = slab_link_get(p);
	} else {
		assert(b->fresh > 0);
		p = (char *)b + SLAB_HDR +
		    (size_t)(sl->per_block - b->fresh) * sl->size;
		b->fresh--;
	}
	if (b->used++ == 0)
		sl->nempty--;
	if (b->free == NULL && b->fresh == 0)
		slab_unlist(sl, b);
	sl->inuse++;
	slab_mark_out(p, sl->size);
	return p;
}

bool
slab_put(void *p)
{
	struct slab_block *b;
	struct slab *sl;

	if (p == NULL)
		return false;
	b = (struct slab_block *)((uintptr_t)p &
	    ~(uintptr_t)(SLAB_BLOCK_BYTES - 1));
	sl = b->sl;
	assert(b->used > 0 && sl->inuse > 0);
	slab_link_set(p, b->free, sl->size);
	b->free = p;
	sl->inuse--;
	if (--b->used > 0) {
		if (!b->listed)		/* it was full */
			slab_list(sl, b);
		return false;
	}
	/* Empty: to the tail, with the other empty ones. */
	if (b->listed)
		slab_unlist(sl, b);
	slab_list(sl, b);
	sl->nempty++;
	return sl->nempty > SLAB_KEEP_EMPTY;
}

void
slab_trim(struct slab *sl)
{
	while (sl->nempty > SLAB_KEEP_EMPTY) {
		assert(sl->avail_tail != NULL && sl->avail_tail->used == 0);
		slab_block_free(sl, sl->avail_tail);
		sl->nempty--;
	}
}

void
slab_drain(struct slab *sl)
{
	assert(sl->inuse == 0);
	/* Every block has an object free, so every block is listed. */
	while (sl->avail != NULL)
		slab_block_free(sl, sl->avail);
	assert(sl->nblocks == 0);
	sl->nempty = 0;
}
