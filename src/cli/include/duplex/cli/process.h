#pragma once
// The processes `duplexctl demo` starts and stops: detached (own session, so they outlive duplexctl
// and a Ctrl-C in its terminal), and identified by pid *and* exact argv, so a recycled pid is never
// signalled.
#include <sys/types.h>

#include <chrono>
#include <string>
#include <vector>

#include "duplex/base/status.h"

namespace duplex::cli {

struct Proc {
  std::string name;  // "etcd", "n1"
  pid_t pid = 0;
  std::vector<std::string> argv;
};

// fork + setsid + exec, stdin from /dev/null, stdout and stderr appended to `log_path`. Fails when
// the exec fails (reported back through a close-on-exec pipe).
Result<pid_t> spawn_detached(const std::vector<std::string>& argv, const std::string& log_path);

// Is `pid` a live process whose command line is exactly `argv`?
bool running_as(pid_t pid, const std::vector<std::string>& argv);
// Every live process whose command line is exactly `argv` (a node restarted by hand keeps its argv).
std::vector<pid_t> find_by_argv(const std::vector<std::string>& argv);
// For our own children: reaps `pid` if it exited; returns how it ended ("exit 2", "signal 9"), or "".
std::string reap(pid_t pid);

// SIGTERM to every live pid of `procs` (checked against its argv), wait up to `grace`, then SIGKILL.
// Returns one line per process saying how it ended.
std::vector<std::string> stop_processes(const std::vector<Proc>& procs, std::chrono::milliseconds grace);

// Can a listener bind address:port now (SO_REUSEADDR, as the daemons do)?
bool port_free(const std::string& address, unsigned port);
// Directory of the running executable (/proc/self/exe).
std::string self_dir();
bool executable(const std::string& path);
// First executable of `candidates`, else `name` found in PATH; "" when none.
std::string find_program(const std::string& name, const std::vector<std::string>& candidates);
// `bytes` random bytes from /dev/urandom as hex.
Result<std::string> random_hex(size_t bytes);
// The last `lines` lines of a file (for the reason a process did not start).
std::string tail_file(const std::string& path, size_t lines);

}  // namespace duplex::cli
