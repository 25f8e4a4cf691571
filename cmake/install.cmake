# Install rules, the CMake package (find_package(remote_xcomm CONFIG)), the pkg-config file and
# CPack's Debian package. Included from the top-level CMakeLists.txt when REMOTE_XCOMM_INSTALL is
# on (docs/install.md). Layout under the prefix:
#   include/remote_xcomm/...                       public headers
#   lib/<multiarch>/libremote_xcomm.{so.*,a}       the library (BUILD_SHARED_LIBS picks which)
#   lib/<multiarch>/cmake/remote_xcomm/            config, version and targets files
#   lib/<multiarch>/pkgconfig/remote_xcomm.pc      pkg-config file
#   share/remote_xcomm/proto/remote_xcomm/v1/      the wire contract (.proto), for other languages
include(CMakePackageConfigHelpers)

set(REMOTE_XCOMM_CMAKE_INSTALL_DIR ${CMAKE_INSTALL_LIBDIR}/cmake/remote_xcomm)
set(REMOTE_XCOMM_PROTO_INSTALL_DIR ${CMAKE_INSTALL_DATADIR}/remote_xcomm/proto)
set(REMOTE_XCOMM_PACKAGE_DIR ${PROJECT_BINARY_DIR}/package)

# A static library carries its private dependencies (protobuf, SQLite) to the consumer's link.
get_target_property(REMOTE_XCOMM_LIBRARY_TYPE remote_xcomm TYPE)
if(REMOTE_XCOMM_LIBRARY_TYPE STREQUAL "STATIC_LIBRARY")
  set(REMOTE_XCOMM_STATIC ON)
else()
  set(REMOTE_XCOMM_STATIC OFF)
endif()

install(TARGETS remote_xcomm EXPORT remote_xcomm_targets
  ARCHIVE DESTINATION ${CMAKE_INSTALL_LIBDIR}
  LIBRARY DESTINATION ${CMAKE_INSTALL_LIBDIR}
  RUNTIME DESTINATION ${CMAKE_INSTALL_BINDIR})
install(DIRECTORY ${PROJECT_SOURCE_DIR}/include/remote_xcomm DESTINATION ${CMAKE_INSTALL_INCLUDEDIR}
        FILES_MATCHING PATTERN "*.hpp")
install(DIRECTORY ${PROJECT_SOURCE_DIR}/proto/ DESTINATION ${REMOTE_XCOMM_PROTO_INSTALL_DIR}
        FILES_MATCHING PATTERN "*.proto")

# The CMake package: remote_xcomm::remote_xcomm (its include directory is the target's
# INSTALL_INTERFACE, CMakeLists.txt), relocatable (no absolute path of this machine).
install(EXPORT remote_xcomm_targets NAMESPACE remote_xcomm:: FILE remote_xcomm-targets.cmake
        DESTINATION ${REMOTE_XCOMM_CMAKE_INSTALL_DIR})
configure_package_config_file(${CMAKE_CURRENT_LIST_DIR}/remote_xcomm-config.cmake.in
  ${REMOTE_XCOMM_PACKAGE_DIR}/remote_xcomm-config.cmake
  INSTALL_DESTINATION ${REMOTE_XCOMM_CMAKE_INSTALL_DIR}
  PATH_VARS REMOTE_XCOMM_PROTO_INSTALL_DIR)
# Before 1.0 a minor release may break the API, as the SONAME says (CMakeLists.txt).
if(PROJECT_VERSION_MAJOR EQUAL 0)
  set(REMOTE_XCOMM_COMPATIBILITY SameMinorVersion)
else()
  set(REMOTE_XCOMM_COMPATIBILITY SameMajorVersion)
endif()
write_basic_package_version_file(${REMOTE_XCOMM_PACKAGE_DIR}/remote_xcomm-config-version.cmake
  VERSION ${PROJECT_VERSION} COMPATIBILITY ${REMOTE_XCOMM_COMPATIBILITY})
install(FILES ${REMOTE_XCOMM_PACKAGE_DIR}/remote_xcomm-config.cmake
              ${REMOTE_XCOMM_PACKAGE_DIR}/remote_xcomm-config-version.cmake
        DESTINATION ${REMOTE_XCOMM_CMAKE_INSTALL_DIR})

# pkg-config: relocatable too, its prefix found from the .pc file's own directory. Boost has no
# .pc file, hence -lboost_json by name (Boost.Asio and Boost.System are header-only).
file(RELATIVE_PATH REMOTE_XCOMM_PC_PREFIX /prefix/${CMAKE_INSTALL_LIBDIR}/pkgconfig /prefix)
string(REGEX REPLACE "/$" "" REMOTE_XCOMM_PC_PREFIX "${REMOTE_XCOMM_PC_PREFIX}")
# For a shared library SQLite is a private -l, not a Requires.private: pkg-config checks that every
# required .pc exists even without --static, and sqlite3.pc (libsqlite3-dev) is not needed then.
# gRPC's reflection library (server reflection, on by default) has no .pc file either: named by -l,
# on Libs for a static library (its consumers link it), on Libs.private for a shared one.
if(REMOTE_XCOMM_STATIC)
  set(REMOTE_XCOMM_PC_REQUIRES "grpc++ protobuf sqlite3 libcrypto")
  set(REMOTE_XCOMM_PC_REQUIRES_PRIVATE "")
  set(REMOTE_XCOMM_PC_LIBS "-lgrpc++_reflection")
  set(REMOTE_XCOMM_PC_LIBS_PRIVATE "")
else()
  set(REMOTE_XCOMM_PC_REQUIRES "grpc++")
  set(REMOTE_XCOMM_PC_REQUIRES_PRIVATE "protobuf")
  set(REMOTE_XCOMM_PC_LIBS "")
  set(REMOTE_XCOMM_PC_LIBS_PRIVATE "-lgrpc++_reflection -lsqlite3 -lcrypto")
endif()
configure_file(${CMAKE_CURRENT_LIST_DIR}/remote_xcomm.pc.in ${REMOTE_XCOMM_PACKAGE_DIR}/remote_xcomm.pc @ONLY)
install(FILES ${REMOTE_XCOMM_PACKAGE_DIR}/remote_xcomm.pc DESTINATION ${CMAKE_INSTALL_LIBDIR}/pkgconfig)

include(${CMAKE_CURRENT_LIST_DIR}/cpack.cmake)
