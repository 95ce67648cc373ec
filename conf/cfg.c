/*
 * cfg: loading and validating the INI configuration (DESIGN.md §4): the
 * public API of cfg.h.
 *
 * A load reads the main file (files.c) through the line reader and inih
 * (reader.c) into the key table's handler (keys.c), then the admin's
 * require file and the included files the same way.  Patterns are
 * compiled after every file has been read (resolve.c), so a preset may be
 * referenced before its section, and checked against the admin ceilings
 * (ceiling.c).  Last come the cross-field checks below.  All errors are
 * collected, sorted by file and line, and returned together (parser.c).
 * cfg_add_rule() compiles one more pattern into a loaded config.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <openssl/evp.h>

#include "cfg_internal.h"

static const char *const phase_names[PHASE_COUNT] = { "setup", "agent" };

static const char *const method_names[METHOD_COUNT] = {
	"GET", "HEAD", "OPTIONS", "POST", "PUT", "PATCH", "DELETE",
	"CONNECT", "TRACE",
};

const char *
phase_name(enum phase p)
{
	if ((unsigned)p >= PHASE_COUNT)
		return "?";
	return phase_names[p];
}

int
phase_parse(const char *s, enum phase *out)
{
	for (unsigned i = 0; i < PHASE_COUNT; i++) {
		if (strcmp(s, phase_names[i]) == 0) {
			*out = (enum phase)i;
			return 0;
		}
	}
	return -EINVAL;
}

/* Methods are case-sensitive tokens (RFC 9110 §9.1). */
int
method_parse(const char *s, size_t len)
{
	for (int i = 0; i < METHOD_COUNT; i++) {
		if (strlen(method_names[i]) == len &&
		    memcmp(method_names[i], s, len) == 0)
			return i;
	}
	return -1;
}

const char *
method_name(enum method m)
{
	return method_names[m];
}

const char *
cfg_default_text(void)
{
	return cfg_embedded_default_ini;
}

struct preset *
cfg_find_preset(struct cfg *c, const char *name)
{
	for (size_t i = 0; i < c->npresets; i++) {
		if (strcmp(c->presets[i].name, name) == 0)
			return &c->presets[i];
	}
	return NULL;
}

struct env *
cfg_env_get(struct parser *p, struct cfg *c, const char *name, size_t *idx)
{
	struct env *e;

	for (size_t i = 0; i < c->nenvs; i++) {
		if (strcmp(c->envs[i].name, name) == 0) {
			*idx = i;
			return &c->envs[i];
		}
	}
	e = parser_push(p, &c->envs, &c->nenvs, sizeof(*e));
	if (e == NULL)
		return NULL;
	e->name = parser_strdup(p, name);
	*idx = c->nenvs - 1;
	return e;
}

/* A config holding every default, before any file is read; NULL: no memory. */
static struct cfg *
cfg_new(void)
{
	struct cfg *c = calloc(1, sizeof(*c));

	if (c == NULL)
		return NULL;
	c->refs = 1;
	c->proxy.phase = PHASE_AGENT;
	keys_defaults(c);
	c->proxy.env = strdup("default");
	c->audit.log = strdup("-");
	c->proxy.tls_ports = malloc(sizeof(uint16_t));
	if (c->proxy.env == NULL || c->audit.log == NULL ||
	    c->proxy.tls_ports == NULL) {
		cfg_free(c);
		return NULL;
	}
	c->proxy.tls_ports[0] = CFG_DEFAULT_TLS_PORT;
	c->proxy.ntls_ports = 1;
	return c;
}

/*
 * Reads the file of a file:PATH credential into buf (cap bytes at most;
 * *n the bytes read).  The file is checked the way the CA key is
 * (tlsca.c): not a symlink itself, a regular file, and no access for
 * group or others; the checks are of the descriptor then read, so a
 * rename in between cannot swap the file.  Raw read(2), no stdio: no
 * library buffer is left holding the value.  0, or -1 with the error
 * reported (naming the file and the fix, never the value).
 */
