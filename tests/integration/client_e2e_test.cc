// The client library against the real freezetune-server binary: submit a
// small job and watch every event in order to SUCCEEDED, resume a watch from
// the middle, cancel a second job while it runs, list both, and get the
// server's INVALID_ARGUMENT for a bad job with its field path intact.
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "freezetune/client.h"
#include "gtest/gtest.h"
#include "tests/integration/real_server_client_test.h"

namespace freezetune {
namespace {

namespace fs = std::filesystem;

using ClientE2ETest = testing::RealServerClientTest;

TEST_F(ClientE2ETest, SubmitWatchResumeCancelList) {
  auto small = client_->Submit(Job("small.jsonl", 2));
  ASSERT_TRUE(small.ok()) << small.status();
  EXPECT_EQ(small->state(), v1::JOB_STATE_QUEUED);

  // Every event, in order, with sequences 1..N and no gap.
  std::vector<v1::JobEvent> events;
  auto stream = client_->OpenWatch(small->id(), 0);
  v1::JobEvent event;
  while (stream->Next(&event)) events.push_back(event);
  ASSERT_TRUE(stream->status().ok()) << stream->status();
  ASSERT_GE(events.size(), 5u);
  int train_events = 0, eval_events = 0, result_events = 0;
  for (size_t i = 0; i < events.size(); ++i) {
    EXPECT_EQ(events[i].sequence(), static_cast<int64_t>(i + 1));
    EXPECT_EQ(events[i].job_id(), small->id());
    train_events += events[i].has_train();
    eval_events += events[i].has_eval();
    result_events += events[i].has_result();
  }
  EXPECT_GT(train_events, 0);
  EXPECT_GE(eval_events, 2);  // one per epoch
  EXPECT_EQ(result_events, 1);
  ASSERT_TRUE(events.back().has_state_change());
  EXPECT_EQ(events.back().state_change().state(), v1::JOB_STATE_SUCCEEDED);

  auto done = client_->Get(small->id());
  ASSERT_TRUE(done.ok()) << done.status();
  EXPECT_EQ(done->state(), v1::JOB_STATE_SUCCEEDED);
  EXPECT_EQ(done->last_sequence(), static_cast<int64_t>(events.size()));
  EXPECT_TRUE(done->result().frozen_weights_verified());
  EXPECT_TRUE(fs::exists(done->result().output_uri().substr(7) + "/model.safetensors"))
      << done->result().output_uri();

  // Resuming after k replays exactly k+1..N.
  const int64_t k = static_cast<int64_t>(events.size()) / 2;
  std::vector<v1::JobEvent> resumed;
  absl::Status watched = client_->Watch(small->id(), k, [&](const v1::JobEvent& e) {
    resumed.push_back(e);
    return true;
  });
  ASSERT_TRUE(watched.ok()) << watched;
  ASSERT_EQ(resumed.size(), events.size() - k);
  for (size_t i = 0; i < resumed.size(); ++i) {
    EXPECT_EQ(resumed[i].SerializeAsString(), events[k + i].SerializeAsString());
  }

  // A long job is cancelled while it runs, within a step or so.
  auto large = client_->Submit(Job("large.jsonl", 50));
  ASSERT_TRUE(large.ok()) << large.status();
  auto running = client_->OpenWatch(large->id(), 0);
  bool saw_training = false;
  while (running->Next(&event)) {
    if (event.has_train() && !saw_training) {
      saw_training = true;
      auto cancelled = client_->Cancel(large->id());
      ASSERT_TRUE(cancelled.ok()) << cancelled.status();
    }
  }
  ASSERT_TRUE(saw_training);
  ASSERT_TRUE(event.has_state_change());
  EXPECT_EQ(event.state_change().state(), v1::JOB_STATE_CANCELLED);
  auto after_cancel = client_->Cancel(large->id());
  EXPECT_EQ(after_cancel.status().code(), absl::StatusCode::kFailedPrecondition);

  // Both are listed, newest first.
  auto all = client_->ListAll();
  ASSERT_TRUE(all.ok()) << all.status();
  std::vector<std::string> ids;
  for (const v1::Job& job : *all) ids.push_back(job.id());
  ASSERT_GE(ids.size(), 2u);
  EXPECT_EQ(ids[0], large->id());
  EXPECT_NE(std::find(ids.begin(), ids.end(), small->id()), ids.end());
  auto cancelled_only = client_->ListAll({v1::JOB_STATE_CANCELLED});
  ASSERT_TRUE(cancelled_only.ok());
  ASSERT_EQ(cancelled_only->size(), 1u);
  EXPECT_EQ((*cancelled_only)[0].id(), large->id());
}

TEST_F(ClientE2ETest, BadJobKeepsTheServersCodeAndField) {
  v1::FineTuneJob job = Job("small.jsonl", 1);
  job.mutable_freeze()->clear_bottom();
  auto* rule = job.mutable_freeze()->add_rules();
  rule->set_pattern("bert\\.encoder\\.layer\\.9\\..*");
  rule->set_action(v1::FREEZE_ACTION_FREEZE);
  auto submitted = client_->Submit(job);
  ASSERT_EQ(submitted.status().code(), absl::StatusCode::kInvalidArgument) << submitted.status();
  EXPECT_NE(submitted.status().message().find("job.freeze.rules[0]"), std::string::npos)
      << submitted.status();
  EXPECT_NE(submitted.status().message().find("matches no parameter"), std::string::npos)
      << submitted.status();
}

TEST_F(ClientE2ETest, PlanFreezeShowsEveryParameter) {
  v1::PlanFreezeRequest request;
  request.set_model_uri(*model_uri_);
  request.mutable_freeze()->mutable_head_only();
  auto plan = client_->PlanFreeze(request);
  ASSERT_TRUE(plan.ok()) << plan.status();
  int64_t trainable = 0;
  for (const v1::ParameterPlan& p : plan->parameters()) {
    EXPECT_EQ(p.trainable(), p.name().rfind("classifier.", 0) == 0) << p.name();
    if (p.trainable()) trainable += p.numel();
  }
  EXPECT_EQ(trainable, plan->trainable_parameters());
  EXPECT_EQ(trainable, 32 * 2 + 2);
  EXPECT_EQ(plan->frozen_prefix_layers(), 2);
}

}  // namespace
}  // namespace freezetune
