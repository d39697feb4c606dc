# packaging.single_header: regenerates the single header into the build tree, compiles and runs
# tests/consumers/main.cpp against it alone (its directory is the only -I), and fails if the
# committed single_include/microbatch/microbatch.hpp differs from the regenerated one.
#   cmake -DSOURCE_DIR=<repo> -DWORK_DIR=... -DCXX=<c++> -P single_header.cmake
cmake_minimum_required(VERSION 3.21)

foreach(_var IN ITEMS SOURCE_DIR WORK_DIR CXX)
    if(NOT DEFINED ${_var} OR "${${_var}}" STREQUAL "")
        message(FATAL_ERROR "single_header.cmake: ${_var} is not set")
    endif()
endforeach()

file(REMOVE_RECURSE "${WORK_DIR}")
set(_generated "${WORK_DIR}/include/microbatch/microbatch.hpp")
execute_process(COMMAND "${CMAKE_COMMAND}" "-DOUTPUT=${_generated}"
                        -P "${SOURCE_DIR}/cmake/make_single_header.cmake"
                RESULT_VARIABLE _result)
if(NOT _result EQUAL 0)
    message(FATAL_ERROR "cmake/make_single_header.cmake failed (${_result})")
endif()

execute_process(COMMAND "${CMAKE_COMMAND}" "-DCXX=${CXX}"
                        "-DSOURCE=${SOURCE_DIR}/tests/consumers/main.cpp"
                        "-DOUTPUT=${WORK_DIR}/single_header_consumer"
                        "-DINCLUDE_DIR=${WORK_DIR}/include"
                        -P "${SOURCE_DIR}/tests/consumers/compile_and_run.cmake"
                RESULT_VARIABLE _result)
if(NOT _result EQUAL 0)
    message(FATAL_ERROR "a program against the single header alone failed to build or run")
endif()

set(_committed "${SOURCE_DIR}/single_include/microbatch/microbatch.hpp")
execute_process(COMMAND "${CMAKE_COMMAND}" -E compare_files "${_committed}" "${_generated}"
                RESULT_VARIABLE _result)
if(NOT _result EQUAL 0)
    message(FATAL_ERROR "single_include/microbatch/microbatch.hpp is stale (it differs from "
                        "${_generated}). Regenerate it: cmake -P cmake/make_single_header.cmake "
                        "(or build the target single_header), then commit it.")
endif()
message(STATUS "single header: up to date, and a program builds and runs against it alone")
