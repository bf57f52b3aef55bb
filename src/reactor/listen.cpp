#include "duplex/reactor/listen.h"

#include <cstdlib>

#include <fmt/format.h>

namespace duplex {

Result<asio::ip::tcp::endpoint> parse_endpoint(const std::string& s) {
  std::string host, port;
  if (!s.empty() && s[0] == '[') {
    const auto close = s.find(']');
    if (close == std::string::npos || close + 1 >= s.size() || s[close + 1] != ':')
      return Status::error(Errc::invalid, "listen address '{}': expected [ipv6]:port", s);
    host = s.substr(1, close - 1);
    port = s.substr(close + 2);
  } else {
    const auto colon = s.rfind(':');
    if (colon == std::string::npos)
      return Status::error(Errc::invalid, "listen address '{}': expected host:port", s);
    host = s.substr(0, colon);
    port = s.substr(colon + 1);
  }
  std::error_code ec;
  const auto addr = asio::ip::make_address(host, ec);
  if (ec) return Status::error(Errc::invalid, "listen address '{}': '{}' is not an IP address", s, host);
  char* end = nullptr;
  const unsigned long p = std::strtoul(port.c_str(), &end, 10);
  if (port.empty() || *end || p > 65535)
    return Status::error(Errc::invalid, "listen address '{}': bad port", s);
  return asio::ip::tcp::endpoint(addr, static_cast<unsigned short>(p));
}

Result<std::unique_ptr<asio::ip::tcp::acceptor>> listen_on(asio::io_context& ctx, const std::string& address,
                                                           const char* what) {
  auto ep = parse_endpoint(address);
  if (!ep) return ep.status();
  auto a = std::make_unique<asio::ip::tcp::acceptor>(ctx);
  std::error_code ec;
  a->open(ep->protocol(), ec);
  if (!ec) a->set_option(asio::ip::tcp::acceptor::reuse_address(true), ec);
  if (!ec) a->bind(*ep, ec);
  if (!ec) a->listen(asio::socket_base::max_listen_connections, ec);
  if (ec) return Status::error(Errc::busy, "cannot listen on {} ({}): {}", address, what, ec.message());
  return a;
}

std::string endpoint_string(const asio::ip::tcp::endpoint& ep) {
  return ep.address().is_v6() ? fmt::format("[{}]:{}", ep.address().to_string(), ep.port())
                              : fmt::format("{}:{}", ep.address().to_string(), ep.port());
}

}  // namespace duplex
