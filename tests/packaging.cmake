# Included by tests/CMakeLists.txt when MICROBATCH_PACKAGING_TESTS is ON (the default).
# Uses that file's variables (_microbatch_include_dir) and runs in its scope.

# Packaging: prove the documented ways of consuming microbatch work.
#   packaging.install           cmake --install into <build>/tests/packaging/prefix (fixture)
#   packaging.find_package      tests/consumers/find_package against that prefix
#   packaging.pkg_config        pkg-config --define-prefix --cflags/--libs against that prefix
#   packaging.add_subdirectory  tests/consumers/add_subdirectory on the source tree
#   packaging.fetch_content     tests/consumers/fetch_content from a local source archive
#                               (made by packaging.source_archive), offline
#   packaging.exporting_library tests/consumers/exporting_library: a library that vendors
#                               microbatch and exports its own targets, installed and used
#   packaging.copy_headers      <c++> -std=c++17 -I <src>/include main.cpp -pthread
#   packaging.without_catch2    configure + install without Catch2; explicit tests ON fails
#   packaging.single_header     regenerate single_include/ into the build tree: a program builds
#                               and runs against it alone, and the committed copy is up to date
#   packaging.cxx14_error       every header compiled as C++14 stops with the C++17 #error
#   packaging.no_exceptions     tests/no_exceptions built with -fno-exceptions: it works, and
#                               misuse terminates with "microbatch: fatal: <message>"
#   packaging.wrong_callback    tests/compile_fail/wrong_callback.cpp must fail to compile with
#                               the static_assert naming void(microbatch::Outcome<R>&&)
#   packaging.wrong_process_result  tests/compile_fail/wrong_process_result.cpp must fail to
#                               compile with the static_assert naming both process_batch forms
# The consumers build tests/consumers/main.cpp (exporting_library builds its own library).
set(_consumers "${CMAKE_CURRENT_SOURCE_DIR}/consumers")
set(_packaging_dir "${CMAKE_CURRENT_BINARY_DIR}/packaging")
set(_prefix "${_packaging_dir}/prefix")
file(MAKE_DIRECTORY "${_packaging_dir}")

# Options that make a nested CMake project use this build's toolchain.
set(_nested_build_options "-DCMAKE_CXX_COMPILER=${CMAKE_CXX_COMPILER}")
if(CMAKE_TOOLCHAIN_FILE)
    list(APPEND _nested_build_options "-DCMAKE_TOOLCHAIN_FILE=${CMAKE_TOOLCHAIN_FILE}")
endif()
set(_build_and_test ${CMAKE_CTEST_COMMAND} --build-and-test)
set(_build_and_test_options --build-generator "${CMAKE_GENERATOR}")
if(CMAKE_GENERATOR_PLATFORM)
    list(APPEND _build_and_test_options --build-generator-platform "${CMAKE_GENERATOR_PLATFORM}")
endif()
if(CMAKE_GENERATOR_TOOLSET)
    list(APPEND _build_and_test_options --build-generator-toolset "${CMAKE_GENERATOR_TOOLSET}")
endif()
if(CMAKE_MAKE_PROGRAM)
    list(APPEND _build_and_test_options --build-makeprogram "${CMAKE_MAKE_PROGRAM}")
endif()
get_property(_multi_config GLOBAL PROPERTY GENERATOR_IS_MULTI_CONFIG)
if(_multi_config)
    list(APPEND _build_and_test_options --build-config $<CONFIG>)
    set(_exe_dir "/$<CONFIG>")
else()
    set(_exe_dir "")
endif()

# The nested consumer builds start from an empty build directory every run, so a stale cache
# (say, an option that once defaulted differently) cannot hide a regression.
add_test(NAME packaging.clean
    COMMAND "${CMAKE_COMMAND}" -E rm -rf
        "${_packaging_dir}/find_package" "${_packaging_dir}/add_subdirectory"
        "${_packaging_dir}/fetch_content")
set_tests_properties(packaging.clean PROPERTIES
    FIXTURES_SETUP microbatch_consumer_dirs TIMEOUT 60 LABELS packaging)

