/*
 * envs: the sandboxes' environments with --setup (docs/phases.md): the
 * setup sandbox's has the --secret variables, the agent sandbox's and our
 * own have none of them once envs_split() returns.  Secrets travel only in
 * the environment block handed to execve, never in argv (/proc/PID/cmdline
 * is readable by anyone).
 */
#include <stdlib.h>
#include <string.h>

#include "run_internal.h"

extern char **environ;

static bool
is_secret(const struct run_opts *o, const char *entry)
{
	for (size_t k = 0; k < o->nsecrets; k++) {
		size_t n = strlen(o->secrets[k]);

		if (strncmp(entry, o->secrets[k], n) == 0 && entry[n] == '=')
			return true;
	}
	return false;
}

/*
 * See run_internal.h.  The secrets are scrubbed from our own process: their
 * bytes are overwritten in place (which also clears them from our
 * /proc/PID/environ, the memory block the kernel reads it from) and the
 * variables are unset, so nothing we start later, and no code path that
 * forgets to pass e->agent, can inherit them.  From here on the only
 * copies are in e->setup.
 */
void
envs_split(const struct run_opts *o, struct run_envs *e)
{
	size_t n = 0, a = 0;

	memset(e, 0, sizeof(*e));
	if (o->setup == NULL)
		return;
	while (environ[n] != NULL)
		n++;
	e->setup = calloc(n + 1, sizeof(char *));
	e->agent = calloc(n + 1, sizeof(char *));
	if (e->setup == NULL || e->agent == NULL)
		pc_die("out of memory");
	for (size_t i = 0; i < n; i++) {
		e->setup[i] = strdup(environ[i]);
		if (e->setup[i] == NULL)
			pc_die("out of memory");
		if (!is_secret(o, environ[i]))
			e->agent[a++] = e->setup[i];
	}
	e->n = n;
	for (size_t i = 0; environ[i] != NULL; i++)
		if (is_secret(o, environ[i])) {
			char *eq = strchr(environ[i], '=');

			explicit_bzero(eq + 1, strlen(eq + 1));
		}
	for (size_t k = 0; k < o->nsecrets; k++)
		(void)unsetenv(o->secrets[k]);
}

void
envs_drop_secrets(const struct run_opts *o, struct run_envs *e)
{
	for (size_t i = 0; i < e->n; i++)
		if (e->setup[i] != NULL && is_secret(o, e->setup[i])) {
			explicit_bzero(e->setup[i], strlen(e->setup[i]));
			free(e->setup[i]);
			e->setup[i] = NULL;
		}
}

void
envs_free(struct run_envs *e)
{
	for (size_t i = 0; i < e->n; i++)
		free(e->setup[i]);
	free(e->setup);
	free(e->agent);
}

