# s3:// object storage (server/data/s3_*): tests against a real S3-protocol
# server, s3rver from npm, started by each test on loopback. It is installed
# into the build dir from tests/s3server/package-lock.json with `npm ci`
# (network: the npm registry) the first time the build needs it; the server
# binary is ${PROJECT_BINARY_DIR}/s3server/node_modules/.bin/s3rver, and
# other tests (the replica chaos test) start it the same way.
if(TARGET freezetune_data_io)
  find_program(FREEZETUNE_NPM npm REQUIRED)
  set(_s3server_src ${PROJECT_SOURCE_DIR}/tests/s3server)
  set(_s3server_dir ${PROJECT_BINARY_DIR}/s3server)
  file(MAKE_DIRECTORY ${_s3server_dir})
  add_custom_command(
    OUTPUT ${_s3server_dir}/npm-ci.stamp
    COMMAND ${CMAKE_COMMAND} -E copy ${_s3server_src}/package.json
            ${_s3server_src}/package-lock.json ${_s3server_dir}/
    COMMAND ${FREEZETUNE_NPM} ci --no-audit --no-fund --loglevel=error
    COMMAND ${CMAKE_COMMAND} -E touch ${_s3server_dir}/npm-ci.stamp
    WORKING_DIRECTORY ${_s3server_dir}
    DEPENDS ${_s3server_src}/package.json ${_s3server_src}/package-lock.json
    COMMENT "npm ci: s3rver, the S3 test server")
  add_custom_target(s3_test_server ALL DEPENDS ${_s3server_dir}/npm-ci.stamp)

  freezetune_test(data_s3_test
    SOURCES ${PROJECT_SOURCE_DIR}/tests/unit/data_s3_test.cc
    DEPS freezetune_data_io TIMEOUT 180)
  add_dependencies(data_s3_test s3_test_server)
  freezetune_test(data_s3_sigv4_test
    SOURCES ${PROJECT_SOURCE_DIR}/tests/unit/data_s3_sigv4_test.cc
    DEPS freezetune_data_io nlohmann_json::nlohmann_json TIMEOUT 60)
endif()
