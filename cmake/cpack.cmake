# CPack: `cpack -G DEB` in the build directory (or the `package` target) makes
# remote-xcomm_<version>_<arch>.deb. One development package: the library, its headers, the CMake
# and pkg-config files and the .proto files. Configure with -DBUILD_SHARED_LIBS=ON and
# -DCMAKE_INSTALL_PREFIX=/usr for a package that Debian's tools treat as such (scripts/check-deb.sh).
set(CPACK_PACKAGE_NAME remote-xcomm)
set(CPACK_PACKAGE_VENDOR "Remote XComm")
set(CPACK_PACKAGE_VERSION ${PROJECT_VERSION})
set(CPACK_PACKAGE_DESCRIPTION_SUMMARY "C++20 library: JSON requests between a workflow scheduler and its task instances over gRPC")
set(CPACK_PACKAGE_DESCRIPTION
    "Remote XComm connects a workflow scheduler to running task instances over gRPC, with every endpoint \
on one Boost.Asio event loop. This package holds the library, its headers, its CMake package \
(find_package(remote_xcomm CONFIG)), its pkg-config file and the .proto files of its wire contract.")
set(CPACK_PACKAGE_CONTACT "Remote XComm maintainers <remote-xcomm@localhost>")
set(CPACK_PACKAGING_INSTALL_PREFIX ${CMAKE_INSTALL_PREFIX})
set(CPACK_GENERATOR DEB)

set(CPACK_DEBIAN_FILE_NAME DEB-DEFAULT)
set(CPACK_DEBIAN_PACKAGE_SECTION libdevel)
# The runtime libraries (libgrpc++1.51, libprotobuf32, libboost-json1.81.0, libsqlite3-0, ...) come
# from dpkg-shlibdeps; the -dev packages are what find_package's find_dependency calls, the
# pkg-config file's Requires and the public headers need. protobuf-compiler-grpc: Debian's gRPC
# CMake package checks that its plugin executables exist when it is loaded.
set(CPACK_DEBIAN_PACKAGE_SHLIBDEPS ON)
set(REMOTE_XCOMM_DEB_DEPENDS libgrpc++-dev protobuf-compiler-grpc libprotobuf-dev "libboost1.81-dev"
                             "libboost-json1.81-dev")
if(REMOTE_XCOMM_STATIC)
  list(APPEND REMOTE_XCOMM_DEB_DEPENDS libsqlite3-dev libssl-dev)
endif()
list(JOIN REMOTE_XCOMM_DEB_DEPENDS ", " CPACK_DEBIAN_PACKAGE_DEPENDS)

include(CPack)
