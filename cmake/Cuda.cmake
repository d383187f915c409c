# PSZERO_CUDA=AUTO uses CUDA, cuBLAS and NCCL when nvcc is found; ON fails configure
# without them; OFF is a pure CPU build. Sets PSZERO_HAVE_CUDA and the target pszero::cuda.

set(PSZERO_HAVE_CUDA OFF)
add_library(pszero_cuda_deps INTERFACE)
add_library(pszero::cuda ALIAS pszero_cuda_deps)

string(TOUPPER "${PSZERO_CUDA}" _pszero_cuda_mode)
if(NOT _pszero_cuda_mode MATCHES "^(AUTO|ON|OFF)$")
  message(FATAL_ERROR "PSZERO_CUDA must be AUTO, ON or OFF (got '${PSZERO_CUDA}')")
endif()

if(NOT _pszero_cuda_mode STREQUAL "OFF")
  include(CheckLanguage)
  check_language(CUDA)
  if(CMAKE_CUDA_COMPILER)
    if(NOT DEFINED CMAKE_CUDA_ARCHITECTURES)
      # H100 and H200; add others with -DCMAKE_CUDA_ARCHITECTURES="80;90".
      set(CMAKE_CUDA_ARCHITECTURES 90)
    endif()
    enable_language(CUDA)
    set(CMAKE_CUDA_STANDARD 20)
    set(CMAKE_CUDA_STANDARD_REQUIRED ON)
    find_package(CUDAToolkit QUIET)
    find_path(PSZERO_NCCL_INCLUDE nccl.h HINTS ${CUDAToolkit_INCLUDE_DIRS})
    find_library(PSZERO_NCCL_LIB nccl HINTS ${CUDAToolkit_LIBRARY_DIR})
  endif()
  if(CMAKE_CUDA_COMPILER AND CUDAToolkit_FOUND AND TARGET CUDA::cublas AND PSZERO_NCCL_INCLUDE
     AND PSZERO_NCCL_LIB)
    set(PSZERO_HAVE_CUDA ON)
    target_include_directories(pszero_cuda_deps INTERFACE ${PSZERO_NCCL_INCLUDE})
    target_link_libraries(pszero_cuda_deps INTERFACE CUDA::cudart CUDA::cublas ${PSZERO_NCCL_LIB})
    target_compile_definitions(pszero_cuda_deps INTERFACE PSZERO_HAVE_CUDA=1)
  elseif(_pszero_cuda_mode STREQUAL "ON")
    message(FATAL_ERROR "PSZERO_CUDA=ON but CUDA is incomplete: nvcc='${CMAKE_CUDA_COMPILER}', "
                        "cudart/cublas found=${CUDAToolkit_FOUND}, nccl='${PSZERO_NCCL_LIB}'")
  endif()
endif()
