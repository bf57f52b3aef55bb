# Warnings are errors everywhere: a warning today is a bug report tomorrow.
add_compile_options(-Wall -Wextra -Werror -Wno-missing-field-initializers)
if(CMAKE_CXX_COMPILER_ID STREQUAL "Clang")
  # Asio's coroutine support needs the macro on older clang; harmless on newer.
  add_compile_definitions(ASIO_HAS_CO_AWAIT=1)
endif()
# Keep assertions in release builds: an assert that guards the data path must never vanish.
string(REPLACE "-DNDEBUG" "" CMAKE_CXX_FLAGS_RELWITHDEBINFO "${CMAKE_CXX_FLAGS_RELWITHDEBINFO}")
string(REPLACE "-DNDEBUG" "" CMAKE_CXX_FLAGS_RELEASE "${CMAKE_CXX_FLAGS_RELEASE}")
if(DUPLEX_SANITIZE)
  add_compile_options(-fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=all)
  add_link_options(-fsanitize=address,undefined)
  if(CMAKE_CXX_COMPILER_ID STREQUAL "Clang")
    add_compile_options(-fno-sanitize=function)
  endif()
endif()
if(DUPLEX_FUZZ)
  add_compile_options(-fsanitize=fuzzer-no-link,address,undefined -fno-sanitize=function -fno-sanitize-recover=all)
  add_link_options(-fsanitize=address,undefined)
endif()
# Sanitizer trees need file:line in their reports, not full debug info: line tables alone compile
# about a quarter faster (measured on mirror_volume_test.cpp: 77 s with -g, 57 s), and CI builds a
# whole sanitizer tree on two cores.
# DUPLEX_DEBUG_INFO=lines does the same for a normal tree: scripts/test-all.sh sets it, as CI needs
# backtraces with file:line but no debugger (GCC, daemon.cpp: 44 s with -g, 33 s with -g1).
set(DUPLEX_DEBUG_INFO "full" CACHE STRING "RelWithDebInfo's debug info: full (-g) or lines (file:line only)")
set_property(CACHE DUPLEX_DEBUG_INFO PROPERTY STRINGS full lines)
if(NOT DUPLEX_DEBUG_INFO MATCHES "^(full|lines)$")
  message(FATAL_ERROR "DUPLEX_DEBUG_INFO must be full or lines, not '${DUPLEX_DEBUG_INFO}'")
endif()
if((DUPLEX_SANITIZE OR DUPLEX_FUZZ OR DUPLEX_DEBUG_INFO STREQUAL "lines") AND CMAKE_BUILD_TYPE STREQUAL "RelWithDebInfo")
  if(CMAKE_CXX_COMPILER_ID STREQUAL "Clang")
    set(_duplex_lines -gline-tables-only)
  else()
    set(_duplex_lines -g1)
  endif()
  foreach(_lang C CXX)
    string(REGEX REPLACE "(^| )-g( |$)" "\\1${_duplex_lines}\\2" CMAKE_${_lang}_FLAGS_RELWITHDEBINFO
                         "${CMAKE_${_lang}_FLAGS_RELWITHDEBINFO}")
  endforeach()
endif()
