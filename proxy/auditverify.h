/* auditverify: `portcullis audit verify` (auditverify.c). */
#ifndef PORTCULLIS_AUDITVERIFY_H
#define PORTCULLIS_AUDITVERIFY_H

int auditverify_main(int argc, char **argv);

#endif
