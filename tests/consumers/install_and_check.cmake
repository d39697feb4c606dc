# packaging.install: install the build tree into a staging prefix, move it (the CMake package
# must be relocatable), then check the installed layout is the advertised one.
#   cmake -DBUILD_DIR=... -DCONFIG=... -DSTAGE_DIR=... -DPREFIX=... -DSOURCE_INCLUDE_DIR=...
#         -DINCLUDEDIR=... -DCMAKEDIR=... -DPKGCONFIGDIR=... -DDOCDIR=... -P install_and_check.cmake
cmake_minimum_required(VERSION 3.21)

foreach(_var IN ITEMS BUILD_DIR STAGE_DIR PREFIX SOURCE_INCLUDE_DIR INCLUDEDIR CMAKEDIR
                      PKGCONFIGDIR DOCDIR)
    if(NOT DEFINED ${_var} OR "${${_var}}" STREQUAL "")
        message(FATAL_ERROR "install_and_check.cmake: ${_var} is not set")
    endif()
endforeach()

file(REMOVE_RECURSE "${STAGE_DIR}" "${PREFIX}")
set(_config_args "")
if(CONFIG)
    set(_config_args --config "${CONFIG}")
endif()
execute_process(
    COMMAND "${CMAKE_COMMAND}" --install "${BUILD_DIR}" --prefix "${STAGE_DIR}" ${_config_args}
    RESULT_VARIABLE _result)
if(NOT _result EQUAL 0)
    message(FATAL_ERROR "cmake --install failed: ${_result}")
endif()
file(RENAME "${STAGE_DIR}" "${PREFIX}")

set(_errors "")

# Every public header, at the path the package advertises (<prefix>/<includedir>), and nothing
# else under include/.
file(GLOB_RECURSE _source_headers RELATIVE "${SOURCE_INCLUDE_DIR}" "${SOURCE_INCLUDE_DIR}/*.hpp")
file(GLOB_RECURSE _installed_headers RELATIVE "${PREFIX}/${INCLUDEDIR}" "${PREFIX}/${INCLUDEDIR}/*")
list(SORT _source_headers)
list(SORT _installed_headers)
if(NOT _source_headers STREQUAL _installed_headers)
    list(APPEND _errors "installed headers differ from the source headers:\n"
                        "  source:    ${_source_headers}\n  installed: ${_installed_headers}")
endif()

foreach(_file IN ITEMS
        "${CMAKEDIR}/microbatchConfig.cmake"
        "${CMAKEDIR}/microbatchConfigVersion.cmake"
        "${CMAKEDIR}/microbatchTargets.cmake"
        "${PKGCONFIGDIR}/microbatch.pc"
        "${DOCDIR}/LICENSE")
    if(NOT EXISTS "${PREFIX}/${_file}")
        list(APPEND _errors "missing from the installed tree: ${_file}")
    endif()
endforeach()

# Header-only means architecture-independent: nothing may land in lib/ or bin/.
file(GLOB_RECURSE _all_files RELATIVE "${PREFIX}" "${PREFIX}/*")
foreach(_file IN LISTS _all_files)
    if(_file MATCHES "^(lib|lib64|bin)/")
        list(APPEND _errors "architecture-specific install location used: ${_file}")
    endif()
endforeach()

# microbatch.pc names the prefix it was installed to, normalised (pkg-config recognises
# -I/usr/include as a system directory only when it is spelled so); after a move,
# `pkg-config --define-prefix` finds the new prefix (packaging.pkg_config).
set(_pc "${PREFIX}/${PKGCONFIGDIR}/microbatch.pc")
if(EXISTS "${_pc}")
    file(STRINGS "${_pc}" _pc_prefix REGEX "^prefix=")
    set(_expected_prefix "${STAGE_DIR}")
    cmake_path(NORMAL_PATH _expected_prefix)
    string(REGEX REPLACE "/+$" "" _expected_prefix "${_expected_prefix}")
    if(NOT _pc_prefix STREQUAL "prefix=${_expected_prefix}")
        list(APPEND _errors "microbatch.pc has '${_pc_prefix}', expected 'prefix=${_expected_prefix}'")
    endif()
    file(READ "${_pc}" _content)
    if(_content MATCHES "/\\.\\./|pcfiledir")
        list(APPEND _errors "microbatch.pc has a path that is not normalised:\n${_content}")
    endif()
endif()

# Relocatable: no installed CMake package file may mention the staging prefix or the build tree.
file(GLOB _package_files "${PREFIX}/${CMAKEDIR}/*.cmake")
foreach(_file IN LISTS _package_files)
    file(READ "${_file}" _content)
    foreach(_path IN ITEMS "${STAGE_DIR}" "${BUILD_DIR}")
        string(FIND "${_content}" "${_path}" _position)
        if(NOT _position EQUAL -1)
            list(APPEND _errors "${_file} contains the absolute path ${_path}")
        endif()
    endforeach()
endforeach()

if(_errors)
    string(REPLACE ";" "\n" _errors "${_errors}")
    message(FATAL_ERROR "${_errors}")
endif()
list(LENGTH _all_files _count)
message(STATUS "installed ${_count} files into ${PREFIX} (relocated from ${STAGE_DIR})")
