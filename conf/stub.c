/* placeholder so the library has a source until cfg.c lands; delete then */
int cfg_placeholder_;
const char *cfg_default_text(void);
extern const char cfg_embedded_default_ini[];
const char *cfg_default_text(void) { return cfg_embedded_default_ini; }
