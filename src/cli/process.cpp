#include "duplex/cli/process.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>
#include <csignal>

#include <algorithm>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <thread>

namespace duplex::cli {

namespace fs = std::filesystem;

Result<pid_t> spawn_detached(const std::vector<std::string>& argv, const std::string& log_path) {
  if (argv.empty()) return Status::error(Errc::invalid, "nothing to start");
  int log = ::open(log_path.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
  if (log < 0) return Status::error(Errc::io_error, "cannot open {}: {}", log_path, std::strerror(errno));
  int null = ::open("/dev/null", O_RDONLY | O_CLOEXEC);
  int pipe_fds[2];
  if (null < 0 || ::pipe2(pipe_fds, O_CLOEXEC) != 0) {
    Status s = Status::error(Errc::io_error, "cannot start {}: {}", argv[0], std::strerror(errno));
    ::close(log);
    if (null >= 0) ::close(null);
    return s;
  }
  std::vector<char*> args;
  args.reserve(argv.size() + 1);
  for (const auto& a : argv) args.push_back(const_cast<char*>(a.c_str()));  // NOLINT: execv's signature
  args.push_back(nullptr);

  const pid_t pid = ::fork();
  if (pid == 0) {
    // Child: only async-signal-safe calls from here to exec.
    ::setsid();
    ::dup2(null, STDIN_FILENO);
    ::dup2(log, STDOUT_FILENO);
    ::dup2(log, STDERR_FILENO);
    ::signal(SIGPIPE, SIG_DFL);
    ::execv(args[0], args.data());
    const int err = errno;
    (void)!::write(pipe_fds[1], &err, sizeof err);
    ::_exit(127);
  }
  const int fork_errno = errno;
  ::close(pipe_fds[1]);
  ::close(log);
  ::close(null);
  if (pid < 0) {
    ::close(pipe_fds[0]);
    return Status::error(Errc::io_error, "cannot start {}: fork: {}", argv[0], std::strerror(fork_errno));
  }
  int child_errno = 0;
  ssize_t n = 0;
  do {
    n = ::read(pipe_fds[0], &child_errno, sizeof child_errno);
  } while (n < 0 && errno == EINTR);
  ::close(pipe_fds[0]);
  if (n == static_cast<ssize_t>(sizeof child_errno)) {
    ::waitpid(pid, nullptr, 0);
    return Status::error(Errc::io_error, "cannot run {}: {}", argv[0], std::strerror(child_errno));
  }
  return pid;
}

namespace {

std::vector<std::string> cmdline_of(pid_t pid) {
  std::ifstream in("/proc/" + std::to_string(pid) + "/cmdline", std::ios::binary);
  std::vector<std::string> out;
  if (!in) return out;
  std::string arg;
  while (std::getline(in, arg, '\0')) out.push_back(arg);
  return out;
}

}  // namespace

bool running_as(pid_t pid, const std::vector<std::string>& argv) {
  return pid > 0 && !argv.empty() && cmdline_of(pid) == argv;
}

std::vector<pid_t> find_by_argv(const std::vector<std::string>& argv) {
  std::vector<pid_t> out;
  std::error_code ec;
  for (const auto& entry : fs::directory_iterator("/proc", ec)) {
    const std::string name = entry.path().filename().string();
    if (name.empty() || name.find_first_not_of("0123456789") != std::string::npos) continue;
    const auto pid = static_cast<pid_t>(std::strtol(name.c_str(), nullptr, 10));
    if (pid != ::getpid() && running_as(pid, argv)) out.push_back(pid);
  }
  return out;
}

std::string reap(pid_t pid) {
  int status = 0;
  const pid_t r = ::waitpid(pid, &status, WNOHANG);
  if (r != pid) return "";
  if (WIFEXITED(status)) return "exit " + std::to_string(WEXITSTATUS(status));
  if (WIFSIGNALED(status)) return "signal " + std::to_string(WTERMSIG(status));
  return "stopped";
}

std::vector<std::string> stop_processes(const std::vector<Proc>& procs, std::chrono::milliseconds grace) {
  struct Target {
    std::string name;
    pid_t pid;
    std::vector<std::string> argv;
  };
  std::vector<Target> targets;
  std::vector<std::string> report;
  for (const auto& p : procs) {
    std::vector<pid_t> pids = find_by_argv(p.argv);
    if (running_as(p.pid, p.argv) && std::find(pids.begin(), pids.end(), p.pid) == pids.end())
      pids.push_back(p.pid);
    if (pids.empty()) report.push_back(p.name + ": not running");
    for (pid_t pid : pids) {
      ::kill(pid, SIGTERM);
      targets.push_back({p.name, pid, p.argv});
    }
  }
  const auto deadline = std::chrono::steady_clock::now() + grace;
  std::vector<bool> gone(targets.size(), false);
  for (;;) {
    bool all = true;
    for (size_t i = 0; i < targets.size(); ++i) {
      if (gone[i]) continue;
      reap(targets[i].pid);  // our own child (a failed `demo up`) would otherwise stay a zombie
      if (!running_as(targets[i].pid, targets[i].argv)) {
        gone[i] = true;
        report.push_back(targets[i].name + ": stopped (pid " + std::to_string(targets[i].pid) + ")");
      } else {
        all = false;
      }
    }
    if (all) break;
    if (std::chrono::steady_clock::now() >= deadline) {
      for (size_t i = 0; i < targets.size(); ++i) {
        if (gone[i]) continue;
        ::kill(targets[i].pid, SIGKILL);
        reap(targets[i].pid);
        report.push_back(targets[i].name + ": killed after " + std::to_string(grace.count() / 1000) +
                         " s (pid " + std::to_string(targets[i].pid) + ")");
      }
      break;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  return report;
}

bool port_free(const std::string& address, unsigned port) {
  int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return false;
  int one = 1;
  ::setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  sockaddr_in sa{};
  sa.sin_family = AF_INET;
  sa.sin_port = htons(static_cast<uint16_t>(port));
  const bool ok = ::inet_pton(AF_INET, address.c_str(), &sa.sin_addr) == 1 &&
                  ::bind(fd, reinterpret_cast<sockaddr*>(&sa), sizeof sa) == 0;  // NOLINT: the sockets API
  ::close(fd);
  return ok;
}

std::string self_dir() {
  std::error_code ec;
  fs::path exe = fs::read_symlink("/proc/self/exe", ec);
  return ec ? std::string() : exe.parent_path().string();
}

bool executable(const std::string& path) {
  return !path.empty() && ::access(path.c_str(), X_OK) == 0 && !fs::is_directory(path);
}

std::string find_program(const std::string& name, const std::vector<std::string>& candidates) {
  for (const auto& c : candidates) {
    if (executable(c)) return fs::absolute(c).lexically_normal().string();
  }
  const char* path = std::getenv("PATH");
  std::stringstream ss(path != nullptr ? path
                                       : "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin");
  std::string dir;
  while (std::getline(ss, dir, ':')) {
    if (dir.empty()) continue;
    const std::string p = (fs::path(dir) / name).string();
    if (executable(p)) return fs::absolute(p).lexically_normal().string();
  }
  return "";
}

Result<std::string> random_hex(size_t bytes) {
  std::ifstream in("/dev/urandom", std::ios::binary);
  std::string raw(bytes, '\0');
  if (!in.read(raw.data(), static_cast<std::streamsize>(bytes))) {
    return Status::error(Errc::io_error, "cannot read /dev/urandom");
  }
  static const char* digits = "0123456789abcdef";
  std::string out;
  for (unsigned char ch : raw) {
    out += digits[ch >> 4];
    out += digits[ch & 15];
  }
  return out;
}

std::string tail_file(const std::string& path, size_t lines) {
  std::ifstream in(path);
  std::vector<std::string> all;
  std::string line;
  while (std::getline(in, line)) all.push_back(line);
  std::string out;
  for (size_t i = all.size() > lines ? all.size() - lines : 0; i < all.size(); ++i)
    out += "  " + all[i] + "\n";
  return out;
}

}  // namespace duplex::cli