static int
cred_read_file(struct parser *p, const struct credential *cr,
    const struct loc *l, char *buf, size_t cap, size_t *n)
{
	const char *path = cr->source + 5;
	struct stat st;
	int fd, rc = -1;

	*n = 0;
	fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW | O_NOCTTY |
	    O_NONBLOCK);
	if (fd < 0) {
		if (errno == ELOOP)
			parser_err(p, l, "[credential %s] value: '%s' is a "
			    "symlink (refused: name the file itself)",
			    cr->name, path);
		else
			parser_err(p, l, "[credential %s] value: cannot read "
			    "'%s': %s", cr->name, path, strerror(errno));
		return -1;
	}
	if (fstat(fd, &st) != 0) {
		parser_err(p, l, "[credential %s] value: cannot read '%s': %s",
		    cr->name, path, strerror(errno));
		goto out;
	}
	if (!S_ISREG(st.st_mode)) {
		parser_err(p, l, "[credential %s] value: '%s' is not a regular "
		    "file", cr->name, path);
		goto out;
	}
	if ((st.st_mode & 077) != 0) {
		parser_err(p, l, "[credential %s] value: '%s' is accessible by "
		    "group or others (mode %04o; chmod 600 it)", cr->name, path,
		    (unsigned)(st.st_mode & 07777));
		goto out;
	}
	while (*n < cap) {
		ssize_t r = read(fd, buf + *n, cap - *n);

		if (r < 0 && errno == EINTR)
			continue;
		if (r < 0) {
			parser_err(p, l, "[credential %s] value: cannot read "
			    "'%s': %s", cr->name, path, strerror(errno));
			goto out;
		}
		if (r == 0)
			break;
		*n += (size_t)r;
	}
	rc = 0;
out:
	close(fd);
	return rc;
}

/*
 * Reads a credential's value from its source: env:VAR (the loading
 * process's environment) or file:PATH (at most CFG_MAX_CRED_VALUE bytes,
 * one trailing newline dropped).  A value with a control character would
 * split the header it goes into: refused.  The error never quotes the
 * value.
 */
static void
cred_read(struct parser *p, struct credential *cr, const struct loc *l)
{
	char buf[CFG_MAX_CRED_VALUE + 2];
	const char *v;
	size_t n = 0;

	if (strncmp(cr->source, "env:", 4) == 0) {
		v = getenv(cr->source + 4);
		if (cr->source[4] == '\0' || v == NULL) {
			parser_err(p, l, "[credential %s] value: environment "
			    "variable '%s' is not set", cr->name, cr->source + 4);
			return;
		}
		n = strlen(v);
		if (n > CFG_MAX_CRED_VALUE) {
			parser_err(p, l, "[credential %s] value: longer than %d "
			    "bytes", cr->name, CFG_MAX_CRED_VALUE);
			return;
		}
		memcpy(buf, v, n);
	} else {
		if (cred_read_file(p, cr, l, buf, sizeof(buf) - 1, &n) < 0) {
			explicit_bzero(buf, sizeof(buf));
			return;
		}
		if (n > 0 && buf[n - 1] == '\n')
			n--;
		if (n > 0 && buf[n - 1] == '\r')
			n--;
		if (n > CFG_MAX_CRED_VALUE) {
			explicit_bzero(buf, sizeof(buf));
			parser_err(p, l, "[credential %s] value: longer than %d "
			    "bytes", cr->name, CFG_MAX_CRED_VALUE);
			return;
		}
	}
	for (size_t i = 0; i < n; i++) {
		if ((unsigned char)buf[i] < 0x20 || buf[i] == 0x7f) {
			explicit_bzero(buf, sizeof(buf));
			parser_err(p, l, "[credential %s] value: a control "
			    "character (CR, LF, NUL, ...) in the value", cr->name);
			return;
		}
	}
	if (n == 0) {
		parser_err(p, l, "[credential %s] value: empty", cr->name);
		return;
	}
	cr->value = malloc(n + 1);
	if (cr->value == NULL) {
		explicit_bzero(buf, sizeof(buf));
		parser_oom(p);
		return;
	}
	memcpy(cr->value, buf, n);
	cr->value[n] = '\0';
	cr->value_len = n;
	explicit_bzero(buf, sizeof(buf));
}

