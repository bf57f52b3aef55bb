// The Prometheus text writer, read back line by line with a strict parser of the 0.0.4 format.
#include <gtest/gtest.h>

#include <chrono>
#include <map>
#include <string>

#include "duplex/api/metrics.h"

using namespace duplex;
using namespace std::chrono_literals;

namespace {

struct Sample {
  std::string name;
  std::map<std::string, std::string> labels;
  std::string value;
};

struct Parsed {
  std::map<std::string, std::string> types;  // family -> type
  std::map<std::string, std::string> help;
  std::vector<Sample> samples;
  std::string error;  // "" when every line parsed
};

bool name_char(char c, bool first) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_' || c == ':' ||
         (!first && c >= '0' && c <= '9');
}

// Parses the exposition format; fails on anything the format does not allow.
Parsed parse(const std::string& text) {
  Parsed p;
  std::size_t pos = 0;
  int lineno = 0;
  while (pos < text.size()) {
    const auto nl = text.find('\n', pos);
    if (nl == std::string::npos) {
      p.error = "last line without newline";
      return p;
    }
    const std::string line = text.substr(pos, nl - pos);
    pos = nl + 1;
    ++lineno;
    auto fail = [&](const std::string& why) {
      p.error = "line " + std::to_string(lineno) + ": " + why + ": " + line;
    };
    if (line.rfind("# HELP ", 0) == 0 || line.rfind("# TYPE ", 0) == 0) {
      const auto rest = line.substr(7);
      const auto sp = rest.find(' ');
      if (sp == std::string::npos) return fail("no text"), p;
      (line[2] == 'H' ? p.help : p.types)[rest.substr(0, sp)] = rest.substr(sp + 1);
      continue;
    }
    Sample s;
    std::size_t i = 0;
    while (i < line.size() && name_char(line[i], i == 0)) s.name += line[i++];
    if (s.name.empty()) return fail("no metric name"), p;
    if (i < line.size() && line[i] == '{') {
      ++i;
      while (i < line.size() && line[i] != '}') {
        std::string k;
        while (i < line.size() && name_char(line[i], k.empty())) k += line[i++];
        if (k.empty() || i + 1 >= line.size() || line[i] != '=' || line[i + 1] != '"')
          return fail("bad label"), p;
        i += 2;
        std::string v;
        while (i < line.size() && line[i] != '"') {
          if (line[i] == '\\') {
            if (i + 1 >= line.size()) return fail("dangling escape"), p;
            const char e = line[i + 1];
            if (e == 'n')
              v += '\n';
            else if (e == '\\' || e == '"')
              v += e;
            else
              return fail("bad escape"), p;
            i += 2;
          } else {
            v += line[i++];
          }
        }
        if (i >= line.size()) return fail("unterminated label value"), p;
        ++i;
        s.labels[k] = v;
        if (i < line.size() && line[i] == ',') ++i;
      }
      if (i >= line.size()) return fail("unterminated labels"), p;
      ++i;
    }
    if (i >= line.size() || line[i] != ' ') return fail("no value"), p;
    s.value = line.substr(i + 1);
    if (s.value.empty() || s.value.find(' ') != std::string::npos) return fail("bad value"), p;
    if (s.value != "+Inf" && s.value != "-Inf" && s.value != "NaN") {
      std::size_t used = 0;
      try {
        (void)std::stod(s.value, &used);
      } catch (...) {
        used = 0;
      }
      if (used != s.value.size()) return fail("value not a number"), p;
    }
    p.samples.push_back(std::move(s));
  }
  return p;
}

const Sample* find(const Parsed& p, const std::string& name,
                   const std::map<std::string, std::string>& labels) {
  for (const auto& s : p.samples) {
    if (s.name == name && s.labels == labels) return &s;
  }
  return nullptr;
}

}  // namespace

TEST(Metrics, EscapesLabelValuesAndHelp) {
  EXPECT_EQ(api::escape_label_value("a\\b\"c\nd"), "a\\\\b\\\"c\\nd");
  EXPECT_EQ(api::escape_help("x\\y\nz\""), "x\\\\y\\nz\"");
  api::MetricsWriter w;
  w.family("duplex_node_up", api::MetricsWriter::Type::gauge, "1 while\nthe node runs");
  w.sample("duplex_node_up", {{"node", "n\"1\\\n"}, {"site", "a"}}, std::uint64_t{1});
  w.family("duplex_nbd_connections", api::MetricsWriter::Type::gauge, "Open NBD connections.");
  w.sample("duplex_nbd_connections", {}, 3.5);
  const Parsed p = parse(w.text());
  ASSERT_EQ(p.error, "");
  EXPECT_EQ(p.types.at("duplex_node_up"), "gauge");
  EXPECT_EQ(p.help.at("duplex_node_up"), "1 while\\nthe node runs");
  const Sample* s = find(p, "duplex_node_up", {{"node", "n\"1\\\n"}, {"site", "a"}});
  ASSERT_NE(s, nullptr) << w.text();
  EXPECT_EQ(s->value, "1");
  ASSERT_NE(find(p, "duplex_nbd_connections", {}), nullptr);
  EXPECT_EQ(find(p, "duplex_nbd_connections", {})->value, "3.5");
  EXPECT_EQ(api::format_value(1.0 / 0.0), "+Inf");
  EXPECT_EQ(api::format_value(0.00005), "5e-05");
}

