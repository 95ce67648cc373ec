/* stub; replaced by the sandbox work */
#include <stdio.h>
#include "run.h"
int
run_main(int argc, char **argv)
{
	(void)argc; (void)argv;
	fprintf(stderr, "portcullis run: not yet\n");
	return 125;
}
