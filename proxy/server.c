/* stub; replaced by the proxy core */
#include <stdio.h>
#include "server.h"
int serve_main(int argc, char **argv) { (void)argc; (void)argv; fprintf(stderr, "portcullis serve: not yet\n"); return 1; }
