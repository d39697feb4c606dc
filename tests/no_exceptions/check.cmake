# packaging.no_exceptions: microbatch works with -fno-exceptions, and misuse terminates with a
# "microbatch: fatal: <message>" line (MICROBATCH_THROW) instead of throwing.
#   cmake -DCXX=<c++> -DINCLUDE_DIR=<repo>/include -DSOURCE=<this dir>/no_exceptions.cpp
#         -DOUTPUT=<program> -P check.cmake
cmake_minimum_required(VERSION 3.21)

foreach(_var IN ITEMS CXX INCLUDE_DIR SOURCE OUTPUT)
    if(NOT DEFINED ${_var} OR "${${_var}}" STREQUAL "")
        message(FATAL_ERROR "check.cmake: ${_var} is not set")
    endif()
endforeach()

file(REMOVE "${OUTPUT}")
execute_process(COMMAND "${CXX}" -std=c++17 -fno-exceptions -Wall -Wextra -Wpedantic -Werror
                        "-I${INCLUDE_DIR}" "${SOURCE}" -o "${OUTPUT}" -pthread
                RESULT_VARIABLE _result OUTPUT_VARIABLE _out ERROR_VARIABLE _out)
if(NOT _result EQUAL 0)
    message(FATAL_ERROR "compiling with -fno-exceptions failed:\n${_out}")
endif()

execute_process(COMMAND "${OUTPUT}" works RESULT_VARIABLE _result OUTPUT_VARIABLE _out
                ERROR_VARIABLE _err)
if(NOT _result EQUAL 0 OR NOT _out MATCHES "works without exceptions")
    message(FATAL_ERROR "the -fno-exceptions program failed (${_result}):\n${_out}\n${_err}")
endif()

set(_errors "")
foreach(_case IN ITEMS
        "closed|microbatch::Batcher: submit on a closed batcher"
        "options|microbatch::Options: max_batch_size"
        "result_count|microbatch::Batcher: process_batch returned 0 results for a batch of 1")
    string(REPLACE "|" ";" _case "${_case}")
    list(GET _case 0 _mode)
    list(GET _case 1 _message)
    execute_process(COMMAND "${OUTPUT}" ${_mode} RESULT_VARIABLE _result OUTPUT_VARIABLE _out
                    ERROR_VARIABLE _err)
    string(FIND "${_err}" "microbatch: fatal: ${_message}" _at)
    if(_result EQUAL 0 OR _at EQUAL -1)
        list(APPEND _errors "mode ${_mode}: expected termination with 'microbatch: fatal: "
                            "${_message}', got status '${_result}', stderr:\n${_err}")
    endif()
endforeach()
if(_errors)
    string(REPLACE ";" "" _errors "${_errors}")
    message(FATAL_ERROR "${_errors}")
endif()
message(STATUS "-fno-exceptions: works, and misuse terminates with a message")
