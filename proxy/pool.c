/*
 * pool: the relay buffers conns borrow (internal.h struct pool), one pool
 * per loop, so no locking.  Big buffers while fewer than PROXY_BIG_BUFS
 * are out, small ones after that (pclimits.h), and up to PROXY_POOL_KEEP of
 * each kind kept for reuse instead of going back to malloc.  Also the
 * relay write requests, taken per write in flight (up to
 * RELAY_WREQ_FREE_MAX kept).
 */
#include <stdbool.h>
#include <stdlib.h>

#include "internal.h"

/*
 * Lends a relay buffer: a big one while fewer than PROXY_BIG_BUFS are out,
 * a small one otherwise.  NULL when out of memory.
 */
struct buf *
pool_get(struct pool *p)
{
	bool big = p->big_inuse < PROXY_BIG_BUFS;
	struct buf **freel = big ? &p->free_big : &p->free_small;
	unsigned *nfree = big ? &p->nfree_big : &p->nfree_small;
	size_t size = big ? PROXY_RELAY_BUF_BIG : PROXY_RELAY_BUF_SMALL;
	struct buf *b = *freel;

	if (b != NULL) {
		*freel = b->next;
		(*nfree)--;
	} else {
		b = malloc(sizeof(*b) + size);
		if (b == NULL)
			return NULL;
		b->size = size;
	}
	p->inuse++;
	if (big)
		p->big_inuse++;
	return b;
}

/* Takes b back: onto its kind's free list while that holds fewer than
 * PROXY_POOL_KEEP, freed otherwise. */
void
pool_put(struct pool *p, struct buf *b)
{
	bool big = b->size == PROXY_RELAY_BUF_BIG;
	struct buf **freel = big ? &p->free_big : &p->free_small;
	unsigned *nfree = big ? &p->nfree_big : &p->nfree_small;

	p->inuse--;
	if (big)
		p->big_inuse--;
	if (*nfree >= PROXY_POOL_KEEP) {
		free(b);
		return;
	}
	b->next = *freel;
	*freel = b;
	(*nfree)++;
}

/* Frees every buffer on the free lists (those lent out are not ours). */
void
pool_drain(struct pool *p)
{
	struct buf *lists[2] = { p->free_big, p->free_small };

	for (int i = 0; i < 2; i++) {
		while (lists[i] != NULL) {
			struct buf *b = lists[i];

			lists[i] = b->next;
			free(b);
		}
	}
	p->free_big = p->free_small = NULL;
	p->nfree_big = p->nfree_small = 0;
	while (p->free_wreq != NULL) {
		struct wreq *w = p->free_wreq;

		p->free_wreq = w->next;
		free(w);
	}
	p->nfree_wreq = 0;
	slab_drain(&p->reqs);
}

struct wreq *
pool_wreq_get(struct pool *p)
{
	struct wreq *w = p->free_wreq;

	if (w == NULL) {
		w = malloc(sizeof(*w));
		if (w == NULL)
			return NULL;
	} else {
		p->free_wreq = w->next;
		p->nfree_wreq--;
	}
	w->head = NULL;
	return w;
}

/* Onto the free list while it holds fewer than RELAY_WREQ_FREE_MAX. */
void
pool_wreq_put(struct pool *p, struct wreq *w)
{
	if (p->nfree_wreq >= RELAY_WREQ_FREE_MAX) {
		free(w);
		return;
	}
	w->next = p->free_wreq;
	p->free_wreq = w;
	p->nfree_wreq++;
}
