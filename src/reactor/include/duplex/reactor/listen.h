#pragma once
// Listening sockets shared by the front-ends (NBD, iSCSI): "host:port" / "[v6]:port" parsing with
// one-line errors, a bound acceptor, and the printable form of an endpoint.
#include <memory>
#include <string>

#include <asio/ip/tcp.hpp>

#include "duplex/base/status.h"

namespace duplex {

Result<asio::ip::tcp::endpoint> parse_endpoint(const std::string& s);
// Opens, binds (SO_REUSEADDR) and listens on `address`; `what` names the service in the error
// ("cannot listen on 127.0.0.1:3260 (iSCSI): Address already in use").
Result<std::unique_ptr<asio::ip::tcp::acceptor>> listen_on(asio::io_context& ctx, const std::string& address,
                                                           const char* what);
// "127.0.0.1:3260", "[::1]:3260".
std::string endpoint_string(const asio::ip::tcp::endpoint& ep);

}  // namespace duplex
