#pragma once
// Real etcd members for tests (Debian's etcd-server): N members on 127.0.0.1 with ports the
// kernel picked, data in a temporary directory, every process stopped by its pid at the end.
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <string>
#include <thread>
#include <vector>

#include <httplib.h>

namespace duplex::test {

class EtcdCluster {
 public:
  explicit EtcdCluster(int members) {
    char tmpl[] = "/tmp/duplex-etcd-XXXXXX";
    dir_ = ::mkdtemp(tmpl);
    for (int i = 0; i < members; ++i) {
      Member m;
      m.name = "m" + std::to_string(i);
      m.client_port = free_port();
      m.peer_port = free_port();
      members_.push_back(m);
    }
    for (int i = 0; i < members; ++i) start(i);
    for (int i = 0; i < members; ++i) wait_healthy(i);
  }
  ~EtcdCluster() {
    for (int i = 0; i < size(); ++i) kill(i);
    std::error_code ec;
    std::filesystem::remove_all(dir_, ec);
  }
  EtcdCluster(const EtcdCluster&) = delete;
  EtcdCluster& operator=(const EtcdCluster&) = delete;

  int size() const { return static_cast<int>(members_.size()); }
  std::string endpoint(int i) const { return "http://127.0.0.1:" + std::to_string(members_[i].client_port); }
  std::vector<std::string> endpoints() const {
    std::vector<std::string> v;
    for (int i = 0; i < size(); ++i) v.push_back(endpoint(i));
    return v;
  }

  void start(int i) {
    Member& m = members_[static_cast<std::size_t>(i)];
    std::string initial;
    for (const auto& o : members_) {
      if (!initial.empty()) initial += ",";
      initial += o.name + "=http://127.0.0.1:" + std::to_string(o.peer_port);
    }
    const std::string client = "http://127.0.0.1:" + std::to_string(m.client_port);
    const std::string peer = "http://127.0.0.1:" + std::to_string(m.peer_port);
    const std::string data = dir_ + "/" + m.name;
    const std::string log = dir_ + "/" + m.name + ".log";
    const pid_t pid = ::fork();
    if (pid == 0) {
      const int fd = ::open(log.c_str(), O_WRONLY | O_CREAT | O_APPEND, 0644);
      ::dup2(fd, 1);
      ::dup2(fd, 2);
      ::execlp("etcd", "etcd", "--name", m.name.c_str(), "--data-dir", data.c_str(), "--listen-client-urls",
               client.c_str(), "--advertise-client-urls", client.c_str(), "--listen-peer-urls", peer.c_str(),
               "--initial-advertise-peer-urls", peer.c_str(), "--initial-cluster", initial.c_str(),
               "--initial-cluster-state", "new", "--heartbeat-interval", "50", "--election-timeout", "500",
               static_cast<char*>(nullptr));
      ::_exit(127);
    }
    m.pid = pid;
  }

  // SIGKILL, as a crash or a lost site would look.
  void kill(int i) {
    Member& m = members_[static_cast<std::size_t>(i)];
    if (m.pid <= 0) return;
    ::kill(m.pid, SIGKILL);
    ::waitpid(m.pid, nullptr, 0);
    m.pid = -1;
  }

  // SIGSTOP: the member hangs (connections stay open, nothing answers), like a frozen host.
  void freeze(int i) { ::kill(members_[static_cast<std::size_t>(i)].pid, SIGSTOP); }

  // The index of the member that is raft leader now, or -1 if none answers with one. Tests that
  // must not trigger an election (killing "any one member") kill a follower.
  int leader() const {
    for (int i = 0; i < size(); ++i) {
      if (members_[static_cast<std::size_t>(i)].pid <= 0) continue;
      httplib::Client c(endpoint(i));
      c.set_connection_timeout(0, 200000);
      c.set_read_timeout(1, 0);
      auto r = c.Post("/v3/maintenance/status", "{}", "application/json");
      if (!r || r->status != 200) continue;
      const std::string me = field(r->body, "member_id"), lead = field(r->body, "leader");
      if (!me.empty() && me == lead) return i;
    }
    return -1;
  }

  bool wait_healthy(int i, std::chrono::seconds limit = std::chrono::seconds(20)) {
    const auto deadline = std::chrono::steady_clock::now() + limit;
    while (std::chrono::steady_clock::now() < deadline) {
      httplib::Client c(endpoint(i));
      c.set_connection_timeout(0, 200000);
      c.set_read_timeout(1, 0);
      auto r = c.Get("/health");
      if (r && r->status == 200 && r->body.find("true") != std::string::npos) return true;
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
    }
    return false;
  }

 private:
  struct Member {
    std::string name;
    int client_port = 0, peer_port = 0;
    pid_t pid = -1;
  };
  // A string field of the JSON gateway's answer (uint64 ids come as strings).
  static std::string field(const std::string& body, const std::string& name) {
    const std::string key = "\"" + name + "\":\"";
    const auto at = body.find(key);
    if (at == std::string::npos) return {};
    const auto end = body.find('"', at + key.size());
    return end == std::string::npos ? std::string{} : body.substr(at + key.size(), end - at - key.size());
  }
  static int free_port() {
    const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(0x7f000001);
    ::bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof a);
    socklen_t len = sizeof a;
    ::getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len);
    ::close(fd);
    return ntohs(a.sin_port);
  }
  std::string dir_;
  std::vector<Member> members_;
};

}  // namespace duplex::test
