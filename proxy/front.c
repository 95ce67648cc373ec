/*
 * front: the request front end (see front.h).  llhttp parses; the
 * callbacks here collect the head into the bounded arena (http.c), keep the
 * method, and check the request line's shape; the head complete callback
 * pauses the parser so that nothing after a head is processed before the
 * decision; front_feed_head() then runs the head checks and says what the
 * client gets for a head it refused.
 */
#include "front.h"

#include <stdlib.h>
#include <string.h>

static llhttp_settings_t req_settings;
static bool settings_ready;

/* This thread's (this loop's) spare head arenas, at most PROXY_HEAD_CACHE. */
static __thread struct http_head *head_cache[PROXY_HEAD_CACHE];
static __thread unsigned head_cached;

int
front_head_begin(struct front *f)
{
	if (f->head == NULL) {
		f->head = head_cached > 0 ? head_cache[--head_cached] :
		    malloc(sizeof(*f->head));
		if (f->head == NULL)
			return -1;
	}
	http_head_reset(f->head);
	return 0;
}

void
front_drop_head(struct front *f)
{
	if (f->head != NULL && head_cached < PROXY_HEAD_CACHE)
		head_cache[head_cached++] = f->head;
	else
		free(f->head);
	f->head = NULL;
}

void
front_head_cache_clear(void)
{
	while (head_cached > 0)
		free(head_cache[--head_cached]);
}

/* --- llhttp callbacks ------------------------------------------------------ */

static int
front_on_begin(llhttp_t *p)
{
	return front_head_begin(p->data);
}

static uint64_t
front_offset(const struct front *f, const char *at)
{
	return f->fed + (uint64_t)(at - f->feed_base);
}

/*
 * request-line = method SP request-target SP HTTP-version: exactly one
 * space each (llhttp skips runs of spaces; an origin might not).
 */
static int
front_on_url(llhttp_t *p, const char *at, size_t n)
{
	struct front *f = p->data;

	if (!f->url_seen) {
		f->url_seen = true;
		f->url_start = front_offset(f, at);
		if (f->url_start != f->method_end + 1) {
			f->cb_why = "extra white space in the request line";
			return -1;
		}
	}
	f->url_end = front_offset(f, at) + n;
	return http_head_url(f->head, at, n);
}

static int
front_on_version(llhttp_t *p, const char *at, size_t n)
{
	struct front *f = p->data;

	(void)n;
	if (!f->version_seen) {
		f->version_seen = true;
		if (front_offset(f, at) != f->url_end + 1 + 5) {
			/* + "HTTP/" */
			f->cb_why = "extra white space in the request line";
			return -1;
		}
	}
	return 0;
}

static int
front_on_url_complete(llhttp_t *p)
{
	struct front *f = p->data;

	f->url_complete = true;
	return 0;
}

static int
front_on_method(llhttp_t *p, const char *at, size_t n)
{
	struct front *f = p->data;
	size_t have = strlen(f->method);

	if (have + n >= sizeof(f->method))
		return -1;
	memcpy(f->method + have, at, n);
	f->method[have + n] = '\0';
	f->method_end = front_offset(f, at) + n;
	return 0;
}

static int
front_on_field(llhttp_t *p, const char *at, size_t n)
{
	struct front *f = p->data;

	return http_head_field(f->head, at, n);
}

static int
front_on_value(llhttp_t *p, const char *at, size_t n)
{
	struct front *f = p->data;

	return http_head_value(f->head, at, n);
}

static int
front_on_headers_complete(llhttp_t *p)
{
	(void)p;
	/* Stop here: nothing after a request head is processed before the
	 * decision. */
	return HPE_PAUSED;
}

static int
front_on_message_complete(llhttp_t *p)
{
	struct front *f = p->data;

	f->req_done = true;
	return HPE_PAUSED;
}

void
front_global_init(void)
{
	if (settings_ready)
		return;
	llhttp_settings_init(&req_settings);
	req_settings.on_message_begin = front_on_begin;
	req_settings.on_method = front_on_method;
	req_settings.on_url = front_on_url;
	req_settings.on_url_complete = front_on_url_complete;
	req_settings.on_version = front_on_version;
	req_settings.on_header_field = front_on_field;
	req_settings.on_header_value = front_on_value;
	req_settings.on_headers_complete = front_on_headers_complete;
	req_settings.on_message_complete = front_on_message_complete;
	settings_ready = true;
}

