# squares depends on the microbatch package: its exported target links microbatch::microbatch.
include(CMakeFindDependencyMacro)
find_dependency(microbatch)
include("${CMAKE_CURRENT_LIST_DIR}/squaresTargets.cmake")