/* Cross-field checks once everything is read. */
static void
cross_validate(struct parser *p)
{
	struct cfg *c = p->cfg;

	for (size_t i = 0; i < c->ncreds; i++) {
		struct credential *cr = &c->creds[i];
		const struct loc *l = i < p->ncredlocs ? &p->credlocs[i] :
		    &p->loc;

		if (cr->hosts.n == 0)
			parser_err(p, l, "[credential %s]: no hosts", cr->name);
		if (cr->header == NULL)
			parser_err(p, l, "[credential %s]: no header", cr->name);
		for (size_t k = 0; k < cr->nenvs; k++)
			if (cfg_find_env(c, cr->envs[k]) == NULL)
				parser_err(p, l, "[credential %s] envs: no "
				    "[env %s ...] section", cr->name,
				    cr->envs[k]);
		if (cr->source == NULL)
			parser_err(p, l, "[credential %s]: no value", cr->name);
		else if (p->nerrs_total == 0)
			cred_read(p, cr, l);
	}

	if (!p->listen_set) {
		struct hostport hp, *slot;

		if (value_hostport(CFG_DEFAULT_LISTEN, 0, &hp) == 0) {
			slot = parser_push(p, &c->proxy.listen, &c->proxy.nlisten,
			    sizeof(*slot));
			if (slot != NULL)
				*slot = hp;
		}
	}
	/* [tls]: a CA is a cert and its key; one without the other is a
	 * config error rather than a silent "no interception". */
	if ((c->tls.ca_cert == NULL) != (c->tls.ca_key == NULL)) {
		struct loc l = keys_seen(p, S_TLS, c->tls.ca_cert != NULL ?
		    "ca_cert" : "ca_key");

		parser_err(p, &l, "[tls] %s: needs %s too",
		    c->tls.ca_cert != NULL ? "ca_cert" : "ca_key",
		    c->tls.ca_cert != NULL ? "ca_key" : "ca_cert");
	}
	/*
	 * [proxy] env naming an env that has no sections is not an error:
	 * that env allows nothing, which is the fail-closed reading.
	 */
}

int
cfg_digest(struct cfg *c)
{
	unsigned char md[EVP_MAX_MD_SIZE];
	unsigned mdlen = 0;

	if (c->sha256[0] != '\0')
		return 0;
	if (EVP_Digest(c->undigested != NULL ? c->undigested : "",
	    c->nundigested, md, &mdlen, EVP_sha256(), NULL) != 1)
		return -ENOMEM;
	for (unsigned i = 0; i < mdlen && i < 32; i++)
		sprintf(c->sha256 + 2 * i, "%02x", md[i]);
	free(c->undigested);
	c->undigested = NULL;
	c->nundigested = 0;
	return 0;
}

/*
 * The load pipeline: the main file, the require file, the includes, then
 * pattern compilation and the cross-field checks.  name labels errors.
 * Returns the config, or NULL with *errors set (malloc'd).
 */
static struct cfg *
load(const char *name, const char *text, size_t len, bool digest,
    char **errors)
{
	struct parser p;
	struct cfg *c;

	*errors = NULL;
	memset(&p, 0, sizeof(p));
	c = cfg_new();
	if (c == NULL)
		goto oom;
	p.cfg = c;
	c->path = parser_strdup(&p, name);
	p.hashing = true;

	reader_parse(&p, name, text, len, F_MAIN);
	files_require(&p);
	files_includes(&p);
	resolve_patterns(&p);
	ceil_check_methods(&p);
	cross_validate(&p);

	if (p.oom)
		goto oom;
	if (p.nerrs_total > 0) {
		*errors = parser_errors_join(&p);
		cfg_free(c);
		parser_free(&p);
		return NULL;
	}
	c->undigested = p.hashed;
	c->nundigested = p.nhashed;
	p.hashed = NULL;
	parser_free(&p);
	if (digest && cfg_digest(c) != 0) {
		cfg_free(c);
		*errors = cfg_fmt("%s: out of memory\n", name);
		return NULL;
	}
	return c;
oom:
	cfg_free(c);
	parser_free(&p);
	*errors = cfg_fmt("%s: out of memory\n", name);
	return NULL;
}

