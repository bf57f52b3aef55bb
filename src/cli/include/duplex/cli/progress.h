#pragma once
// Waiting for a change the API accepted (202: recorded in etcd, still being applied by the nodes).
//
//   request ──200/201──▶ done
//      │
//      └──202──▶ poll GET every 250 ms ──ready──▶ done
//                    │  ▲     │
//                    └──┘     └──deadline (--timeout)──▶ error "timed out ... (state so far)"
//
// While polling, stderr shows one progress line: rewritten in place on a terminal
// ("volume demo: creating, resync 40%, 3.2s"), one plain line per change of state otherwise.
#include <csignal>
#include <functional>
#include <string>

#include <nlohmann/json.hpp>

#include "duplex/base/status.h"
#include "duplex/cli/client.h"

namespace duplex::cli {

// Set by a SIGINT/SIGTERM handler (demo up installs one); every wait loop gives up when it is set.
extern volatile std::sig_atomic_t g_interrupted;

class ProgressLine {
 public:
  ProgressLine();
  ~ProgressLine();
  ProgressLine(const ProgressLine&) = delete;
  ProgressLine& operator=(const ProgressLine&) = delete;
  // `text` is the whole line; `key` what must change for a new plain line when stderr is not a
  // terminal (the state, not the elapsed time).
  void show(const std::string& text, const std::string& key);
  void finish();  // ends the line on a terminal

 private:
  bool tty_;
  bool open_ = false;
  std::string last_key_;
};

struct WaitFor {
  std::string what;         // "volume 'demo'", for messages
  std::string path;         // what to poll with GET
  bool until_gone = false;  // done when the GET answers 404 (deletes)
  // For !until_gone: is the polled resource done? Sets `state` to a short description.
  std::function<bool(const nlohmann::json&, std::string& state)> done;
};

// Polls until done or `timeout_s` seconds passed; returns the last answer (null JSON when gone).
Result<nlohmann::json> wait_for(const ApiClient& api, const WaitFor& w, double timeout_s);

// A fixed-width bar for a fraction done: "[#####...............] 25%" (clamped to 0..100%).
std::string progress_bar(double fraction, int width = 20);

// A volume is applied when it is "ready", no replica is still being created, and it has reached
// `min_size` (for a grow).
bool volume_applied(const nlohmann::json& v, std::uint64_t min_size, std::string& state);

}  // namespace duplex::cli
