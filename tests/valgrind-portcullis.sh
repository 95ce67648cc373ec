#!/bin/sh
# Runs the portcullis binary named by $PORTCULLIS_REAL under valgrind; the
# integration tests use this script as $PORTCULLIS (make test-valgrind).
# Any definite/indirect leak or memory error makes portcullis exit 99, which
# the tests see as a failed stop (they assert exit status 0).
exec /usr/bin/valgrind -q --leak-check=full --show-leak-kinds=definite,indirect \
	--errors-for-leak-kinds=definite,indirect --error-exitcode=99 \
	--trace-children=no "$PORTCULLIS_REAL" "$@"
