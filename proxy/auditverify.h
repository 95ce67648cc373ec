/* auditverify: `portcullis audit verify` (auditverify.c). */
#ifndef PORTCULLIS_AUDITVERIFY_H
#define PORTCULLIS_AUDITVERIFY_H

struct auditkey;

int auditverify_main(int argc, char **argv);
/* Verifies files (oldest first) as one chain under key: 0 intact (a line
 * on stdout), 1 not (FILE:LINE on stderr), 2 an I/O error. */
int auditverify_files(struct auditkey *key, char *const *files, int n);

#endif
