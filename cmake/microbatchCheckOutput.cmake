# Runs PROGRAM and fails unless it exits with status 0 and its standard output is byte-for-byte
# equal to the contents of EXPECTED (trailing newline included). With -DCHECK_HELP=ON it also
# runs `PROGRAM --help`, which must exit with status 0 and print a usage (stdout starting with
# "usage: ") instead of running.
#   cmake -DPROGRAM=<executable> -DEXPECTED=<file> [-DCHECK_HELP=ON] -P microbatchCheckOutput.cmake
cmake_minimum_required(VERSION 3.21)

foreach(_var IN ITEMS PROGRAM EXPECTED)
    if(NOT DEFINED ${_var})
        message(FATAL_ERROR "microbatchCheckOutput.cmake: ${_var} is not set")
    endif()
endforeach()

# stderr is not captured, so diagnostics stay visible in the test log.
execute_process(COMMAND "${PROGRAM}" RESULT_VARIABLE _result OUTPUT_VARIABLE _actual)
file(READ "${EXPECTED}" _expected)

if(NOT _result EQUAL 0)
    message(FATAL_ERROR "${PROGRAM} exited with '${_result}'. Its output:\n${_actual}")
endif()
if(NOT _actual STREQUAL _expected)
    # Show both texts with visible line ends, so whitespace differences can be seen.
    string(REPLACE "\n" "$\n" _shown_actual "${_actual}")
    string(REPLACE "\n" "$\n" _shown_expected "${_expected}")
    message(FATAL_ERROR "output of ${PROGRAM} differs from ${EXPECTED} ('$' marks a line end)\n"
                        "--- expected ---\n${_shown_expected}\n--- actual ---\n${_shown_actual}")
endif()
message(STATUS "output matches ${EXPECTED}")

if(CHECK_HELP)
    execute_process(COMMAND "${PROGRAM}" --help RESULT_VARIABLE _result OUTPUT_VARIABLE _help)
    if(NOT _result EQUAL 0 OR NOT _help MATCHES "^usage: " OR _help STREQUAL _expected)
        message(FATAL_ERROR "${PROGRAM} --help: status '${_result}' (want 0), stdout (want a "
                            "usage, not the program's output):\n${_help}")
    endif()
    message(STATUS "--help prints a usage")
endif()
