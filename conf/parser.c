/*
 * parser: the parse state's own operations.  Errors are collected as
 * "FILE:LINE: message" (at most CFG_MAX_ERRORS kept, all counted) and
 * joined, sorted by file and line, when the load fails; allocation helpers
 * record out-of-memory in the parser, which fails the load at the end,
 * so callers may carry on after a failed allocation.
 */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cfg_internal.h"

void
parser_oom(struct parser *p)
{
	p->oom = true;
}

char *
parser_strdup(struct parser *p, const char *s)
{
	char *d = strdup(s);

	if (d == NULL)
		parser_oom(p);
	return d;
}

void *
parser_push(struct parser *p, void *vp, size_t *n, size_t sz)
{
	void **v = vp;
	char *nv = realloc(*v, (*n + 1) * sz);

	if (nv == NULL) {
		parser_oom(p);
		return NULL;
	}
	*v = nv;
	memset(nv + *n * sz, 0, sz);
	return nv + (*n)++ * sz;
}

char *
cfg_vfmt(const char *f, va_list ap)
{
	char *s = NULL;

	if (vasprintf(&s, f, ap) < 0)
		return NULL;
	return s;
}

char *
cfg_fmt(const char *f, ...)
{
	va_list ap;
	char *s;

	va_start(ap, f);
	s = cfg_vfmt(f, ap);
	va_end(ap);
	return s;
}

void
parser_err(struct parser *p, const struct loc *l, const char *f, ...)
{
	va_list ap;

	va_start(ap, f);
	parser_verr(p, l, "", f, ap);
	va_end(ap);
}

void
parser_verr(struct parser *p, const struct loc *l, const char *prefix,
    const char *f, va_list ap)
{
	char *m, *full;
	struct perr *e;

	p->nerrs_total++;
	if (p->nerrs >= CFG_MAX_ERRORS)
		return;
	m = cfg_vfmt(f, ap);
	if (m == NULL) {
		parser_oom(p);
		return;
	}
	if (l->line > 0)
		full = cfg_fmt("%s:%u: %s%s", l->file, l->line, prefix, m);
	else
		full = cfg_fmt("%s: %s%s", l->file, prefix, m);
	free(m);
	if (full == NULL) {
		parser_oom(p);
		return;
	}
	e = parser_push(p, &p->errs, &p->nerrs, sizeof(*e));
	if (e == NULL) {
		free(full);
		return;
	}
	e->fseq = l->fseq;
	e->line = l->line;
	e->seq = (unsigned)p->nerrs;
	e->msg = full;
}

static int
perr_cmp(const void *a, const void *b)
{
	const struct perr *x = a, *y = b;

	if (x->fseq != y->fseq)
		return x->fseq < y->fseq ? -1 : 1;
	if (x->line != y->line)
		return x->line < y->line ? -1 : 1;
	return x->seq < y->seq ? -1 : x->seq > y->seq;
}

char *
parser_errors_join(struct parser *p)
{
	size_t total = 64;
	char *s, *q;

	qsort(p->errs, p->nerrs, sizeof(*p->errs), perr_cmp);
	for (size_t i = 0; i < p->nerrs; i++)
		total += strlen(p->errs[i].msg) + 1;
	s = malloc(total);
	if (s == NULL)
		return NULL;
	q = s;
	for (size_t i = 0; i < p->nerrs; i++)
		q += sprintf(q, "%s\n", p->errs[i].msg);
	if (p->nerrs_total > p->nerrs)
		sprintf(q, "(%zu more errors)\n", p->nerrs_total - p->nerrs);
	return s;
}

void
parser_free(struct parser *p)
{
	for (size_t i = 0; i < p->nerrs; i++)
		free(p->errs[i].msg);
	free(p->errs);
	for (size_t i = 0; i < p->nsects; i++)
		free(p->sects[i].text);
	free(p->sects);
	for (size_t i = 0; i < p->npresets; i++) {
		for (size_t j = 0; j < p->presets[i].nitems; j++) {
			free(p->presets[i].items[j].ctx);
			free(p->presets[i].items[j].tok);
		}
		free(p->presets[i].items);
		free(p->presets[i].name);
	}
	free(p->presets);
	for (size_t i = 0; i < p->nitems; i++) {
		free(p->items[i].ctx);
		free(p->items[i].tok);
	}
	free(p->items);
	for (size_t i = 0; i < p->nincs; i++)
		free(p->incs[i].pattern);
	free(p->incs);
	free(p->envlocs);
	free(p->credlocs);
	for (size_t i = 0; i < p->nfiles; i++)
		free(p->files[i]);
	free(p->files);
	free(p->hashed);
}

