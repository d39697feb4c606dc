# packaging.cxx14_error: every public header, compiled alone as C++14, stops with microbatch's
# "requires C++17" #error as the first error (not pages of template errors).
#   cmake -DCXX=<g++ or clang++> -DINCLUDE_DIR=<repo>/include -DWORK_DIR=... -P cxx14_error.cmake
cmake_minimum_required(VERSION 3.21)

foreach(_var IN ITEMS CXX INCLUDE_DIR WORK_DIR)
    if(NOT DEFINED ${_var} OR "${${_var}}" STREQUAL "")
        message(FATAL_ERROR "cxx14_error.cmake: ${_var} is not set")
    endif()
endforeach()

file(REMOVE_RECURSE "${WORK_DIR}")
file(GLOB_RECURSE _headers RELATIVE "${INCLUDE_DIR}" "${INCLUDE_DIR}/microbatch/*.hpp")
list(SORT _headers)
set(_errors "")
foreach(_header IN LISTS _headers)
    string(MAKE_C_IDENTIFIER "${_header}" _id)
    set(_source "${WORK_DIR}/${_id}.cpp")
    file(WRITE "${_source}" "#include \"${_header}\"\n")
    # -Wfatal-errors: the first error is the only one reported.
    execute_process(COMMAND "${CXX}" -std=c++14 -fsyntax-only -Wfatal-errors "-I${INCLUDE_DIR}"
                            "${_source}"
                    RESULT_VARIABLE _result OUTPUT_VARIABLE _out ERROR_VARIABLE _out)
    if(_result EQUAL 0)
        list(APPEND _errors "${_header} compiles as C++14")
    elseif(NOT _out MATCHES "microbatch requires C\\+\\+17 or later")
        list(APPEND _errors "${_header}: the first C++14 error is not microbatch's #error:\n${_out}")
    endif()
endforeach()
if(_errors)
    string(REPLACE ";" "\n" _errors "${_errors}")
    message(FATAL_ERROR "${_errors}")
endif()
list(LENGTH _headers _count)
message(STATUS "all ${_count} headers stop with the C++17 #error when compiled as C++14")
