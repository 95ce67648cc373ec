/*
 * value: the scalar value parsers of the config grammar (docs/config.md):
 * ports, unsigned integers, durations, ADDR:PORT and env/preset names.
 * Pure functions that report nothing (on a refusal *out is unspecified);
 * the key table (keys.c) turns a refusal into a FILE:LINE error.
 */
#include <ctype.h>
#include <errno.h>
#include <limits.h>
#include <string.h>

#include "cfg_internal.h"

/* Decimal 1..65535, digits only. */
int
value_port(const char *s, size_t len, uint16_t *out)
{
	unsigned v = 0;

	if (len == 0 || len > 5)
		return -EINVAL;
	for (size_t i = 0; i < len; i++) {
		if (s[i] < '0' || s[i] > '9')
			return -EINVAL;
		v = v * 10 + (unsigned)(s[i] - '0');
	}
	if (v == 0 || v > 65535)
		return -EINVAL;
	*out = (uint16_t)v;
	return 0;
}

/* Decimal integer without sign, at most max. */
int
value_uint(const char *s, unsigned long long max, unsigned long long *out)
{
	unsigned long long v = 0;

	if (*s == '\0')
		return -EINVAL;
	for (; *s != '\0'; s++) {
		if (*s < '0' || *s > '9')
			return -EINVAL;
		if (v > (max - (unsigned)(*s - '0')) / 10)
			return -ERANGE;
		v = v * 10 + (unsigned)(*s - '0');
	}
	*out = v;
	return 0;
}

/* "500ms", "10s", "5m", "1h" -> milliseconds.  A unit is required. */
int
value_duration(const char *s, unsigned long long *ms)
{
	char num[24];
	const char *u = s;
	unsigned long long v, mul;
	int r;

	while (*u >= '0' && *u <= '9')
		u++;
	if (u == s || (size_t)(u - s) >= sizeof(num))
		return -EINVAL;
	memcpy(num, s, (size_t)(u - s));
	num[u - s] = '\0';
	if (strcmp(u, "ms") == 0)
		mul = 1;
	else if (strcmp(u, "s") == 0)
		mul = 1000;
	else if (strcmp(u, "m") == 0)
		mul = 60 * 1000;
	else if (strcmp(u, "h") == 0)
		mul = 3600 * 1000;
	else
		return -EINVAL;
	r = value_uint(num, ULLONG_MAX / mul, &v);
	if (r < 0)
		return r;
	*ms = v * mul;
	return 0;
}

/*
 * "ADDR:PORT", "[V6]:PORT", or (when defport != 0) "ADDR", "[V6]", "V6".
 * ADDR must be an IP literal.
 */
int
value_hostport(const char *s, uint16_t defport, struct hostport *out)
{
	char host[NETADDR_STRLEN];
	const char *port = NULL;
	size_t hlen;

	if (s[0] == '[') {
		const char *close = strchr(s, ']');

		if (close == NULL)
			return -EINVAL;
		hlen = (size_t)(close - s - 1);
		if (hlen >= sizeof(host))
			return -EINVAL;
		memcpy(host, s + 1, hlen);
		host[hlen] = '\0';
		if (close[1] == ':')
			port = close + 2;
		else if (close[1] != '\0')
			return -EINVAL;
		if (netaddr_parse(host, &out->addr) < 0 ||
		    out->addr.family != AF_INET6)
			return -EINVAL;
	} else if (netaddr_parse(s, &out->addr) == 0) {
		/* a bare IPv4 or IPv6 address, no port */
	} else {
		const char *colon = strrchr(s, ':');

		if (colon == NULL)
			return -EINVAL;
		hlen = (size_t)(colon - s);
		if (hlen >= sizeof(host))
			return -EINVAL;
		memcpy(host, s, hlen);
		host[hlen] = '\0';
		port = colon + 1;
		if (netaddr_parse(host, &out->addr) < 0 ||
		    out->addr.family != AF_INET)
			return -EINVAL;
	}
	if (port == NULL) {
		if (defport == 0)
			return -EINVAL;
		out->port = defport;
		return 0;
	}
	return value_port(port, strlen(port), &out->port);
}

bool
value_name_ok(const char *s)
{
	size_t n = strlen(s);

	if (n == 0 || n > CFG_MAX_NAME)
		return false;
	for (; *s != '\0'; s++) {
		if (!isalnum((unsigned char)*s) && *s != '-' && *s != '_' &&
		    *s != '.')
			return false;
	}
	return true;
}

