# Run at test time by ctest (see cmake/LayeringCheck.cmake):
#   cmake -DBUILD_DIR=... -DTARGET=... -DEXPECT=PASS|FAIL -DHEADER=duplex/x/y.h -P expect_build.cmake
# Builds one probe target of the real build tree and checks the outcome. A FAIL probe passes only if
# the compiler failed *because it could not find HEADER*, so an unrelated breakage is not mistaken
# for a layering proof.
foreach(var BUILD_DIR TARGET EXPECT HEADER)
  if(NOT DEFINED ${var})
    message(FATAL_ERROR "expect_build.cmake: -D${var}=... is required")
  endif()
endforeach()

execute_process(
  COMMAND "${CMAKE_COMMAND}" --build "${BUILD_DIR}" --target "${TARGET}"
  RESULT_VARIABLE rc
  OUTPUT_VARIABLE out
  ERROR_VARIABLE out)

if(EXPECT STREQUAL "PASS")
  if(NOT rc EQUAL 0)
    message("${out}")
    message(FATAL_ERROR "layering: ${TARGET} must compile (it includes ${HEADER}, which its layer may "
                        "use), but the build failed with ${rc}")
  endif()
  message(STATUS "layering: ${TARGET} compiles, as it must")
elseif(EXPECT STREQUAL "FAIL")
  if(rc EQUAL 0)
    message(FATAL_ERROR "layering: ${TARGET} compiled, but it includes ${HEADER} from a higher layer: "
                        "an upward include must not build. Check the include directories and links of "
                        "its layer in src/CMakeLists.txt.")
  endif()
  # The missing file must be HEADER itself, not something it includes in turn.
  #   gcc:   fatal error: duplex/store/pool.h: No such file or directory
  #   clang: fatal error: 'duplex/store/pool.h' file not found
  string(FIND "${out}" "${HEADER}: No such file or directory" gcc_not_found)
  string(FIND "${out}" "'${HEADER}' file not found" clang_not_found)
  if(gcc_not_found EQUAL -1 AND clang_not_found EQUAL -1)
    message("${out}")
    message(FATAL_ERROR "layering: ${TARGET} failed to build, but not because ${HEADER} was not found")
  endif()
  message(STATUS "layering: ${TARGET} fails to compile (${HEADER} not found), as it must")
else()
  message(FATAL_ERROR "expect_build.cmake: EXPECT must be PASS or FAIL, not '${EXPECT}'")
endif()
