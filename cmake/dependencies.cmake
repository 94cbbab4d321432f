# Finds every external dependency once: LibTorch from the pinned wheel, MPI, HDF5 (C), Boost,
# fmt, GoogleTest, and the CUDA runtime + NCCL when the wheel is a CUDA build.

# --- LibTorch: the wheel's own CMake package, found through its Python ---------------------
if(NOT Torch_DIR)
  execute_process(
    COMMAND "${DIFFUSION_PYTHON}" -c "import torch; print(torch.utils.cmake_prefix_path)"
    OUTPUT_VARIABLE _torch_prefix OUTPUT_STRIP_TRAILING_WHITESPACE
    RESULT_VARIABLE _torch_rc ERROR_VARIABLE _torch_err)
  if(NOT _torch_rc EQUAL 0)
    message(FATAL_ERROR "Cannot import torch with ${DIFFUSION_PYTHON}: ${_torch_err}\n"
                        "Run ./launch/setup.sh first, or pass -DDIFFUSION_PYTHON=/path/to/python.")
  endif()
  list(APPEND CMAKE_PREFIX_PATH "${_torch_prefix}")
  execute_process(
    COMMAND "${DIFFUSION_PYTHON}" -c "import torch, os; print(os.path.dirname(torch.__file__))"
    OUTPUT_VARIABLE DIFFUSION_TORCH_ROOT OUTPUT_STRIP_TRAILING_WHITESPACE)
  execute_process(
    COMMAND "${DIFFUSION_PYTHON}" -c "import site; print(site.getsitepackages()[0])"
    OUTPUT_VARIABLE DIFFUSION_SITE_PACKAGES OUTPUT_STRIP_TRAILING_WHITESPACE)
endif()

# A CUDA wheel's Caffe2 config looks for the CUDA toolkit; the local one (CUDA 13) matches the
# cu130 wheel. Without nvcc (a CPU-only LibTorch) the CUDA paths are simply off.
if(NOT CMAKE_CUDA_COMPILER AND EXISTS /usr/local/cuda/bin/nvcc)
  set(CMAKE_CUDA_COMPILER /usr/local/cuda/bin/nvcc)
endif()
# Our CUDA code (core/diffusion/keyed_noise_cuda.cu) targets the H200: sm_90 code plus compute_90
# PTX for later GPUs. The torch package ignores CMAKE_CUDA_ARCHITECTURES and puts the gencode
# flags of TORCH_CUDA_ARCH_LIST into CMAKE_CUDA_FLAGS; its default list starts at sm_50, which
# CUDA 13's nvcc no longer accepts.
if(NOT DEFINED TORCH_CUDA_ARCH_LIST AND NOT DEFINED ENV{TORCH_CUDA_ARCH_LIST})
  set(TORCH_CUDA_ARCH_LIST "9.0+PTX")
endif()
find_package(Torch REQUIRED)
# TORCH_CXX_FLAGS carries the ABI flag; TORCH_LIBRARIES the imported targets.
set(CMAKE_CXX_FLAGS "${CMAKE_CXX_FLAGS} ${TORCH_CXX_FLAGS}")

# --- CUDA runtime and NCCL ----------------------------------------------------------------
set(DIFFUSION_WITH_CUDA OFF)
if(TARGET torch_cuda OR TORCH_CUDA_LIBRARIES)
  find_package(CUDAToolkit)
  if(CUDAToolkit_FOUND)
    set(DIFFUSION_WITH_CUDA ON)
  endif()
endif()

set(DIFFUSION_WITH_NCCL OFF)
if(DIFFUSION_WITH_CUDA)
  # Prefer the NCCL that the torch wheel depends on (nvidia-nccl-cu13), so that both agree.
  find_path(NCCL_INCLUDE_DIR nccl.h PATHS "${DIFFUSION_SITE_PACKAGES}/nvidia/nccl/include"
            NO_DEFAULT_PATH)
  find_path(NCCL_INCLUDE_DIR nccl.h HINTS ${CUDAToolkit_INCLUDE_DIRS})
  find_library(NCCL_LIBRARY NAMES nccl libnccl.so.2 PATHS "${DIFFUSION_SITE_PACKAGES}/nvidia/nccl/lib"
               NO_DEFAULT_PATH)
  find_library(NCCL_LIBRARY NAMES nccl libnccl.so.2 HINTS ${CUDAToolkit_LIBRARY_DIR})
  if(NCCL_INCLUDE_DIR AND NCCL_LIBRARY)
    set(DIFFUSION_WITH_NCCL ON)
    add_library(diffusion_nccl SHARED IMPORTED GLOBAL)
    set_target_properties(diffusion_nccl PROPERTIES
      IMPORTED_LOCATION "${NCCL_LIBRARY}"
      INTERFACE_INCLUDE_DIRECTORIES "${NCCL_INCLUDE_DIR}")
    message(STATUS "NCCL: ${NCCL_LIBRARY}")
  endif()
endif()
message(STATUS "diffusion-cluster: CUDA ${DIFFUSION_WITH_CUDA}, NCCL ${DIFFUSION_WITH_NCCL}")

# --- fmt: the copy that ships inside the torch wheel, header-only ---------------------------
# LibTorch's include folder carries fmt 12; a Debian libfmt next to it would be shadowed by those
# headers in every torch translation unit and then fail to link. One fmt for the whole project:
# the wheel's, header-only, also for the torch-free libraries.
set(_fmt_root "${CMAKE_BINARY_DIR}/third_party/include")
file(MAKE_DIRECTORY "${_fmt_root}")
file(CREATE_LINK "${TORCH_INSTALL_PREFIX}/include/fmt" "${_fmt_root}/fmt" SYMBOLIC)
add_library(diffusion_fmt INTERFACE)
target_include_directories(diffusion_fmt SYSTEM BEFORE INTERFACE "${_fmt_root}")
target_compile_definitions(diffusion_fmt INTERFACE FMT_HEADER_ONLY=1)

# --- MPI, HDF5, Boost ---------------------------------------------------------------
find_package(MPI REQUIRED COMPONENTS C)
set(HDF5_PREFER_PARALLEL OFF)
find_package(HDF5 REQUIRED COMPONENTS C)
find_package(Boost 1.74 REQUIRED COMPONENTS program_options)
find_package(ZLIB REQUIRED)
find_package(nlohmann_json 3 REQUIRED)
find_package(Threads REQUIRED)

add_library(diffusion_hdf5 INTERFACE)
target_include_directories(diffusion_hdf5 SYSTEM INTERFACE ${HDF5_C_INCLUDE_DIRS} ${HDF5_INCLUDE_DIRS})
target_link_libraries(diffusion_hdf5 INTERFACE ${HDF5_C_LIBRARIES})
target_compile_definitions(diffusion_hdf5 INTERFACE ${HDF5_C_DEFINITIONS})

# stb (Debian's libstb-dev) for PNG/JPEG decoding and PNG writing.
find_path(STB_INCLUDE_DIR stb_image.h PATH_SUFFIXES stb REQUIRED)

if(DIFFUSION_BUILD_TESTS)
  find_package(GTest REQUIRED)
  find_program(MPIEXEC_EXECUTABLE NAMES mpiexec mpirun)
endif()
