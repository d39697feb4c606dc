# packaging.copy_headers and packaging.pkg_config: compile main.cpp with the bare compiler driver,
# as a user without CMake would, then run it.
#   copied headers: cmake -DCXX=... -DSOURCE=... -DOUTPUT=... -DINCLUDE_DIR=<src>/include -P ...
#   pkg-config:     cmake -DCXX=... -DSOURCE=... -DOUTPUT=... -DPKG_CONFIG=<pkg-config>
#                         -DPKG_CONFIG_PATH=<prefix>/share/pkgconfig (a moved install) -DEXPECTED_VERSION=...
#                         -DEXPECTED_INCLUDE_DIR=<prefix>/include -P ...
cmake_minimum_required(VERSION 3.21)

foreach(_var IN ITEMS CXX SOURCE OUTPUT)
    if(NOT DEFINED ${_var})
        message(FATAL_ERROR "compile_and_run.cmake: ${_var} is not set")
    endif()
endforeach()

# Runs a command, prints it, and fails the test if it fails; stdout goes to <out_var>.
function(run out_var)
    string(REPLACE ";" " " _printable "${ARGN}")
    message(STATUS "${_printable}")
    execute_process(COMMAND ${ARGN} RESULT_VARIABLE _result OUTPUT_VARIABLE _output
                    OUTPUT_STRIP_TRAILING_WHITESPACE)
    if(NOT _result EQUAL 0)
        message(FATAL_ERROR "failed (${_result}): ${_printable}\n${_output}")
    endif()
    set(${out_var} "${_output}" PARENT_SCOPE)
endfunction()

if(DEFINED PKG_CONFIG)
    # Only the test's prefix: never a system-wide microbatch.pc.
    set(ENV{PKG_CONFIG_PATH} "${PKG_CONFIG_PATH}")
    run(_version "${PKG_CONFIG}" --modversion microbatch)
    if(NOT _version STREQUAL EXPECTED_VERSION)
        message(FATAL_ERROR "pkg-config reports version '${_version}', expected '${EXPECTED_VERSION}'")
    endif()
    # The installed tree was moved after installation (packaging.install relocates it), which
    # --define-prefix handles: the prefix comes from the .pc file's <prefix>/share/pkgconfig.
    run(_cflags "${PKG_CONFIG}" --define-prefix --cflags microbatch)
    run(_libs "${PKG_CONFIG}" --define-prefix --libs microbatch)
    separate_arguments(_cflags UNIX_COMMAND "${_cflags}")
    separate_arguments(_libs UNIX_COMMAND "${_libs}")
    # The -I must name the installed headers by their normalised path (no "/../").
    set(_expected "${EXPECTED_INCLUDE_DIR}")
    cmake_path(NORMAL_PATH _expected)
    string(REGEX REPLACE "/+$" "" _expected "${_expected}")
    if(NOT "-I${_expected}" IN_LIST _cflags)
        message(FATAL_ERROR "pkg-config --cflags '${_cflags}' lacks -I${_expected}")
    endif()
else()
    set(_cflags "-I${INCLUDE_DIR}")
    set(_libs -pthread)
endif()

file(REMOVE "${OUTPUT}")
run(_ignored "${CXX}" -std=c++17 -Wall -Wextra -Wpedantic -Werror ${_cflags} "${SOURCE}"
    -o "${OUTPUT}" ${_libs})
run(_output "${OUTPUT}")
message(STATUS "${_output}")
