// A throwaway PostgreSQL server for tests: `initdb` into a fresh temporary
// directory, then `postgres` on a free 127.0.0.1 port (its unix socket in
// that directory too), trust authentication for the role "freezetune", and
// fsync off (a test database need not survive a power cut).
//
// initdb and postgres refuse to run as root, and tests run as root in CI: as
// root, both run as the `postgres` system user that Debian's postgresql
// package creates ("nobody" where there is none), with the directory chowned
// to it. The server is a child of the test process that gets SIGINT (fast
// shutdown) if the thread that started it dies, so a crashed test does not
// leak it; Stop() and the destructor shut it down and remove the directory.
//
// Thread safety: Start/Stop from one thread; Uri, CreateDatabase and Query
// from any.
#ifndef FREEZETUNE_TESTS_SUPPORT_POSTGRES_INSTANCE_H_
#define FREEZETUNE_TESTS_SUPPORT_POSTGRES_INSTANCE_H_

#include <sys/types.h>

#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace freezetune::testing {

class PostgresInstance {
 public:
  // The directory holding initdb and postgres: $FREEZETUNE_PG_BINDIR when
  // set, else the newest /usr/lib/postgresql/<version>/bin that has both,
  // else "" (PostgreSQL is not installed).
  static std::string FindBinDir();
  // Why a test skips when FindBinDir() finds nothing.
  static constexpr char kNotInstalled[] =
      "PostgreSQL is not installed (no /usr/lib/postgresql/*/bin/initdb; scripts/setup.sh "
      "installs it)";

  // Starts a server from `bindir`. On failure the error carries the tail of
  // initdb's or the server's log.
  static absl::StatusOr<std::unique_ptr<PostgresInstance>> Start(const std::string& bindir);

  ~PostgresInstance();
  PostgresInstance(const PostgresInstance&) = delete;
  PostgresInstance& operator=(const PostgresInstance&) = delete;

  // Fast shutdown, then the directory is removed. Idempotent.
  void Stop();

  int port() const { return port_; }
  pid_t pid() const { return pid_; }
  // postgresql://freezetune@127.0.0.1:<port>/<db>
  std::string Uri(const std::string& db) const;
  // CREATE DATABASE; `db` must be [a-z0-9_]+ (it is an identifier, which
  // SQL cannot take as a parameter).
  absl::Status CreateDatabase(const std::string& db) const;
  // Runs `sql` (no parameters) in `db`; the rows as text cells.
  absl::StatusOr<std::vector<std::vector<std::string>>> Query(const std::string& db,
                                                              const std::string& sql) const;

 private:
  PostgresInstance() = default;

  std::string dir_;
  int port_ = 0;
  pid_t pid_ = -1;
};

}  // namespace freezetune::testing

#endif  // FREEZETUNE_TESTS_SUPPORT_POSTGRES_INSTANCE_H_
