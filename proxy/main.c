/* portcullis: command-line entry point (stub; replaced by the proxy core). */
#include <stdio.h>
#include <string.h>

int
main(int argc, char **argv)
{
	(void)argc;
	(void)argv;
	fprintf(stderr, "portcullis: not yet\n");
	return 1;
}
