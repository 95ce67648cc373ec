/*
 * resolve: compiling env and preset patterns once every file is read, so
 * a preset may be referenced before its section.  First every preset is
 * resolved (nested @references expanded, a cycle or nesting deeper than
 * CFG_MAX_PRESET_DEPTH is an error), then every env allow/deny item is
 * expanded into its phase's rule list and checked against the admin
 * allow_within ceiling.  Errors are reported at the item's line.
 */
#include <stdlib.h>
#include <string.h>

#include "cfg_internal.h"

static int resolve_preset(struct parser *p, size_t idx, unsigned depth);

/*
 * Expands one pattern item into l.  origin is the text every resulting
 * rule carries.  Errors are reported at the item's line.
 */
static void
expand_item(struct parser *p, const struct pitem *it, struct rule_list *l,
    const char *origin, unsigned depth)
{
	char msg[512];
	struct rule r;

	if (it->tok == NULL || it->ctx == NULL)
		return;
	if (it->tok[0] == '@') {
		const char *name = it->tok + 1;
		struct preset *pr;

		if (strcmp(name, CFG_BUILTIN_COMMON) == 0) {
			if (pattern_builtin_append(l, origin) < 0)
				parser_oom(p);
			return;
		}
		for (size_t i = 0; i < p->npresets; i++) {
			if (p->presets[i].name == NULL ||
			    strcmp(p->presets[i].name, name) != 0)
				continue;
			if (resolve_preset(p, i, depth + 1) < 0) {
				if (p->presets[i].state == 1)
					parser_err(p, &it->loc, "%s: preset reference "
					    "'%s' forms a cycle", it->ctx,
					    it->tok);
				else if (p->presets[i].state == 0)
					parser_err(p, &it->loc, "%s: presets nested "
					    "more than %d deep at '%s'", it->ctx,
					    CFG_MAX_PRESET_DEPTH, it->tok);
				return;
			}
			pr = cfg_find_preset(p->cfg, name);
			if (pr == NULL)
				return;
			for (size_t j = 0; j < pr->rules.n; j++) {
				if (rule_list_append(l, &pr->rules.v[j],
				    origin) < 0)
					parser_oom(p);
			}
			return;
		}
		parser_err(p, &it->loc, "%s: unknown preset '%s'", it->ctx, it->tok);
		return;
	}
	if (pattern_compile(it->tok, &r, msg, sizeof(msg)) < 0) {
		parser_err(p, &it->loc, "%s: %s", it->ctx, msg);
		return;
	}
	if (rule_list_append(l, &r, origin) < 0)
		parser_oom(p);
	free(r.host);
}

static char *
item_origin(const struct pitem *it)
{
	return cfg_fmt("%s:%u %s %s", it->loc.file, it->loc.line, it->ctx, it->tok);
}

/*
 * Resolves preset idx into p->cfg->presets (same name).  Returns 0, or -1
 * when it is part of a cycle or failed (errors already reported).
 */
static int
resolve_preset(struct parser *p, size_t idx, unsigned depth)
{
	struct ppreset *pp = &p->presets[idx];
	struct preset *out;
	size_t nerr = p->nerrs_total;

	if (pp->state == 2)
		return pp->ok ? 0 : -1;
	if (pp->state == 1 || depth > CFG_MAX_PRESET_DEPTH)
		return -1;
	pp->state = 1;
	out = parser_push(p, &p->cfg->presets, &p->cfg->npresets, sizeof(*out));
	if (out == NULL) {
		pp->state = 2;
		return -1;
	}
	out->name = parser_strdup(p, pp->name);
	{
		struct rule_list l = { 0 };
		size_t oi = p->cfg->npresets - 1;

		for (size_t i = 0; i < pp->nitems; i++) {
			char *origin = item_origin(&pp->items[i]);

			if (origin == NULL) {
				parser_oom(p);
				continue;
			}
			expand_item(p, &pp->items[i], &l, origin, depth);
			free(origin);
		}
		/* expand_item may have grown (moved) cfg->presets */
		p->cfg->presets[oi].rules = l;
	}
	pp->state = 2;
	pp->ok = p->nerrs_total == nerr;
	return pp->ok ? 0 : -1;
}

void
resolve_patterns(struct parser *p)
{
	for (size_t i = 0; i < p->npresets; i++)
		resolve_preset(p, i, 0);
	for (size_t i = 0; i < p->nitems; i++) {
		struct pitem *it = &p->items[i];
		struct phase_policy *pp = &p->cfg->envs[it->env].phase[it->phase];
		struct rule_list *l = it->deny ? &pp->deny : &pp->allow;
		size_t before = l->n;
		char *origin = item_origin(it);

		if (origin == NULL) {
			parser_oom(p);
			continue;
		}
		expand_item(p, it, l, origin, 0);
		free(origin);
		if (!it->deny && it->tok != NULL)
			ceil_check_item(p, it, l, before);
	}
}
