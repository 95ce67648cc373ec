/* run: `portcullis run [OPTIONS] -- COMMAND [ARG...]` (DESIGN.md §3, §7). */
#ifndef PORTCULLIS_RUN_H
#define PORTCULLIS_RUN_H
/* argv[0] is "run". Returns COMMAND's exit status, or 125 on set-up failure. */
int run_main(int argc, char **argv);
#endif
