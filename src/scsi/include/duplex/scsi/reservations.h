#pragma once
// SCSI-3 persistent reservations (SPC-4 §5.13, PERSISTENT RESERVE IN/OUT), for one logical unit.
// Registrations belong to I_T nexuses (initiator port + relative target port), so a registration
// made through one node's port is distinct from the same initiator's through another node. On a
// mirrored volume one state serves both nodes (LogicalUnit, shared_reservations.cpp): every change
// runs on the mirror's owner. APTPL state is serialized through `persist`.
//
// The state machine of a reservation:
//   none --RESERVE(type) by a registrant--> held(holder, type)
//   held --RELEASE by holder / CLEAR / holder unregisters--> none
//   held --PREEMPT[AND ABORT] by a registrant--> held(preemptor, new type)
//   held --REGISTER AND MOVE by holder--> held(other nexus, type)
#include <cstdint>
#include <functional>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "duplex/scsi/logical_unit.h"

namespace duplex::scsi {

enum class PrType : std::uint8_t {
  write_exclusive = 1,
  exclusive_access = 3,
  write_exclusive_registrants_only = 5,
  exclusive_access_registrants_only = 6,
  write_exclusive_all_registrants = 7,
  exclusive_access_all_registrants = 8,
};

struct PrRegistration {
  Nexus nexus;
  std::uint64_t key = 0;
};

struct PrState {
  std::uint32_t generation = 0;
  std::vector<PrRegistration> registrations;
  std::optional<Nexus> holder;  // the reservation holder (any registrant for the all-registrants types)
  PrType type = PrType::write_exclusive;
  bool aptpl = false;

  std::vector<std::uint8_t> serialize() const;
  static std::optional<PrState> deserialize(std::span<const std::uint8_t> b);
};

class PersistentReservations {
 public:
  // Events for the logical unit: unit attentions for other nexuses, tasks to abort.
  struct Hooks {
    std::function<void(const Nexus&, Asc)> unit_attention;
    std::function<void(const Nexus&)> abort_tasks_of;  // PREEMPT AND ABORT
    // Called after every change, before the command succeeds; an error undoes the change and
    // fails the command (HARDWARE ERROR, INTERNAL TARGET FAILURE).
    std::function<Status(const PrState&)> persist;
  };

  explicit PersistentReservations(Hooks hooks) : hooks_(std::move(hooks)) {}

  // Whether `opcode` (with its CDB) from `nexus` is refused by the current reservation.
  bool conflicts(const Nexus& nexus, std::span<const std::uint8_t> cdb) const;

  CommandResult in(const Nexus& nexus, std::span<const std::uint8_t> cdb, std::span<std::byte> data_in) const;
  CommandResult out(const Nexus& nexus, std::span<const std::uint8_t> cdb,
                    std::span<const std::byte> data_out);

  const PrState& state() const { return st_; }
  void restore(PrState s) { st_ = std::move(s); }
  // LOGICAL UNIT RESET keeps persistent reservations (SPC-4 §5.13.1); nothing to do. Power loss
  // keeps them only with APTPL: restore() from what persist() saved.

 private:
  const PrRegistration* find(const Nexus& n) const;
  bool is_holder(const Nexus& n) const;
  bool all_registrants() const;
  void remove_registrations_if(const std::function<bool(const PrRegistration&)>& pred, const Nexus& by,
                               Asc ua);
  void changed();
  CommandResult apply_out(const Nexus& nexus, std::span<const std::uint8_t> cdb,
                          std::span<const std::byte> data_out);
  bool persist_pending_ = false;

  Hooks hooks_;
  PrState st_;
};

}  // namespace duplex::scsi
