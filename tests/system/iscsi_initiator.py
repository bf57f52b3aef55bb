"""A minimal iSCSI initiator for system tests (RFC 7143): one connection, no digests, no CHAP, login
through the security and operational stages, SCSI commands with immediate data or R2T/Data-Out,
Data-In reassembly, answers to the target's NOP-In pings, logout.

It exists for what libiscsi's command-line tools cannot do: persistent reservations (PERSISTENT
RESERVE OUT with APTPL) with a chosen initiator name and ISID, so a test can check that the
daemon keeps them across a restart.
"""
import socket
import struct

GOOD = 0x00
CHECK_CONDITION = 0x02
RESERVATION_CONFLICT = 0x18
UNIT_ATTENTION = 0x6


class IscsiError(Exception):
    pass


def _pad4(n):
    return (4 - n % 4) % 4


def _keys(pairs):
    return b"".join(f"{k}={v}".encode() + b"\0" for k, v in pairs)


def _parse_keys(data):
    out = {}
    for item in data.split(b"\0"):
        if b"=" in item:
            k, v = item.split(b"=", 1)
            out[k.decode()] = v.decode()
    return out


class Session:
    """One normal session with one connection to `target` on host:port."""

    def __init__(self, host, port, target, initiator, isid=b"\x80\x00\x00\x00\x00\x01", timeout=10):
        self.target = target
        self.initiator = initiator
        self.isid = isid
        self.timeout = timeout
        self.sock = socket.create_connection((host, port), timeout=timeout)
        self.itt = 1
        self.cmd_sn = 1
        self.exp_stat_sn = 0
        self.params = {}
        self.login_status = None
        self._login()

    # --- PDUs -------------------------------------------------------------------------------
    def _send(self, bhs, data=b""):
        assert len(bhs) == 48
        bhs = bytearray(bhs)
        bhs[5:8] = len(data).to_bytes(3, "big")
        self.sock.sendall(bytes(bhs) + data + b"\0" * _pad4(len(data)))

    def _recv_exact(self, n):
        buf = b""
        while len(buf) < n:
            chunk = self.sock.recv(n - len(buf))
            if not chunk:
                raise IscsiError("connection closed by the target")
            buf += chunk
        return buf

    def _recv(self):
        bhs = self._recv_exact(48)
        ahs = bhs[4] * 4
        dsl = int.from_bytes(bhs[5:8], "big")
        if ahs:
            self._recv_exact(ahs)
        data = self._recv_exact(dsl + _pad4(dsl))[:dsl]
        return bhs, data

    def _next_itt(self):
        self.itt = (self.itt + 1) & 0x7FFFFFFF or 1
        return self.itt

    def _note_stat_sn(self, bhs):
        self.exp_stat_sn = (struct.unpack(">I", bhs[24:28])[0] + 1) & 0xFFFFFFFF

    # --- login ------------------------------------------------------------------------------
    def _login_pdu(self, csg, nsg, transit, keys, itt):
        bhs = bytearray(48)
        bhs[0] = 0x40 | 0x03
        bhs[1] = (0x80 if transit else 0) | (csg << 2) | nsg
        bhs[8:14] = self.isid
        struct.pack_into(">I", bhs, 16, itt)
        struct.pack_into(">I", bhs, 24, self.cmd_sn)
        struct.pack_into(">I", bhs, 28, self.exp_stat_sn)
        self._send(bhs, _keys(keys))
        rsp, data = self._recv()
        if rsp[0] & 0x3F != 0x23:
            raise IscsiError(f"expected a login response, got opcode 0x{rsp[0]:02x}")
        self.login_status = (rsp[36], rsp[37])
        if rsp[36] != 0:
            raise IscsiError(f"login refused: status class 0x{rsp[36]:02x} detail 0x{rsp[37]:02x}")
        self._note_stat_sn(rsp)
        self.tsih = struct.unpack(">H", rsp[14:16])[0]
        self.params.update(_parse_keys(data))
        return rsp[1]

    def _login(self):
        itt = self._next_itt()
        flags = self._login_pdu(0, 1, True, [("InitiatorName", self.initiator), ("TargetName", self.target),
                                             ("SessionType", "Normal"), ("AuthMethod", "None")], itt)
        for _ in range(4):  # until the target agrees to leave the security stage
            if flags & 0x80 and flags & 0x03 == 1:
                break
            flags = self._login_pdu(0, 1, True, [], itt)
        else:
            raise IscsiError("the target did not leave the security stage")
        ops = [("HeaderDigest", "None"), ("DataDigest", "None"), ("MaxConnections", "1"),
               ("InitialR2T", "No"), ("ImmediateData", "Yes"), ("MaxRecvDataSegmentLength", "262144"),
               ("MaxBurstLength", "262144"), ("FirstBurstLength", "65536"), ("DefaultTime2Wait", "0"),
               ("DefaultTime2Retain", "0"), ("MaxOutstandingR2T", "1"), ("DataPDUInOrder", "Yes"),
               ("DataSequenceInOrder", "Yes"), ("ErrorRecoveryLevel", "0")]
        flags = self._login_pdu(1, 3, True, ops, itt)
        for _ in range(4):
            if flags & 0x80 and flags & 0x03 == 3:
                return
            flags = self._login_pdu(1, 3, True, [], itt)
        raise IscsiError("the target did not reach full feature phase")

    # --- commands ---------------------------------------------------------------------------
    def command(self, cdb, data_out=b"", data_in_len=0, lun=0):
        """Runs one SCSI command; returns (status, sense bytes, Data-In bytes)."""
        itt = self._next_itt()
        cdb = bytes(cdb).ljust(16, b"\0")
        bhs = bytearray(48)
        bhs[0] = 0x01
        bhs[1] = 0x80 | (0x40 if data_in_len else 0) | (0x20 if data_out else 0) | 0x01
        bhs[8:16] = (lun << 48).to_bytes(8, "big")
        struct.pack_into(">I", bhs, 16, itt)
        struct.pack_into(">I", bhs, 20, len(data_out) if data_out else data_in_len)
        struct.pack_into(">I", bhs, 24, self.cmd_sn)
        struct.pack_into(">I", bhs, 28, self.exp_stat_sn)
        bhs[32:48] = cdb
        immediate = b""
        if data_out and self.params.get("ImmediateData", "Yes") == "Yes":
            first = int(self.params.get("FirstBurstLength", "65536"))
            mrdsl = int(self.params.get("MaxRecvDataSegmentLength", "8192"))
            immediate = data_out[: min(first, mrdsl)]
        self._send(bhs, immediate)
        self.cmd_sn = (self.cmd_sn + 1) & 0xFFFFFFFF
        data_in = bytearray(data_in_len)
        got = 0
        while True:
            rsp, data = self._recv()
            op = rsp[0] & 0x3F
            if op == 0x20:  # NOP-In: a ping from the target wants an answer
                self._answer_ping(rsp)
                continue
            if op == 0x3F or op == 0x3A or op == 0x32:  # reject, async message
                if op == 0x3F:
                    raise IscsiError(f"reject, reason 0x{rsp[2]:02x}")
                continue
            if struct.unpack(">I", rsp[16:20])[0] != itt:
                raise IscsiError(f"a PDU for another task (opcode 0x{op:02x})")
            if op == 0x25:  # Data-In
                off = struct.unpack(">I", rsp[40:44])[0]
                data_in[off:off + len(data)] = data
                got = max(got, off + len(data))
                if rsp[1] & 0x01:  # S: status in this PDU
                    self._note_stat_sn(rsp)
                    return rsp[3], b"", bytes(data_in[:got])
            elif op == 0x31:  # R2T
                ttt = rsp[20:24]
                off, length = struct.unpack(">II", rsp[40:48])
                mrdsl = int(self.params.get("MaxRecvDataSegmentLength", "8192"))
                sn = 0
                pos = off
                while pos < off + length:
                    chunk = data_out[pos:min(pos + mrdsl, off + length)]
                    dout = bytearray(48)
                    dout[0] = 0x05
                    dout[1] = 0x80 if pos + len(chunk) >= off + length else 0
                    dout[8:16] = bhs[8:16]
                    struct.pack_into(">I", dout, 16, itt)
                    dout[20:24] = ttt
                    struct.pack_into(">I", dout, 28, self.exp_stat_sn)
                    struct.pack_into(">I", dout, 36, sn)
                    struct.pack_into(">I", dout, 40, pos)
                    self._send(dout, chunk)
                    pos += len(chunk)
                    sn += 1
            elif op == 0x21:  # SCSI Response
                self._note_stat_sn(rsp)
                sense = b""
                if len(data) >= 2:
                    n = struct.unpack(">H", data[:2])[0]
                    sense = data[2:2 + n]
                if rsp[2] != 0:
                    raise IscsiError(f"SCSI response 0x{rsp[2]:02x}")
                return rsp[3], sense, bytes(data_in[:got])
            else:
                raise IscsiError(f"unexpected opcode 0x{op:02x}")

    def task_management(self, function, lun=0):
        """A task management request (RFC 7143 11.5), e.g. 5 = LOGICAL UNIT RESET; returns the
        response code (0 = function complete)."""
        itt = self._next_itt()
        bhs = bytearray(48)
        bhs[0] = 0x40 | 0x02
        bhs[1] = 0x80 | function
        bhs[8:16] = (lun << 48).to_bytes(8, "big")
        struct.pack_into(">I", bhs, 16, itt)
        struct.pack_into(">I", bhs, 20, 0xFFFFFFFF)
        struct.pack_into(">I", bhs, 24, self.cmd_sn)
        struct.pack_into(">I", bhs, 28, self.exp_stat_sn)
        self._send(bhs)
        self.cmd_sn = (self.cmd_sn + 1) & 0xFFFFFFFF
        while True:
            rsp, _ = self._recv()
            if rsp[0] & 0x3F == 0x22 and struct.unpack(">I", rsp[16:20])[0] == itt:
                self._note_stat_sn(rsp)
                return rsp[2]

    def _answer_ping(self, rsp):
        """A NOP-In with a target transfer tag is a ping that wants a NOP-Out back."""
        ttt = rsp[20:24]
        if ttt != b"\xff\xff\xff\xff":
            nop = bytearray(48)
            nop[0] = 0x40 | 0x00
            nop[1] = 0x80
            nop[8:16] = rsp[8:16]
            nop[16:20] = b"\xff\xff\xff\xff"
            nop[20:24] = ttt
            struct.pack_into(">I", nop, 24, self.cmd_sn)
            struct.pack_into(">I", nop, 28, self.exp_stat_sn)
            self._send(nop)

    def start_write_awaiting_r2t(self, lba, blocks=1, lun=0):
        """WRITE(10) sent without any data (F set, no immediate data), so that the target must ask
        for it by R2T; reads that R2T. The command then waits in the target for its Data-Out:
        a command in flight for as long as the test likes. Returns (itt, ttt)."""
        itt = self._next_itt()
        bhs = bytearray(48)
        bhs[0] = 0x01
        bhs[1] = 0x80 | 0x20 | 0x01
        bhs[8:16] = (lun << 48).to_bytes(8, "big")
        struct.pack_into(">I", bhs, 16, itt)
        struct.pack_into(">I", bhs, 20, blocks * 512)
        struct.pack_into(">I", bhs, 24, self.cmd_sn)
        struct.pack_into(">I", bhs, 28, self.exp_stat_sn)
        bhs[32:48] = struct.pack(">BBIBHB", 0x2A, 0, lba, 0, blocks, 0).ljust(16, b"\0")
        self._send(bhs)
        self.cmd_sn = (self.cmd_sn + 1) & 0xFFFFFFFF
        while True:
            rsp, _ = self._recv()
            op = rsp[0] & 0x3F
            if op == 0x20:
                self._answer_ping(rsp)
                continue
            if op != 0x31 or struct.unpack(">I", rsp[16:20])[0] != itt:
                raise IscsiError(f"expected an R2T, got opcode 0x{op:02x}")
            return itt, rsp[20:24]

    def send_data_out(self, itt, ttt, data, lun=0):
        """The Data-Out an R2T asked for, in one PDU (final), from offset 0."""
        dout = bytearray(48)
        dout[0] = 0x05
        dout[1] = 0x80
        dout[8:16] = (lun << 48).to_bytes(8, "big")
        struct.pack_into(">I", dout, 16, itt)
        dout[20:24] = ttt
        struct.pack_into(">I", dout, 28, self.exp_stat_sn)
        self._send(dout, data)

    def send_command(self, cdb, data_out=b"", lun=0):
        """Sends a command whose Data-Out (if any) goes whole as immediate data, without waiting
        for its answer (next_answer() reads it); returns its ITT."""
        itt = self._next_itt()
        bhs = bytearray(48)
        bhs[0] = 0x01
        bhs[1] = 0x80 | (0x20 if data_out else 0) | 0x01
        bhs[8:16] = (lun << 48).to_bytes(8, "big")
        struct.pack_into(">I", bhs, 16, itt)
        struct.pack_into(">I", bhs, 20, len(data_out))
        struct.pack_into(">I", bhs, 24, self.cmd_sn)
        struct.pack_into(">I", bhs, 28, self.exp_stat_sn)
        bhs[32:48] = bytes(cdb).ljust(16, b"\0")
        self._send(bhs, data_out)
        self.cmd_sn = (self.cmd_sn + 1) & 0xFFFFFFFF
        return itt

    def next_answer(self, timeout):
        """The next PDU other than a ping within `timeout` seconds, as (opcode, itt, byte 3: the
        SCSI status of a SCSI Response), or None."""
        self.sock.settimeout(timeout)
        try:
            while True:
                rsp, _ = self._recv()
                if rsp[0] & 0x3F == 0x20:
                    self._answer_ping(rsp)
                    continue
                if rsp[0] & 0x3F in (0x21, 0x22):
                    self._note_stat_sn(rsp)
                return rsp[0] & 0x3F, struct.unpack(">I", rsp[16:20])[0], rsp[3]
        except socket.timeout:
            return None
        finally:
            self.sock.settimeout(self.timeout)

    def send_task_management(self, function, lun=0):
        """task_management() without waiting for the answer (next_answer() reads it); its ITT."""
        itt = self._next_itt()
        bhs = bytearray(48)
        bhs[0] = 0x40 | 0x02
        bhs[1] = 0x80 | function
        bhs[8:16] = (lun << 48).to_bytes(8, "big")
        struct.pack_into(">I", bhs, 16, itt)
        struct.pack_into(">I", bhs, 20, 0xFFFFFFFF)
        struct.pack_into(">I", bhs, 24, self.cmd_sn)
        struct.pack_into(">I", bhs, 28, self.exp_stat_sn)
        self._send(bhs)
        self.cmd_sn = (self.cmd_sn + 1) & 0xFFFFFFFF
        return itt

    def command_past_ua(self, cdb, data_out=b"", data_in_len=0, lun=0):
        """command(), repeated while the answer is a UNIT ATTENTION (reported once each)."""
        for _ in range(8):
            status, sense, data = self.command(cdb, data_out, data_in_len, lun)
            if status == CHECK_CONDITION and len(sense) > 2 and sense[2] & 0x0F == UNIT_ATTENTION:
                continue
            return status, sense, data
        raise IscsiError("unit attentions without end")

    def logout(self):
        bhs = bytearray(48)
        bhs[0] = 0x40 | 0x06
        bhs[1] = 0x80  # close the session
        struct.pack_into(">I", bhs, 16, self._next_itt())
        struct.pack_into(">I", bhs, 24, self.cmd_sn)
        struct.pack_into(">I", bhs, 28, self.exp_stat_sn)
        try:
            self._send(bhs)
            while True:
                rsp, _ = self._recv()
                if rsp[0] & 0x3F == 0x26:
                    break
        except (OSError, IscsiError):
            pass
        self.sock.close()


