#include "duplex/cli/endpoints.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <sstream>

#include "duplex/cli/json_get.h"

namespace duplex::cli {

Result<std::string> read_text_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return Status::error(Errc::not_found, "cannot read {}: {}", path, std::strerror(errno));
  std::ostringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

Result<nlohmann::json> read_json_file(const std::string& path) {
  auto text = read_text_file(path);
  if (!text) return text.status();
  auto j = nlohmann::json::parse(*text, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded()) return Status::error(Errc::invalid, "{} is not valid JSON", path);
  return j;
}

Status write_file_atomic(const std::string& path, const std::string& text, unsigned mode) {
  const std::string tmp = path + ".tmp";
  int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, mode);
  if (fd < 0) return Status::error(Errc::io_error, "cannot write {}: {}", tmp, std::strerror(errno));
  ::fchmod(fd, mode);  // O_CREAT's mode only applies to a new file, and the umask cuts it
  const char* p = text.data();
  size_t left = text.size();
  while (left > 0) {
    ssize_t n = ::write(fd, p, left);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) {
      Status s = Status::error(Errc::io_error, "cannot write {}: {}", tmp, std::strerror(errno));
      ::close(fd);
      return s;
    }
    p += n;
    left -= static_cast<size_t>(n);
  }
  ::close(fd);
  if (::rename(tmp.c_str(), path.c_str()) != 0) {
    return Status::error(Errc::io_error, "cannot rename {} to {}: {}", tmp, path, std::strerror(errno));
  }
  return Status::ok();
}

namespace {

std::string env(const char* name) {
  const char* v = std::getenv(name);
  return v != nullptr ? std::string(v) : std::string();
}

std::string trim(std::string s) {
  while (!s.empty() && (s.back() == '\n' || s.back() == '\r' || s.back() == ' ')) s.pop_back();
  return s;
}

}  // namespace

Result<Endpoint> resolve_endpoint(const Globals& g) {
  Endpoint ep;
  std::string dir = g.dir.empty() ? env("DUPLEX_DIR") : g.dir;
  if (!dir.empty()) {
    const std::string path = dir + "/endpoints.json";
    auto j = read_json_file(path);
    if (!j) {
      return Status::error(Errc::not_found, "{} (is the demo in {} running? duplexctl demo up --dir {})",
                           j.status().message(), dir, dir);
    }
    for (const auto& n : list(*j, "nodes")) {
      std::string api = str(n, "api");
      if (!api.empty()) ep.apis.push_back(api);
    }
    ep.token = str(*j, "token");
    if (ep.apis.empty()) return Status::error(Errc::invalid, "{}: no node lists an \"api\" URL", path);
  }
  if (!g.api.empty()) {
    ep.apis = {g.api};
  } else if (ep.apis.empty()) {
    std::string api = env("DUPLEX_API");
    ep.apis = {api.empty() ? std::string(kDefaultApi) : api};
  }
  if (!g.token.empty()) {
    ep.token = g.token;
  } else if (!g.token_file.empty()) {
    auto t = read_text_file(g.token_file);
    if (!t) return Status::error(Errc::invalid, "--token-file: {}", t.status().message());
    ep.token = trim(*t);
  } else if (ep.token.empty()) {
    ep.token = env("DUPLEX_TOKEN");
  }
  return ep;
}

}  // namespace duplex::cli
