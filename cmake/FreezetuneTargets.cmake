# Shared build settings for freezetune's own targets.

# Warnings are errors for our own code; third-party headers come in as SYSTEM.
# With clang, Abseil's thread-safety annotations (ABSL_GUARDED_BY, ...) are
# checked too (`make tsan` builds the torch-free libraries that way).
function(freezetune_warnings target)
  target_compile_options(${target} PRIVATE -Wall -Wextra -Werror -Wno-unused-parameter)
  if(CMAKE_CXX_COMPILER_ID MATCHES "Clang")
    target_compile_options(${target} PRIVATE -Wthread-safety)
  endif()
endfunction()

# Adds a static library for one folder: freezetune_library(NAME SOURCES ... DEPS ...)
function(freezetune_library name)
  cmake_parse_arguments(ARG "" "" "SOURCES;DEPS" ${ARGN})
  add_library(${name} STATIC ${ARG_SOURCES})
  target_include_directories(${name} PUBLIC ${PROJECT_SOURCE_DIR})
  target_link_libraries(${name} PUBLIC ${ARG_DEPS})
  freezetune_warnings(${name})
endfunction()

# LibTorch as an INTERFACE target whose headers are SYSTEM (they warn a lot).
macro(freezetune_torch_target)
  add_library(freezetune_torch INTERFACE)
  target_include_directories(freezetune_torch SYSTEM INTERFACE ${TORCH_INCLUDE_DIRS})
  target_link_libraries(freezetune_torch INTERFACE ${TORCH_LIBRARIES})
  separate_arguments(_ft_torch_flags UNIX_COMMAND "${TORCH_CXX_FLAGS}")
  target_compile_options(freezetune_torch INTERFACE ${_ft_torch_flags})
endmacro()

# Sources of `target` that call at::parallel_for:
# freezetune_aten_parallel(TARGET source...). Debian's LibTorch uses ATen's
# OpenMP backend, whose at::parallel_for is inline code with an
# `omp parallel` pragma: compiled without OpenMP it silently runs on one
# thread. Such sources get OpenMP's flags (and fail to build without them:
# they #error when AT_PARALLEL_OPENMP is set and _OPENMP is not); the target
# links libgomp, the runtime LibTorch itself uses. Only these sources, so
# that the other torch sources keep their flags (and ccache entries).
function(freezetune_aten_parallel target)
  set_property(SOURCE ${ARGN} APPEND PROPERTY COMPILE_OPTIONS ${OpenMP_CXX_FLAGS})
  target_link_libraries(${target} PRIVATE ${OpenMP_CXX_LIBRARIES})
endfunction()

# A GoogleTest binary registered with CTest:
# freezetune_test(NAME SOURCES ... DEPS ... [LABELS ...] [TIMEOUT s])
function(freezetune_test name)
  cmake_parse_arguments(ARG "" "TIMEOUT" "SOURCES;DEPS;LABELS" ${ARGN})
  add_executable(${name} ${ARG_SOURCES})
  target_link_libraries(${name} PRIVATE ${ARG_DEPS} GTest::gtest GTest::gmock GTest::gtest_main)
  target_include_directories(${name} PRIVATE ${PROJECT_SOURCE_DIR})
  target_compile_definitions(${name} PRIVATE
    FREEZETUNE_SOURCE_DIR="${PROJECT_SOURCE_DIR}"
    FREEZETUNE_BINARY_DIR="${PROJECT_BINARY_DIR}")
  freezetune_warnings(${name})
  if(NOT ARG_TIMEOUT)
    set(ARG_TIMEOUT 300)
  endif()
  set(_env "FREEZETUNE_SOURCE_DIR=${PROJECT_SOURCE_DIR};FREEZETUNE_BINARY_DIR=${PROJECT_BINARY_DIR}")
  if(FREEZETUNE_SANITIZE STREQUAL "thread")
    # The shim's absl::Mutex entry points must win over libabsl's for every
    # caller (gRPC's too): exported from the executable.
    target_link_libraries(${name} PRIVATE freezetune_tsan_shim ${CMAKE_DL_LIBS})
    target_link_options(${name} PRIVATE -rdynamic)
    # ignore_noninstrumented_modules: memcpy/free/... called from inside
    # gRPC, protobuf, SQLite (not built with TSan, synchronised by means TSan
    # cannot see) are not checked; our code is.
    list(APPEND _env "TSAN_OPTIONS=halt_on_error=1 second_deadlock_stack=1 ignore_noninstrumented_modules=1 suppressions=${PROJECT_SOURCE_DIR}/tests/tsan/suppressions.txt")
    math(EXPR ARG_TIMEOUT "${ARG_TIMEOUT} * 3")
  endif()
  add_test(NAME ${name} COMMAND ${name})
  set_tests_properties(${name} PROPERTIES TIMEOUT ${ARG_TIMEOUT}
    LABELS "${ARG_LABELS}"
    ENVIRONMENT "${_env}")
endfunction()

# A folder's library from every .cc in it except *_main.cc and those listed in
# EXCLUDE, so files can be added without touching CMake. Skipped while the
# folder has no sources yet.
function(freezetune_folder_library name)
  cmake_parse_arguments(ARG "" "" "EXCLUDE;DEPS" ${ARGN})
  file(GLOB _srcs CONFIGURE_DEPENDS ${CMAKE_CURRENT_SOURCE_DIR}/*.cc)
  list(FILTER _srcs EXCLUDE REGEX "_main\\.cc$")
  foreach(_ex ${ARG_EXCLUDE})
    list(REMOVE_ITEM _srcs ${CMAKE_CURRENT_SOURCE_DIR}/${_ex})
  endforeach()
  if(_srcs)
    freezetune_library(${name} SOURCES ${_srcs} DEPS ${ARG_DEPS})
  endif()
endfunction()

# freezetune/version.h (FREEZETUNE_VERSION, the project version) for every
# binary's --version: link freezetune_version.
configure_file(${CMAKE_CURRENT_LIST_DIR}/version.h.in
  ${PROJECT_BINARY_DIR}/version/freezetune/version.h @ONLY)
add_library(freezetune_version INTERFACE)
target_include_directories(freezetune_version INTERFACE
  $<BUILD_INTERFACE:${PROJECT_BINARY_DIR}/version>)
