/*
 * slab: fixed-size objects of one loop, in blocks of their own
 * (SLAB_BLOCK_BYTES, pclimits.h) mapped from the kernel, not in the malloc
 * heap.  Empty blocks are unmapped by slab_trim (SLAB_KEEP_EMPTY are
 * kept), so a burst of short-lived objects leaves nothing resident behind
 * it.  In the heap it would: the freed chunks of a burst's
 * requests and audit records sit between the chunks of the tunnels that
 * outlive it and keep their pages resident (bench row 7a).  No locking: a
 * slab is one loop's (the requests'), or used under its owner's lock (an
 * audit queue's record nodes: the loops take, the writer gives back).
 *
 * Under valgrind (memcheck.h at build time) and ASan each object is a heap
 * block of its own to the checker: a read of a freed one, a double put and
 * a leak are reported as for malloc.
 */
#ifndef PORTCULLIS_SLAB_H
#define PORTCULLIS_SLAB_H

#include <stdbool.h>
#include <stddef.h>

struct slab_block;

struct slab {
	size_t size;			/* an object's, rounded up to 16 */
	unsigned per_block;		/* objects in a block */
	struct slab_block *avail;	/* blocks with a free object, */
	struct slab_block *avail_tail;	/* the empty ones last */
	unsigned nblocks;		/* mapped now */
	unsigned nempty;		/* of them, with no object out */
	size_t inuse;			/* objects out */
};

/* Objects of size bytes (at most what a block holds: asserted). */
void slab_init(struct slab *sl, size_t size);
/* An object (uninitialised, as from malloc); NULL when no block can be
 * mapped. */
void *slab_get(struct slab *sl);
/* Gives p (from slab_get of any slab) back; NULL is ignored.  True when
 * that emptied its block and more than SLAB_KEEP_EMPTY blocks are empty
 * now: slab_trim has work. */
bool slab_put(void *p);
/* Unmaps the empty blocks but SLAB_KEEP_EMPTY (the owner calls it some
 * time after a burst: slab_put keeps empty blocks, so a load that goes up
 * and down maps no block twice). */
void slab_trim(struct slab *sl);
/* Unmaps every block; every object must be back. */
void slab_drain(struct slab *sl);

#endif
