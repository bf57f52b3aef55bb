// Informational commands: INQUIRY and VPD pages, READ CAPACITY, mode pages, REQUEST SENSE,
// REPORT SUPPORTED OPERATION CODES, REPORT TARGET PORT GROUPS, GET LBA STATUS, REPORT LUNS.
#include <algorithm>
#include <cstring>
#include <string>

#include "duplex/base/endian.h"
#include "duplex/scsi/logical_unit.h"
#include "opcodes.h"

namespace duplex::scsi {

namespace {
// A company id for NAA 6 designators. Locally administered (bit 1 of the first octet set), so it
// cannot collide with an IEEE-assigned OUI; replace with an assigned OUI before shipping hardware.
constexpr std::uint32_t kCompanyId = 0x0a4458;

void put_padded(std::vector<std::uint8_t>& out, const std::string& s, std::size_t width) {
  for (std::size_t i = 0; i < width; ++i) out.push_back(i < s.size() ? static_cast<std::uint8_t>(s[i]) : ' ');
}
void put_be16(std::vector<std::uint8_t>& out, std::uint16_t v) {
  out.push_back(static_cast<std::uint8_t>(v >> 8));
  out.push_back(static_cast<std::uint8_t>(v));
}
void put_be32(std::vector<std::uint8_t>& out, std::uint32_t v) {
  for (int s = 24; s >= 0; s -= 8) out.push_back(static_cast<std::uint8_t>(v >> s));
}
void put_be64(std::vector<std::uint8_t>& out, std::uint64_t v) {
  for (int s = 56; s >= 0; s -= 8) out.push_back(static_cast<std::uint8_t>(v >> s));
}
void set_be16(std::vector<std::uint8_t>& out, std::size_t at, std::uint16_t v) {
  out[at] = static_cast<std::uint8_t>(v >> 8);
  out[at + 1] = static_cast<std::uint8_t>(v);
}
void set_be32(std::vector<std::uint8_t>& out, std::size_t at, std::uint32_t v) {
  for (int i = 0; i < 4; ++i) out[at + i] = static_cast<std::uint8_t>(v >> (24 - 8 * i));
}
}  // namespace

std::vector<std::uint8_t> LogicalUnit::naa() const {
  const Uuid u = volume_.uuid();
  std::vector<std::uint8_t> b(16);
  b[0] = static_cast<std::uint8_t>(0x60 | ((kCompanyId >> 20) & 0x0f));
  b[1] = static_cast<std::uint8_t>(kCompanyId >> 12);
  b[2] = static_cast<std::uint8_t>(kCompanyId >> 4);
  b[3] = static_cast<std::uint8_t>(((kCompanyId & 0x0f) << 4) | (u.bytes[0] >> 4));
  for (std::size_t i = 4; i < 16; ++i)
    b[i] = static_cast<std::uint8_t>((u.bytes[i - 4] << 4) | (u.bytes[i - 3] >> 4));
  return b;
}

CommandResult LogicalUnit::inquiry(Command c) {
  const auto& cdb = c.cdb;
  const bool evpd = cdb[1] & 0x01;
  const std::uint8_t page = cdb[2];
  const std::uint16_t alloc = load_be<std::uint16_t>(&cdb[3]);
  if (cdb[1] & 0x02) return illegal_request(asc::kInvalidFieldInCdb, 1, 1);  // CMDDT (obsolete)
  if (evpd) return vpd(c, page, alloc);
  if (page != 0) return illegal_request(asc::kInvalidFieldInCdb, 2);
  std::vector<std::uint8_t> d;
  d.push_back(0x00);  // connected, direct access block device
  d.push_back(0x00);  // not removable
  d.push_back(0x06);  // SPC-4
  d.push_back(0x12);  // HISUP, response data format 2
  d.push_back(0);     // additional length, below
  d.push_back(0x10);  // TPGS = 01b: implicit ALUA
  d.push_back(0x10);  // MULTIP: the LU is reachable through several ports (nodes)
  d.push_back(0x02);  // CMDQUE
  put_padded(d, cfg_.vendor, 8);
  put_padded(d, cfg_.product, 16);
  put_padded(d, cfg_.revision, 4);
  d.resize(58, 0);
  // Version descriptors: SAM-5, iSCSI, SPC-4, SBC-3.
  for (std::uint16_t v : {0x00a0, 0x0960, 0x0460, 0x04c0}) put_be16(d, v);
  d.resize(74, 0);
  d[4] = static_cast<std::uint8_t>(d.size() - 5);
  return data_in(c, d, alloc);
}

CommandResult LogicalUnit::vpd(Command c, std::uint8_t page, std::uint32_t alloc) {
  std::vector<std::uint8_t> d{0x00, page, 0, 0};
  switch (page) {
    case 0x00:
      for (std::uint8_t p : {0x00, 0x80, 0x83, 0xb0, 0xb1, 0xb2}) d.push_back(p);
      break;
    case 0x80: put_padded(d, cfg_.serial, cfg_.serial.size()); break;
    case 0x83: {
      // NAA: the volume's WWN, identical through every node.
      d.insert(d.end(), {0x01, 0x03, 0x00, 0x10});
      const auto n = naa();
      d.insert(d.end(), n.begin(), n.end());
      // T10 vendor id: vendor + serial, identical through every node.
      const std::string t10 = cfg_.serial;
      d.insert(d.end(), {0x02, 0x01, 0x00, static_cast<std::uint8_t>(8 + t10.size())});
      put_padded(d, cfg_.vendor, 8);
      put_padded(d, t10, t10.size());
      // Relative target port and target port group: this node's port (PIV, iSCSI protocol).
      d.insert(d.end(), {0x51, 0x94, 0x00, 0x04, 0x00, 0x00});
      put_be16(d, cfg_.relative_port);
      d.insert(d.end(), {0x51, 0x95, 0x00, 0x04, 0x00, 0x00});
      put_be16(d, cfg_.tpg_id);
      // The SCSI target port the command came through: the session's target when the transport
      // says (one LU may be a LUN of several targets), else the configured one.
      const std::string& port_name =
          c.nexus->target_port.empty() ? cfg_.target_port_name : c.nexus->target_port;
      if (!port_name.empty()) {
        std::string name = port_name;
        name.push_back('\0');
        while (name.size() % 4) name.push_back('\0');
        d.insert(d.end(), {0x53, 0x98, 0x00, static_cast<std::uint8_t>(name.size())});
        d.insert(d.end(), name.begin(), name.end());
      }
      break;
    }
    case 0xb0: {
      d.resize(64, 0);
      d[4] = 0x01;  // WSNZ: WRITE SAME with zero blocks is refused
      d[5] = static_cast<std::uint8_t>(kMaxCompareAndWriteBlocks);
      const std::uint32_t gran = std::max<std::uint32_t>(1, volume_.preferred_block_size() / cfg_.block_size);
      set_be16(d, 6, static_cast<std::uint16_t>(gran));
      set_be32(d, 8, kMaxTransferBlocks);
      set_be32(d, 12, kOptimalTransferBlocks);
      set_be32(d, 20, kMaxUnmapBlocks);
      set_be32(d, 24, kMaxUnmapDescriptors);
      set_be32(d, 28, gran);         // optimal unmap granularity
      set_be32(d, 32, 0x80000000u);  // UGAVALID, alignment 0
      for (int i = 0; i < 8; ++i) d[36 + i] = static_cast<std::uint8_t>(kMaxWriteSameBlocks >> (56 - 8 * i));
      break;
    }
    case 0xb1:
      d.resize(64, 0);
      d[5] = 0x01;  // non-rotating medium
      break;
    case 0xb2:
      d.resize(8, 0);
      d[5] = 0x80 | 0x40 | 0x20 | 0x04;  // LBPU, LBPWS, LBPWS10, LBPRZ (unmapped blocks read zeroes)
      d[6] = 0x02;                       // thin provisioned
      break;
    default: return illegal_request(asc::kInvalidFieldInCdb, 2);
  }
  set_be16(d, 2, static_cast<std::uint16_t>(d.size() - 4));
  return data_in(c, d, alloc);
}

CommandResult LogicalUnit::read_capacity10(Command c) {
  const auto& cdb = c.cdb;
  const bool pmi = cdb[8] & 0x01;
  if (!pmi && load_be<std::uint32_t>(&cdb[2]) != 0) return illegal_request(asc::kInvalidFieldInCdb, 2);
  std::vector<std::uint8_t> d;
  const std::uint64_t last = blocks() - 1;
  put_be32(d, last > 0xffffffffu ? 0xffffffffu : static_cast<std::uint32_t>(last));
  put_be32(d, cfg_.block_size);
  return data_in(c, d, 8);
}

CommandResult LogicalUnit::read_capacity16(Command c) {
  const std::uint32_t alloc = load_be<std::uint32_t>(&c.cdb[10]);
  std::vector<std::uint8_t> d;
  put_be64(d, blocks() - 1);
  put_be32(d, cfg_.block_size);
  d.push_back(0);  // no protection information
  std::uint8_t exp = 0;
  while ((cfg_.block_size << (exp + 1)) <= volume_.preferred_block_size()) ++exp;
  d.push_back(exp);   // logical blocks per physical block exponent
  d.push_back(0xc0);  // LBPME (thin: hosts may UNMAP), LBPRZ (unmapped reads zeroes)
  d.push_back(0x00);
  d.resize(32, 0);
  return data_in(c, d, alloc);
}

namespace {
// Mode pages, current values. `changeable` asks for the mask of changeable bits: only SWP (software
// write protect) in the control page. The cache is always write-back with flush honoured, the only
// honest answer for a replicated volume.
std::vector<std::uint8_t> mode_page(std::uint8_t page, bool changeable, bool swp) {
  std::vector<std::uint8_t> p;
  switch (page) {
    case 0x01:  // read-write error recovery
      p.assign(12, 0);
      p[0] = 0x01;
      p[1] = 0x0a;
      break;
    case 0x08:  // caching: WCE (writes are acknowledged before a flush makes them durable)
      p.assign(20, 0);
      p[0] = 0x08;
      p[1] = 0x12;
      if (!changeable) p[2] = 0x04;
      break;
    case 0x0a:  // control
      p.assign(12, 0);
      p[0] = 0x0a;
      p[1] = 0x0a;
      if (changeable) {
        p[4] = 0x08;  // SWP
      } else {
        if (swp) p[4] = 0x08;
        // TST 000b (one task set for the LU) and TAS 0: commands aborted by another nexus's action
        // (PREEMPT AND ABORT, LOGICAL UNIT RESET) end without status, their nexus learns of it by a
        // unit attention (TaskSetMember, LogicalUnit::abort_tasks_here).
        p[2] = 0x00;
        p[5] = 0x00;
        p[3] = 0x10;  // QUEUE ALGORITHM MODIFIER 1: unrestricted reordering
        p[8] = 0xff;  // BUSY TIMEOUT PERIOD: unlimited
        p[9] = 0xff;
      }
      break;
    case 0x1c:  // informational exceptions control
      p.assign(12, 0);
      p[0] = 0x1c;
      p[1] = 0x0a;
      break;
    default: break;
  }
  return p;
}
constexpr std::uint8_t kModePages[] = {0x01, 0x08, 0x0a, 0x1c};
}  // namespace

CommandResult LogicalUnit::mode_sense(Command c, bool ten) {
  const auto& cdb = c.cdb;
  const bool dbd = cdb[1] & 0x08;
  const bool llbaa = ten && (cdb[1] & 0x10);
  const std::uint8_t pc = cdb[2] >> 6, page = cdb[2] & 0x3f, subpage = cdb[3];
  const std::uint32_t alloc = ten ? load_be<std::uint16_t>(&cdb[7]) : cdb[4];
  if (pc == 3) return illegal_request(asc::kSavingParametersNotSupported, 2, 7);
  std::vector<std::uint8_t> pages;
  if (page == 0x3f) {
    if (subpage != 0x00 && subpage != 0xff) return illegal_request(asc::kInvalidFieldInCdb, 3);
    for (std::uint8_t p : kModePages) {
      auto v = mode_page(p, pc == 1, swp_);
      pages.insert(pages.end(), v.begin(), v.end());
    }
  } else {
    auto v = mode_page(page, pc == 1, swp_);
    if (v.empty() || subpage != 0) return illegal_request(asc::kInvalidFieldInCdb, 2, 5);
    pages = std::move(v);
  }
  std::vector<std::uint8_t> desc;
  if (!dbd) {
    const std::uint64_t n = blocks();
    if (llbaa) {
      put_be64(desc, n);
      put_be32(desc, 0);
      put_be32(desc, cfg_.block_size);
    } else {
      put_be32(desc, n > 0xffffffffu ? 0xffffffffu : static_cast<std::uint32_t>(n));
      put_be32(desc, cfg_.block_size & 0x00ffffff);
      if (!ten) desc[0] = 0;  // density code
    }
  }
  const std::uint8_t dsp = static_cast<std::uint8_t>(
      (cfg_.read_only || c.nexus->read_only || swp_ ? 0x80 : 0x00) | 0x10);  // WP, DPOFUA
  std::vector<std::uint8_t> d;
  if (ten) {
    d = {0, 0, 0, dsp, static_cast<std::uint8_t>(llbaa ? 0x01 : 0x00), 0, 0, 0};
    set_be16(d, 6, static_cast<std::uint16_t>(desc.size()));
  } else {
    d = {0, 0, dsp, static_cast<std::uint8_t>(desc.size())};
  }
  d.insert(d.end(), desc.begin(), desc.end());
  d.insert(d.end(), pages.begin(), pages.end());
  if (ten)
    set_be16(d, 0, static_cast<std::uint16_t>(d.size() - 2));
  else
    d[0] = static_cast<std::uint8_t>(std::min<std::size_t>(d.size() - 1, 255));
  return data_in(c, d, alloc);
}

CommandResult LogicalUnit::mode_select(Command c, bool ten) {
  const auto& cdb = c.cdb;
  if (cdb[1] & 0x01) return illegal_request(asc::kInvalidFieldInCdb, 1, 0);  // SP: nothing is saveable
  const std::uint32_t len = ten ? load_be<std::uint16_t>(&cdb[7]) : cdb[4];
  if (len == 0) return {};
  if (c.data_out.size() < len) return illegal_request(asc::kParameterListLengthError, ten ? 7 : 4);
  const auto* p = reinterpret_cast<const std::uint8_t*>(c.data_out.data());
  const std::size_t hdr = ten ? 8 : 4;
  if (len < hdr) return illegal_request(asc::kParameterListLengthError, ten ? 7 : 4);
  const std::size_t bdl = ten ? load_be<std::uint16_t>(p + 6) : p[3];
  std::size_t pos = hdr + bdl;
  if (pos > len) return illegal_request(asc::kParameterListLengthError, ten ? 7 : 4);
  // Every page sent must equal the current one: nothing is changeable, and accepting a change we
  // would not honour (say WCE=0) would be a lie to the host.
  while (pos < len) {
    if (len - pos < 2) return illegal_request(asc::kParameterListLengthError, ten ? 7 : 4);
    const std::uint8_t code = p[pos] & 0x3f;
    const std::size_t plen = std::size_t{p[pos + 1]} + 2;
    const auto cur = mode_page(code, false, swp_);
    const auto mask = mode_page(code, true, swp_);
    if (cur.empty() || (p[pos] & 0x40))
      return illegal_request(asc::kInvalidFieldInParameterList, static_cast<std::uint16_t>(pos), -1, false);
    if (plen != cur.size() || pos + plen > len)
      return illegal_request(asc::kParameterListLengthError, ten ? 7 : 4);
    for (std::size_t i = 2; i < plen; ++i)
      if ((p[pos + i] & ~mask[i]) != (cur[i] & ~mask[i]))
        return illegal_request(asc::kInvalidFieldInParameterList, static_cast<std::uint16_t>(pos + i), -1,
                               false);
    pos += plen;
  }
  // Everything checked: apply. SWP write-protects the LU for every nexus; the others hear about it.
  for (pos = hdr + bdl; pos < len; pos += std::size_t{p[pos + 1]} + 2) {
    if ((p[pos] & 0x3f) != 0x0a) continue;
    const bool swp = p[pos + 4] & 0x08;
    if (swp == swp_) continue;
    swp_ = swp;
    for (auto& [nexus, queue] : unit_attentions_) {
      const bool self = !(nexus < *c.nexus) && !(*c.nexus < nexus);
      if (!self && std::find(queue.begin(), queue.end(), asc::kModeParametersChanged) == queue.end())
        queue.push_back(asc::kModeParametersChanged);
    }
  }
  CommandResult r;
  r.data_out_used = len;
  return r;
}

CommandResult LogicalUnit::request_sense(Command c) {
  if (c.cdb[1] & 0x01) return illegal_request(asc::kInvalidFieldInCdb, 1, 0);  // DESC: fixed format only
  Sense s;
  auto it = unit_attentions_.find(*c.nexus);
  if (it != unit_attentions_.end() && !it->second.empty()) {
    s.key = SenseKey::unit_attention;
    s.code = it->second.front();
    it->second.erase(it->second.begin());
  }
  const auto bytes = s.encode();
  return data_in(c, bytes, c.cdb[4]);
}

CommandResult LogicalUnit::report_supported_opcodes(Command c) {
  const auto& cdb = c.cdb;
  const bool rctd = cdb[2] & 0x80;
  const std::uint8_t options = cdb[2] & 0x07;
  const std::uint8_t req_op = cdb[3];
  const std::uint16_t req_sa = load_be<std::uint16_t>(&cdb[4]);
  const std::uint32_t alloc = load_be<std::uint32_t>(&cdb[6]);
  const auto& cmds = supported_commands();
  auto timeouts = [](std::vector<std::uint8_t>& d) {
    d.insert(d.end(), {0x00, 0x0a, 0x00, 0x00});
    put_be32(d, 0);   // nominal processing timeout: unspecified
    put_be32(d, 30);  // recommended timeout, seconds
  };
  std::vector<std::uint8_t> d;
  if (options == 0) {
    d.resize(4, 0);
    for (const auto& ci : cmds) {
      d.push_back(ci.opcode);
      d.push_back(0);
      put_be16(d, ci.sa);
      d.push_back(0);
      d.push_back(static_cast<std::uint8_t>((rctd ? 0x02 : 0x00) | (ci.has_sa ? 0x01 : 0x00)));
      put_be16(d, static_cast<std::uint16_t>(ci.usage.size()));
      if (rctd) timeouts(d);
    }
    set_be32(d, 0, static_cast<std::uint32_t>(d.size() - 4));
    return data_in(c, d, alloc);
  }
  if (options > 3) return illegal_request(asc::kInvalidFieldInCdb, 2, 2);
  // Options 001b names an opcode without service actions, 010b an opcode and one of its service
  // actions, 011b either; asking the wrong way about a known opcode is an error (SPC-4 6.35.1).
  const bool exists =
      std::any_of(cmds.begin(), cmds.end(), [&](const CommandInfo& ci) { return ci.opcode == req_op; });
  const bool opcode_has_sa = std::any_of(
      cmds.begin(), cmds.end(), [&](const CommandInfo& ci) { return ci.opcode == req_op && ci.has_sa; });
  if (exists && options == 1 && opcode_has_sa) return illegal_request(asc::kInvalidFieldInCdb, 2, 2);
  if (exists && options == 2 && !opcode_has_sa) return illegal_request(asc::kInvalidFieldInCdb, 2, 2);
  const CommandInfo* found = nullptr;
  for (const auto& ci : cmds)
    if (ci.opcode == req_op && (!ci.has_sa || ci.sa == req_sa)) found = &ci;
  d = {0, static_cast<std::uint8_t>((rctd ? 0x80 : 0x00) | (found ? 0x03 : 0x01)), 0, 0};
  if (found) {
    set_be16(d, 2, static_cast<std::uint16_t>(found->usage.size()));
    d.insert(d.end(), found->usage.begin(), found->usage.end());
    if (rctd) timeouts(d);
  }
  return data_in(c, d, alloc);
}

CommandResult LogicalUnit::report_target_port_groups(Command c) {
  const std::uint8_t format = c.cdb[1] >> 5;
  const std::uint32_t alloc = load_be<std::uint32_t>(&c.cdb[6]);
  if (format > 1) return illegal_request(asc::kInvalidFieldInCdb, 1, 5);
  std::vector<std::uint8_t> d(4, 0);
  if (format == 1) d.insert(d.end(), {0x10, 10, 0, 0});  // extended header, 10 s implicit transition time
  for (const auto& g : cfg_.port_groups) {
    d.push_back(static_cast<std::uint8_t>((g.preferred ? 0x80 : 0x00) | static_cast<std::uint8_t>(g.state)));
    d.push_back(0x80 | 0x08 | 0x04 | 0x02 | 0x01);  // supports T, U, S, AN, AO
    put_be16(d, g.id);
    d.push_back(0);
    d.push_back(0x02);  // status: altered by an implicit transition
    d.push_back(0);
    d.push_back(static_cast<std::uint8_t>(g.relative_ports.size()));
    for (std::uint16_t p : g.relative_ports) {
      d.push_back(0);
      d.push_back(0);
      put_be16(d, p);
    }
  }
  set_be32(d, 0, static_cast<std::uint32_t>(d.size() - 4));
  return data_in(c, d, alloc);
}

CommandResult LogicalUnit::get_lba_status(Command c) {
  const std::uint64_t lba = load_be<std::uint64_t>(&c.cdb[2]);
  const std::uint32_t alloc = load_be<std::uint32_t>(&c.cdb[10]);
  if (lba >= blocks()) return check_condition(SenseKey::illegal_request, asc::kLbaOutOfRange);
  const std::uint64_t bs = cfg_.block_size;
  // Enough descriptors to fill the allocation length; the host asks again from where we stop.
  const std::uint64_t max_desc = std::max<std::uint32_t>(1, alloc > 8 ? (alloc - 8) / 16 : 1);
  const std::uint64_t span_blocks = std::min<std::uint64_t>(blocks() - lba, std::uint64_t{1} << 21);
  auto ext = volume_.block_status(lba * bs, span_blocks * bs);
  if (!ext) return from_status(ext.status(), false);
  std::vector<std::uint8_t> d(8, 0);
  std::uint64_t n = 0;
  for (const auto& e : *ext) {
    if (n == max_desc) break;
    // Extents come cluster-aligned; the first descriptor starts at the LBA asked for.
    const std::uint64_t start = std::max(e.offset, lba * bs), end = e.offset + e.length;
    if (end <= start) continue;
    put_be64(d, start / bs);
    put_be32(d, static_cast<std::uint32_t>(std::min<std::uint64_t>((end - start) / bs, 0xffffffffu)));
    d.push_back(e.allocated ? 0x00 : 0x01);  // mapped / deallocated
    d.insert(d.end(), {0, 0, 0});
    ++n;
  }
  set_be32(d, 0, static_cast<std::uint32_t>(d.size() - 4));
  return data_in(c, d, alloc);
}

CommandResult report_luns(std::span<const std::uint8_t> cdb, const std::vector<std::uint64_t>& luns,
                          std::span<std::byte> data_in) {
  if (cdb.size() < 12) return illegal_request(asc::kInvalidFieldInCdb, 0);
  const std::uint8_t select = cdb[2];
  const std::uint32_t alloc = load_be<std::uint32_t>(&cdb[6]);
  if (select > 2) return illegal_request(asc::kInvalidFieldInCdb, 2);
  if (alloc < 16) return illegal_request(asc::kInvalidFieldInCdb, 6);
  std::vector<std::uint8_t> d(8, 0);
  for (std::uint64_t lun : luns) {
    if (lun < 256)
      d.insert(d.end(), {0x00, static_cast<std::uint8_t>(lun)});
    else
      d.insert(d.end(),
               {static_cast<std::uint8_t>(0x40 | ((lun >> 8) & 0x3f)), static_cast<std::uint8_t>(lun)});
    d.insert(d.end(), 6, 0);
  }
  set_be32(d, 0, static_cast<std::uint32_t>(d.size() - 8));
  CommandResult r;
  const std::size_t n = std::min<std::size_t>({d.size(), alloc, data_in.size()});
  if (n != 0) std::memcpy(data_in.data(), d.data(), n);  // data_in may be empty and null
  r.data_in_length = static_cast<std::uint32_t>(n);
  return r;
}

const std::vector<CommandInfo>& supported_commands() {
  using V = std::vector<std::uint8_t>;
  const std::uint8_t F = 0xff;
  static const std::vector<CommandInfo> table = {
      {op::kTestUnitReady, false, 0, V{0x00, 0, 0, 0, 0, 0}},
      {op::kRequestSense, false, 0, V{0x03, 0x01, 0, 0, F, 0}},
      {op::kRead6, false, 0, V{0x08, 0x1f, F, F, F, 0}},
      {op::kWrite6, false, 0, V{0x0a, 0x1f, F, F, F, 0}},
      {op::kInquiry, false, 0, V{0x12, 0x01, F, F, F, 0}},
      {op::kModeSelect6, false, 0, V{0x15, 0x11, 0, 0, F, 0}},
      {op::kModeSense6, false, 0, V{0x1a, 0x08, F, F, F, 0}},
      {op::kStartStopUnit, false, 0, V{0x1b, 0x01, 0, 0x0f, 0xf7, 0}},
      {op::kPreventAllow, false, 0, V{0x1e, 0, 0, 0, 0x03, 0}},
      {op::kReadCapacity10, false, 0, V{0x25, 0, F, F, F, F, 0, 0, 0x01, 0}},
      {op::kRead10, false, 0, V{0x28, 0x18, F, F, F, F, 0x1f, F, F, 0}},
      {op::kWrite10, false, 0, V{0x2a, 0x18, F, F, F, F, 0x1f, F, F, 0}},
      {op::kWriteVerify10, false, 0, V{0x2e, 0x12, F, F, F, F, 0x1f, F, F, 0}},
      {op::kVerify10, false, 0, V{0x2f, 0x16, F, F, F, F, 0x1f, F, F, 0}},
      {op::kSynchronizeCache10, false, 0, V{0x35, 0x02, F, F, F, F, 0x1f, F, F, 0}},
      {op::kWriteSame10, false, 0, V{0x41, 0x08, F, F, F, F, 0x1f, F, F, 0}},
      {op::kUnmap, false, 0, V{0x42, 0, 0, 0, 0, 0, 0x1f, F, F, 0}},
      {op::kModeSelect10, false, 0, V{0x55, 0x11, 0, 0, 0, 0, 0, F, F, 0}},
      {op::kModeSense10, false, 0, V{0x5a, 0x18, F, F, 0, 0, 0, F, F, 0}},
      {op::kPersistentReserveIn, true, 0, V{0x5e, 0x00, 0, 0, 0, 0, 0, F, F, 0}},
      {op::kPersistentReserveIn, true, 1, V{0x5e, 0x01, 0, 0, 0, 0, 0, F, F, 0}},
      {op::kPersistentReserveIn, true, 2, V{0x5e, 0x02, 0, 0, 0, 0, 0, F, F, 0}},
      {op::kPersistentReserveIn, true, 3, V{0x5e, 0x03, 0, 0, 0, 0, 0, F, F, 0}},
      {op::kPersistentReserveOut, true, 0, V{0x5f, 0x00, 0, 0, 0, F, F, F, F, 0}},
      {op::kPersistentReserveOut, true, 1, V{0x5f, 0x01, F, 0, 0, F, F, F, F, 0}},
      {op::kPersistentReserveOut, true, 2, V{0x5f, 0x02, F, 0, 0, F, F, F, F, 0}},
      {op::kPersistentReserveOut, true, 3, V{0x5f, 0x03, 0, 0, 0, F, F, F, F, 0}},
      {op::kPersistentReserveOut, true, 4, V{0x5f, 0x04, F, 0, 0, F, F, F, F, 0}},
      {op::kPersistentReserveOut, true, 5, V{0x5f, 0x05, F, 0, 0, F, F, F, F, 0}},
      {op::kPersistentReserveOut, true, 6, V{0x5f, 0x06, 0, 0, 0, F, F, F, F, 0}},
      {op::kPersistentReserveOut, true, 7, V{0x5f, 0x07, F, 0, 0, F, F, F, F, 0}},
      {op::kRead16, false, 0, V{0x88, 0x18, F, F, F, F, F, F, F, F, F, F, F, F, 0x1f, 0}},
      {op::kCompareAndWrite, false, 0, V{0x89, 0x08, F, F, F, F, F, F, F, F, 0, 0, 0, F, 0x1f, 0}},
      {op::kWrite16, false, 0, V{0x8a, 0x18, F, F, F, F, F, F, F, F, F, F, F, F, 0x1f, 0}},
      {op::kWriteVerify16, false, 0, V{0x8e, 0x12, F, F, F, F, F, F, F, F, F, F, F, F, 0x1f, 0}},
      {op::kVerify16, false, 0, V{0x8f, 0x16, F, F, F, F, F, F, F, F, F, F, F, F, 0x1f, 0}},
      {op::kSynchronizeCache16, false, 0, V{0x91, 0x02, F, F, F, F, F, F, F, F, F, F, F, F, 0x1f, 0}},
      {op::kWriteSame16, false, 0, V{0x93, 0x09, F, F, F, F, F, F, F, F, F, F, F, F, 0x1f, 0}},
      {op::kServiceActionIn16, true, sa::kReadCapacity16,
       V{0x9e, 0x10, 0, 0, 0, 0, 0, 0, 0, 0, F, F, F, F, 0, 0}},
      {op::kServiceActionIn16, true, sa::kGetLbaStatus,
       V{0x9e, 0x12, F, F, F, F, F, F, F, F, F, F, F, F, 0, 0}},
      {op::kReportLuns, false, 0, V{0xa0, 0, F, 0, 0, 0, F, F, F, F, 0, 0}},
      {op::kMaintenanceIn, true, sa::kReportTargetPortGroups, V{0xa3, 0xea, 0, 0, 0, 0, F, F, F, F, 0, 0}},
      {op::kMaintenanceIn, true, sa::kReportSupportedOpcodes, V{0xa3, 0x0c, 0x87, F, F, F, F, F, F, F, 0, 0}},
      {op::kRead12, false, 0, V{0xa8, 0x18, F, F, F, F, F, F, F, F, 0x1f, 0}},
      {op::kWrite12, false, 0, V{0xaa, 0x18, F, F, F, F, F, F, F, F, 0x1f, 0}},
      {op::kWriteVerify12, false, 0, V{0xae, 0x12, F, F, F, F, F, F, F, F, 0x1f, 0}},
      {op::kVerify12, false, 0, V{0xaf, 0x16, F, F, F, F, F, F, F, F, 0x1f, 0}},
  };
  return table;
}

}  // namespace duplex::scsi
