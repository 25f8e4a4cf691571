# The API reference: `cmake --build BUILD --target docs` runs Doxygen (Debian's `doxygen`) over the
# public headers into BUILD/docs/html. Any warning (an undocumented public name, a broken
# reference) fails the build: the reference is complete or it is an error. The CTest test
# `docs_reference` (tests/CMakeLists.txt) builds it, so CI keeps it warning-free.
find_package(Doxygen QUIET)
if(NOT DOXYGEN_FOUND)
  message(STATUS "Doxygen not found: no `docs` target (apt-get install doxygen)")
  return()
endif()

set(DOXYGEN_PROJECT_NAME "Remote XComm")
set(DOXYGEN_PROJECT_NUMBER ${PROJECT_VERSION})
set(DOXYGEN_PROJECT_BRIEF "Scheduler-to-task messaging over gRPC, on one Boost.Asio loop")
set(DOXYGEN_OUTPUT_DIRECTORY ${PROJECT_BINARY_DIR}/docs)
set(DOXYGEN_USE_MDFILE_AS_MAINPAGE ${PROJECT_SOURCE_DIR}/docs/api/mainpage.md)
set(DOXYGEN_FILE_PATTERNS *.hpp *.md)
set(DOXYGEN_RECURSIVE YES)
# rx::detail is the implementation, not the API: its headers are included by public ones but are
# not documented as part of the contract.
set(DOXYGEN_EXCLUDE_PATTERNS */detail/*)
set(DOXYGEN_EXCLUDE_SYMBOLS rx::detail rx::detail::*)
set(DOXYGEN_STRIP_FROM_PATH ${PROJECT_SOURCE_DIR}/include)
set(DOXYGEN_STRIP_FROM_INC_PATH ${PROJECT_SOURCE_DIR}/include)
set(DOXYGEN_JAVADOC_AUTOBRIEF YES)
set(DOXYGEN_EXTRACT_ALL NO)
set(DOXYGEN_WARN_IF_UNDOCUMENTED YES)
set(DOXYGEN_WARN_NO_PARAMDOC NO)
set(DOXYGEN_WARN_AS_ERROR FAIL_ON_WARNINGS)
set(DOXYGEN_WARN_LOGFILE ${PROJECT_BINARY_DIR}/docs/warnings.log)
# Made now, not only by the docs target: the test below runs Doxygen directly.
file(MAKE_DIRECTORY ${PROJECT_BINARY_DIR}/docs)
set(DOXYGEN_QUIET YES)
set(DOXYGEN_GENERATE_LATEX NO)
set(DOXYGEN_HAVE_DOT NO)
set(DOXYGEN_CLASS_GRAPH NO)
set(DOXYGEN_SORT_MEMBER_DOCS NO)
doxygen_add_docs(docs ${PROJECT_SOURCE_DIR}/include/remote_xcomm ${PROJECT_SOURCE_DIR}/docs/api/mainpage.md
                 COMMENT "Generating the API reference (docs/html) with Doxygen")

# The suite keeps the reference complete: Doxygen exits non-zero on any warning (above).
if(REMOTE_XCOMM_BUILD_TESTS)
  add_test(NAME ApiReferenceHasNoDoxygenWarnings COMMAND Doxygen::doxygen ${PROJECT_BINARY_DIR}/Doxyfile.docs
           WORKING_DIRECTORY ${PROJECT_SOURCE_DIR})
  set_tests_properties(ApiReferenceHasNoDoxygenWarnings PROPERTIES TIMEOUT 120 LABELS single_thread)
endif()
