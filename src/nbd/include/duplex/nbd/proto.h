#pragma once
// The NBD wire protocol (NetworkBlockDevice/nbd doc/proto.md): every constant and every fixed-size
// structure the server sends or receives, in one header. All integers on the wire are big-endian;
// the structs below are byte images (fields are arrays of bytes accessed through load_be/store_be),
// so their size is their wire size on every host.
#include <cstddef>
#include <cstdint>
#include <string_view>

#include "duplex/base/endian.h"

namespace duplex::nbd {

// --- handshake (fixed newstyle) ---
inline constexpr std::uint64_t kNbdMagic = 0x4e42444d41474943ULL;  // "NBDMAGIC"
inline constexpr std::uint64_t kIHaveOpt = 0x49484156454F5054ULL;  // "IHAVEOPT"
inline constexpr std::uint64_t kOptReplyMagic = 0x0003e889045565a9ULL;

// Handshake flags (server -> client, 16 bits).
inline constexpr std::uint16_t kFlagFixedNewstyle = 1u << 0;
inline constexpr std::uint16_t kFlagNoZeroes = 1u << 1;
// Client flags (client -> server, 32 bits).
inline constexpr std::uint32_t kClientFixedNewstyle = 1u << 0;
inline constexpr std::uint32_t kClientNoZeroes = 1u << 1;

// Options.
enum Opt : std::uint32_t {
  kOptExportName = 1,
  kOptAbort = 2,
  kOptList = 3,
  kOptPeekExport = 4,  // withdrawn
  kOptStartTls = 5,
  kOptInfo = 6,
  kOptGo = 7,
  kOptStructuredReply = 8,
  kOptListMetaContext = 9,
  kOptSetMetaContext = 10,
  kOptExtendedHeaders = 11,  // not supported: answered with kRepErrUnsup
};

// Option reply types.
inline constexpr std::uint32_t kRepAck = 1;
inline constexpr std::uint32_t kRepServer = 2;
inline constexpr std::uint32_t kRepInfo = 3;
inline constexpr std::uint32_t kRepMetaContext = 4;
inline constexpr std::uint32_t kRepFlagError = 1u << 31;
inline constexpr std::uint32_t kRepErrUnsup = kRepFlagError | 1;
inline constexpr std::uint32_t kRepErrPolicy = kRepFlagError | 2;
inline constexpr std::uint32_t kRepErrInvalid = kRepFlagError | 3;
inline constexpr std::uint32_t kRepErrPlatform = kRepFlagError | 4;
inline constexpr std::uint32_t kRepErrTlsReqd = kRepFlagError | 5;
inline constexpr std::uint32_t kRepErrUnknown = kRepFlagError | 6;
inline constexpr std::uint32_t kRepErrShutdown = kRepFlagError | 7;
inline constexpr std::uint32_t kRepErrBlockSizeReqd = kRepFlagError | 8;
inline constexpr std::uint32_t kRepErrTooBig = kRepFlagError | 9;

// NBD_INFO_* items of NBD_REP_INFO.
inline constexpr std::uint16_t kInfoExport = 0;
inline constexpr std::uint16_t kInfoName = 1;
inline constexpr std::uint16_t kInfoDescription = 2;
inline constexpr std::uint16_t kInfoBlockSize = 3;

// Transmission flags (16 bits, per export).
inline constexpr std::uint16_t kFlagHasFlags = 1u << 0;
inline constexpr std::uint16_t kFlagReadOnly = 1u << 1;
inline constexpr std::uint16_t kFlagSendFlush = 1u << 2;
inline constexpr std::uint16_t kFlagSendFua = 1u << 3;
inline constexpr std::uint16_t kFlagRotational = 1u << 4;
inline constexpr std::uint16_t kFlagSendTrim = 1u << 5;
inline constexpr std::uint16_t kFlagSendWriteZeroes = 1u << 6;
inline constexpr std::uint16_t kFlagSendDf = 1u << 7;
inline constexpr std::uint16_t kFlagCanMultiConn = 1u << 8;
inline constexpr std::uint16_t kFlagSendResize = 1u << 9;
inline constexpr std::uint16_t kFlagSendCache = 1u << 10;
inline constexpr std::uint16_t kFlagSendFastZero = 1u << 11;

// --- transmission ---
inline constexpr std::uint32_t kRequestMagic = 0x25609513;
inline constexpr std::uint32_t kSimpleReplyMagic = 0x67446698;
inline constexpr std::uint32_t kStructuredReplyMagic = 0x668e33ef;

enum Cmd : std::uint16_t {
  kCmdRead = 0,
  kCmdWrite = 1,
  kCmdDisc = 2,
  kCmdFlush = 3,
  kCmdTrim = 4,
  kCmdCache = 5,
  kCmdWriteZeroes = 6,
  kCmdBlockStatus = 7,
};

// Command flags.
inline constexpr std::uint16_t kCmdFlagFua = 1u << 0;
inline constexpr std::uint16_t kCmdFlagNoHole = 1u << 1;
inline constexpr std::uint16_t kCmdFlagDf = 1u << 2;
inline constexpr std::uint16_t kCmdFlagReqOne = 1u << 3;
inline constexpr std::uint16_t kCmdFlagFastZero = 1u << 4;

// Structured reply flags and chunk types.
inline constexpr std::uint16_t kReplyFlagDone = 1u << 0;
inline constexpr std::uint16_t kReplyTypeNone = 0;
inline constexpr std::uint16_t kReplyTypeOffsetData = 1;
inline constexpr std::uint16_t kReplyTypeOffsetHole = 2;
inline constexpr std::uint16_t kReplyTypeBlockStatus = 5;
inline constexpr std::uint16_t kReplyTypeError = (1u << 15) | 1;
inline constexpr std::uint16_t kReplyTypeErrorOffset = (1u << 15) | 2;

// Errors (Linux errno values, fixed by the protocol whatever the host).
enum Error : std::uint32_t {
  kOk = 0,
  kEPERM = 1,
  kEIO = 5,
  kENOMEM = 12,
  kEINVAL = 22,
  kENOSPC = 28,
  kEOVERFLOW = 75,
  kENOTSUP = 95,
  kESHUTDOWN = 108,
};
std::string_view error_name(std::uint32_t e);

// base:allocation flags.
inline constexpr std::uint32_t kStateHole = 1u << 0;
inline constexpr std::uint32_t kStateZero = 1u << 1;
// Duplex's changed-since-snapshot context (same meaning as qemu:dirty-bitmap:*).
inline constexpr std::uint32_t kStateDirty = 1u << 0;

inline constexpr std::string_view kContextBaseAllocation = "base:allocation";
// "x-duplex:changed-since:<snapshot>" and its QEMU-compatible alias "qemu:dirty-bitmap:<snapshot>".
inline constexpr std::string_view kContextChangedPrefix = "x-duplex:changed-since:";
inline constexpr std::string_view kContextQemuDirtyPrefix = "qemu:dirty-bitmap:";

// Limits this server enforces.
inline constexpr std::uint32_t kMaxOptionLength = 64 * 1024;  // option data; longer -> ERR_TOO_BIG
inline constexpr std::uint32_t kMaxNameLength = 4096;         // export names and queries
inline constexpr std::uint32_t kMaxPayload =
    32 * 1024 * 1024;  // READ/WRITE payload (NBD_INFO_BLOCK_SIZE max)
inline constexpr std::uint32_t kMaxBlockStatusExtents = 1u << 20;

// --- fixed-size wire structures (byte images) ---
template <typename T>
struct be {
  unsigned char b[sizeof(T)];
  T get() const { return load_be<T>(b); }
  void set(T v) { store_be<T>(b, v); }
};

struct ServerGreeting {  // S: NBDMAGIC IHAVEOPT flags
  be<std::uint64_t> magic;
  be<std::uint64_t> ihaveopt;
  be<std::uint16_t> flags;
};
struct OptionHeader {  // C: IHAVEOPT option length [data]
  be<std::uint64_t> magic;
  be<std::uint32_t> option;
  be<std::uint32_t> length;
};
struct OptionReplyHeader {  // S: magic option type length [data]
  be<std::uint64_t> magic;
  be<std::uint32_t> option;
  be<std::uint32_t> type;
  be<std::uint32_t> length;
};
struct ExportNameReply {  // S: reply to NBD_OPT_EXPORT_NAME (then 124 zero bytes unless NO_ZEROES)
  be<std::uint64_t> size;
  be<std::uint16_t> flags;
};
struct InfoExport {
  be<std::uint16_t> type;
  be<std::uint64_t> size;
  be<std::uint16_t> flags;
};
struct InfoBlockSize {
  be<std::uint16_t> type;
  be<std::uint32_t> minimum;
  be<std::uint32_t> preferred;
  be<std::uint32_t> maximum;
};
struct Request {  // C: 28 bytes [+ payload for WRITE]
  be<std::uint32_t> magic;
  be<std::uint16_t> flags;
  be<std::uint16_t> type;
  be<std::uint64_t> cookie;
  be<std::uint64_t> offset;
  be<std::uint32_t> length;
};
struct SimpleReply {  // S: 16 bytes [+ data for a successful READ]
  be<std::uint32_t> magic;
  be<std::uint32_t> error;
  be<std::uint64_t> cookie;
};
struct StructuredReplyHeader {  // S: 20 bytes + length bytes of payload
  be<std::uint32_t> magic;
  be<std::uint16_t> flags;
  be<std::uint16_t> type;
  be<std::uint64_t> cookie;
  be<std::uint32_t> length;
};
struct BlockDescriptor {
  be<std::uint32_t> length;
  be<std::uint32_t> flags;
};

static_assert(sizeof(ServerGreeting) == 18);
static_assert(sizeof(OptionHeader) == 16);
static_assert(sizeof(OptionReplyHeader) == 20);
static_assert(sizeof(ExportNameReply) == 10);
static_assert(sizeof(InfoExport) == 12);
static_assert(sizeof(InfoBlockSize) == 14);
static_assert(sizeof(Request) == 28);
static_assert(sizeof(SimpleReply) == 16);
static_assert(sizeof(StructuredReplyHeader) == 20);
static_assert(sizeof(BlockDescriptor) == 8);
static_assert(alignof(Request) == 1 && alignof(StructuredReplyHeader) == 1);

}  // namespace duplex::nbd