struct cfg *
cfg_load_string(const char *text, size_t len, const char *name, char **errors)
{
	return load(name != NULL ? name : "<string>", text, len, true,
	    errors);
}

static struct cfg *
load_path(const char *path, bool digest, char **errors)
{
	struct cfg *c;
	char *buf = NULL;
	size_t len;
	int r;

	if (path == NULL) {
		c = load("<default>", cfg_embedded_default_ini,
		    strlen(cfg_embedded_default_ini), digest, errors);
		return c;
	}
	r = files_read(path, &buf, &len);
	if (r < 0) {
		*errors = cfg_fmt("%s: %s\n", path, r == -EFBIG ?
		    "file larger than 1 MiB" : r == -EINVAL ?
		    "not a regular file" : strerror(-r));
		return NULL;
	}
	c = load(path, buf, len, digest, errors);
	free(buf);
	return c;
}

struct cfg *
cfg_load(const char *path, char **errors)
{
	return load_path(path, true, errors);
}

struct cfg *
cfg_load_undigested(const char *path, char **errors)
{
	return load_path(path, false, errors);
}

void
cfg_free(struct cfg *c)
{
	if (c == NULL)
		return;
	free(c->path);
	free(c->undigested);
	free(c->proxy.listen);
	free(c->metrics.listen);
	free(c->audit.key);
	free(c->tls.ca_cert);
	free(c->tls.ca_key);
	free(c->tls.upstream_ca);
	free(c->proxy.control);
	free(c->proxy.env);
	free(c->proxy.tls_ports);
	free(c->proxy.require);
	free(c->proxy.control_group);
	free(c->dns.servers);
	for (size_t i = 0; i < c->dns.nstatics; i++) {
		free(c->dns.statics[i].name);
		free(c->dns.statics[i].addrs);
	}
	free(c->dns.statics);
	free(c->addresses.allow);
	free(c->addresses.deny);
	free(c->audit.log);
	for (size_t i = 0; i < c->nenvs; i++) {
		free(c->envs[i].name);
		for (int ph = 0; ph < PHASE_COUNT; ph++) {
			rule_list_free(&c->envs[i].phase[ph].allow);
			rule_list_free(&c->envs[i].phase[ph].deny);
			free(c->envs[i].phase[ph].methods_origin);
			for (size_t k = 0; k < c->envs[i].phase[ph].paths.n;
			    k++)
				free(c->envs[i].phase[ph].path_globs[k]);
			free(c->envs[i].phase[ph].path_globs);
			rule_list_free(&c->envs[i].phase[ph].paths);
			rule_list_free(&c->envs[i].phase[ph].intercept);
		}
	}
	free(c->envs);
	for (size_t i = 0; i < c->ncreds; i++) {
		struct credential *cr = &c->creds[i];

		free(cr->name);
		rule_list_free(&cr->hosts);
		free(cr->header);
		free(cr->source);
		for (size_t k = 0; k < cr->nenvs; k++)
			free(cr->envs[k]);
		free(cr->envs);
		if (cr->value != NULL)
			explicit_bzero(cr->value, cr->value_len);
		free(cr->value);
	}
	free(c->creds);
	for (size_t i = 0; i < c->npresets; i++) {
		free(c->presets[i].name);
		rule_list_free(&c->presets[i].rules);
	}
	free(c->presets);
	for (size_t i = 0; i < c->nincluded; i++)
		free(c->included[i]);
	free(c->included);
	free(c->ceil.path);
	rule_list_free(&c->ceil.deny);
	for (int ph = 0; ph < PHASE_COUNT; ph++) {
		rule_list_free(&c->ceil.within[ph]);
		free(c->ceil.within_loc[ph]);
		free(c->ceil.methods_loc[ph]);
	}
	free(c);
}

