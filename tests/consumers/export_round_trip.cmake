# packaging.exporting_library: a library that add_subdirectory()s microbatch and exports its own
# targets configures, builds and installs; its default install leaves microbatch out; the
# "microbatch" component installs the package on request; and a downstream project then uses
# the installed library through find_package.
#   cmake -DSOURCE_DIR=<microbatch> -DCONSUMER_DIR=<tests/consumers/exporting_library>
#         -DWORK_DIR=... -DGENERATOR=... -DCXX=... [-DMAKE_PROGRAM=...] -P export_round_trip.cmake
cmake_minimum_required(VERSION 3.21)

foreach(_var IN ITEMS SOURCE_DIR CONSUMER_DIR WORK_DIR GENERATOR CXX)
    if(NOT DEFINED ${_var} OR "${${_var}}" STREQUAL "")
        message(FATAL_ERROR "export_round_trip.cmake: ${_var} is not set")
    endif()
endforeach()

function(run)
    string(REPLACE ";" " " _printable "${ARGN}")
    message(STATUS "${_printable}")
    execute_process(COMMAND ${ARGN} RESULT_VARIABLE _result OUTPUT_VARIABLE _out
                    ERROR_VARIABLE _out)
    if(NOT _result EQUAL 0)
        message(FATAL_ERROR "failed (${_result}): ${_printable}\n${_out}")
    endif()
endfunction()

file(REMOVE_RECURSE "${WORK_DIR}")
set(_prefix "${WORK_DIR}/prefix")
set(_configure -G "${GENERATOR}" "-DCMAKE_CXX_COMPILER=${CXX}" -DCMAKE_BUILD_TYPE=Release)
if(MAKE_PROGRAM)
    list(APPEND _configure "-DCMAKE_MAKE_PROGRAM=${MAKE_PROGRAM}")
endif()

run("${CMAKE_COMMAND}" -S "${CONSUMER_DIR}" -B "${WORK_DIR}/library" ${_configure}
    "-DMICROBATCH_SOURCE_DIR=${SOURCE_DIR}")
run("${CMAKE_COMMAND}" --build "${WORK_DIR}/library" --config Release)
run("${CMAKE_COMMAND}" --install "${WORK_DIR}/library" --config Release --prefix "${_prefix}")
if(EXISTS "${_prefix}/include/microbatch")
    message(FATAL_ERROR "the consumer's default install installed microbatch (MICROBATCH_INSTALL is OFF)")
endif()
file(GLOB_RECURSE _exports "${_prefix}/*/squaresTargets.cmake")
if(NOT _exports)
    message(FATAL_ERROR "squaresTargets.cmake was not installed")
endif()
file(READ "${_exports}" _content)
if(NOT _content MATCHES "microbatch::microbatch")
    message(FATAL_ERROR "squaresTargets.cmake does not reference microbatch::microbatch")
endif()

run("${CMAKE_COMMAND}" --install "${WORK_DIR}/library" --config Release --prefix "${_prefix}"
    --component microbatch)
run("${CMAKE_COMMAND}" -S "${CONSUMER_DIR}/downstream" -B "${WORK_DIR}/downstream" ${_configure}
    "-DCMAKE_PREFIX_PATH=${_prefix}")
run("${CMAKE_COMMAND}" --build "${WORK_DIR}/downstream" --config Release)
file(GLOB_RECURSE _program "${WORK_DIR}/downstream/downstream" "${WORK_DIR}/downstream/downstream.exe")
if(NOT _program)
    message(FATAL_ERROR "the downstream program was not built")
endif()
list(GET _program 0 _program)
run("${_program}")
message(STATUS "exporting library: install, component install and downstream use OK")
