/*
 * test_pool: the relay buffer pool lends big buffers up to PROXY_BIG_BUFS,
 * then small ones, and returns each kind to its own free list; relay write
 * requests are kept for reuse up to RELAY_WREQ_FREE_MAX, and no more.
 */
#include <stdio.h>
#include <stdlib.h>

#include "internal.h"
#include "check.h"

int
main(void)
{
	static struct buf *lent[PROXY_BIG_BUFS + 8];
	struct pool p = { 0 };
	size_t n = sizeof(lent) / sizeof(lent[0]);
	unsigned big = 0, small = 0;

	for (size_t i = 0; i < n; i++) {
		lent[i] = pool_get(&p);
		CHECK(lent[i] != NULL);
		if (lent[i]->size == PROXY_RELAY_BUF_BIG)
			big++;
		else if (lent[i]->size == PROXY_RELAY_BUF_SMALL)
			small++;
	}
	/* At the limit: exactly PROXY_BIG_BUFS big ones, then small ones. */
	CHECK(big == PROXY_BIG_BUFS);
	CHECK(small == 8);
	CHECK(p.big_inuse == PROXY_BIG_BUFS && p.inuse == n);
	/* One big back: the next loan is big again (one over: small). */
	pool_put(&p, lent[0]);
	lent[0] = pool_get(&p);
	CHECK(lent[0]->size == PROXY_RELAY_BUF_BIG);
	for (size_t i = 0; i < n; i++)
		pool_put(&p, lent[i]);
	CHECK(p.inuse == 0 && p.big_inuse == 0);
	/* Free lists are bounded. */
	CHECK(p.nfree_big == PROXY_POOL_KEEP);
	CHECK(p.nfree_small == 8);
	/* Reuse: a freed buffer comes back before any new allocation. */
	{
		struct buf *head = p.free_big;
		struct buf *b = pool_get(&p);

		CHECK(b == head);
		pool_put(&p, b);
	}
	while (p.free_big != NULL) {
		struct buf *b = p.free_big;

		p.free_big = b->next;
		free(b);
	}
	while (p.free_small != NULL) {
		struct buf *b = p.free_small;

		p.free_small = b->next;
		free(b);
	}

	/* Write requests: one over the free list's limit is freed (ASan and
	 * valgrind see a leak if it were kept nowhere), the rest kept. */
	{
		static struct wreq *w[RELAY_WREQ_FREE_MAX + 1];
		struct wreq *again;

		for (size_t i = 0; i < RELAY_WREQ_FREE_MAX + 1; i++) {
			w[i] = pool_wreq_get(&p);
			CHECK(w[i] != NULL && w[i]->head == NULL);
			w[i]->head = (char *)w;	/* cleared by the next get */
		}
		CHECK(p.nfree_wreq == 0);
		for (size_t i = 0; i < RELAY_WREQ_FREE_MAX + 1; i++)
			pool_wreq_put(&p, w[i]);
		CHECK(p.nfree_wreq == RELAY_WREQ_FREE_MAX);
		/* Reuse: the last one kept comes back first, its head
		 * cleared. */
		again = pool_wreq_get(&p);
		CHECK(again == w[RELAY_WREQ_FREE_MAX - 1]);
		CHECK(again->head == NULL);
		CHECK(p.nfree_wreq == RELAY_WREQ_FREE_MAX - 1);
		pool_wreq_put(&p, again);
		pool_drain(&p);
		CHECK(p.nfree_wreq == 0 && p.free_wreq == NULL);
	}
	return check_done();
}
