#include "tests/support/postgres_instance.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <grp.h>
#include <libpq-fe.h>
#include <netinet/in.h>
#include <pwd.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <thread>

#include "absl/strings/str_cat.h"
#include "absl/strings/strip.h"

namespace freezetune::testing {
namespace {

namespace fs = std::filesystem;

std::string Tail(const std::string& path, size_t bytes = 4000) {
  std::ifstream in(path);
  std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  return text.size() > bytes ? text.substr(text.size() - bytes) : text;
}

// The account initdb and postgres run as: none (ourselves) unless root.
struct RunAs {
  bool drop = false;
  uid_t uid = 0;
  gid_t gid = 0;
};

absl::StatusOr<RunAs> ServerAccount() {
  if (geteuid() != 0) return RunAs{};
  for (const char* name : {"postgres", "nobody"}) {
    if (const passwd* pw = getpwnam(name); pw != nullptr) return RunAs{true, pw->pw_uid, pw->pw_gid};
  }
  return absl::FailedPreconditionError(
      "running as root, and neither a 'postgres' nor a 'nobody' account exists for initdb");
}

// Forks `argv` as `as` in `cwd`, stdout+stderr appended to `log`. With
// `die_with_parent`, the child gets SIGINT when this thread exits.
absl::StatusOr<pid_t> Spawn(const std::vector<std::string>& argv, const RunAs& as,
                            const std::string& cwd, const std::string& log,
                            bool die_with_parent) {
  const int log_fd = ::open(log.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
  if (log_fd < 0) return absl::InternalError(absl::StrCat("cannot open ", log));
  if (as.drop && fchown(log_fd, as.uid, as.gid) != 0) {
    ::close(log_fd);
    return absl::InternalError(absl::StrCat("cannot chown ", log));
  }
  const pid_t parent = getpid();
  const pid_t pid = fork();
  if (pid < 0) {
    ::close(log_fd);
    return absl::InternalError("fork failed");
  }
  if (pid == 0) {
    dup2(log_fd, STDOUT_FILENO);
    dup2(log_fd, STDERR_FILENO);
    const int devnull = ::open("/dev/null", O_RDONLY);
    if (devnull >= 0) dup2(devnull, STDIN_FILENO);
    setsid();
    if (as.drop && (setgroups(0, nullptr) != 0 || setgid(as.gid) != 0 || setuid(as.uid) != 0)) {
      _exit(126);
    }
    // After the uid change, which clears it.
    if (die_with_parent) {
      prctl(PR_SET_PDEATHSIG, SIGINT);
      if (getppid() != parent) _exit(125);
    }
    if (chdir(cwd.c_str()) != 0) _exit(124);
    std::vector<char*> args;
    for (const std::string& a : argv) args.push_back(const_cast<char*>(a.c_str()));
    args.push_back(nullptr);
    execv(args[0], args.data());
    _exit(127);
  }
  ::close(log_fd);
  return pid;
}

int FreeLoopbackPort() {
  const int fd = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  addr.sin_port = 0;
  socklen_t len = sizeof(addr);
  int port = 0;
  if (bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) == 0 &&
      getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len) == 0) {
    port = ntohs(addr.sin_port);
  }
  ::close(fd);
  return port;
}

// Waits up to `timeout` for `pid`; true when it exited (status in *status).
bool WaitFor(pid_t pid, std::chrono::milliseconds timeout, int* status) {
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  while (true) {
    const pid_t r = waitpid(pid, status, WNOHANG);
    if (r == pid || r < 0) return true;
    if (std::chrono::steady_clock::now() >= deadline) return false;
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
}

std::string ConnInfo(int port, const std::string& db) {
  return absl::StrCat("host=127.0.0.1 port=", port, " user=freezetune dbname=", db,
                      " connect_timeout=5");
}

}  // namespace

std::string PostgresInstance::FindBinDir() {
  auto has_both = [](const fs::path& dir) {
    std::error_code ec;
    return fs::is_regular_file(dir / "initdb", ec) && fs::is_regular_file(dir / "postgres", ec);
  };
  if (const char* env = std::getenv("FREEZETUNE_PG_BINDIR"); env != nullptr && *env != '\0') {
    return has_both(env) ? std::string(env) : "";
  }
  std::vector<std::pair<int, fs::path>> found;
  std::error_code ec;
  for (const auto& entry : fs::directory_iterator("/usr/lib/postgresql", ec)) {
    const std::string version = entry.path().filename().string();
    if (version.empty() ||
        !std::all_of(version.begin(), version.end(), [](char c) { return c >= '0' && c <= '9'; })) {
      continue;
    }
    if (has_both(entry.path() / "bin")) found.emplace_back(std::stoi(version), entry.path() / "bin");
  }
  if (found.empty()) return "";
  return std::max_element(found.begin(), found.end())->second.string();
}

absl::StatusOr<std::unique_ptr<PostgresInstance>> PostgresInstance::Start(
    const std::string& bindir) {
  absl::StatusOr<RunAs> as = ServerAccount();
  if (!as.ok()) return as.status();
  std::unique_ptr<PostgresInstance> pg(new PostgresInstance());
  std::string templ = (fs::temp_directory_path() / "ft_pg_XXXXXX").string();
  if (mkdtemp(templ.data()) == nullptr) return absl::InternalError("mkdtemp failed");
  pg->dir_ = templ;
  if (as->drop && chown(pg->dir_.c_str(), as->uid, as->gid) != 0) {
    return absl::InternalError(absl::StrCat("cannot chown ", pg->dir_));
  }
  const std::string data = pg->dir_ + "/data";
  const std::string initdb_log = pg->dir_ + "/initdb.log";
  absl::StatusOr<pid_t> initdb =
      Spawn({bindir + "/initdb", "-D", data, "-U", "freezetune", "-A", "trust", "-E", "UTF8",
             "--locale=C", "--no-sync"},
            *as, pg->dir_, initdb_log, /*die_with_parent=*/false);
  if (!initdb.ok()) return initdb.status();
  int status = 0;
  if (!WaitFor(*initdb, std::chrono::seconds(120), &status)) {
    kill(*initdb, SIGKILL);
    waitpid(*initdb, &status, 0);
    return absl::DeadlineExceededError("initdb took over 120 s");
  }
  if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
    return absl::InternalError(absl::StrCat("initdb failed:\n", Tail(initdb_log)));
  }
  const std::string log = pg->dir_ + "/postgres.log";
  // A port that was free a moment ago can be taken before the server binds
  // it: try a few.
  for (int attempt = 0; attempt < 5; ++attempt) {
    const int port = FreeLoopbackPort();
    if (port == 0) return absl::InternalError("no free loopback port");
    absl::StatusOr<pid_t> server = Spawn(
        {bindir + "/postgres", "-D", data, "-p", absl::StrCat(port), "-c",
         "listen_addresses=127.0.0.1", "-c", "unix_socket_directories=" + pg->dir_, "-c",
         "fsync=off", "-c", "synchronous_commit=off", "-c", "full_page_writes=off", "-c",
         "max_connections=200", "-c", "shared_buffers=32MB"},
        *as, pg->dir_, log, /*die_with_parent=*/true);
    if (!server.ok()) return server.status();
    pg->pid_ = *server;
    pg->port_ = port;
    const std::string conninfo = ConnInfo(port, "postgres");
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(60);
    bool exited = false;
    while (std::chrono::steady_clock::now() < deadline) {
      if (PQping(conninfo.c_str()) == PQPING_OK) return pg;
      if (waitpid(pg->pid_, &status, WNOHANG) == pg->pid_) {
        exited = true;
        break;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
    }
    if (!exited) {
      pg->Stop();
      return absl::DeadlineExceededError(
          absl::StrCat("postgres did not accept connections within 60 s:\n", Tail(log)));
    }
    pg->pid_ = -1;
    const std::string tail = Tail(log);
    if (tail.find("could not bind") == std::string::npos &&
        tail.find("already in use") == std::string::npos) {
      return absl::InternalError(absl::StrCat("postgres exited at start:\n", tail));
    }
  }
  return absl::UnavailableError(absl::StrCat("postgres found no free port:\n", Tail(log)));
}

PostgresInstance::~PostgresInstance() { Stop(); }

void PostgresInstance::Stop() {
  if (pid_ > 0) {
    int status = 0;
    kill(pid_, SIGINT);  // fast shutdown: disconnects clients, no checkpoint wait
    if (!WaitFor(pid_, std::chrono::seconds(30), &status)) {
      kill(pid_, SIGQUIT);  // immediate shutdown
      if (!WaitFor(pid_, std::chrono::seconds(10), &status)) {
        kill(pid_, SIGKILL);
        waitpid(pid_, &status, 0);
      }
    }
    pid_ = -1;
  }
  if (!dir_.empty()) {
    std::error_code ec;
    fs::remove_all(dir_, ec);
    dir_.clear();
  }
}

std::string PostgresInstance::Uri(const std::string& db) const {
  return absl::StrCat("postgresql://freezetune@127.0.0.1:", port_, "/", db);
}

absl::Status PostgresInstance::CreateDatabase(const std::string& db) const {
  if (db.empty() || !std::all_of(db.begin(), db.end(), [](char c) {
        return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_';
      })) {
    return absl::InvalidArgumentError(absl::StrCat("bad database name '", db, "'"));
  }
  return Query("postgres", absl::StrCat("CREATE DATABASE ", db)).status();
}

absl::StatusOr<std::vector<std::vector<std::string>>> PostgresInstance::Query(
    const std::string& db, const std::string& sql) const {
  PGconn* conn = PQconnectdb(ConnInfo(port_, db).c_str());
  if (PQstatus(conn) != CONNECTION_OK) {
    absl::Status status = absl::UnavailableError(PQerrorMessage(conn));
    PQfinish(conn);
    return status;
  }
  PGresult* r = PQexec(conn, sql.c_str());
  const ExecStatusType result = PQresultStatus(r);
  if (result != PGRES_COMMAND_OK && result != PGRES_TUPLES_OK) {
    absl::Status status = absl::InternalError(
        absl::StrCat(sql, ": ", absl::StripTrailingAsciiWhitespace(PQresultErrorMessage(r))));
    PQclear(r);
    PQfinish(conn);
    return status;
  }
  std::vector<std::vector<std::string>> rows;
  for (int i = 0; i < PQntuples(r); ++i) {
    std::vector<std::string>& row = rows.emplace_back();
    for (int j = 0; j < PQnfields(r); ++j) row.emplace_back(PQgetvalue(r, i, j));
  }
  PQclear(r);
  PQfinish(conn);
  return rows;
}

}  // namespace freezetune::testing
