#pragma once
// Human output of duplexctl: aligned tables and "key: value" blocks built from the API's JSON shapes
// (docs/api.md, "Shapes"). Scripts use --json instead, which bypasses all of this.
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

namespace duplex::cli {

class Table {
 public:
  explicit Table(std::vector<std::string> header) : header_(std::move(header)) {}
  void add(std::vector<std::string> row) { rows_.push_back(std::move(row)); }
  // Columns padded to their widest cell, two spaces apart; the last column is not padded.
  std::string str() const;

 private:
  std::vector<std::string> header_;
  std::vector<std::vector<std::string>> rows_;
};

std::string render_status(const nlohmann::json& status);
std::string render_nodes(const nlohmann::json& nodes);
std::string render_node(const nlohmann::json& node);
std::string render_pools(const nlohmann::json& pools);
std::string render_volumes(const nlohmann::json& volumes);
std::string render_volume(const nlohmann::json& volume);
std::string render_snapshots(const nlohmann::json& snapshots);
std::string render_export(const nlohmann::json& exp);
std::string render_acl(const nlohmann::json& exp);

// "2/2 in-sync": replicas in sync over replicas wanted.
std::string replica_summary(const nlohmann::json& volume);
// The node that orders the volume's writes: "owner" when the API gives one, else the first
// in-sync replica on a live node, else the first replica.
std::string volume_owner(const nlohmann::json& volume);

}  // namespace duplex::cli
