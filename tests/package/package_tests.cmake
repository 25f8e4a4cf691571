# The package as its users consume it (docs/install.md), label "package": each test configures and
# builds a separate CMake project, so they are slow (the add_subdirectory one compiles the library
# again) and have their own time limits.
#
# Registered only in a build without sanitizers: the consumer projects are built as a user would,
# without -fsanitize, and a program that is not instrumented cannot link an instrumented library
# (the ASan runtime must come first in the link). What they check, the install layout and the
# consumers' configure, link and run, does not depend on instrumentation; the Release suite runs them.
if(REMOTE_XCOMM_SANITIZE)
  return()
endif()

# The nested builds use the outer build's generator, compiler, build type and compiler launcher
# (ccache only if the outer build uses it).
set(REMOTE_XCOMM_PACKAGE_TEST_ARGS -G ${CMAKE_GENERATOR} -DCMAKE_CXX_COMPILER=${CMAKE_CXX_COMPILER})
if(CMAKE_BUILD_TYPE)
  list(APPEND REMOTE_XCOMM_PACKAGE_TEST_ARGS -DCMAKE_BUILD_TYPE=${CMAKE_BUILD_TYPE})
endif()
if(CMAKE_CXX_COMPILER_LAUNCHER)
  list(JOIN CMAKE_CXX_COMPILER_LAUNCHER ";" launcher)
  list(APPEND REMOTE_XCOMM_PACKAGE_TEST_ARGS "-DCMAKE_CXX_COMPILER_LAUNCHER=${launcher}")
endif()
set(REMOTE_XCOMM_PACKAGE_TEST_ENV "CXX=${CMAKE_CXX_COMPILER}" "CXX_LAUNCHER=${CMAKE_CXX_COMPILER_LAUNCHER}")

if(REMOTE_XCOMM_INSTALL)
  # cmake --install into a temporary prefix, then find_package and pkg-config consumers of it.
  add_test(NAME PackageInstallFindPackageAndPkgConfig
           COMMAND ${CMAKE_CURRENT_LIST_DIR}/consume.sh install ${PROJECT_BINARY_DIR}
                   ${CMAKE_CURRENT_BINARY_DIR}/package_install ${REMOTE_XCOMM_PACKAGE_TEST_ARGS})
  set_tests_properties(PackageInstallFindPackageAndPkgConfig PROPERTIES
    LABELS package TIMEOUT 600 ENVIRONMENT "${REMOTE_XCOMM_PACKAGE_TEST_ENV}")
endif()
# The source tree as a subdirectory of the user's project. It compiles the library again, so it is
# built without optimisation (an empty build type: no -O, no -g), which about halves its share of
# the suite's time: what it checks is that the tree configures, builds, links and runs as a
# subproject, not how fast the result is.
set(REMOTE_XCOMM_SUBDIRECTORY_TEST_ARGS ${REMOTE_XCOMM_PACKAGE_TEST_ARGS})
list(FILTER REMOTE_XCOMM_SUBDIRECTORY_TEST_ARGS EXCLUDE REGEX "^-DCMAKE_BUILD_TYPE=")
list(APPEND REMOTE_XCOMM_SUBDIRECTORY_TEST_ARGS "-DCMAKE_BUILD_TYPE=")
add_test(NAME PackageAddSubdirectory
         COMMAND ${CMAKE_CURRENT_LIST_DIR}/consume.sh subdirectory ${PROJECT_SOURCE_DIR}
                 ${CMAKE_CURRENT_BINARY_DIR}/package_subdirectory ${REMOTE_XCOMM_SUBDIRECTORY_TEST_ARGS})
set_tests_properties(PackageAddSubdirectory PROPERTIES LABELS package TIMEOUT 1200)
