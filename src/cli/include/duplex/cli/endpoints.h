#pragma once
// Where duplexctl finds the API and its token: the command line, the environment, or a demo
// directory's endpoints.json (docs/cli.md, "Choosing the node").
#include <string>

#include <nlohmann/json.hpp>

#include "duplex/base/status.h"
#include "duplex/cli/client.h"

namespace duplex::cli {

struct Globals {
  std::string api;         // --api (empty: not given)
  std::string token;       // --token
  std::string token_file;  // --token-file
  std::string dir;         // --dir
  bool json = false;       // --json: print the API's JSON unchanged
  double timeout = 30;     // --timeout seconds: how long a change may take to apply
};

inline constexpr const char* kDefaultApi = "http://127.0.0.1:7480";

// Precedence: --api / --token / --token-file on the command line, then --dir (or DUPLEX_DIR)'s
// endpoints.json, then DUPLEX_API / DUPLEX_TOKEN, then the default URL and no token.
Result<Endpoint> resolve_endpoint(const Globals& g);

Result<nlohmann::json> read_json_file(const std::string& path);
// Writes through a temporary file and a rename, so a reader never sees half a file.
Status write_file_atomic(const std::string& path, const std::string& text, unsigned mode = 0644);
Result<std::string> read_text_file(const std::string& path);

}  // namespace duplex::cli
