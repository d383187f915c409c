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
  target_compile_options(pszero_flags INTERFACE
    $<$<COMPILE_LANGUAGE:CXX>:-fsanitize=${PSZERO_SANITIZE} -fno-omit-frame-pointer -g>)
  target_link_options(pszero_flags INTERFACE -fsanitize=${PSZERO_SANITIZE})
endif()
