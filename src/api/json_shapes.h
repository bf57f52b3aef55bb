#pragma once
// The JSON shapes of docs/api.md ("Shapes"), built from the backend's views.
#include <nlohmann/json.hpp>

#include "duplex/api/backend.h"

namespace duplex::api {

nlohmann::json to_json(const NodeView& n);
nlohmann::json to_json(const cluster::PoolRecord& p);
nlohmann::json to_json(const VolumeView& v);
nlohmann::json to_json(const SnapshotView& s);
nlohmann::json to_json(const ExportView& e);
nlohmann::json to_json(const cluster::InSyncRecord& s);
nlohmann::json to_json(const cluster::Decision& d);
// The replica state shown for a replica: its report's, or "creating"/"unknown" before one exists.
std::string replica_state(const ReplicaView& r, cluster::VolumeState volume_state);

// Serialises without throwing on invalid UTF-8 from stored or echoed strings (replaced by U+FFFD).
std::string dump(const nlohmann::json& j);

}  // namespace duplex::api
