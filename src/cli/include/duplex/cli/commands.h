#pragma once
// duplexctl's API commands: one subcommand per REST operation (docs/cli.md). Parsing only records
// what to do; main() runs the chosen Action after the whole command line parsed, so a usage error
// (exit 2) never sends a request.
#include <functional>

#include <CLI/CLI.hpp>

#include "duplex/base/status.h"
#include "duplex/cli/endpoints.h"

namespace duplex::cli {

using Action = std::function<Status()>;

// Adds status, node, pool, volume, snapshot, export, acl and metrics to `app`. The chosen command
// stores itself in `action`; `g` is read when it runs.
void add_api_commands(CLI::App& app, const Globals& g, Action& action);

// Prints the API's answer: the JSON as received with --json, else the human rendering.
void print_json_or(const Globals& g, const std::string& raw, const std::string& human);

}  // namespace duplex::cli
