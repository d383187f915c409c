# Finds every host dependency. A missing one stops configure with one line naming the
# Debian package that provides it (scripts/setup.sh installs them all).

macro(pszero_require found_var package)
  if(NOT ${found_var})
    message(FATAL_ERROR "missing dependency: install the Debian package '${package}' "
                        "(scripts/setup.sh installs everything)")
  endif()
endmacro()

find_package(Threads REQUIRED)

find_package(ucx QUIET CONFIG)
pszero_require(ucx_FOUND libucx-dev)

find_package(Boost 1.74 QUIET CONFIG)
pszero_require(Boost_FOUND libboost-dev)

find_package(glog QUIET CONFIG)
pszero_require(glog_FOUND libgoogle-glog-dev)

find_package(GTest QUIET CONFIG)
pszero_require(GTest_FOUND "libgtest-dev libgmock-dev")

find_package(benchmark QUIET CONFIG)
pszero_require(benchmark_FOUND libbenchmark-dev)

find_package(CLI11 QUIET CONFIG)
pszero_require(CLI11_FOUND libcli11-dev)

find_package(nlohmann_json 3.10 QUIET CONFIG)
pszero_require(nlohmann_json_FOUND nlohmann-json3-dev)

find_package(OpenSSL QUIET)
pszero_require(OPENSSL_FOUND libssl-dev)

find_package(OpenMP QUIET)
pszero_require(OpenMP_CXX_FOUND "libgomp1 (g++)")

# OpenBLAS ships a CMake config with plain variables; wrap it in an imported target.
find_package(OpenBLAS QUIET CONFIG)
find_path(PSZERO_CBLAS_INCLUDE cblas.h HINTS ${OpenBLAS_INCLUDE_DIRS} PATH_SUFFIXES openblas-pthread)
find_library(PSZERO_OPENBLAS_LIB NAMES openblas HINTS ${OpenBLAS_LIBRARIES})
if(OpenBLAS_FOUND AND PSZERO_CBLAS_INCLUDE AND PSZERO_OPENBLAS_LIB)
  set(PSZERO_OPENBLAS_OK TRUE)
endif()
pszero_require(PSZERO_OPENBLAS_OK libopenblas-dev)
if(NOT TARGET pszero::openblas)
  add_library(pszero::openblas INTERFACE IMPORTED)
  target_include_directories(pszero::openblas INTERFACE ${PSZERO_CBLAS_INCLUDE})
  target_link_libraries(pszero::openblas INTERFACE ${PSZERO_OPENBLAS_LIB})
endif()