# MICROBATCH_INSTALL=OFF leaves the rules out of the default `cmake --install`, which these
# tests run.
if(MICROBATCH_INSTALL)
    add_test(NAME packaging.install
        COMMAND "${CMAKE_COMMAND}"
            "-DBUILD_DIR=${PROJECT_BINARY_DIR}"
            "-DCONFIG=$<CONFIG>"
            "-DSTAGE_DIR=${_packaging_dir}/stage"
            "-DPREFIX=${_prefix}"
            "-DSOURCE_INCLUDE_DIR=${_microbatch_include_dir}"
            "-DINCLUDEDIR=${CMAKE_INSTALL_INCLUDEDIR}"
            "-DCMAKEDIR=${MICROBATCH_INSTALL_CMAKEDIR}"
            "-DPKGCONFIGDIR=${MICROBATCH_INSTALL_PKGCONFIGDIR}"
            "-DDOCDIR=${CMAKE_INSTALL_DOCDIR}"
            -P "${_consumers}/install_and_check.cmake")
    set_tests_properties(packaging.install PROPERTIES
        FIXTURES_SETUP microbatch_installed TIMEOUT 120 LABELS packaging)

    add_test(NAME packaging.find_package
        COMMAND ${_build_and_test}
            "${_consumers}/find_package" "${_packaging_dir}/find_package"
            ${_build_and_test_options}
            --build-options ${_nested_build_options}
                "-DCMAKE_PREFIX_PATH=${_prefix}"
                "-DMICROBATCH_REQUIRED_VERSION=${PROJECT_VERSION}"
                "-DMICROBATCH_EXPECTED_PREFIX=${_prefix}"
            --test-command "${_packaging_dir}/find_package${_exe_dir}/consumer")
    set_tests_properties(packaging.find_package PROPERTIES
        FIXTURES_REQUIRED "microbatch_installed;microbatch_consumer_dirs"
        TIMEOUT 300 LABELS packaging)

    find_program(MICROBATCH_PKG_CONFIG_EXECUTABLE NAMES pkg-config pkgconf)
    mark_as_advanced(MICROBATCH_PKG_CONFIG_EXECUTABLE)
    if(MICROBATCH_PKG_CONFIG_EXECUTABLE AND NOT MSVC)
        add_test(NAME packaging.pkg_config
            COMMAND "${CMAKE_COMMAND}"
                "-DCXX=${CMAKE_CXX_COMPILER}"
                "-DSOURCE=${_consumers}/main.cpp"
                "-DOUTPUT=${_packaging_dir}/pkg_config_consumer"
                "-DPKG_CONFIG=${MICROBATCH_PKG_CONFIG_EXECUTABLE}"
                "-DPKG_CONFIG_PATH=${_prefix}/${MICROBATCH_INSTALL_PKGCONFIGDIR}"
                "-DEXPECTED_VERSION=${PROJECT_VERSION}"
                "-DEXPECTED_INCLUDE_DIR=${_prefix}/${CMAKE_INSTALL_INCLUDEDIR}"
                -P "${_consumers}/compile_and_run.cmake")
        set_tests_properties(packaging.pkg_config PROPERTIES
            FIXTURES_REQUIRED microbatch_installed TIMEOUT 120 LABELS packaging)
    else()
        message(STATUS "microbatch: pkg-config not found, skipping the packaging.pkg_config test "
                       "(Debian: apt-get install pkg-config)")
    endif()
endif()

add_test(NAME packaging.add_subdirectory
    COMMAND ${_build_and_test}
        "${_consumers}/add_subdirectory" "${_packaging_dir}/add_subdirectory"
        ${_build_and_test_options}
        --build-options ${_nested_build_options}
            "-DMICROBATCH_SOURCE_DIR=${PROJECT_SOURCE_DIR}"
        --test-command "${_packaging_dir}/add_subdirectory${_exe_dir}/consumer")
set_tests_properties(packaging.add_subdirectory PROPERTIES
    FIXTURES_REQUIRED microbatch_consumer_dirs TIMEOUT 300 LABELS packaging)

