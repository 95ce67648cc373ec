/* serve: `portcullis serve [-c FILE] [-v]`, the proxy daemon. */
#ifndef PORTCULLIS_SERVE_H
#define PORTCULLIS_SERVE_H

/*
 * Loads -c FILE (or the embedded default), starts the server, its workers
 * and control socket, installs SIGINT/SIGTERM (graceful stop) and SIGHUP
 * (reload) handlers and runs the loop.  argv[0] is "serve".  Returns the
 * process exit status.
 */
int serve_main(int argc, char **argv);

#endif
