package node

import (
	"encoding/binary"
	"fmt"
	"net/netip"
)

// PROXY protocol version 2 (haproxy's proxy-protocol.txt, section 2.2):
// a binary header a node proxy writes before the first byte of a
// connection it delivers to a workload whose application_tunnel is PROXY.

// ppV2Signature opens every v2 header.
var ppV2Signature = [12]byte{0x0D, 0x0A, 0x0D, 0x0A, 0x00, 0x0D, 0x0A, 0x51, 0x55, 0x49, 0x54, 0x0A}

const (
	ppV2VersionProxy = 0x21 // version 2 (high nibble), command PROXY (low)
	ppV2TCPv4        = 0x11 // AF_INET (high nibble), STREAM (low)
	ppV2TCPv6        = 0x21 // AF_INET6, STREAM
)

// ppTLVPeerIdentity is the TLV type ztunnel uses for the client's SPIFFE
// ID (0xD0, in the range the spec leaves to custom use). Istio waypoints
// read the peer identity from it.
const ppTLVPeerIdentity = 0xD0

// ppTLV is one type-length-value entry after the addresses.
type ppTLV struct {
	Type  byte
	Value []byte
}

// appendPROXYv2 appends a PROXY v2 header for a TCP connection from src
// to dst followed by tlvs. Both addresses are IPv4 for an IPv4 pair;
// otherwise both are written as IPv6 (an IPv4 one mapped), as the header
// has a single family.
func appendPROXYv2(b []byte, src, dst netip.AddrPort, tlvs ...ppTLV) ([]byte, error) {
	if !src.IsValid() || !dst.IsValid() {
		return b, fmt.Errorf("proxy protocol: source %v and destination %v must both be known", src, dst)
	}
	sa, da := src.Addr().Unmap(), dst.Addr().Unmap()
	fam, alen := byte(ppV2TCPv4), 12
	if !sa.Is4() || !da.Is4() {
		fam, alen = ppV2TCPv6, 36
		sa, da = netip.AddrFrom16(sa.As16()), netip.AddrFrom16(da.As16())
	}
	n := alen
	for _, t := range tlvs {
		if len(t.Value) > 0xFFFF {
			return b, fmt.Errorf("proxy protocol: TLV 0x%02X: %d bytes is over the 65535 limit", t.Type, len(t.Value))
		}
		n += 3 + len(t.Value)
	}
	if n > 0xFFFF {
		return b, fmt.Errorf("proxy protocol: header body of %d bytes is over the 65535 limit", n)
	}
	b = append(b, ppV2Signature[:]...)
	b = append(b, ppV2VersionProxy, fam)
	b = binary.BigEndian.AppendUint16(b, uint16(n))
	b = append(b, sa.AsSlice()...)
	b = append(b, da.AsSlice()...)
	b = binary.BigEndian.AppendUint16(b, src.Port())
	b = binary.BigEndian.AppendUint16(b, dst.Port())
	for _, t := range tlvs {
		b = append(b, t.Type)
		b = binary.BigEndian.AppendUint16(b, uint16(len(t.Value)))
		b = append(b, t.Value...)
	}
	return b, nil
}
