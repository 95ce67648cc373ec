/* check: `portcullis check [-c FILE] [--env E --phase P TARGET...]`. */
#ifndef PORTCULLIS_CHECK_H
#define PORTCULLIS_CHECK_H
/* argv[0] is "check". Returns the exit status (0 ok, 1 config error or bad usage is 2). */
int check_main(int argc, char **argv);
#endif
