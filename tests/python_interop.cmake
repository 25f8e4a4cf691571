# Python interop: stock grpcio, with stubs generated from our proto, against the C++ example server.
#
# Included at the end of tests/CMakeLists.txt. Generates the Python stubs into
# ${CMAKE_CURRENT_BINARY_DIR}/python_stubs (part of ALL) and registers the CTest test
# PythonGrpcioClientTalksToCppServer, which runs tests/interop/run_interop.py with Debian's
# /usr/bin/python3 (the interpreter that has python3-grpcio; a pyenv or venv python3 on PATH
# usually has not). The test is skipped, with a warning, when that Python cannot import grpc.

set(REMOTE_XCOMM_PYTHON_STUBS_DIR ${CMAKE_CURRENT_BINARY_DIR}/python_stubs)

find_program(REMOTE_XCOMM_GRPC_PYTHON_PLUGIN grpc_python_plugin)
if(NOT REMOTE_XCOMM_GRPC_PYTHON_PLUGIN)
  message(WARNING "grpc_python_plugin not found (Debian: protobuf-compiler-grpc): not generating Python stubs "
                  "and not registering PythonGrpcioClientTalksToCppServer")
  return()
endif()

set(REMOTE_XCOMM_PYTHON_STUBS
    ${REMOTE_XCOMM_PYTHON_STUBS_DIR}/remote_xcomm/v1/remote_xcomm_pb2.py
    ${REMOTE_XCOMM_PYTHON_STUBS_DIR}/remote_xcomm/v1/remote_xcomm_pb2_grpc.py)
add_custom_command(
  OUTPUT ${REMOTE_XCOMM_PYTHON_STUBS}
  COMMAND ${CMAKE_COMMAND} -E make_directory ${REMOTE_XCOMM_PYTHON_STUBS_DIR}
  COMMAND protobuf::protoc -I ${REMOTE_XCOMM_PROTO_DIR} --python_out=${REMOTE_XCOMM_PYTHON_STUBS_DIR}
          --grpc_python_out=${REMOTE_XCOMM_PYTHON_STUBS_DIR}
          --plugin=protoc-gen-grpc_python=${REMOTE_XCOMM_GRPC_PYTHON_PLUGIN}
          ${REMOTE_XCOMM_PROTO_DIR}/remote_xcomm/v1/remote_xcomm.proto
  DEPENDS ${REMOTE_XCOMM_PROTO_DIR}/remote_xcomm/v1/remote_xcomm.proto
  COMMENT "Generating Python stubs from remote_xcomm/v1/remote_xcomm.proto"
  VERBATIM)
add_custom_target(remote_xcomm_python_stubs ALL DEPENDS ${REMOTE_XCOMM_PYTHON_STUBS})
add_dependencies(remote_xcomm_tests remote_xcomm_python_stubs)
add_dependencies(remote_xcomm_concurrent_tests remote_xcomm_python_stubs)

if(NOT TARGET remote_xcomm_example_server)
  message(STATUS "Examples are not built (REMOTE_XCOMM_BUILD_EXAMPLES=OFF): "
                 "not registering PythonGrpcioClientTalksToCppServer")
  return()
endif()

# Debian's interpreter only: find_program caches the result, so a later PATH change cannot swap it.
find_program(REMOTE_XCOMM_SYSTEM_PYTHON NAMES python3 PATHS /usr/bin NO_DEFAULT_PATH)
if(NOT REMOTE_XCOMM_SYSTEM_PYTHON)
  message(WARNING "/usr/bin/python3 not found: not registering PythonGrpcioClientTalksToCppServer")
  return()
endif()
execute_process(
  COMMAND ${REMOTE_XCOMM_SYSTEM_PYTHON} -c "import grpc, google.protobuf"
  RESULT_VARIABLE REMOTE_XCOMM_PYTHON_GRPC_MISSING
  OUTPUT_QUIET ERROR_QUIET
  TIMEOUT 60)
if(REMOTE_XCOMM_PYTHON_GRPC_MISSING)
  message(WARNING "${REMOTE_XCOMM_SYSTEM_PYTHON} cannot import grpc and google.protobuf (Debian: python3-grpcio, "
                  "python3-protobuf): not registering PythonGrpcioClientTalksToCppServer")
  return()
endif()

add_test(
  NAME PythonGrpcioClientTalksToCppServer
  COMMAND ${REMOTE_XCOMM_SYSTEM_PYTHON} ${CMAKE_CURRENT_LIST_DIR}/interop/run_interop.py
          --server $<TARGET_FILE:remote_xcomm_example_server>
          --stubs ${REMOTE_XCOMM_PYTHON_STUBS_DIR}
          --client ${PROJECT_SOURCE_DIR}/examples/python/client.py)
# run_interop.py bounds each of its own waits; this timeout is only the backstop.
# "concurrent": the example server's gRPC threads and its loop serve several Python calls.
set_tests_properties(PythonGrpcioClientTalksToCppServer PROPERTIES TIMEOUT 120 LABELS "interop;python;concurrent")
add_dependencies(remote_xcomm_tests remote_xcomm_example_server)
add_dependencies(remote_xcomm_concurrent_tests remote_xcomm_example_server)

# docs/security.md with stock grpcio: TLS (grpcio's own SSL credentials) and the token statuses
# against `rxcomm serve`, with a CA made by tests/helpers/make_test_ca.sh when the test runs.
if(TARGET rxcomm)
  add_test(
    NAME PythonGrpcioSecurityStatuses
    COMMAND ${REMOTE_XCOMM_SYSTEM_PYTHON} ${CMAKE_CURRENT_LIST_DIR}/interop/run_security_interop.py
            --rxcomm $<TARGET_FILE:rxcomm> --stubs ${REMOTE_XCOMM_PYTHON_STUBS_DIR}
            --make-ca ${CMAKE_CURRENT_LIST_DIR}/helpers/make_test_ca.sh)
  set_tests_properties(PythonGrpcioSecurityStatuses PROPERTIES TIMEOUT 120 LABELS "interop;python;concurrent")

  # docs/protocol.md "Bad input", the gRPC framing rows: raw HTTP/2 (python3-h2) against `rxcomm serve`.
  execute_process(
    COMMAND ${REMOTE_XCOMM_SYSTEM_PYTHON} -c "import h2, hyperframe"
    RESULT_VARIABLE REMOTE_XCOMM_PYTHON_H2_MISSING
    OUTPUT_QUIET ERROR_QUIET
    TIMEOUT 60)
  if(REMOTE_XCOMM_PYTHON_H2_MISSING)
    message(WARNING "${REMOTE_XCOMM_SYSTEM_PYTHON} cannot import h2 (Debian: python3-h2): "
                    "not registering PythonRawHttp2BadFraming")
  else()
    add_test(NAME PythonRawHttp2BadFraming COMMAND ${REMOTE_XCOMM_SYSTEM_PYTHON}
                                                   ${CMAKE_CURRENT_LIST_DIR}/interop/run_raw_h2.py --rxcomm $<TARGET_FILE:rxcomm>)
    # run_raw_h2.py bounds each of its own waits (about 3 s in all); this timeout is only the backstop.
    set_tests_properties(PythonRawHttp2BadFraming PROPERTIES TIMEOUT 120 LABELS "interop;python;concurrent")
  endif()
  add_dependencies(remote_xcomm_tests rxcomm)
  add_dependencies(remote_xcomm_concurrent_tests rxcomm)
endif()
