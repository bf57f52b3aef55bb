#include "duplex/mirror/hello.h"

#include <nlohmann/json.hpp>

namespace duplex::mirror {

std::string encode_hello(const Hello& h) {
  nlohmann::json j{{"volume", h.volume.to_string()},
                   {"size", h.size},
                   {"capacity", h.capacity},
                   {"node", h.node},
                   {"generation", h.generation},
                   {"state", h.state},
                   {"clean", h.clean},
                   {"catch_up", h.catch_up},
                   {"set_generation", h.set_generation},
                   {"shared_version", h.shared_version}};
  auto hot = nlohmann::json::array();
  for (const auto& [o, l] : h.hot) hot.push_back({o, l});
  j["hot"] = std::move(hot);
  auto div = nlohmann::json::array();
  for (const auto& [o, l] : h.diverged) div.push_back({o, l});
  j["diverged"] = std::move(div);
  j["diverged_all"] = h.diverged_all;
  // What the sender understands beyond the first version of the hello; unknown names are ignored.
  auto features = nlohmann::json::array();
  if (h.grows) features.push_back("grow");
  if (h.al_hints) features.push_back("al_hint");
  j["features"] = std::move(features);
  return j.dump();
}

Result<Hello> decode_hello(std::string_view text) {
  auto j = nlohmann::json::parse(text, nullptr, false);
  if (j.is_discarded() || !j.is_object()) return Status::error(Errc::invalid, "hello: not a JSON object");
  Hello h;
  try {
    auto u = Uuid::parse(j.at("volume").get<std::string>());
    if (!u) return Status::error(Errc::invalid, "hello: bad volume uuid");
    h.volume = *u;
    h.size = j.at("size").get<std::uint64_t>();
    if (h.size == 0) return Status::error(Errc::invalid, "hello: volume size 0");
    // An older peer does not say: its replica holds what it serves.
    h.capacity = j.value("capacity", h.size);
    if (h.capacity < h.size)
      return Status::error(Errc::invalid, "hello: capacity {} below the size {}", h.capacity, h.size);
    h.node = j.at("node").get<std::string>();
    h.generation = j.at("generation").get<std::uint64_t>();
    h.state = j.at("state").get<std::string>();
    h.clean = j.value("clean", false);
    h.catch_up = j.value("catch_up", false);
    h.set_generation = j.value("set_generation", std::uint64_t{0});
    h.shared_version = j.value("shared_version", std::uint64_t{0});
    for (const auto& r : j.value("hot", nlohmann::json::array())) {
      if (!r.is_array() || r.size() != 2) return Status::error(Errc::invalid, "hello: bad hot range");
      h.hot.emplace_back(r[0].get<std::uint64_t>(), r[1].get<std::uint64_t>());
    }
    for (const auto& r : j.value("diverged", nlohmann::json::array())) {
      if (!r.is_array() || r.size() != 2) return Status::error(Errc::invalid, "hello: bad diverged range");
      h.diverged.emplace_back(r[0].get<std::uint64_t>(), r[1].get<std::uint64_t>());
    }
    h.diverged_all = j.value("diverged_all", false);
    for (const auto& f : j.value("features", nlohmann::json::array())) {
      if (!f.is_string()) continue;
      const auto name = f.get<std::string>();
      h.grows = h.grows || name == "grow";
      h.al_hints = h.al_hints || name == "al_hint";
    }
  } catch (const nlohmann::json::exception& e) {
    return Status::error(Errc::invalid, "hello: {}", e.what());
  }
  return h;
}

}  // namespace duplex::mirror
