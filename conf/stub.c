/* placeholder so the library has a source until cfg.c lands; delete then */
int cfg_placeholder_;