# The bare-driver tests assume a GCC-style command line (g++, clang++).
if(NOT MSVC)
    add_test(NAME packaging.copy_headers
        COMMAND "${CMAKE_COMMAND}"
            "-DCXX=${CMAKE_CXX_COMPILER}"
            "-DSOURCE=${_consumers}/main.cpp"
            "-DOUTPUT=${_packaging_dir}/copy_headers_consumer"
            "-DINCLUDE_DIR=${_microbatch_include_dir}"
            -P "${_consumers}/compile_and_run.cmake")
    set_tests_properties(packaging.copy_headers PROPERTIES TIMEOUT 120 LABELS packaging)

    add_test(NAME packaging.single_header
        COMMAND "${CMAKE_COMMAND}"
            "-DSOURCE_DIR=${PROJECT_SOURCE_DIR}"
            "-DWORK_DIR=${_packaging_dir}/single_header"
            "-DCXX=${CMAKE_CXX_COMPILER}"
            -P "${_consumers}/single_header.cmake")
    set_tests_properties(packaging.single_header PROPERTIES TIMEOUT 120 LABELS packaging)

    add_test(NAME packaging.cxx14_error
        COMMAND "${CMAKE_COMMAND}"
            "-DCXX=${CMAKE_CXX_COMPILER}"
            "-DINCLUDE_DIR=${_microbatch_include_dir}"
            "-DWORK_DIR=${_packaging_dir}/cxx14_error"
            -P "${_consumers}/cxx14_error.cmake")
    set_tests_properties(packaging.cxx14_error PROPERTIES TIMEOUT 120 LABELS packaging)

    add_test(NAME packaging.no_exceptions
        COMMAND "${CMAKE_COMMAND}"
            "-DCXX=${CMAKE_CXX_COMPILER}"
            "-DINCLUDE_DIR=${_microbatch_include_dir}"
            "-DSOURCE=${CMAKE_CURRENT_SOURCE_DIR}/no_exceptions/no_exceptions.cpp"
            "-DOUTPUT=${_packaging_dir}/no_exceptions"
            -P "${CMAKE_CURRENT_SOURCE_DIR}/no_exceptions/check.cmake")
    set_tests_properties(packaging.no_exceptions PROPERTIES TIMEOUT 120 LABELS packaging)

    add_test(NAME packaging.wrong_callback
        COMMAND "${CMAKE_COMMAND}"
            "-DCXX=${CMAKE_CXX_COMPILER}"
            "-DINCLUDE_DIR=${_microbatch_include_dir}"
            "-DSOURCE=${CMAKE_CURRENT_SOURCE_DIR}/compile_fail/wrong_callback.cpp"
            "-DEXPECTED=the callback must be callable as void(microbatch::Outcome<R>&&)"
            -P "${CMAKE_CURRENT_SOURCE_DIR}/compile_fail/expect_error.cmake")
    set_tests_properties(packaging.wrong_callback PROPERTIES TIMEOUT 120 LABELS packaging)

    add_test(NAME packaging.wrong_process_result
        COMMAND "${CMAKE_COMMAND}"
            "-DCXX=${CMAKE_CXX_COMPILER}"
            "-DINCLUDE_DIR=${_microbatch_include_dir}"
            "-DSOURCE=${CMAKE_CURRENT_SOURCE_DIR}/compile_fail/wrong_process_result.cpp"
            "-DEXPECTED=process_batch must return std::vector<R> with one result per item, or std::vector<microbatch::Outcome<R>> with one outcome per item"
            -P "${CMAKE_CURRENT_SOURCE_DIR}/compile_fail/expect_error.cmake")
    set_tests_properties(packaging.wrong_process_result PROPERTIES TIMEOUT 120 LABELS packaging)
endif()

# FetchContent from a source archive like a release tarball, made from the files the library's
# CMake project needs (no tests or examples: a subproject must not need them).
add_test(NAME packaging.source_archive
    COMMAND "${CMAKE_COMMAND}" -E tar czf "${_packaging_dir}/microbatch-source.tar.gz"
        CMakeLists.txt cmake include LICENSE
    WORKING_DIRECTORY "${PROJECT_SOURCE_DIR}")
set_tests_properties(packaging.source_archive PROPERTIES
    FIXTURES_SETUP microbatch_source_archive TIMEOUT 60 LABELS packaging)
add_test(NAME packaging.fetch_content
    COMMAND ${_build_and_test}
        "${_consumers}/fetch_content" "${_packaging_dir}/fetch_content"
        ${_build_and_test_options}
        --build-options ${_nested_build_options}
            "-DMICROBATCH_ARCHIVE=${_packaging_dir}/microbatch-source.tar.gz"
            -DFETCHCONTENT_QUIET=ON
        --test-command "${_packaging_dir}/fetch_content${_exe_dir}/consumer")
set_tests_properties(packaging.fetch_content PROPERTIES
    FIXTURES_REQUIRED "microbatch_source_archive;microbatch_consumer_dirs"
    TIMEOUT 300 LABELS packaging)

# Nested configure/build/install steps driven by -P scripts (they clean their own directories).
set(_script_generator_options "-DGENERATOR=${CMAKE_GENERATOR}" "-DCXX=${CMAKE_CXX_COMPILER}")
if(CMAKE_MAKE_PROGRAM)
    list(APPEND _script_generator_options "-DMAKE_PROGRAM=${CMAKE_MAKE_PROGRAM}")
endif()
add_test(NAME packaging.exporting_library
    COMMAND "${CMAKE_COMMAND}"
        "-DSOURCE_DIR=${PROJECT_SOURCE_DIR}"
        "-DCONSUMER_DIR=${_consumers}/exporting_library"
        "-DWORK_DIR=${_packaging_dir}/exporting_library"
        ${_script_generator_options}
        -P "${_consumers}/export_round_trip.cmake")
set_tests_properties(packaging.exporting_library PROPERTIES TIMEOUT 300 LABELS packaging)

add_test(NAME packaging.without_catch2
    COMMAND "${CMAKE_COMMAND}"
        "-DSOURCE_DIR=${PROJECT_SOURCE_DIR}"
        "-DWORK_DIR=${_packaging_dir}/without_catch2"
        ${_script_generator_options}
        -P "${_consumers}/without_catch2.cmake")
set_tests_properties(packaging.without_catch2 PROPERTIES TIMEOUT 120 LABELS packaging)
