package httpproxy

import (
	"encoding/binary"
	"testing"
)

func grpcMsg(n int) []byte {
	b := make([]byte, 5+n)
	binary.BigEndian.PutUint32(b[1:], uint32(n))
	return b
}

func TestGRPCFrames(t *testing.T) {
	var stream []byte
	for _, n := range []int{0, 1, 4, 5, 100, 70000, 3} {
		stream = append(stream, grpcMsg(n)...)
	}
	for _, chunk := range []int{1, 2, 5, 7, 4096, len(stream)} {
		var g grpcFrames
		for p := stream; len(p) > 0; {
			n := min(chunk, len(p))
			g.feed(p[:n])
			p = p[n:]
		}
		if g.msgs != 7 {
			t.Errorf("chunks of %d: %d messages, want 7", chunk, g.msgs)
		}
	}
	// A prefix cut short counts nothing until it completes.
	var g grpcFrames
	g.feed(grpcMsg(10)[:3])
	if g.msgs != 0 {
		t.Errorf("partial prefix counted: %d", g.msgs)
	}
}

func TestGRPCFramesAllocs(t *testing.T) {
	b := append(grpcMsg(10), grpcMsg(20)...)
	var g grpcFrames
	if n := testing.AllocsPerRun(100, func() { g.feed(b) }); n != 0 {
		t.Errorf("feed allocates %v times", n)
	}
}
