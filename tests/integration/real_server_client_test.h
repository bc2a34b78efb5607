// GoogleTest fixture for client-side end-to-end tests: the real
// freezetune-server binary on 127.0.0.1:0 (one CPU slot, data root = a fresh
// temp dir), a tiny 2-layer BERT made by freezetune-model, two JSONL datasets
// (small.jsonl: 32 lines, large.jsonl: 4,000 lines, two classes), and a
// connected freezetune::Client per test. Needs FREEZETUNE_SERVER_BIN and
// FREEZETUNE_MODEL_BIN.
#ifndef FREEZETUNE_TESTS_INTEGRATION_REAL_SERVER_CLIENT_TEST_H_
#define FREEZETUNE_TESTS_INTEGRATION_REAL_SERVER_CLIENT_TEST_H_

#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <memory>
#include <string>

#include "freezetune/client.h"
#include "gtest/gtest.h"
#include "tests/integration/server_process.h"

namespace freezetune::testing {

class RealServerClientTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    namespace fs = std::filesystem;
    dir_ = new std::string(
        (fs::temp_directory_path() / ("ft_client_e2e_" + std::to_string(getpid()))).string());
    fs::remove_all(*dir_);
    fs::create_directories(*dir_);
    server_ = new ServerProcess(FREEZETUNE_SERVER_BIN, *dir_);
    std::string error;
    ASSERT_TRUE(MakeTinyModel(FREEZETUNE_MODEL_BIN, *dir_ + "/model", &error)) << error;
    model_uri_ = new std::string("file://" + *dir_ + "/model");

    const char* good[] = {"a great movie", "wonderful acting", "i loved it", "truly delightful"};
    const char* bad[] = {"a terrible movie", "awful acting", "i hated it", "truly dreadful"};
    std::ofstream small(*dir_ + "/small.jsonl");
    std::ofstream large(*dir_ + "/large.jsonl");
    for (int i = 0; i < 2000; ++i) {
      std::string line_good = std::string("{\"text\": \"") + good[i % 4] + "\", \"label\": 1}\n";
      std::string line_bad = std::string("{\"text\": \"") + bad[i % 4] + "\", \"label\": 0}\n";
      if (i < 16) small << line_good << line_bad;
      large << line_good << line_bad;
    }
    small.close();
    large.close();
    ASSERT_TRUE(server_->Start({"--metrics_listen=127.0.0.1:0", "--data_dir=" + *dir_ + "/server",
                                "--data_roots=" + *dir_, "--threads=1", "--cpu_slots=1"},
                               &error))
        << error;
  }

  static void TearDownTestSuite() {
    EXPECT_TRUE(server_->Stop()) << server_->Logs();
    delete server_;
    if (!::testing::Test::HasFailure()) std::filesystem::remove_all(*dir_);
  }

  void SetUp() override {
    ClientOptions options;
    options.target = "127.0.0.1:" + std::to_string(server_->port());
    auto client = Client::Connect(options);
    ASSERT_TRUE(client.ok()) << client.status();
    client_ = std::move(*client);
  }

  // A job on `dataset` (in the temp dir) with the tiny model: bottom(1),
  // batches of 8, a TrainMetrics event per step, a quarter held out.
  static v1::FineTuneJob Job(const std::string& dataset, int epochs) {
    v1::FineTuneJob job;
    job.set_model_uri(*model_uri_);
    job.mutable_train()->set_uri("file://" + *dir_ + "/" + dataset);
    job.mutable_freeze()->mutable_bottom()->set_num_layers(1);
    auto* hp = job.mutable_hyperparameters();
    hp->set_epochs(epochs);
    hp->set_batch_size(8);
    hp->set_max_seq_length(16);
    hp->set_log_every_steps(1);
    hp->set_learning_rate(1e-3f);
    hp->set_validation_split(0.25f);
    return job;
  }

  inline static std::string* dir_ = nullptr;
  inline static std::string* model_uri_ = nullptr;
  inline static ServerProcess* server_ = nullptr;
  std::unique_ptr<Client> client_;
};

}  // namespace freezetune::testing

#endif  // FREEZETUNE_TESTS_INTEGRATION_REAL_SERVER_CLIENT_TEST_H_
