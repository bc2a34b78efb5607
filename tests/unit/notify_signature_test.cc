// Callback signatures (HMAC-SHA256, RFC 4231 vectors), their verification
// (constant-time compare, timestamp window), the secret file, the retry
// schedule and submit-time validation of a Notify.
#include <gtest/gtest.h>

#include "server/notify/notifier.h"
#include "server/notify/secrets.h"
#include "server/notify/signature.h"

namespace freezetune::notify {
namespace {

TEST(SignatureTest, HmacSha256MatchesRfc4231) {
  EXPECT_EQ(HmacSha256Hex("Jefe", "what do ya want for nothing?"),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843");
  EXPECT_EQ(HmacSha256Hex(std::string(20, '\x0b'), "Hi There"),
            "b0344c61d8db38535ca8afceaf0bf12b881dc200c9833da726e9376c2e32cff7");
}

TEST(SignatureTest, VerifyChecksBodySecretAndAge) {
  const std::string secret = "0123456789abcdef-secret";
  const std::string body = R"({"id":"job-1","state":"JOB_STATE_SUCCEEDED"})";
  const std::string header = SignatureHeader(secret, 1700000000, body);
  EXPECT_EQ(header.substr(0, 7), "sha256=");
  EXPECT_EQ(header, "sha256=" + HmacSha256Hex(secret, "1700000000." + body));
  EXPECT_TRUE(VerifySignature(secret, header, 1700000000, body, 1700000100));
  EXPECT_FALSE(VerifySignature(secret, header, 1700000000, body + " ", 1700000100));
  EXPECT_FALSE(VerifySignature("another-secret-xxxx", header, 1700000000, body, 1700000100));
  // The timestamp is signed: moving it breaks the signature...
  EXPECT_FALSE(VerifySignature(secret, header, 1700000001, body, 1700000100));
  // ...and an old (replayed) request is refused even with a valid signature.
  EXPECT_FALSE(VerifySignature(secret, header, 1700000000, body, 1700000000 + 301));
}

TEST(SecretsTest, ParsesTenantsAndDefault) {
  absl::StatusOr<Secrets> s = Secrets::Parse(
      "# comment\nacme 0123456789abcdefACME\n\n* 0123456789abcdefDEFAULT  # trailing\n", "f");
  ASSERT_TRUE(s.ok()) << s.status();
  EXPECT_EQ(s->For("acme"), "0123456789abcdefACME");
  EXPECT_EQ(s->For("other"), "0123456789abcdefDEFAULT");
  EXPECT_EQ(s->For(""), "0123456789abcdefDEFAULT");
  absl::StatusOr<Secrets> only = Secrets::Parse("acme 0123456789abcdefACME\n", "f");
  ASSERT_TRUE(only.ok());
  EXPECT_FALSE(only->For("other").has_value());
  EXPECT_EQ(Secrets::Parse("acme short\n", "f").status().message(),
            "f:1: secret shorter than 16 bytes");
  EXPECT_EQ(Secrets::Parse("a 0123456789abcdef0\na 0123456789abcdef1\n", "f").status().message(),
            "f:2: tenant 'a' listed twice");
  EXPECT_EQ(Secrets::Parse("lonely\n", "f").status().code(), absl::StatusCode::kInvalidArgument);
}

TEST(NotifierPolicyTest, BackoffDoublesToTheCap) {
  NotifierOptions o;
  o.initial_backoff = absl::Seconds(30);
  o.max_backoff = absl::Minutes(5);
  const absl::Time t = absl::FromUnixSeconds(1000);
  EXPECT_EQ(NextAttempt(o, 1, t) - t, absl::Seconds(30));
  EXPECT_EQ(NextAttempt(o, 2, t) - t, absl::Seconds(60));
  EXPECT_EQ(NextAttempt(o, 4, t) - t, absl::Seconds(240));
  EXPECT_EQ(NextAttempt(o, 5, t) - t, absl::Minutes(5));
  EXPECT_EQ(NextAttempt(o, 50, t) - t, absl::Minutes(5));
}

TEST(NotifierPolicyTest, ValidateNotify) {
  NotifierOptions o;
  o.secrets = *Secrets::Parse("acme 0123456789abcdefACME\n", "f");
  v1::Notify n;
  n.set_url("https://hooks.example.com/freezetune");
  EXPECT_TRUE(ValidateNotify(n, "acme", o, "job.notify").ok());
  absl::Status no_secret = ValidateNotify(n, "other", o, "job.notify");
  EXPECT_EQ(no_secret.code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(no_secret.message().substr(0, 12), "job.notify: ");
  n.set_url("");
  EXPECT_EQ(ValidateNotify(n, "acme", o, "job.notify").message().substr(0, 16),
            "job.notify.url: ");
  n.set_url("ftp://example.com/x");
  EXPECT_EQ(ValidateNotify(n, "acme", o, "job.notify").code(),
            absl::StatusCode::kInvalidArgument);
  // Loopback and private literals are refused unless the test switch is on.
  n.set_url("https://127.0.0.1:8443/hook");
  absl::Status loopback = ValidateNotify(n, "acme", o, "sweep.notify");
  EXPECT_EQ(loopback.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(loopback.message().substr(0, 18), "sweep.notify.url: ");
  o.uris.allow_private_http = true;
  EXPECT_TRUE(ValidateNotify(n, "acme", o, "sweep.notify").ok());
  // http only with allow_http.
  n.set_url("http://hooks.example.com/x");
  o.uris.allow_http = false;
  EXPECT_EQ(ValidateNotify(n, "acme", o, "job.notify").code(),
            absl::StatusCode::kInvalidArgument);
  o.uris.allow_http = true;
  EXPECT_TRUE(ValidateNotify(n, "acme", o, "job.notify").ok());
  o.uris.allow_plain_http = false;
  EXPECT_EQ(ValidateNotify(n, "acme", o, "job.notify").code(),
            absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace freezetune::notify
