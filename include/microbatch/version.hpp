#pragma once
/**
 * @file version.hpp
 * @brief Library version macros, and the C++17 check every microbatch header makes.
 *
 * Every public header includes this one (directly or through detail/config.hpp), so compiling
 * any of them below C++17 stops with one clear `#error` instead of pages of template errors.
 */

// MSVC reports __cplusplus as 199711L unless /Zc:__cplusplus is given; _MSVC_LANG is reliable.
#if (defined(_MSVC_LANG) && _MSVC_LANG < 201703L) || (!defined(_MSVC_LANG) && __cplusplus < 201703L)
#error "microbatch requires C++17 or later (-std=c++17; MSVC: /std:c++17)"
#endif

/// Major version: incremented on incompatible API or ABI changes.
#define MICROBATCH_VERSION_MAJOR 0
/// Minor version: incremented on backwards-compatible additions.
#define MICROBATCH_VERSION_MINOR 1
/// Patch version: incremented on bug fixes.
#define MICROBATCH_VERSION_PATCH 0
/// The version as one integer, `major * 10000 + minor * 100 + patch`.
#define MICROBATCH_VERSION \
    (MICROBATCH_VERSION_MAJOR * 10000 + MICROBATCH_VERSION_MINOR * 100 + MICROBATCH_VERSION_PATCH)
