# packaging.without_catch2: a machine without Catch2 can configure and install microbatch.
#   1. default options (tests AUTO): configure succeeds with exactly one "Catch2 not found"
#      message, and `cmake --install` installs the package;
#   2. an explicit -DMICROBATCH_BUILD_TESTS=ON: configure fails with an error naming Catch2.
# CMAKE_DISABLE_FIND_PACKAGE_Catch2 stands in for the missing package.
#   cmake -DSOURCE_DIR=... -DWORK_DIR=... -DGENERATOR=... -DCXX=... [-DMAKE_PROGRAM=...] -P ...
cmake_minimum_required(VERSION 3.21)

foreach(_var IN ITEMS SOURCE_DIR WORK_DIR GENERATOR CXX)
    if(NOT DEFINED ${_var} OR "${${_var}}" STREQUAL "")
        message(FATAL_ERROR "without_catch2.cmake: ${_var} is not set")
    endif()
endforeach()

file(REMOVE_RECURSE "${WORK_DIR}")
set(_common -G "${GENERATOR}" "-DCMAKE_CXX_COMPILER=${CXX}" -DCMAKE_DISABLE_FIND_PACKAGE_Catch2=ON
            -DMICROBATCH_BUILD_EXAMPLES=OFF)
if(MAKE_PROGRAM)
    list(APPEND _common "-DCMAKE_MAKE_PROGRAM=${MAKE_PROGRAM}")
endif()

# 1. Tests not requested explicitly: skipped with one message; install works.
execute_process(COMMAND "${CMAKE_COMMAND}" -S "${SOURCE_DIR}" -B "${WORK_DIR}/auto" ${_common}
                RESULT_VARIABLE _result OUTPUT_VARIABLE _out ERROR_VARIABLE _err)
if(NOT _result EQUAL 0)
    message(FATAL_ERROR "configure without Catch2 failed (${_result}):\n${_out}\n${_err}")
endif()
string(REGEX MATCHALL "Catch2 not found" _messages "${_out}${_err}")
list(LENGTH _messages _count)
if(NOT _count EQUAL 1)
    message(FATAL_ERROR "expected one 'Catch2 not found' message, got ${_count}:\n${_out}\n${_err}")
endif()
execute_process(COMMAND "${CMAKE_COMMAND}" --install "${WORK_DIR}/auto" --prefix "${WORK_DIR}/prefix"
                RESULT_VARIABLE _result OUTPUT_VARIABLE _out ERROR_VARIABLE _err)
if(NOT _result EQUAL 0)
    message(FATAL_ERROR "cmake --install without Catch2 failed (${_result}):\n${_out}\n${_err}")
endif()
if(NOT EXISTS "${WORK_DIR}/prefix/include/microbatch/microbatch.hpp")
    message(FATAL_ERROR "cmake --install did not install include/microbatch/microbatch.hpp")
endif()

# 2. Tests requested explicitly: an error that names the missing package.
execute_process(COMMAND "${CMAKE_COMMAND}" -S "${SOURCE_DIR}" -B "${WORK_DIR}/explicit" ${_common}
                        -DMICROBATCH_BUILD_TESTS=ON
                RESULT_VARIABLE _result OUTPUT_VARIABLE _out ERROR_VARIABLE _err)
if(_result EQUAL 0)
    message(FATAL_ERROR "-DMICROBATCH_BUILD_TESTS=ON without Catch2 configured successfully")
endif()
if(NOT _err MATCHES "MICROBATCH_BUILD_TESTS=ON needs the Catch2 package")
    message(FATAL_ERROR "the error does not name Catch2:\n${_err}")
endif()
message(STATUS "without Catch2: tests skipped with one message, install OK, explicit ON is an error")
