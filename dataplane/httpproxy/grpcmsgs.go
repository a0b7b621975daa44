package httpproxy

// grpcFrames counts gRPC messages in a body as it streams by, for Istio's
// istio_request_messages_total / istio_response_messages_total. A gRPC
// message is a 5-byte prefix (compressed flag, 4-byte big-endian length)
// and that many bytes; the counter jumps over message bodies, so the cost
// is per message, not per byte, and it holds no buffer.
type grpcFrames struct {
	msgs uint64
	skip uint64 // message bytes still to pass
	hdr  [5]byte
	nhdr int8 // prefix bytes seen of the next message
}

// feed accounts for the next body bytes.
func (g *grpcFrames) feed(p []byte) {
	for len(p) > 0 {
		if g.skip > 0 {
			n := min(uint64(len(p)), g.skip)
			g.skip -= n
			p = p[n:]
			continue
		}
		k := copy(g.hdr[g.nhdr:], p)
		g.nhdr += int8(k)
		p = p[k:]
		if g.nhdr < int8(len(g.hdr)) {
			return
		}
		g.msgs++
		g.nhdr = 0
		g.skip = uint64(g.hdr[1])<<24 | uint64(g.hdr[2])<<16 | uint64(g.hdr[3])<<8 | uint64(g.hdr[4])
	}
}
