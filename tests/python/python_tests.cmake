# The Python package's tests (tests/python/test_*.py, unittest), one CTest test per file, label
# "python". Included by src/python/CMakeLists.txt.
#
# Registered only without sanitizers: an extension built with ASan must be loaded by an
# interpreter started with libasan preloaded (LD_PRELOAD), and CPython's own allocations then
# swamp LeakSanitizer; the C++ paths these tests drive (Client, Server, Endpoint, Watch) run under
# ASan and TSan in the C++ suite.
if(REMOTE_XCOMM_SANITIZE)
  message(STATUS "REMOTE_XCOMM_SANITIZE is set: not registering the Python tests")
  return()
endif()
if(NOT TARGET remote_xcomm_example_server OR NOT TARGET remote_xcomm_example_client)
  message(STATUS "Examples are not built: not registering the Python tests (they use the C++ examples)")
  return()
endif()

set(REMOTE_XCOMM_PYTHON_TESTS test_prototype test_interop test_errors test_aio test_signals test_xcom)
foreach(test IN LISTS REMOTE_XCOMM_PYTHON_TESTS)
  add_test(NAME Python.${test} COMMAND ${PYTHON_EXECUTABLE} -m unittest -v ${test}
           WORKING_DIRECTORY ${CMAKE_CURRENT_LIST_DIR})
  # Each test bounds its own waits; the timeout is the backstop.
  set_tests_properties(
    Python.${test}
    PROPERTIES TIMEOUT 180 LABELS "python;interop"
               ENVIRONMENT
               "PYTHONPATH=${REMOTE_XCOMM_PYTHON_DIR};RX_EXAMPLE_SERVER=$<TARGET_FILE:remote_xcomm_example_server>;RX_EXAMPLE_CLIENT=$<TARGET_FILE:remote_xcomm_example_client>;PYTHONDONTWRITEBYTECODE=1")
endforeach()
add_dependencies(remote_xcomm_tests remote_xcomm_python remote_xcomm_example_server remote_xcomm_example_client)

# docs/airflow.md's runnable example: a scheduler fanning out to 8 mapped task instances, each
# served by its own `task_run.py` process, as Airflow's executor runs them.
add_test(NAME Python.airflow_example COMMAND ${PYTHON_EXECUTABLE} ${PROJECT_SOURCE_DIR}/examples/python/airflow/scheduler.py
                                             --mapped 8)
set_tests_properties(Python.airflow_example PROPERTIES TIMEOUT 120 LABELS "python;interop"
                                                       ENVIRONMENT "PYTHONPATH=${REMOTE_XCOMM_PYTHON_DIR};PYTHONDONTWRITEBYTECODE=1")
