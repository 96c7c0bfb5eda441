# Reads the SHA-256 PCRs 0-7 of a swtpm through its unixio control socket:
# hand swtpm one end of a socketpair as its data channel (CMD_SET_DATAFD),
# then send TPM2_PCR_Read on the other end.
import socket, struct, sys, array
ctrl = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
ctrl.connect(sys.argv[1])
ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
ctrl.sendmsg([struct.pack(">I", 0x10)], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", [theirs.fileno()]))])
res = ctrl.recv(4)
assert struct.unpack(">I", res)[0] == 0, res
s = ours
def cmd(cc, body):
    s.sendall(struct.pack(">HII", 0x8001, 10 + len(body), cc) + body)
    tag, size, rc = struct.unpack(">HII", s.recv(10, socket.MSG_WAITALL))
    return rc, (s.recv(size - 10, socket.MSG_WAITALL) if size > 10 else b"")
rc, r = cmd(0x17E, struct.pack(">IHB", 1, 0x000B, 3) + b"\xff\x00\x00")
assert rc == 0, hex(rc)
n, = struct.unpack(">I", r[4:8]); off = 8
for _ in range(n):
    h, sz = struct.unpack(">HB", r[off:off+3]); off += 3 + sz
dcount, = struct.unpack(">I", r[off:off+4]); off += 4
for i in range(dcount):
    sz, = struct.unpack(">H", r[off:off+2]); off += 2
    print(i, r[off:off+sz].hex()); off += sz