const struct env *
cfg_find_env(const struct cfg *c, const char *name)
{
	if (c == NULL || name == NULL)
		return NULL;
	for (size_t i = 0; i < c->nenvs; i++) {
		if (strcmp(c->envs[i].name, name) == 0)
			return &c->envs[i];
	}
	return NULL;
}

int
cfg_add_rule(struct cfg *c, const char *envname, enum phase phase, bool deny,
    const char *pattern, const char *origin, char **error)
{
	struct parser p;
	struct rule_list tmp = { 0 }, *l;
	const struct env *found;
	struct env *e;
	size_t idx;
	char msg[512];
	int rc = 0;

	*error = NULL;
	if ((unsigned)phase >= PHASE_COUNT || !value_name_ok(envname)) {
		*error = cfg_fmt("bad env '%s' or phase", envname);
		return -EINVAL;
	}
	/* Compile into tmp first, so a refused pattern changes nothing. */
	if (pattern[0] == '@') {
		struct preset *pr = cfg_find_preset(c, pattern + 1);

		if (strcmp(pattern + 1, CFG_BUILTIN_COMMON) == 0)
			rc = pattern_builtin_append(&tmp, origin);
		else if (pr != NULL) {
			for (size_t j = 0; j < pr->rules.n && rc == 0; j++)
				rc = rule_list_append(&tmp, &pr->rules.v[j],
				    origin);
		} else {
			*error = cfg_fmt("unknown preset '%s'", pattern);
			return -EINVAL;
		}
	} else {
		struct rule r;

		if (pattern_compile(pattern, &r, msg, sizeof(msg)) < 0) {
			*error = strdup(msg);
			return -EINVAL;
		}
		rc = rule_list_append(&tmp, &r, origin);
		free(r.host);
	}
	if (rc < 0)
		goto oom;

	if (!deny) {
		found = cfg_find_env(c, envname);
		for (size_t i = 0; i < tmp.n; i++) {
			if (ceil_admits(&c->ceil, phase, &tmp.v[i]))
				continue;
			*error = ceil_allow_msg(&c->ceil, envname, phase,
			    pattern, &tmp.v[i]);
			goto refuse;
		}
		if (tmp.n > 0) {
			/* The phase as it will be: present, with allow rules. */
			struct phase_policy after = { 0 };

			if (found != NULL)
				after = found->phase[phase];
			after.present = true;
			after.allow.n += tmp.n;
			*error = ceil_methods_msg(&c->ceil, envname, phase, &after);
			if (*error != NULL)
				goto refuse;
		}
	}

	memset(&p, 0, sizeof(p));
	e = cfg_env_get(&p, c, envname, &idx);
	if (e == NULL || p.oom)
		goto oom;
	l = deny ? &e->phase[phase].deny : &e->phase[phase].allow;
	if (tmp.n > 0) {
		struct rule *nv = realloc(l->v, (l->n + tmp.n) * sizeof(*nv));

		if (nv == NULL)
			goto oom;
		l->v = nv;
		/* The rules move: tmp's strings now belong to l. */
		memcpy(l->v + l->n, tmp.v, tmp.n * sizeof(*nv));
		l->n += tmp.n;
		free(tmp.v);
	}
	e->phase[phase].present = true;
	return 0;
refuse:
	rule_list_free(&tmp);
	if (*error == NULL)
		*error = cfg_fmt("out of memory");
	return -EINVAL;
oom:
	rule_list_free(&tmp);
	*error = cfg_fmt("out of memory");
	return -EINVAL;
}
