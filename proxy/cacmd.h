/* cacmd: `portcullis ca init|show`, the interception CA's files (DESIGN.md §11). */
#ifndef PORTCULLIS_CACMD_H
#define PORTCULLIS_CACMD_H
/* argv[0] is "ca".  Returns the exit status (0 ok, 1 refused or failed,
 * 2 usage). */
int ca_main(int argc, char **argv);

/* Where `ca init` puts the CA as root (its default DIR), and the key
 * there: `portcullis run` hides that key in every sandbox, also with
 * --connect (the daemon's [tls] is unknown to the run then). */
#define CA_SYSTEM_DIR "/etc/portcullis"
#define CA_CERT_NAME "ca.pem"
#define CA_KEY_NAME "ca.key"
#define CA_SYSTEM_KEY CA_SYSTEM_DIR "/" CA_KEY_NAME
#endif
