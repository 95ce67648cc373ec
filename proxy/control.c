/* stub; replaced by the sandbox/control work */
#include <errno.h>
#include <stdio.h>
#include "control.h"
int control_start(struct server *s, const char *path) { (void)s; (void)path; return -ENOSYS; }
void control_stop(struct server *s) { (void)s; }
int
ctl_main(int argc, char **argv)
{
	(void)argc; (void)argv;
	fprintf(stderr, "portcullis ctl: not yet\n");
	return 2;
}
