# Compiles SOURCE, which must fail with an error containing EXPECTED (a plain substring).
#   cmake -DCXX=<c++> -DINCLUDE_DIR=<repo>/include -DSOURCE=<file> -DEXPECTED=<text>
#         -P expect_error.cmake
cmake_minimum_required(VERSION 3.21)

foreach(_var IN ITEMS CXX INCLUDE_DIR SOURCE EXPECTED)
    if(NOT DEFINED ${_var} OR "${${_var}}" STREQUAL "")
        message(FATAL_ERROR "expect_error.cmake: ${_var} is not set")
    endif()
endforeach()

execute_process(COMMAND "${CXX}" -std=c++17 -fsyntax-only "-I${INCLUDE_DIR}" "${SOURCE}"
                RESULT_VARIABLE _result OUTPUT_VARIABLE _out ERROR_VARIABLE _out)
if(_result EQUAL 0)
    message(FATAL_ERROR "${SOURCE} compiled, but it must not")
endif()
string(FIND "${_out}" "${EXPECTED}" _at)
if(_at EQUAL -1)
    message(FATAL_ERROR "the compiler's errors do not contain '${EXPECTED}':\n${_out}")
endif()
message(STATUS "${SOURCE} fails to compile with '${EXPECTED}'")
