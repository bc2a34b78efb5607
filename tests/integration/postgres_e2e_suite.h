// A test suite of real freezetune-server processes on a throwaway
// PostgreSQL (tests/support/postgres_instance.h): the server, a tiny model
// (`<root>/model`) and a tiny training set (`<root>/train.jsonl`) in a fresh
// temporary root, shared by the suite's tests. Where PostgreSQL is not
// installed every test skips, saying why.
#ifndef FREEZETUNE_TESTS_INTEGRATION_POSTGRES_E2E_SUITE_H_
#define FREEZETUNE_TESTS_INTEGRATION_POSTGRES_E2E_SUITE_H_

#include <unistd.h>

#include <filesystem>
#include <memory>
#include <string>

#include "gtest/gtest.h"
#include "tests/integration/server_process.h"
#include "tests/support/postgres_instance.h"

namespace freezetune::testing {

class PostgresE2eSuite : public ::testing::Test {
 protected:
  // From the derived suite's SetUpTestSuite; `prefix` names the root.
  static void StartSuite(const std::string& prefix) {
    namespace fs = std::filesystem;
    root_ = new std::string((fs::temp_directory_path() / (prefix + std::to_string(::getpid()))).string());
    fs::remove_all(*root_);
    fs::create_directories(*root_);
    const std::string bindir = PostgresInstance::FindBinDir();
    if (bindir.empty()) return;  // each test skips, saying why
    auto pg = PostgresInstance::Start(bindir);
    ASSERT_TRUE(pg.ok()) << pg.status();
    pg_ = std::move(pg).value().release();
    std::string error;
    ASSERT_TRUE(MakeTinyModel(FREEZETUNE_MODEL_BIN, *root_ + "/model", &error)) << error;
    WriteTinySentimentJsonl(*root_ + "/train.jsonl");
  }
  static void TearDownTestSuite() {
    delete pg_;  // stops the server
    pg_ = nullptr;
    if (!::testing::Test::HasFailure()) std::filesystem::remove_all(*root_);
    delete root_;
    root_ = nullptr;
  }

  void SetUp() override {
    if (pg_ == nullptr) GTEST_SKIP() << PostgresInstance::kNotInstalled;
  }

  static inline PostgresInstance* pg_ = nullptr;
  static inline std::string* root_ = nullptr;
};

}  // namespace freezetune::testing

#endif  // FREEZETUNE_TESTS_INTEGRATION_POSTGRES_E2E_SUITE_H_