# --- persistent reservations (SPC-4 6.15, 6.16) ------------------------------------------------
def pr_out(session, action, key=0, sa_key=0, prtype=0, aptpl=False):
    params = struct.pack(">QQIBBH", key, sa_key, 0, 0x01 if aptpl else 0, 0, 0)
    cdb = struct.pack(">BBBHIB", 0x5F, action, prtype & 0x0F, 0, len(params), 0)
    return session.command_past_ua(cdb, data_out=params)


def pr_in(session, action, alloc=4096):
    cdb = struct.pack(">BB5sHB", 0x5E, action, b"\0" * 5, alloc, 0)
    return session.command_past_ua(cdb, data_in_len=alloc)


def read_keys(session):
    status, sense, data = pr_in(session, 0x00)
    if status != GOOD:
        raise IscsiError(f"PR IN READ KEYS: status 0x{status:02x} sense {sense.hex()}")
    generation, length = struct.unpack(">II", data[:8])
    keys = [struct.unpack(">Q", data[8 + i:16 + i])[0] for i in range(0, length, 8)]
    return generation, keys


def read_reservation(session):
    """(key, type) of the reservation, or None."""
    status, sense, data = pr_in(session, 0x01)
    if status != GOOD:
        raise IscsiError(f"PR IN READ RESERVATION: status 0x{status:02x} sense {sense.hex()}")
    _, length = struct.unpack(">II", data[:8])
    if length == 0:
        return None
    return struct.unpack(">Q", data[8:16])[0], data[21] & 0x0F


def write10(session, lba, data):
    cdb = struct.pack(">BBIBHB", 0x2A, 0, lba, 0, len(data) // 512, 0)
    return session.command_past_ua(cdb, data_out=data)
