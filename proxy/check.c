/* stub; replaced by the conf/policy work */
#include <stdio.h>
#include "check.h"
int
check_main(int argc, char **argv)
{
	(void)argc; (void)argv;
	fprintf(stderr, "portcullis check: not yet\n");
	return 2;
}