/* --- driving the parser ---------------------------------------------------- */

void
front_init(struct front *f)
{
	memset(f, 0, sizeof(*f));
	llhttp_init(&f->parser, HTTP_REQUEST, &req_settings);
	f->parser.data = f;
}

void
front_begin(struct front *f)
{
	f->method[0] = '\0';
	f->req_done = false;
	f->head_done = false;
	f->fed = 0;
	f->url_seen = f->version_seen = f->url_complete = false;
	f->method_end = f->url_start = f->url_end = 0;
	f->status = 0;
	f->why = NULL;
	f->cb_why = NULL;
	llhttp_reset(&f->parser);
}

/*
 * llhttp refused a head (data, n: the bytes of this read).  When it stopped
 * inside the request target, the part it had not yet handed to
 * front_on_url (a span is passed on only when it ends or the read does)
 * goes into the head too, up to and including the refused byte, so that
 * the bad_request record names what was asked for.  Bounded by
 * PROXY_MAX_URL like any target.
 */
static void
front_keep_partial_target(struct front *f, const char *data, size_t n)
{
	const char *pos = llhttp_get_error_pos(&f->parser);
	struct http_head *h = f->head;
	uint64_t start = f->method_end + 1;	/* exactly one SP before it */
	const char *from, *to;
	size_t len;

	if (h == NULL || h->overflow != HEAD_OK || f->url_complete ||
	    f->method_end == 0 || pos == NULL || pos < data || pos > data + n)
		return;
	if (start > f->fed && start - f->fed > n)
		return;
	from = start > f->fed ? data + (start - f->fed) : data;
	to = pos < data + n ? pos + 1 : data + n;
	if (from >= to)
		return;
	len = (size_t)(to - from);
	if (len > PROXY_MAX_URL - h->url_len)
		len = PROXY_MAX_URL - h->url_len;
	(void)http_head_url(h, from, len);
}

static enum front_status
front_bad(struct front *f, int status, const char *why)
{
	f->status = status;
	f->why = why;
	return FRONT_BAD;
}

enum front_status
front_feed_head(struct front *f, const char *data, size_t n, size_t *used)
{
	llhttp_errno_t e;

	f->feed_base = data;
	e = llhttp_execute(&f->parser, data, n);
	if (e == HPE_OK) {
		f->fed += n;
		*used = n;
		return FRONT_MORE;
	}
	if (e == HPE_PAUSED || e == HPE_PAUSED_UPGRADE) {
		const char *why = NULL;

		*used = (size_t)(llhttp_get_error_pos(&f->parser) - data);
		f->head_done = true;
		if ((f->tunnel != NULL ? http_check_tunnel_request(f->head,
		    &f->parser, f->tunnel, &f->target, &why) :
		    http_check_request(f->head, &f->parser, &f->target,
		    &why)) < 0)
			return front_bad(f, 400, why);
		return FRONT_HEAD;
	}
	*used = 0;
	front_keep_partial_target(f, data, n);
	if (f->head != NULL && f->head->overflow == HEAD_URL_TOO_LONG)
		return front_bad(f, 414, "request target too long");
	if (f->head != NULL && f->head->overflow == HEAD_TOO_LARGE)
		return front_bad(f, 431, "request head too large");
	return front_bad(f, 400, f->cb_why != NULL ? f->cb_why :
	    llhttp_get_error_reason(&f->parser));
}

void
front_resume(struct front *f)
{
	llhttp_resume(&f->parser);
}

int
front_feed_body(struct front *f, const char *data, size_t n, size_t *used)
{
	llhttp_errno_t e = llhttp_execute(&f->parser, data, n);

	if (e == HPE_PAUSED)
		*used = (size_t)(llhttp_get_error_pos(&f->parser) - data);
	else if (e == HPE_OK)
		*used = n;
	else
		return -1;
	return 0;
}
