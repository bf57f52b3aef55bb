#include "duplex/scsi/reservations.h"

#include <algorithm>
#include <cstring>

#include "duplex/base/endian.h"
#include "opcodes.h"

namespace duplex::scsi {

namespace {
constexpr Asc kReservationsPreempted{0x2a, 0x03};
constexpr Asc kReservationsReleased{0x2a, 0x04};
constexpr Asc kRegistrationsPreempted{0x2a, 0x05};
constexpr Asc kInvalidReleaseOfPersistentReservation{0x26, 0x04};

enum : std::uint8_t {
  kReadKeys = 0,
  kReadReservation = 1,
  kReportCapabilities = 2,
  kReadFullStatus = 3,
};
enum : std::uint8_t {
  kRegister = 0,
  kReserve = 1,
  kRelease = 2,
  kClear = 3,
  kPreempt = 4,
  kPreemptAndAbort = 5,
  kRegisterAndIgnore = 6,
  kRegisterAndMove = 7,
};

bool valid_type(std::uint8_t t) { return t == 1 || t == 3 || t == 5 || t == 6 || t == 7 || t == 8; }

CommandResult conflict() {
  CommandResult r;
  r.status = ScsiStatus::reservation_conflict;
  return r;
}

void put_be32(std::vector<std::uint8_t>& d, std::uint32_t v) {
  for (int s = 24; s >= 0; s -= 8) d.push_back(static_cast<std::uint8_t>(v >> s));
}
void put_be64(std::vector<std::uint8_t>& d, std::uint64_t v) {
  for (int s = 56; s >= 0; s -= 8) d.push_back(static_cast<std::uint8_t>(v >> s));
}

// An iSCSI TransportID (SPC-4 §7.6.4.6), format 01b: "iqn...,i,0x<ISID>" NUL-padded to 4 bytes.
std::vector<std::uint8_t> transport_id(const Nexus& n) {
  std::string name = n.initiator_port;
  name.push_back('\0');
  while (name.size() % 4) name.push_back('\0');
  std::vector<std::uint8_t> t{0x45, 0x00, static_cast<std::uint8_t>(name.size() >> 8),
                              static_cast<std::uint8_t>(name.size())};
  t.insert(t.end(), name.begin(), name.end());
  return t;
}

// The initiator port name of a TransportID, or nothing if it is not a well-formed iSCSI one.
std::optional<std::string> parse_transport_id(std::span<const std::uint8_t> t) {
  if (t.size() < 4 || (t[0] & 0x0f) != 0x05) return std::nullopt;
  const std::size_t len = load_be<std::uint16_t>(&t[2]);
  if (len + 4 > t.size() || len < 1) return std::nullopt;
  std::string s(reinterpret_cast<const char*>(t.data() + 4), len);
  s.erase(std::find(s.begin(), s.end(), '\0'), s.end());
  if (s.empty()) return std::nullopt;
  if ((t[0] & 0xc0) == 0x40) return s;  // initiator port name with ISID
  return s;                             // format 00: device name only
}

// Commands a reservation never refuses (SPC-4 table 55-ish: information and PR management).
bool always_allowed(std::uint8_t op, std::span<const std::uint8_t> cdb) {
  switch (op) {
    case op::kInquiry:
    case op::kReportLuns:
    case op::kRequestSense:
    case op::kTestUnitReady:
    case op::kReadCapacity10:
    case op::kPersistentReserveIn:
    case op::kPersistentReserveOut: return true;
    case op::kServiceActionIn16: return (cdb[1] & 0x1f) == sa::kReadCapacity16;
    case op::kMaintenanceIn: return true;  // RTPG, RSOC
    default: return false;
  }
}

bool is_read_like(std::uint8_t op) {
  switch (op) {
    case op::kRead6:
    case op::kRead10:
    case op::kRead12:
    case op::kRead16:
    case op::kVerify10:
    case op::kVerify12:
    case op::kVerify16:
    case op::kModeSense6:
    case op::kModeSense10:
    case op::kServiceActionIn16:  // GET LBA STATUS
      return true;
    default: return false;
  }
}
}  // namespace

// ---------------------------------------------------------------- state

std::vector<std::uint8_t> PrState::serialize() const {
  std::vector<std::uint8_t> d{'D', 'P', 'R', '1'};
  put_be32(d, generation);
  d.push_back(aptpl ? 1 : 0);
  d.push_back(holder ? 1 : 0);
  d.push_back(static_cast<std::uint8_t>(type));
  auto put_nexus = [&](const Nexus& n) {
    put_be32(d, static_cast<std::uint32_t>(n.initiator_port.size()));
    d.insert(d.end(), n.initiator_port.begin(), n.initiator_port.end());
    d.push_back(static_cast<std::uint8_t>(n.relative_port >> 8));
    d.push_back(static_cast<std::uint8_t>(n.relative_port));
  };
  if (holder) put_nexus(*holder);
  put_be32(d, static_cast<std::uint32_t>(registrations.size()));
  for (const auto& r : registrations) {
    put_nexus(r.nexus);
    put_be64(d, r.key);
  }
  return d;
}

std::optional<PrState> PrState::deserialize(std::span<const std::uint8_t> b) {
  std::size_t pos = 0;
  auto need = [&](std::size_t n) { return b.size() - pos >= n; };
  if (!need(11) || std::memcmp(b.data(), "DPR1", 4) != 0) return std::nullopt;
  pos = 4;
  PrState s;
  s.generation = load_be<std::uint32_t>(&b[pos]);
  pos += 4;
  s.aptpl = b[pos++] != 0;
  const bool has_holder = b[pos++] != 0;
  if (!valid_type(b[pos])) return std::nullopt;
  s.type = static_cast<PrType>(b[pos++]);
  auto get_nexus = [&](Nexus& n) {
    if (!need(4)) return false;
    const std::uint32_t len = load_be<std::uint32_t>(&b[pos]);
    pos += 4;
    if (len > 4096 || !need(len + 2)) return false;
    n.initiator_port.assign(reinterpret_cast<const char*>(&b[pos]), len);
    pos += len;
    n.relative_port = load_be<std::uint16_t>(&b[pos]);
    pos += 2;
    return true;
  };
  if (has_holder) {
    Nexus h;
    if (!get_nexus(h)) return std::nullopt;
    s.holder = h;
  }
  if (!need(4)) return std::nullopt;
  const std::uint32_t n = load_be<std::uint32_t>(&b[pos]);
  pos += 4;
  if (n > 65536) return std::nullopt;
  for (std::uint32_t i = 0; i < n; ++i) {
    PrRegistration r;
    if (!get_nexus(r.nexus) || !need(8)) return std::nullopt;
    r.key = load_be<std::uint64_t>(&b[pos]);
    pos += 8;
    s.registrations.push_back(std::move(r));
  }
  if (pos != b.size()) return std::nullopt;
  return s;
}

const PrRegistration* PersistentReservations::find(const Nexus& n) const {
  for (const auto& r : st_.registrations)
    if (!(r.nexus < n) && !(n < r.nexus)) return &r;
  return nullptr;
}

bool PersistentReservations::all_registrants() const {
  return st_.type == PrType::write_exclusive_all_registrants ||
         st_.type == PrType::exclusive_access_all_registrants;
}

bool PersistentReservations::is_holder(const Nexus& n) const {
  if (!st_.holder) return false;
  if (all_registrants()) return find(n) != nullptr;
  return !(*st_.holder < n) && !(n < *st_.holder);
}

void PersistentReservations::changed() {
  ++st_.generation;
  persist_pending_ = true;
}

void PersistentReservations::remove_registrations_if(const std::function<bool(const PrRegistration&)>& pred,
                                                     const Nexus& by, Asc ua) {
  std::vector<Nexus> removed;
  std::erase_if(st_.registrations, [&](const PrRegistration& r) {
    if (!pred(r)) return false;
    removed.push_back(r.nexus);
    return true;
  });
  for (const auto& n : removed)
    if ((n < by || by < n) && hooks_.unit_attention) hooks_.unit_attention(n, ua);
}

bool PersistentReservations::conflicts(const Nexus& nexus, std::span<const std::uint8_t> cdb) const {
  if (!st_.holder || cdb.empty()) return false;
  const std::uint8_t op = cdb[0];
  if (always_allowed(op, cdb) || is_holder(nexus)) return false;
  const bool registered = find(nexus) != nullptr;
  switch (st_.type) {
    case PrType::write_exclusive: return !is_read_like(op);
    case PrType::exclusive_access: return true;
    case PrType::write_exclusive_registrants_only:
    case PrType::write_exclusive_all_registrants: return !registered && !is_read_like(op);
    case PrType::exclusive_access_registrants_only:
    case PrType::exclusive_access_all_registrants: return !registered;
  }
  return false;
}

// ---------------------------------------------------------------- PERSISTENT RESERVE IN

CommandResult PersistentReservations::in(const Nexus& nexus, std::span<const std::uint8_t> cdb,
                                         std::span<std::byte> data_in) const {
  (void)nexus;
  const std::uint8_t action = cdb[1] & 0x1f;
  const std::uint16_t alloc = load_be<std::uint16_t>(&cdb[7]);
  std::vector<std::uint8_t> d;
  switch (action) {
    case kReadKeys:
      put_be32(d, st_.generation);
      put_be32(d, static_cast<std::uint32_t>(8 * st_.registrations.size()));
      for (const auto& r : st_.registrations) put_be64(d, r.key);
      break;
    case kReadReservation:
      put_be32(d, st_.generation);
      if (!st_.holder) {
        put_be32(d, 0);
      } else {
        put_be32(d, 16);
        const PrRegistration* h = all_registrants() ? nullptr : find(*st_.holder);
        put_be64(d, h ? h->key : 0);  // all-registrants: the key is zero
        put_be32(d, 0);
        d.push_back(0);
        d.push_back(static_cast<std::uint8_t>(st_.type));
        d.push_back(0);
        d.push_back(0);
      }
      break;
    case kReportCapabilities:
      // PTPL_C (ATP_C clear: ALL_TG_PT is not supported); TMV and PTPL_A; every reservation type.
      d = {0x00,
           0x08,
           0x01,
           static_cast<std::uint8_t>(st_.aptpl ? 0x81 : 0x80),
           0x80 | 0x40 | 0x20 | 0x08 | 0x02,
           0x01,
           0x00,
           0x00};
      break;
    case kReadFullStatus: {
      put_be32(d, st_.generation);
      put_be32(d, 0);
      for (const auto& r : st_.registrations) {
        put_be64(d, r.key);
        put_be32(d, 0);
        d.push_back(is_holder(r.nexus) ? 0x01 : 0x00);
        d.push_back(is_holder(r.nexus) ? static_cast<std::uint8_t>(st_.type) : 0);
        put_be32(d, 0);
        d.push_back(static_cast<std::uint8_t>(r.nexus.relative_port >> 8));
        d.push_back(static_cast<std::uint8_t>(r.nexus.relative_port));
        const auto tid = transport_id(r.nexus);
        put_be32(d, static_cast<std::uint32_t>(tid.size()));
        d.insert(d.end(), tid.begin(), tid.end());
      }
      const std::uint32_t len = static_cast<std::uint32_t>(d.size() - 8);
      for (int i = 0; i < 4; ++i) d[4 + i] = static_cast<std::uint8_t>(len >> (24 - 8 * i));
      break;
    }
    default: return illegal_request(asc::kInvalidFieldInCdb, 1, 4);
  }
  CommandResult r;
  const std::size_t n = std::min<std::size_t>({d.size(), alloc, data_in.size()});
  if (n != 0) std::memcpy(data_in.data(), d.data(), n);  // data_in may be empty and null
  r.data_in_length = static_cast<std::uint32_t>(n);
  return r;
}

// ---------------------------------------------------------------- PERSISTENT RESERVE OUT

// The state is saved (APTPL) before the initiator hears of success; when it cannot be, the change
// is undone and the command fails, so an acknowledged PERSISTENT RESERVE OUT always survives a restart.
CommandResult PersistentReservations::out(const Nexus& nexus, std::span<const std::uint8_t> cdb,
                                          std::span<const std::byte> data_out) {
  const PrState before = st_;
  persist_pending_ = false;
  CommandResult r = apply_out(nexus, cdb, data_out);
  if (persist_pending_ && hooks_.persist) {
    if (Status st = hooks_.persist(st_); !st) {
      st_ = before;
      return check_condition(SenseKey::hardware_error, asc::kInternalTargetFailure);
    }
  }
  return r;
}

CommandResult PersistentReservations::apply_out(const Nexus& nexus, std::span<const std::uint8_t> cdb,
                                                std::span<const std::byte> data_out) {
  const std::uint8_t action = cdb[1] & 0x1f;
  const std::uint8_t scope = cdb[2] >> 4;
  const std::uint8_t type = cdb[2] & 0x0f;
  const std::uint32_t plen = load_be<std::uint32_t>(&cdb[5]);
  if (action > kRegisterAndMove) return illegal_request(asc::kInvalidFieldInCdb, 1, 4);
  const bool uses_type = action == kReserve || action == kRelease || action == kPreempt ||
                         action == kPreemptAndAbort || action == kRegisterAndMove;
  if (uses_type && scope != 0) return illegal_request(asc::kInvalidFieldInCdb, 2, 7);
  if (uses_type && !valid_type(type)) return illegal_request(asc::kInvalidFieldInCdb, 2, 3);
  if (action != kRegisterAndMove && plen != 24) return illegal_request(asc::kParameterListLengthError, 5);
  if (action == kRegisterAndMove && plen < 24) return illegal_request(asc::kParameterListLengthError, 5);
  if (data_out.size() < plen) return illegal_request(asc::kParameterListLengthError, 5);
  const auto* p = reinterpret_cast<const std::uint8_t*>(data_out.data());
  const std::uint64_t key = load_be<std::uint64_t>(p);
  const std::uint64_t sa_key = load_be<std::uint64_t>(p + 8);
  const std::uint8_t flags = p[20];
  const bool aptpl = flags & 0x01;
  if (action != kRegisterAndMove && (flags & 0x08))  // SPEC_I_PT: not supported
    return illegal_request(asc::kInvalidFieldInParameterList, 20, 3, false);
  if (action != kRegisterAndMove && (flags & 0x04))  // ALL_TG_PT: not supported (ATP_C is 0)
    return illegal_request(asc::kInvalidFieldInParameterList, 20, 2, false);
  const PrRegistration* me = find(nexus);
  CommandResult ok;
  ok.data_out_used = plen;

  switch (action) {
    case kRegister:
    case kRegisterAndIgnore: {
      if (action == kRegister) {
        if (!me && key != 0) return conflict();
        if (me && me->key != key) return conflict();
      }
      if (sa_key == 0) {
        if (!me) return ok;  // unregistering nothing
        const bool was_holder = is_holder(nexus);
        std::erase_if(st_.registrations,
                      [&](const PrRegistration& r) { return !(r.nexus < nexus) && !(nexus < r.nexus); });
        if (was_holder && (!all_registrants() || st_.registrations.empty())) {
          const PrType t = st_.type;
          st_.holder.reset();
          if (t == PrType::write_exclusive_registrants_only || t == PrType::exclusive_access_registrants_only)
            for (const auto& r : st_.registrations)
              if (hooks_.unit_attention) hooks_.unit_attention(r.nexus, kReservationsReleased);
        }
      } else if (me) {
        for (auto& r : st_.registrations)
          if (!(r.nexus < nexus) && !(nexus < r.nexus)) r.key = sa_key;
      } else {
        st_.registrations.push_back({nexus, sa_key});
      }
      st_.aptpl = aptpl;
      changed();
      return ok;
    }
    case kReserve:
      if (!me || me->key != key) return conflict();
      if (st_.holder) {
        if (is_holder(nexus) && static_cast<std::uint8_t>(st_.type) == type) return ok;
        return conflict();
      }
      st_.holder = nexus;
      st_.type = static_cast<PrType>(type);
      persist_pending_ = true;  // RESERVE does not bump the generation
      return ok;
    case kRelease:
      if (!me || me->key != key) return conflict();
      if (!st_.holder || !is_holder(nexus)) return ok;
      if (static_cast<std::uint8_t>(st_.type) != type)
        return illegal_request(kInvalidReleaseOfPersistentReservation, 2, 3);
      {
        const PrType t = st_.type;
        st_.holder.reset();
        if (t != PrType::write_exclusive && t != PrType::exclusive_access)
          for (const auto& r : st_.registrations)
            if ((r.nexus < nexus || nexus < r.nexus) && hooks_.unit_attention)
              hooks_.unit_attention(r.nexus, kReservationsReleased);
      }
      persist_pending_ = true;
      return ok;
    case kClear:
      if (!me || me->key != key) return conflict();
      remove_registrations_if([](const PrRegistration&) { return true; }, nexus, kReservationsPreempted);
      st_.holder.reset();
      changed();
      return ok;
    case kPreempt:
    case kPreemptAndAbort: {
      if (!me || me->key != key) return conflict();
      const bool abort = action == kPreemptAndAbort;
      auto preempt_keys = [&](std::uint64_t victim) {
        std::vector<Nexus> gone;
        for (const auto& r : st_.registrations)
          if (r.key == victim && (r.nexus < nexus || nexus < r.nexus)) gone.push_back(r.nexus);
        remove_registrations_if(
            [&](const PrRegistration& r) { return r.key == victim && (r.nexus < nexus || nexus < r.nexus); },
            nexus, kRegistrationsPreempted);
        if (abort && hooks_.abort_tasks_of)
          for (const auto& n : gone) hooks_.abort_tasks_of(n);
        return !gone.empty();
      };
      if (!st_.holder) {
        if (sa_key == 0) return illegal_request(asc::kInvalidFieldInParameterList, 8, -1, false);
        preempt_keys(sa_key);
        changed();
        return ok;
      }
      if (all_registrants()) {
        if (sa_key == 0) {
          std::vector<Nexus> gone;
          for (const auto& r : st_.registrations)
            if (r.nexus < nexus || nexus < r.nexus) gone.push_back(r.nexus);
          remove_registrations_if([&](const PrRegistration& r) { return r.nexus < nexus || nexus < r.nexus; },
                                  nexus, kRegistrationsPreempted);
          if (abort && hooks_.abort_tasks_of)
            for (const auto& n : gone) hooks_.abort_tasks_of(n);
          st_.holder = nexus;
          st_.type = static_cast<PrType>(type);
        } else {
          preempt_keys(sa_key);
        }
        changed();
        return ok;
      }
      const PrRegistration* holder = find(*st_.holder);
      if (holder && holder->key == sa_key) {
        preempt_keys(sa_key);
        st_.holder = nexus;
        st_.type = static_cast<PrType>(type);
        for (const auto& r : st_.registrations)
          if ((r.nexus < nexus || nexus < r.nexus) && hooks_.unit_attention)
            hooks_.unit_attention(r.nexus, kReservationsReleased);
      } else {
        if (sa_key == 0) return illegal_request(asc::kInvalidFieldInParameterList, 8, -1, false);
        preempt_keys(sa_key);
      }
      changed();
      return ok;
    }
    case kRegisterAndMove: {
      if (!me || me->key != key) return conflict();
      if (!st_.holder) return conflict();
      if (!is_holder(nexus) || all_registrants()) return illegal_request(asc::kInvalidFieldInCdb, 2, 3);
      if (sa_key == 0) return illegal_request(asc::kInvalidFieldInParameterList, 8, -1, false);
      const bool unreg = p[17] & 0x02;
      const std::uint16_t rel_port = load_be<std::uint16_t>(p + 18);
      const std::uint32_t tid_len = load_be<std::uint32_t>(p + 20);
      if (24 + static_cast<std::uint64_t>(tid_len) > plen)
        return illegal_request(asc::kParameterListLengthError, 5);
      auto port = parse_transport_id({p + 24, tid_len});
      if (!port) return illegal_request(asc::kInvalidFieldInParameterList, 24, -1, false);
      const Nexus dest{*port, rel_port};
      if (!(dest < nexus) && !(nexus < dest))
        return illegal_request(asc::kInvalidFieldInParameterList, 24, -1, false);
      bool found = false;
      for (auto& r : st_.registrations)
        if (!(r.nexus < dest) && !(dest < r.nexus)) {
          r.key = sa_key;
          found = true;
        }
      if (!found) st_.registrations.push_back({dest, sa_key});
      st_.holder = dest;
      st_.type = static_cast<PrType>(type);
      if (unreg)
        std::erase_if(st_.registrations,
                      [&](const PrRegistration& r) { return !(r.nexus < nexus) && !(nexus < r.nexus); });
      st_.aptpl = p[17] & 0x01;
      changed();
      return ok;
    }
    default: return illegal_request(asc::kInvalidFieldInCdb, 1, 4);
  }
}

}  // namespace duplex::scsi
