/* auditcmd: `portcullis audit SUBCOMMAND`, the audit log tools (DESIGN.md §13). */
#ifndef PORTCULLIS_AUDITCMD_H
#define PORTCULLIS_AUDITCMD_H
/* argv[0] is "audit".  Returns the subcommand's exit status (2: usage). */
int audit_main(int argc, char **argv);
#endif
