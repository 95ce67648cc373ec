# Writes OUT from TEMPLATE with VERSION and the git revision of SRC.
# Run with cmake -P at build time (see the top-level CMakeLists.txt).
# Only SRC's own checkout counts (SRC/.git, a directory or a worktree's
# file): a source tree unpacked inside some other repository, or without
# git installed, gets REVISION "" and so just the version.
set(REVISION "")
if(EXISTS "${SRC}/.git")
  find_program(GIT git)
  if(GIT)
    execute_process(
      COMMAND ${GIT} -C ${SRC} describe --always --dirty
      OUTPUT_VARIABLE rev
      OUTPUT_STRIP_TRAILING_WHITESPACE
      ERROR_QUIET
      RESULT_VARIABLE rc)
    # A value that could break the C string literal is not used.
    if(rc EQUAL 0 AND rev MATCHES "^[A-Za-z0-9._+~-]+$")
      set(REVISION "${rev}")
    endif()
  endif()
endif()
configure_file(${TEMPLATE} ${OUT} @ONLY)
