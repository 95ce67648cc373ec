/* sshconf: the sandbox's /etc/ssh/ssh_config (sshconf.c). */
#ifndef PORTCULLIS_SSHCONF_H
#define PORTCULLIS_SSHCONF_H

#include <stddef.h>

#define SSHCONF_PATH "/etc/ssh/ssh_config"

/*
 * Makes HOME/.ssh (0700) and a memfd holding the sandbox's ssh_config
 * (ProxyCommand through bridge, known_hosts in home, then the host's
 * file).  Returns the fd (read from offset 0 by bwrap), -1 when the host
 * has no SSHCONF_PATH (nothing to bind over), -2 with why when it could
 * not be made (a warning: GIT_SSH_COMMAND is still proxied).
 */
int sshconf_make(const char *bridge, const char *home, char *why,
    size_t whylen);

#endif
