#include "duplex/cli/progress.h"

#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <thread>

#include "duplex/cli/json_get.h"
#include "duplex/cli/units.h"

namespace duplex::cli {

volatile std::sig_atomic_t g_interrupted = 0;

ProgressLine::ProgressLine() : tty_(::isatty(STDERR_FILENO) == 1) {}
ProgressLine::~ProgressLine() { finish(); }

void ProgressLine::show(const std::string& text, const std::string& key) {
  if (tty_) {
    std::fprintf(stderr, "\r\033[K%s", text.c_str());
    open_ = true;
  } else if (key != last_key_) {
    std::fprintf(stderr, "%s\n", text.c_str());
  }
  std::fflush(stderr);
  last_key_ = key;
}

std::string progress_bar(double fraction, int width) {
  const double f = std::clamp(fraction, 0.0, 1.0);
  const int filled = static_cast<int>(f * width);
  return fmt::format("[{}{}] {:.0f}%", std::string(static_cast<std::size_t>(filled), '#'),
                     std::string(static_cast<std::size_t>(width - filled), '.'), f * 100.0);
}

void ProgressLine::finish() {
  if (tty_ && open_) std::fputc('\n', stderr);
  open_ = false;
}

bool volume_applied(const json& v, std::uint64_t min_size, std::string& state) {
  std::string st = str(v, "state", "?");
  double progress = 1.0;
  bool creating = false;
  for (const auto& r : list(v, "replicas")) {
    const std::string rs = str(r, "state");
    if (rs == "creating") creating = true;
    if (rs == "resyncing") progress = std::min(progress, num(r, "resync_progress", 0.0));
  }
  // A grow is applied once every replica serves the new size: a mirrored volume's replicas
  // commit it together (docs/mirror.md), and one may say what it waits for.
  bool grown = u64(v, "size") >= min_size;
  std::string waits;
  for (const auto& r : list(v, "replicas")) {
    if (min_size == 0 || !r.contains("size") || u64(r, "size") >= min_size) continue;
    grown = false;
    if (waits.empty() && !str(r, "grow").empty())
      waits = fmt::format(" ({}: {})", str(r, "node"), str(r, "grow"));
  }
  state = st;
  if (creating && st == "ready") state = "replicas being created";
  if (progress < 1.0) state += fmt::format(", resync {:.0f}%", progress * 100.0);
  if (!grown) state += ", growing" + waits;
  return st == "ready" && !creating && grown;
}

Result<json> wait_for(const ApiClient& api, const WaitFor& w, double timeout_s) {
  using Clock = std::chrono::steady_clock;
  const auto start = Clock::now();
  ProgressLine line;
  std::string state = "waiting";
  for (;;) {
    if (g_interrupted != 0) return Status::error(Errc::shutdown, "interrupted while waiting for {}", w.what);
    auto r = api.request("GET", w.path);
    if (!r) return r.status();
    const double elapsed = std::chrono::duration<double>(Clock::now() - start).count();
    if (w.until_gone && r->status == 404) {
      line.show(fmt::format("{}: gone ({})", w.what, format_seconds(elapsed)), "gone");
      return json(nullptr);
    }
    if (r->status < 200 || r->status > 299) {
      if (w.until_gone || r->status != 404) return api_error(*r);
      state = "not visible yet";  // a create the answering node has not seen yet
    } else if (w.until_gone) {
      state = str(r->body, "state", "deleting");
    } else if (w.done(r->body, state)) {
      line.show(fmt::format("{}: {} ({})", w.what, state, format_seconds(elapsed)), state);
      return r->body;
    }
    line.show(fmt::format("{}: {} ({})", w.what, state, format_seconds(elapsed)), state);
    if (elapsed >= timeout_s) {
      return Status::error(Errc::busy, "timed out after {} waiting for {} (state: {}); it may still complete",
                           format_seconds(elapsed), w.what, state);
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(250));
  }
}

}  // namespace duplex::cli