TEST(Metrics, VolumeStatsRenderAsDocumented) {
  volume::VolumeStats a;
  a.record(volume::IoOp::read, 4096, true, 40us);
  a.record(volume::IoOp::read, 4096, true, 3ms);
  a.record(volume::IoOp::read, 4096, false, 20s);
  a.record(volume::IoOp::write, 8192, true, 100us);
  a.record(volume::IoOp::trim, 1 << 20, true, 1ms);
  volume::VolumeStats b;
  b.record(volume::IoOp::flush, 0, true, 2ms);
  api::MetricsWriter w;
  api::render_volume_stats(w, {{"demo", a.snapshot()}, {"we\"ird", b.snapshot()}});
  const Parsed p = parse(w.text());
  ASSERT_EQ(p.error, "") << w.text();

  EXPECT_EQ(p.types.at("duplex_volume_ops_total"), "counter");
  EXPECT_EQ(p.types.at("duplex_volume_bytes_total"), "counter");
  EXPECT_EQ(p.types.at("duplex_volume_errors_total"), "counter");
  EXPECT_EQ(p.types.at("duplex_volume_latency_seconds"), "histogram");
  EXPECT_EQ(find(p, "duplex_volume_ops_total", {{"volume", "demo"}, {"op", "read"}})->value, "3");
  EXPECT_EQ(find(p, "duplex_volume_ops_total", {{"volume", "demo"}, {"op", "trim"}})->value, "1");
  EXPECT_EQ(find(p, "duplex_volume_ops_total", {{"volume", "we\"ird"}, {"op", "flush"}})->value, "1");
  EXPECT_EQ(find(p, "duplex_volume_bytes_total", {{"volume", "demo"}, {"op", "read"}})->value, "8192");
  EXPECT_EQ(find(p, "duplex_volume_bytes_total", {{"volume", "demo"}, {"op", "write"}})->value, "8192");
  EXPECT_EQ(find(p, "duplex_volume_bytes_total", {{"volume", "demo"}, {"op", "trim"}}), nullptr);
  EXPECT_EQ(find(p, "duplex_volume_errors_total", {{"volume", "demo"}, {"op", "read"}})->value, "1");
  EXPECT_EQ(find(p, "duplex_volume_errors_total", {{"volume", "demo"}, {"op", "write"}})->value, "0");

  // Histogram: cumulative buckets, le from 5e-05 to 10 then +Inf, +Inf == _count.
  auto bucket = [&](const std::string& vol, const std::string& op, const std::string& le) {
    const Sample* s =
        find(p, "duplex_volume_latency_seconds_bucket", {{"volume", vol}, {"op", op}, {"le", le}});
    return s ? std::stoull(s->value) : ~0ULL;
  };
  EXPECT_EQ(bucket("demo", "read", "5e-05"), 1u);
  EXPECT_EQ(bucket("demo", "read", "0.0025"), 1u);
  EXPECT_EQ(bucket("demo", "read", "0.005"), 2u);
  EXPECT_EQ(bucket("demo", "read", "10"), 2u);
  EXPECT_EQ(bucket("demo", "read", "+Inf"), 3u);
  EXPECT_EQ(find(p, "duplex_volume_latency_seconds_count", {{"volume", "demo"}, {"op", "read"}})->value, "3");
  EXPECT_NEAR(
      std::stod(find(p, "duplex_volume_latency_seconds_sum", {{"volume", "demo"}, {"op", "read"}})->value),
      20.00304, 1e-9);
  EXPECT_EQ(bucket("we\"ird", "flush", "0.0025"), 1u);
  EXPECT_EQ(bucket("we\"ird", "flush", "0.001"), 0u);
  // Every series' buckets never decrease, and there are 17 bounds + Inf per series.
  std::map<std::string, std::vector<unsigned long long>> series;
  for (const auto& s : p.samples) {
    if (s.name != "duplex_volume_latency_seconds_bucket") continue;
    series[s.labels.at("volume") + "/" + s.labels.at("op")].push_back(std::stoull(s.value));
  }
  EXPECT_EQ(series.size(), 6u);  // two volumes x read, write, flush
  for (const auto& [k, v] : series) {
    EXPECT_EQ(v.size(), volume::kLatencyBuckets) << k;
    EXPECT_TRUE(std::is_sorted(v.begin(), v.end())) << k;
  }
  // No trim or write_zeroes histogram.
  EXPECT_EQ(bucket("demo", "trim", "+Inf"), ~0ULL);
}
