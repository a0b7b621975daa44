package inpod

import (
	"fmt"
	"net"
	"os"
	"syscall"

	"google.golang.org/protobuf/proto"
)

// maxMessage bounds one packet. ZDS messages are a few hundred bytes at
// most; a larger packet is cut by the kernel (MSG_TRUNC) and rejected.
const maxMessage = 16 << 10

// maxFds is how many descriptors one message may carry; AddWorkload sends
// one. Room for a few more lets us close extras instead of having the
// kernel drop them silently (MSG_CTRUNC).
const maxFds = 4

// sendMsg writes m as one packet, with files as SCM_RIGHTS.
func sendMsg(c *net.UnixConn, m proto.Message, files ...*os.File) error {
	b, err := proto.Marshal(m)
	if err != nil {
		return fmt.Errorf("marshal %T: %w", m, err)
	}
	var oob []byte
	if len(files) > 0 {
		fds := make([]int, len(files))
		for i, f := range files {
			fds[i] = int(f.Fd())
		}
		oob = syscall.UnixRights(fds...)
	}
	n, oobn, err := c.WriteMsgUnix(b, oob, nil)
	if err != nil {
		return fmt.Errorf("write %T: %w", m, err)
	}
	if n != len(b) || oobn != len(oob) {
		return fmt.Errorf("write %T: short write %d/%d", m, n, len(b))
	}
	return nil
}

// recvMsg reads one packet into m and returns the descriptors that came
// with it, as files the caller owns.
func recvMsg(c *net.UnixConn, m proto.Message) ([]*os.File, error) {
	buf := make([]byte, maxMessage)
	oob := make([]byte, syscall.CmsgSpace(4*maxFds))
	n, oobn, flags, _, err := c.ReadMsgUnix(buf, oob)
	if err != nil {
		return nil, err
	}
	files, ferr := parseRights(oob[:oobn])
	closeAll := func() {
		for _, f := range files {
			f.Close()
		}
	}
	switch {
	case ferr != nil:
		closeAll()
		return nil, ferr
	case flags&syscall.MSG_TRUNC != 0:
		closeAll()
		return nil, fmt.Errorf("message larger than %d bytes", maxMessage)
	case flags&syscall.MSG_CTRUNC != 0:
		closeAll()
		return nil, fmt.Errorf("more than %d descriptors in one message", maxFds)
	case n == 0 && oobn == 0:
		// A zero-length read is how SOCK_SEQPACKET reports the peer's
		// orderly shutdown (an empty packet looks the same; no message of
		// the protocol is empty).
		return nil, errPeerClosed
	}
	if err := proto.Unmarshal(buf[:n], m); err != nil {
		closeAll()
		return nil, fmt.Errorf("decode %T: %w", m, err)
	}
	return files, nil
}

// errPeerClosed: the other side closed the connection.
var errPeerClosed = fmt.Errorf("peer closed the connection")

func parseRights(oob []byte) ([]*os.File, error) {
	if len(oob) == 0 {
		return nil, nil
	}
	msgs, err := syscall.ParseSocketControlMessage(oob)
	if err != nil {
		return nil, fmt.Errorf("control message: %w", err)
	}
	var files []*os.File
	for _, m := range msgs {
		fds, err := syscall.ParseUnixRights(&m)
		if err != nil {
			// Not SCM_RIGHTS (credentials and the like): not ours to use.
			continue
		}
		for _, fd := range fds {
			syscall.CloseOnExec(fd)
			files = append(files, os.NewFile(uintptr(fd), fmt.Sprintf("fd %d", fd)))
		}
	}
	return files, nil
}
