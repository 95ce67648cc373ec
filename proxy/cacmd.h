/* cacmd: `portcullis ca init|show`, the interception CA's files (DESIGN.md §11). */
#ifndef PORTCULLIS_CACMD_H
#define PORTCULLIS_CACMD_H
/* argv[0] is "ca".  Returns the exit status (0 ok, 1 refused or failed,
 * 2 usage). */
int ca_main(int argc, char **argv);
#endif
