# Warning and sanitizer flags, applied to pszero's own targets through pszero::flags.

add_library(pszero_flags INTERFACE)
add_library(pszero::flags ALIAS pszero_flags)

if(PSZERO_WERROR)
  target_compile_options(pszero_flags INTERFACE
    $<$<COMPILE_LANGUAGE:CXX>:-Wall -Wextra -Werror>
    $<$<COMPILE_LANGUAGE:CUDA>:-Werror=all-warnings -Xcompiler=-Wall,-Wextra,-Werror>)
endif()

if(PSZERO_SANITIZE)
  if(NOT PSZERO_SANITIZE MATCHES "^(address,undefined|undefined,address|address|undefined|thread)$")
    message(FATAL_ERROR "PSZERO_SANITIZE must be address,undefined or thread (got '${PSZERO_SANITIZE}')")
  endif()
  # -g1: line tables only, enough for symbolized reports and much cheaper to build and
  # link than full debug information. A UBSan finding aborts the test that caused it
  # instead of printing and carrying on (ASan and TSan stop or report on their own).
  target_compile_options(pszero_flags INTERFACE
    $<$<COMPILE_LANGUAGE:CXX>:-fsanitize=${PSZERO_SANITIZE} -fno-omit-frame-pointer -g1>)
  target_link_options(pszero_flags INTERFACE -fsanitize=${PSZERO_SANITIZE})
  if(PSZERO_SANITIZE MATCHES "undefined")
    target_compile_options(pszero_flags INTERFACE
      $<$<COMPILE_LANGUAGE:CXX>:-fno-sanitize-recover=undefined>)
  endif()
  # GCC 12 reports a false -Wmaybe-uninitialized inside libstdc++'s <regex> when ASan
  # instruments it (the flow analysis sees the shadow checks, not the value); only this
  # one warning is relaxed, only for sanitizer builds, so they still build with -Werror.
  if(CMAKE_CXX_COMPILER_ID STREQUAL "GNU" AND PSZERO_WERROR)
    target_compile_options(pszero_flags INTERFACE
      $<$<COMPILE_LANGUAGE:CXX>:-Wno-error=maybe-uninitialized -Wno-maybe-uninitialized>)
    # GCC warns (-Wtsan) that TSan does not model std::atomic_thread_fence, which
    # Boost.Asio's fenced blocks use around handlers it also guards with a mutex (what
    # TSan does see). Only that warning, only in the TSan build.
    if(PSZERO_SANITIZE STREQUAL "thread")
      target_compile_options(pszero_flags INTERFACE $<$<COMPILE_LANGUAGE:CXX>:-Wno-tsan>)
    endif()
  endif()
endif()
