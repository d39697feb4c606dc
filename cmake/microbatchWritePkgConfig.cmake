# Run at install time (install(CODE) in the top-level CMakeLists.txt): writes microbatch.pc for
# the prefix being installed to, with normalised paths. Inputs: CMAKE_INSTALL_PREFIX (set by
# `cmake --install`, --prefix included), MICROBATCH_PC_TEMPLATE, MICROBATCH_PC_OUTPUT,
# MICROBATCH_PC_INCLUDEDIR (CMAKE_INSTALL_INCLUDEDIR), PROJECT_DESCRIPTION, PROJECT_VERSION.
get_filename_component(_microbatch_pc_prefix "${CMAKE_INSTALL_PREFIX}" ABSOLUTE)
cmake_path(NORMAL_PATH _microbatch_pc_prefix)
# "/opt/x/" -> "/opt/x", but "/" stays "/".
string(REGEX REPLACE "(.)/+$" "\\1" _microbatch_pc_prefix "${_microbatch_pc_prefix}")

set(_microbatch_pc_includedir "${MICROBATCH_PC_INCLUDEDIR}")
if(IS_ABSOLUTE "${_microbatch_pc_includedir}")
    cmake_path(NORMAL_PATH _microbatch_pc_includedir)
    string(REGEX REPLACE "(.)/+$" "\\1" _microbatch_pc_includedir "${_microbatch_pc_includedir}")
else()
    cmake_path(NORMAL_PATH _microbatch_pc_includedir)
    string(REGEX REPLACE "/+$" "" _microbatch_pc_includedir "${_microbatch_pc_includedir}")
    if(_microbatch_pc_prefix STREQUAL "/")
        set(_microbatch_pc_includedir "\${prefix}${_microbatch_pc_includedir}")
    else()
        set(_microbatch_pc_includedir "\${prefix}/${_microbatch_pc_includedir}")
    endif()
endif()
configure_file("${MICROBATCH_PC_TEMPLATE}" "${MICROBATCH_PC_OUTPUT}" @ONLY)
